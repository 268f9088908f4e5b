"""Receivers that start together on one new store must all open it (WAL switch races, seen in CI)."""

from __future__ import annotations

import subprocess
import sys

OPEN = "import sys; from centre.store import Store; Store(sys.argv[1]).close()"


def test_concurrent_receivers_open_one_new_store(tmp_path):
    for round_ in range(4):
        store = tmp_path / f"store{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(store)], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e for e in errors if e]
