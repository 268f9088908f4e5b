"""A damaged outbox file (garbage over real pages of a checkpointed SQLite file) must not stop the node.

It is detected at open, moved aside, the readable rows go into a fresh outbox, and they are delivered.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.contract import Topics
from agent.transport.outbox import Item, Outbox
from tests.conftest import REPO
from tests.transport_util import Subscriber, make_event
from tests.waiting import wait_until

NODE = "n-damage"
PAGE = 4096


def damaged_outbox(state: Path, events: int = 400) -> list[str]:
    """A checkpointed outbox of ``events`` events (each with a 1 kB thumbnail) with 3 middle pages garbled;
    returns the event ids in submission order."""
    path = state / "outbox.sqlite3"
    ob = Outbox(path, 256 << 20, 86_400)
    ids = []
    topics = Topics(NODE)
    for i in range(events):
        ev = make_event(i, node_id=NODE)
        ob.put([Item("thumb", topics.thumbs(ev.event_id), b"\xff\xd8" + os.urandom(1000)),
                Item("event", topics.events, ev.model_dump_json().encode())])
        ids.append(ev.event_id)
    ob.close()  # the last connection checkpoints and removes the WAL: every row is in the main file
    assert not Path(f"{path}-wal").exists()
    assert sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0] == PAGE
    pages = path.stat().st_size // PAGE
    with open(path, "r+b") as fh:
        for page in (pages // 2 - 1, pages // 2, pages // 2 + 1):
            fh.seek(page * PAGE)
            fh.write(os.urandom(PAGE))
    assert sqlite_finds_damage(path)
    return ids


def sqlite_finds_damage(path: Path) -> bool:
    try:
        return sqlite3.connect(path).execute("PRAGMA quick_check").fetchall() != [("ok",)]
    except sqlite3.DatabaseError:
        return True


def test_damaged_outbox_is_moved_aside_and_its_readable_rows_kept(tmp_path: Path) -> None:
    ids = damaged_outbox(tmp_path / "state")
    ob = Outbox(tmp_path / "state" / "outbox.sqlite3", 256 << 20, 86_400)
    rec = ob.recovery
    assert rec is not None and Path(rec.moved_to).exists() and "malformed" in rec.error
    events = [json.loads(r.payload)["event_id"] for r in ob.next_rows(0, 10_000) if r.kind == "event"]
    assert len(ids) * 0.8 < len(events) <= len(ids)  # three pages of ~800 (table or index): most survive
    assert events == [e for e in ids if e in set(events)]  # in their order
    assert ob.startup_max_id >= max(r.id for r in ob.next_rows(0, 10_000))  # they count as historical
    assert not sqlite_finds_damage(ob.path)
    assert ob.put([Item("event", "t/events", b"{}")])  # and the fresh outbox works
    ob.close()
    assert Outbox(ob.path, 256 << 20, 86_400).recovery is None  # healthy now: nothing to recover next time


@pytest.mark.slow
def test_agent_starts_on_a_damaged_outbox_and_delivers_what_it_holds(tmp_path: Path, broker) -> None:
    state = tmp_path / "state"
    ids = damaged_outbox(state)
    sub = Subscriber(broker.port, topic=f"edgecam/v1/{NODE}/#")
    try:
        args = ["run", "--source", "synthetic:?seed=3&duration_s=8&width=640&height=360", "--mqtt", broker.url,
                "--node-id", NODE, "--state-dir", str(state), "--until-eof"]
        run = subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=180, env={**os.environ, "EDGECAM_HEALTH__PERIOD_S": "2"})
        assert run.returncode == 0, run.stderr[-3000:]
        assert "was damaged" in run.stderr
        got = {e["event_id"]: e for e in (json.loads(m.payload) for m in sub.on("/events"))}
        old = [e for e in ids if e in got]
        assert len(old) > 0.8 * len(ids)  # the readable pending events were sent …
        assert all(got[e]["historical"] for e in old)  # … as held-back ones
        assert wait_until(lambda: bool(sub.on("/health")))
        health = [json.loads(m.payload) for m in sub.on("/health")]
        assert health[0]["outbox_recovered"]["salvaged"] >= len(old)
        assert health[0]["outbox_recovered"]["moved_to"].startswith(str(state / "outbox.sqlite3.damaged-"))
    finally:
        sub.close()
