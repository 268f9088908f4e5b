"""Peak RSS as a process reports it: its own, not its parent's (the bench's cold-start figure relies on it)."""

from __future__ import annotations

import subprocess
import sys

CHILD = "from agent.memory import peak_rss_mb; print(peak_rss_mb())"


def test_a_child_reports_its_own_peak_not_its_parents():
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touched: 300 MB resident in this process
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout
    assert 1 < float(out) < 150  # a bare interpreter importing one module, not 300 MB
    del ballast
