"""The leftover-process check fails a run that leaves a process behind, and only such a run (real pytest runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

CONFTEST = "from tests.conftest import processes, pytest_sessionfinish, pytest_testnodedown  # noqa: F401\n"
TESTS = '''
import os
import subprocess
import sys
from pathlib import Path

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)", "leftover-probe"]


def test_leaks_a_process():
    proc = subprocess.Popen(SLEEPER)
    Path(os.environ["LEAKED_PID_FILE"]).write_text(str(proc.pid))


def test_hands_its_process_to_the_fixture(processes):
    processes.popen(SLEEPER)
'''


def run_inner(tmp_path: Path, *select: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir",
         str(tmp_path), *select],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "LEAKED_PID_FILE": str(tmp_path / "pid")},
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_leaked_process_fails_the_run_by_its_command_line(tmp_path: Path, workers: list[str]) -> None:
    res = run_inner(tmp_path, "-k", "leaks", *workers)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 passed" in res.stdout  # the test itself passed: the check failed the run
    assert "processes left running after the tests" in res.stdout and "leftover-probe" in res.stdout, res.stdout
    assert not psutil.pid_exists(int((tmp_path / "pid").read_text()))  # and stopped it


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_processes_handed_to_the_fixture_pass(tmp_path: Path, workers: list[str]) -> None:
    res = run_inner(tmp_path, "-k", "hands", *workers)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "left running" not in res.stdout
