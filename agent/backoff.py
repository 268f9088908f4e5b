"""Retry delays for reconnecting (the node's MQTT link, the centre receiver), reopening (frame sources) and
retrying a refused enrolment login: one policy, full jitter.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the n-th delay after consecutive
failures is uniform in ``[0, min(cap, base * 2**n)]``. The randomness spreads a fleet of nodes that lost
the same broker or camera network at the same moment, so they do not all come back in the same instant.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for consecutive failures; ``reset`` after a success (a connection that held, a frame read)."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt (and one more failure counted)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.failures = 0
