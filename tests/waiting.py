"""Polling for a condition that another thread or process makes true (brokers, subscribers, receivers)."""

from __future__ import annotations

import time


def wait_until(pred, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """True as soon as ``pred()`` is; after ``timeout`` seconds, whatever ``pred()`` says last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())
