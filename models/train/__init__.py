"""Training recipe of the demo detector (needs the [train] extra: TensorFlow)."""
