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
from tests.waiting import wait_until


@pytest.fixture
def pbroker(tmp_path, processes):
    """A broker that keeps sessions across its own restart; stopped even when the test fails early."""
    return processes.adopt(persistent_broker(tmp_path / "broker").start())


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def start_centre(processes, url: str, store: Path) -> subprocess.Popen:
    """The reference receiver, returned once its subscriptions are in place; stopped by ``processes``."""
    log = store.with_suffix(".log")
    store.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the receiver mid-test
        proc = processes.popen(cli("centre", "listen", "--mqtt", url, "--store", str(store), "--quiet",
                                   "--client-id", "centre-1", "--session-expiry", "3600", "--group", ""),
                               stdout=subprocess.DEVNULL, stderr=sink)
    # "listening on …" on stderr once subscribed; 60 s is a deadline for a start that will come, not a budget
    if not wait_until(lambda: "listening on" in log.read_text() or proc.poll() is not None, 60) \
            or "listening on" not in log.read_text():
        raise RuntimeError(f"centre receiver did not start: {log.read_text()[-2000:]}")
    return proc


def centre_event_ids(store: Path) -> set[str]:
    with sqlite3.connect(store / "centre.sqlite3") as con:
        return {r[0] for r in con.execute("SELECT event_id FROM events")}


def wait_ids(store: Path, want, timeout: float = 60.0) -> set[str]:
    """The centre's event ids once ``want(ids)`` holds, or what it has after ``timeout``."""
    got: set[str] = set()

    def ready() -> bool:
        nonlocal got
        got = centre_event_ids(store) if (store / "centre.sqlite3").exists() else set()
        return bool(want(got))

    wait_until(ready, timeout, interval=0.5)
    return got


def agent(processes, url: str, state: Path, seconds: float, summary: Path | None = None,
          seed: int = 5) -> subprocess.Popen:
    """The agent on the synthetic scene; its log goes to ``state/../agent-{seed}.log`` (read with ``log_of``)."""
    args = ["run", "--source", f"synthetic:?seed={seed}&duration_s={seconds}&width=640&height=360",
            "--mqtt", url, "--node-id", "n-outage", "--state-dir", str(state), "--until-eof"]
    if summary:
        args += ["--summary-json", str(summary)]
    state.parent.mkdir(parents=True, exist_ok=True)
    with open(state.parent / f"agent-{seed}.log", "a") as sink:
        return processes.popen(cli(*args), stdout=subprocess.DEVNULL, stderr=sink)


def outbox_events(state: Path, where: str = "1") -> set[str]:
    """Event ids in the agent's outbox (``where``: an SQL condition on its rows); empty before it exists."""
    if not (state / "outbox.sqlite3").exists():
        return set()
    with sqlite3.connect(state / "outbox.sqlite3") as con:
        return {json.loads(p)["event_id"] for (p,) in
                con.execute(f"SELECT payload FROM outbox WHERE kind = 'event' AND {where}")}


def live(centre_store: Path, node: subprocess.Popen, state: Path) -> None:
    """Until the centre stored an event from the running agent (it is up and publishing)."""
    db = centre_store / "centre.sqlite3"
    assert wait_until(lambda: (db.exists() and bool(centre_event_ids(centre_store))) or node.poll() is not None,
                      120, interval=0.2), "the agent published nothing within 120 s"
    assert node.poll() is None, log_of(state)


def log_of(state: Path, seed: int = 5) -> str:
    return (state.parent / f"agent-{seed}.log").read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [10, 60])
def test_broker_outage_mid_run_loses_no_event(tmp_path, pbroker, processes, outage_s):
    broker = pbroker
    url = f"mqtt://127.0.0.1:{broker.port}"
    centre = tmp_path / "centre"
    start_centre(processes, url, centre)
    summary = tmp_path / "summary.json"
    state = tmp_path / "state"
    node = agent(processes, url, state, seconds=outage_s + 25, summary=summary)
    live(centre, node, state)
    broker.stop()
    time.sleep(outage_s)  # the outage itself
    # events made during the outage (``late``): published only after it, so only as historical
    assert wait_until(lambda: outbox_events(state, "late = 1") or node.poll() is not None, 120)
    held = outbox_events(state, "late = 1")
    assert held, "the agent made no event during the outage"
    broker.start()
    node.wait(timeout=outage_s + 240)
    assert node.returncode == 0, log_of(state)
    made = json.loads(summary.read_text())
    assert made["events"] > 0 and made["dropped"]["events"] == 0
    ids = wait_ids(centre, lambda got: len(got) >= made["events"])
    assert len(ids) == made["events"], f"centre has {len(ids)} unique events, the agent made {made['events']}"
    with sqlite3.connect(centre / "centre.sqlite3") as con:
        historical = {r[0] for r in con.execute("SELECT event_id FROM events WHERE historical = 1")}
    assert held <= historical, f"{len(held - historical)} events held through the outage not marked historical"


@pytest.mark.slow
def test_sigkilled_agent_delivers_its_outbox_after_restart(tmp_path, pbroker, processes):
    broker = pbroker
    url = f"mqtt://127.0.0.1:{broker.port}"
    centre = tmp_path / "centre"
    start_centre(processes, url, centre)
    state = tmp_path / "state"
    # the broker goes away first so the outbox holds undelivered events when the agent dies
    node = agent(processes, url, state, seconds=60)
    live(centre, node, state)
    broker.stop()
    assert wait_until(lambda: outbox_events(state) or node.poll() is not None, 120), \
        "the outage should have left events in the outbox"
    node.send_signal(signal.SIGKILL)
    node.wait(10)
    pending = outbox_events(state)
    assert pending, "the outage should have left events in the outbox"
    broker.start()
    summary = tmp_path / "summary.json"
    again = agent(processes, url, state, seconds=5, summary=summary, seed=6)
    again.wait(timeout=240)
    assert again.returncode == 0, log_of(state, seed=6)
    ids = wait_ids(centre, lambda got: pending <= got)
    assert pending <= ids, f"{len(pending - ids)} of {len(pending)} outboxed events never arrived"
    assert not outbox_events(state)
