"""edgecam on-node agent: capture, detect, track, and publish events over MQTT."""

__version__ = "0.1.0"
