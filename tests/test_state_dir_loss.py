"""The state dir deleted under a running agent (a technician's ``rm -rf``, a tmpfiles cleanup): nothing lost.

A real ``edgecam run`` (synthetic scene, real Mosquitto) with a short health period, so the state-dir check
runs often. The broker goes away so the outbox holds unsent events, and the test deletes the dir. The
subscriber (a persistent session, so it misses nothing while the broker restarts) must then get every
event the agent counted (end events included), ``seq`` must never repeat (across the deletion and a
restart), and the dir must be back with its private modes and the files that lived in it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.state_dir import StateDirWatch
from agent.transport.outbox import Item, Outbox
from tests.test_agent_control import command
from tests.transport_util import Subscriber, persistent_broker, publish
from tests.waiting import wait_until

NODE = "n-gone"


def _agent(url: str, state: Path, seconds: int, summary: Path, seed: int, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "agent.cli", "run", "--source",
            f"synthetic:?seed={seed}&duration_s={seconds}&width=640&height=360", "--mqtt", url,
            "--node-id", NODE, "--state-dir", str(state), "--until-eof", "--summary-json", str(summary)]
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the agent
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink,
                                env={**os.environ, "EDGECAM_HEALTH__PERIOD_S": "0.5"})


def _events(sub: Subscriber) -> dict[str, dict]:
    """Received events by event_id (first copy wins: a resend after a reconnect is a duplicate, not news)."""
    out: dict[str, dict] = {}
    for e in sub.events():
        out.setdefault(e["event_id"], e)
    return out


def _unsent_events(outbox: Path) -> int:
    """Events submitted while the link was down (``late``): unlike rows sent just before the broker stopped,
    whose PUBACK may still be on its way to being applied, nobody can have these until the link is back."""
    try:
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'event' AND late = 1").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture
def pbroker(tmp_path):
    b = persistent_broker(tmp_path / "broker").start()
    yield b
    b.stop()


def _finished(proc: subprocess.Popen, log: Path) -> str:
    proc.wait(timeout=240)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text


@pytest.mark.slow
def test_state_dir_deleted_mid_run_loses_nothing_and_never_repeats_seq(tmp_path: Path, pbroker) -> None:
    broker, state, log = pbroker, tmp_path / "state", tmp_path / "a1.log"
    sub = Subscriber(broker.port, topic=f"edgecam/v1/{NODE}/#", persistent=True, client_id="centre-gone")
    node = _agent(broker.url, state, 30, tmp_path / "s1.json", seed=21, log=log)
    try:
        # something for the config owner and the command dedupe to keep in the state dir
        publish(broker.port, f"edgecam/v1/{NODE}/config/desired",
                json.dumps({"version": 2, "config": {"tracker": {"threshold": 0.6}}}).encode(), retain=True)
        assert sub.wait_for(lambda: any(json.loads(m.payload).get("status") == "applied"
                                        for m in sub.on("/config/reported")), 60), (tmp_path / "a1.log").read_text()
        ping = command(broker.url, NODE, "ping")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert wait_until(lambda: (state / "outbox.sqlite3").exists() and len(_events(sub)) >= 3, 120)
        broker.stop()  # so the outbox holds events nobody has yet when the dir goes
        assert wait_until(lambda: _unsent_events(state / "outbox.sqlite3") > 0, 60), log.read_text()[-3000:]
        before = len(_events(sub))
        # detached in one step, then deleted: a check landing inside a plain rmtree could recreate the dir
        # between its unlinks and its rmdir (rmtree then fails, and the test would count two recoveries)
        trash = state.rename(tmp_path / "deleted")
        shutil.rmtree(trash)
        assert wait_until(lambda: " ERROR " in log.read_text(), 60), log.read_text()[-3000:]
        broker.start()

        text = _finished(node, log)
        errors = [ln for ln in text.splitlines() if " ERROR " in ln]
        assert len(errors) == 1 and str(state) in errors[0], text[-3000:]
        moved = re.search(r"outbox: (\d+) unsent row\(s\) moved", errors[0])
        assert moved and int(moved.group(1)) > 0, errors[0]
        made = json.loads((tmp_path / "s1.json").read_text())
        assert made["events"] > before, "events were made after the deletion"
        assert made["dropped"]["events"] == 0
        assert sub.wait_for(lambda: len(_events(sub)) >= made["events"], 60)
        first = _events(sub)
        assert len(first) == made["events"], f"received {len(first)} unique events, the agent made {made['events']}"
        assert sum(e["type"] == "end" for e in first.values()) == made["events_by_type"]["end"] > 0
        seqs = sorted(e["seq"] for e in first.values())
        assert len(set(seqs)) == len(seqs), "a seq was issued twice"

        # the dir is back, private, with what lived in it
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for name in ("outbox.sqlite3", "seq", "config_state.json", "cmd_ids.json"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
        assert json.loads((state / "config_state.json").read_text())["good"]["version"] == 2
        assert json.loads((state / "cmd_ids.json").read_text()), "the ping's cmd_id is kept"

        # a restart continues seq past everything the first run issued
        again = _agent(broker.url, state, 6, tmp_path / "s2.json", seed=22, log=tmp_path / "a2.log")
        _finished(again, tmp_path / "a2.log")
        made2 = json.loads((tmp_path / "s2.json").read_text())
        assert sub.wait_for(lambda: len(_events(sub)) >= made["events"] + made2["events"], 60)
        later = [e["seq"] for i, e in _events(sub).items() if i not in first]
        assert len(later) == made2["events"] > 0
        assert min(later) > max(seqs), f"restart reissued seq: {sorted(later)[:5]} after {max(seqs)}"
    finally:
        node.kill()
        sub.close()


def test_rehome_keeps_rows_counters_and_the_id_sequence(tmp_path: Path) -> None:
    """The outbox file deleted under open connections: rows and counters move, ids continue above the old."""
    path = tmp_path / "state" / "outbox.sqlite3"
    ob = Outbox(path, 1 << 20, 3600)
    acked = ob.put([Item("event", "t/events", b'{"n":%d}' % i) for i in range(5)])
    ob.ack(acked)
    kept = ob.put([Item("event", "t/events", b'{"n":5}'), Item("thumb", "t/thumbs/x", b"\xff\xd8")])
    bd_seq = ob.incr("bd_seq")
    assert not ob.lost()
    shutil.rmtree(path.parent)
    assert ob.lost()
    ob.put([Item("event", "t/events", b'{"n":6}')])  # goes into the unlinked file, as it would in the agent
    assert ob.rehome() == 3 and not ob.lost()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = ob.next_rows(0, 100)
    assert [r.id for r in rows][:2] == kept and [r.payload for r in rows][-1] == b'{"n":6}'
    assert ob.depth == 3 and ob.meta("bd_seq") == bd_seq
    ob.ack([r.id for r in rows])
    (new,) = ob.put([Item("event", "t/events", b"{}")])
    assert new > rows[-1].id  # a sender's cursor past the old ids still sees it
    ob.close()
    reopened = Outbox(path, 1 << 20, 3600)  # what the next start finds
    assert [r.id for r in reopened.next_rows(0, 100)] == [new] and reopened.meta("bd_seq") == bd_seq
    reopened.close()


def test_rehome_that_cannot_put_the_copy_in_place_leaves_a_working_outbox(tmp_path: Path, monkeypatch) -> None:
    """After the old connections closed, a failed rename (ENOSPC, EIO) must not leave the outbox unusable."""
    path = tmp_path / "state" / "outbox.sqlite3"
    ob = Outbox(path, 1 << 20, 3600)
    ob.put([Item("event", "t/events", b'{"n":0}')])
    shutil.rmtree(path.parent)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        ob.rehome()
    monkeypatch.undo()
    assert (path.parent / f".{path.name}.rehome").exists()  # the rows wait beside it
    ob.put([Item("event", "t/events", b'{"n":1}')])  # no sqlite3.ProgrammingError: the agent goes on
    assert [r.payload for r in ob.next_rows(0, 10)] == [b'{"n":1}']
    ob.close()


def test_outbox_file_deleted_alone_is_put_back_with_its_rows(tmp_path: Path, caplog) -> None:
    """Only the database file goes (its -wal and -shm stay, in use): the watch notices it by identity, and
    closing the old connections (which delete ``-wal`` by name) does not touch the fresh file's WAL."""
    state = tmp_path / "state"
    watch = StateDirWatch(state)
    ob = Outbox(state / "outbox.sqlite3", 1 << 20, 3600)
    watch.keep("outbox", lambda: f"{ob.rehome()} row(s) moved", lost=ob.lost)
    ob.put([Item("event", "t/events", b'{"n":%d}' % i) for i in range(3)])
    assert not watch.check()
    (state / "outbox.sqlite3").unlink()
    assert (state / "outbox.sqlite3-wal").exists()
    assert watch.check() and not watch.check()
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        f"state_dir {state} lost its outbox file(s) while the agent runs: put back (folder 700); "
        "outbox: 3 row(s) moved"]
    ob.put([Item("event", "t/events", b'{"n":3}')])  # committed to the fresh file's WAL
    ob.close()
    reopened = Outbox(state / "outbox.sqlite3", 1 << 20, 3600)
    assert [r.payload for r in reopened.next_rows(0, 100)] == [b'{"n":%d}' % i for i in range(4)]
    reopened.close()
