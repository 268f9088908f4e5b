"""On-node vision: interpreter, pre-processing, output decoders, motion gate."""
