"""Board and camera profiles, and probes (board model, temperature, throttling, cameras)."""
