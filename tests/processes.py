"""Processes the tests start, and the end-of-session check that none outlives the suite.

A test that starts a process (an ``edgecam run``, a centre receiver, a broker) hands it to the
``processes`` fixture, whose finaliser stops it whatever the outcome. ``pytest_sessionfinish`` then lists
the pytest process's remaining children and fails the run naming each survivor with its command line
(and stops it, so the next run starts clean). A leaked broker or agent otherwise keeps ports, CPU and
files busy and makes later tests (or the next soak run) flaky for reasons unrelated to them.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from typing import Any

import psutil
import pytest

#: how long a process that was asked to stop gets before it is killed
STOP_GRACE_S = 10.0


def stop_process(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class Processes:
    """What one test started; ``stop_all`` (the fixture's finaliser) stops it, newest first."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], Any]] = []

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(cmd, **kwargs)``, stopped by the finaliser."""
        return self.adopt(subprocess.Popen(cmd, **kwargs))

    def adopt(self, thing: Any) -> Any:
        """A ``Popen`` or anything with ``stop()`` (a ``Broker``): stopped by the finaliser. Returns it."""
        self._stops.append((lambda: stop_process(thing)) if isinstance(thing, subprocess.Popen) else thing.stop)
        return thing

    def stop_all(self) -> None:
        errors = []
        while self._stops:
            try:
                self._stops.pop()()
            except Exception as exc:  # stop the others anyway; report after
                errors.append(exc)
        if errors:
            raise errors[0]


def survivors(grace: float = 2.0) -> list[psutil.Process]:
    """Children of this process still running after ``grace`` seconds (zombies are reaped, not counted)."""
    children = psutil.Process().children(recursive=True)
    _gone, alive = psutil.wait_procs(children, timeout=grace) if children else ([], [])
    return [p for p in alive if _running(p)]


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid}: {' '.join(p.cmdline()) or p.name()}"
    except psutil.Error:
        return f"pid {p.pid}: (gone)"


#: survivors reported by parallel workers (pytest-xdist), kept on the controller's config
LEFTOVERS = pytest.StashKey[list[str]]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process the tests started is still running; stop it.

    Under pytest-xdist each worker checks its own children and hands the list to the controller through
    ``workeroutput`` (a worker's own exit status does not decide the run's); the controller reports them all.
    """
    config = session.config
    workeroutput = getattr(config, "workeroutput", None)
    if config.pluginmanager.hasplugin("dsession"):  # the xdist controller: it starts no test processes itself
        left, lines = [], list(config.stash.get(LEFTOVERS, []))
    else:
        left = survivors()
        lines = [describe(p) for p in left]
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if left:
        psutil.wait_procs(left, timeout=5)
    if workeroutput is not None:
        workeroutput["leftover_processes"] = lines
        return
    if not lines:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    message = "processes left running after the tests (a fixture finaliser must stop them):\n  " + "\n  ".join(lines)
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(message, red=True, bold=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: keep what a finished worker found left running, for ``pytest_sessionfinish``."""
    found = getattr(node, "workeroutput", {}).get("leftover_processes") or []
    name = getattr(getattr(node, "gateway", None), "id", "worker")
    node.config.stash.setdefault(LEFTOVERS, []).extend(f"[{name}] {line}" for line in found)
