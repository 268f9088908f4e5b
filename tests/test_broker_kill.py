"""Broker SIGKILLs (no clean shutdown, no final save) with the centre on a persistent session.

What the node counts as published must reach the centre: the broker runs the persistence lines of the
generated fleet config (``broker_config.config_text``), the centre receiver keeps one persistent session,
and the agent runs the synthetic scene while the broker is killed 4 times (3 s down each). The centre
itself is stopped across the second and third kill: what the node sends meanwhile exists only in the
centre's session on the broker (or, while the broker does not know that session, in the node's outbox).

One short run is in the suite. The issue's soak (10 runs of a 60 s scene) is the same test repeated:
``KILL_SOAK_RUNS=10 KILL_SOAK_RUN_S=60 python -m pytest -m slow tests/test_broker_kill.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from provisioning.broker_config import BrokerLimits, persistence_lines
from provisioning.local_broker import run_as_me
from tests.broker import Broker
from tests.test_agent_outage import agent, log_of, start_centre, wait_ids

# not EDGECAM_…: the agent reads every EDGECAM_* variable as config
RUNS = int(os.environ.get("KILL_SOAK_RUNS", "1"))
RUN_S = int(os.environ.get("KILL_SOAK_RUN_S", "30"))
KILLS = 4
DOWN_S = 3.0


def generated_persistence(db: Path) -> str:
    """The persistence lines `edgecam broker-config` writes with its default limits (``config_text`` takes
    them from ``persistence_lines``; its TLS listener is not needed here)."""
    return "\n".join(persistence_lines(db, BrokerLimits().autosave_changes))


class KillableBroker(Broker):
    """Plain loopback listener plus the fleet config's persistence; ``kill()`` is a SIGKILL."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        db = workdir / "db"
        db.mkdir(parents=True, exist_ok=True)
        self.conf = f"{run_as_me()}listener {self.port} 127.0.0.1\nallow_anonymous true\n{generated_persistence(db)}\n"

    def config_text(self) -> str:  # no "persistence false" in front of ours
        return f"log_dest file {self.workdir / 'mosquitto.log'}\nlog_type all\n{self.conf}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None


def centre_thumbs_ok(store: Path) -> int:
    with sqlite3.connect(store / "centre.sqlite3") as con:
        return con.execute("SELECT COUNT(*) FROM events WHERE thumb_status = 'ok'").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("run", range(RUNS))
def test_broker_sigkills_lose_nothing_the_node_published(tmp_path: Path, run: int, monkeypatch, processes) -> None:
    # the node reconnects within a second of each restart, so it publishes while the centre is away
    monkeypatch.setenv("EDGECAM_MQTT__BACKOFF_MIN_S", "0.2")
    monkeypatch.setenv("EDGECAM_MQTT__BACKOFF_MAX_S", "1.0")
    broker = processes.adopt(KillableBroker(tmp_path / "broker").start())
    url = broker.url
    store = tmp_path / "centre"
    centre = start_centre(processes, url, store)  # client id centre-1, session expiry 3600 s: a persistent session
    summary = tmp_path / "summary.json"
    node = agent(processes, url, tmp_path / "state", seconds=RUN_S, summary=summary, seed=20 + run)
    try:
        gap = (RUN_S - 4) / KILLS
        time.sleep(4)
        for k in range(KILLS):
            if k == 1:  # the centre goes away across two kills: only its persistent session holds its messages
                centre.terminate()
                centre.wait(10)
            broker.kill()
            time.sleep(DOWN_S)
            broker.start()
            if k == 2:
                time.sleep(1.0)
                centre = start_centre(processes, url, store)
            time.sleep(max(1.0, gap - DOWN_S))
        node.wait(timeout=RUN_S + 240)
        assert node.returncode == 0, log_of(tmp_path / "state", seed=20 + run)
        made = json.loads(summary.read_text())
        assert made["events"] > 0 and made["dropped"]["events"] == 0 and made["outbox_depth"] == 0
        ids = wait_ids(store, lambda got: len(got) >= made["events"], timeout=60)
        assert len(ids) == made["events"], f"centre has {len(ids)} unique events, the agent made {made['events']}"
        deadline = time.monotonic() + 30
        while centre_thumbs_ok(store) < made["thumbnails"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert centre_thumbs_ok(store) == made["thumbnails"]
    finally:
        node.kill()
        centre.terminate()
        centre.wait(10)
        broker.stop()
