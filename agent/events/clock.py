"""Is the system clock synchronised (NTP, chrony, systemd-timesyncd)? Reported as ``clock_synced``.

On Linux the kernel knows: ``adjtimex(2)`` with ``modes = 0`` only reads the state and returns
``TIME_ERROR`` (5) while the clock is unsynchronised (``STA_UNSYNC``, set at boot and cleared by any NTP
daemon once it disciplines the clock). That holds for every daemon, unlike ``/run/systemd/timesync/
synchronized`` which only timesyncd writes; the file is used only when ``adjtimex`` is unavailable.

When neither can tell (not Linux, or the call is blocked), the answer is ``True``: production nodes are
Linux where the probe works, and dev machines keep their clocks synced; a false ``False`` there would
make consumers distrust good timestamps. The result is cached for ``ttl_s`` (the state changes rarely).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

TIME_ERROR = 5
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")


def kernel_clock_synced() -> bool | None:
    """The kernel's view via ``adjtimex``; ``None`` when it cannot be asked."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # larger than struct timex on every ABI; modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def clock_synced(flag: Path = TIMESYNCD_FLAG) -> bool:
    """True when the clock is synchronised, or when that cannot be determined (see module doc)."""
    state = kernel_clock_synced()
    if state is not None:
        return state
    if flag.parent.is_dir():
        return flag.exists()
    return True


class CachedClockSync:
    """A ``Callable[[], bool]`` that probes at most every ``ttl_s`` seconds."""

    def __init__(self, probe: Callable[[], bool] = clock_synced, ttl_s: float = 30.0) -> None:
        self._probe = probe
        self._ttl = ttl_s
        self._value = True
        self._at = float("-inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._at >= self._ttl:
            self._value = bool(self._probe())
            self._at = now
        return self._value
