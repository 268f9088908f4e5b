"""One OTA actor at a time per state dir: a check (with its install) and the supervisor's decisions all
read-modify-write ``state.json`` and the links, so they take an exclusive ``flock`` on ``ota/lock`` first.

The lock dies with its process (a SIGKILLed check never leaves it held), which is what crash consistency needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from agent.errors import EdgecamError


class Busy(EdgecamError):
    """Another OTA actor holds the lock."""


@contextlib.contextmanager
def ota_lock(ota_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock; wait up to ``wait_s`` for it, else ``Busy``."""
    ota_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(ota_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(f"{ota_dir / 'lock'}: another OTA check or supervisor is at work") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
