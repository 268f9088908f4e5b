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
from tests.processes import pytest_testnodedown as pytest_testnodedown  # ...collected from parallel workers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EDGECAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker its own slice of loopback ports for the brokers it starts.

    An outage test stops its broker for up to a minute and starts it again on the same port; another worker
    drawing from the same range could take that port meanwhile. Children (``edgecam run``, the bench) inherit
    the slice through the environment.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if not worker:
        return
    from provisioning.local_broker import PORTS_ENV, port_range

    span = port_range() or (10_000, 32_768)
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (span[1] - span[0]) // max(1, count)
    lo = span[0] + int(worker.removeprefix("gw")) * size
    os.environ[PORTS_ENV] = f"{lo}-{lo + size}"


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
