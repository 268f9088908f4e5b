"""Peak resident memory of this process, resettable between measurements (Linux ``clear_refs``).

``VmHWM`` is read rather than ``ru_maxrss``: a process started by fork/vfork + exec inherits its parent's
high-water mark in ``ru_maxrss`` (Linux records the pre-exec memory there), so a small agent started from
a big process would report the big one's peak.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Restart the high-water mark at the current RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else since process start (``ru_maxrss``)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = maxrss // 1024 if sys.platform == "darwin" else maxrss
    return kb / 1024


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024
