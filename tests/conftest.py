"""Shared fixtures: real Mosquitto, started processes, paths to ../shared/data (skipped with a reason when absent).

The session fails when a process a test started is still running at its end (``tests/processes.py``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.broker import MOSQUITTO, Broker
from tests.processes import Processes
from tests.processes import pytest_sessionfinish as pytest_sessionfinish  # the leftover-process check

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGECAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(rel: str) -> Path:
    """A file from ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"needs {path} (third-party test data, not in the repository)")
    return path


@pytest.fixture
def broker(tmp_path: Path):
    """A plain (no TLS) Mosquitto on a free loopback port, for tests not about security."""
    if not (shutil.which("mosquitto") or Path(MOSQUITTO).exists()):
        pytest.fail("mosquitto is not installed; ./scripts/test installs it")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def processes():
    """Register the processes (``Popen``, ``Broker``) a test starts; all are stopped after it, pass or fail."""
    started = Processes()
    yield started
    started.stop_all()
