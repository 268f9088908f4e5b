"""The whole agent (``edgecam run``) against broker outages and a SIGKILL, measured at the reference centre.

Nothing may be lost: the centre's unique event ids must equal the agent's own count (``--summary-json``),
or, after a SIGKILL, include every event that was in the outbox when the agent died. The broker keeps
sessions across its restart (persistence on) and the receiver subscribes plainly (Mosquitto does not
queue shared subscriptions for an offline receiver), so the centre's session is not what is tested: the
agent's outbox is.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.transport_util import persistent_broker


@pytest.fixture
def pbroker(tmp_path):
    """A broker that keeps sessions across its own restart; stopped even when the test fails early."""
    b = persistent_broker(tmp_path / "broker").start()
    yield b
    b.stop()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def start_centre(url: str, store: Path) -> subprocess.Popen:
    log = store.with_suffix(".log")
    store.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the receiver mid-test
        proc = subprocess.Popen(cli("centre", "listen", "--mqtt", url, "--store", str(store), "--quiet",
                                    "--client-id", "centre-1", "--session-expiry", "3600", "--group", ""),
                                stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait for its subscriptions ("listening on …" on stderr)
        if "listening on" in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"centre receiver did not start: {log.read_text()[-2000:]}")


def centre_event_ids(store: Path) -> set[str]:
    with sqlite3.connect(store / "centre.sqlite3") as con:
        return {r[0] for r in con.execute("SELECT event_id FROM events")}


def wait_ids(store: Path, want, timeout: float = 60.0) -> set[str]:
    deadline = time.monotonic() + timeout
    got: set[str] = set()
    while time.monotonic() < deadline:
        got = centre_event_ids(store) if (store / "centre.sqlite3").exists() else set()
        if want(got):
            break
        time.sleep(0.5)
    return got


def agent(url: str, state: Path, seconds: float, summary: Path | None = None, seed: int = 5) -> subprocess.Popen:
    """The agent on the synthetic scene; its log goes to ``state/../agent-{seed}.log`` (read with ``log_of``)."""
    args = ["run", "--source", f"synthetic:?seed={seed}&duration_s={seconds}&width=640&height=360",
            "--mqtt", url, "--node-id", "n-outage", "--state-dir", str(state), "--until-eof"]
    if summary:
        args += ["--summary-json", str(summary)]
    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state.parent / f"agent-{seed}.log", "a") as sink:
        return subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=sink)


def log_of(state: Path, seed: int = 5) -> str:
    return (state.parent / f"agent-{seed}.log").read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [10, 60])
def test_broker_outage_mid_run_loses_no_event(tmp_path, pbroker, outage_s):
    broker = pbroker
    url = f"mqtt://127.0.0.1:{broker.port}"
    centre = start_centre(url, tmp_path / "centre")
    summary = tmp_path / "summary.json"
    node = agent(url, tmp_path / "state", seconds=outage_s + 25, summary=summary)
    try:
        time.sleep(8)
        broker.stop()
        time.sleep(outage_s)
        broker.start()
        node.wait(timeout=outage_s + 240)
        assert node.returncode == 0, log_of(tmp_path / "state")
        made = json.loads(summary.read_text())
        assert made["events"] > 0 and made["dropped"]["events"] == 0
        ids = wait_ids(tmp_path / "centre", lambda got: len(got) >= made["events"])
        assert len(ids) == made["events"], f"centre has {len(ids)} unique events, the agent made {made['events']}"
        with sqlite3.connect(tmp_path / "centre" / "centre.sqlite3") as con:
            historical = con.execute("SELECT COUNT(*) FROM events WHERE historical = 1").fetchone()[0]
        assert historical > 0, "events held through the outage are marked historical"
    finally:
        node.kill()
        centre.terminate()
        centre.wait(10)
        broker.stop()


@pytest.mark.slow
def test_sigkilled_agent_delivers_its_outbox_after_restart(tmp_path, pbroker):
    broker = pbroker
    url = f"mqtt://127.0.0.1:{broker.port}"
    centre = start_centre(url, tmp_path / "centre")
    state = tmp_path / "state"
    try:
        # the broker goes away first so the outbox holds undelivered events when the agent dies
        node = agent(url, state, seconds=60)
        time.sleep(6)
        broker.stop()
        time.sleep(10)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        with sqlite3.connect(state / "outbox.sqlite3") as con:
            pending = {json.loads(p)["event_id"] for (p,) in
                       con.execute("SELECT payload FROM outbox WHERE kind = 'event'")}
        assert pending, "the outage should have left events in the outbox"
        broker.start()
        summary = tmp_path / "summary.json"
        again = agent(url, state, seconds=5, summary=summary, seed=6)
        again.wait(timeout=240)
        assert again.returncode == 0, log_of(state, seed=6)
        ids = wait_ids(tmp_path / "centre", lambda got: pending <= got)
        assert pending <= ids, f"{len(pending - ids)} of {len(pending)} outboxed events never arrived"
        with sqlite3.connect(state / "outbox.sqlite3") as con:
            assert con.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'event'").fetchone()[0] == 0
    finally:
        centre.terminate()
        centre.wait(10)
        broker.stop()
