"""Conditions checked before an update is even looked for: a trustworthy clock and enough disk.

ngclient checks metadata expiry against the local clock only. A node without a real-time clock boots at the
epoch or at fake-hwclock's last save, and a clock far in the past would accept expired metadata (a freeze
attack replaying an old, once-valid timestamp). So the check runs only while the kernel says the clock is
synchronised, and never when the clock reads earlier than the durable *time floor*: the clock's reading at
the last metadata the node verified, fsynced, which only moves forward.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from agent.atomic import write_atomic


class GuardError(Exception):
    """A precondition that does not hold; the message is the status's reason."""


def read_floor(path: Path) -> float:
    try:
        return float(path.read_text(encoding="utf-8").strip() or 0)
    except (OSError, ValueError):
        return 0.0


def raise_floor(path: Path, now: float | None = None) -> float:
    """Move the floor up to ``now`` (never down); durable before it returns."""
    now = time.time() if now is None else now
    if now > read_floor(path):
        write_atomic(path, f"{now:.3f}\n")
    return max(now, read_floor(path))


def check_clock(floor_file: Path, synced: Callable[[], bool], now: float | None = None) -> None:
    """GuardError unless the clock is synchronised and not behind the floor."""
    if not synced():
        raise GuardError("clock not synchronised (metadata expiry cannot be judged); waiting for NTP")
    now = time.time() if now is None else now
    floor = read_floor(floor_file)
    if now < floor:
        raise GuardError(f"clock reads {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}, before the last "
                         f"verified update check at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(floor))}")


def disk_free(path: Path) -> int:
    """Free bytes for an unprivileged writer on ``path``'s file system."""
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize if hasattr(st, "f_bavail") else shutil.disk_usage(path).free


def check_space(path: Path, needed: int, reserve: int, free: Callable[[Path], int] = disk_free) -> None:
    """GuardError when downloading and installing ``needed`` bytes would leave less than ``reserve`` free."""
    have = free(path)
    if have - needed < reserve:
        raise GuardError(f"disk too small: the update needs {needed} bytes and {reserve} must stay free, "
                         f"{have} free on {path}")
