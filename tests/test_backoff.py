"""Full-jitter backoff, shared by the MQTT link and the capture thread."""

from __future__ import annotations

import random

from agent.backoff import Backoff


def test_full_jitter_grows_to_the_cap_and_reaches_down_to_zero() -> None:
    b = Backoff(0.5, 8.0, random.Random(1))
    ceilings = [min(8.0, 0.5 * 2**n) for n in range(200)]
    delays = [b.next() for _ in range(200)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    late = delays[10:]
    assert max(late) > 6.0 and min(late) < 2.0  # spread over the whole [0, cap], not bunched under it
    assert b.failures == 200


def test_reset_starts_again_from_the_base() -> None:
    b = Backoff(0.5, 8.0, random.Random(2))
    for _ in range(20):
        b.next()
    b.reset()
    assert b.failures == 0 and b.next() <= 0.5
