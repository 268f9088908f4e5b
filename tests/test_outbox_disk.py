"""A full disk under the outbox: the drop policy runs, the node keeps going (a real 2 MiB tmpfs).

The state folder sits on a tmpfs the test mounts (tests run as root here) with 200 KiB left, as on a
node whose SD card filled up. Without a mount (not root, no tmpfs) the tests skip and say why:
``RLIMIT_FSIZE`` would fail writes with EFBIG, which SQLite reports as an I/O error, not a full disk,
so it would not test the same path.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.events.ids import SEQ_FILE, SeqStore
from agent.transport.outbox import Item, Outbox
from tests.conftest import REPO
from tests.transport_util import Subscriber, persistent_broker
from tests.waiting import wait_until

FS_BYTES = 2 * 1024 * 1024
LEFT_FREE = 200 * 1024
BIG = 256 * 1024 * 1024  # outbox.max_bytes default: the disk, not the setting, must be the limit


def _mount_small_fs(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {where} ({done.stderr.strip() or 'not root'}); RLIMIT_FSIZE gives "
                    "EFBIG, which SQLite reports as an I/O error rather than a full disk")
    st = os.statvfs(where)
    filler = st.f_bavail * st.f_frsize - LEFT_FREE
    with open(where / "filler", "wb") as fh:  # what else filled the card: logs, a core dump
        fh.write(b"\0" * filler)
    return where


@pytest.fixture
def small_fs(tmp_path: Path):
    fs = _mount_small_fs(tmp_path / "fs")
    yield fs
    subprocess.run(["umount", "-l", str(fs)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_disk_applies_the_drop_policy_and_the_outbox_keeps_working(small_fs: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="agent.transport.outbox")
    ob = Outbox(small_fs / "state" / "outbox.sqlite3", BIG, 3600)  # default disk reserve: 16 MiB
    # broker down: nothing is acknowledged; 3 MB of thumbnails and events into 200 kB of disk
    for i in range(200):
        ob.put([Item("thumb", f"t/thumbs/{i}", os.urandom(15_000)), Item("event", "t/events", b'{"n":%d}' % i)])
    kinds = [r.kind for r in ob.next_rows(0, 10_000)]
    assert ob.dropped["thumb"] > 150  # the pictures went first …
    assert kinds.count("event") > 0 and kinds.count("event") + ob.dropped["event"] == 200  # … every event counted
    assert ob.limit_bytes < BIG and ob.disk_limited
    assert ob.bytes == sum(len(r.payload) for r in ob.next_rows(0, 10_000))
    assert free_bytes(small_fs) > 0
    starts = [r for r in caplog.records if "dropping rows" in r.getMessage()]
    assert 1 <= len(starts) <= 2, [r.getMessage() for r in starts]  # once per episode, not once per row
    assert ob.dropping()
    # broker back: the backlog is acknowledged, and new rows are stored and can be sent
    assert ob.ack([r.id for r in ob.next_rows(0, 10_000)]) > 0 and ob.depth == 0
    for i in range(20):
        ids = ob.put([Item("thumb", f"t/thumbs/n{i}", os.urandom(15_000)), Item("event", "t/events", b"{}")])
        assert len(ids) == 2
        assert ob.ack(ids) == 2
    assert "cap" not in ob.dropping()
    assert any("no longer dropping" in r.getMessage() for r in caplog.records)
    ob.close()


def test_seq_store_on_a_full_disk_goes_on_in_memory_and_saves_later(small_fs: Path) -> None:
    state = small_fs / "state"
    store = SeqStore(state, block=4)
    assert [store.next() for _ in range(3)] == [0, 1, 2]
    (small_fs / "more").write_bytes(b"\0" * (free_bytes(small_fs) - 0))  # now truly full
    assert [store.next() for _ in range(10)] == list(range(3, 13))  # a reservation write failed: no raise
    assert int((state / SEQ_FILE).read_text()) == 4  # the file still has the last good reservation
    assert not (state / f"{SEQ_FILE}.tmp").exists()
    (small_fs / "more").unlink()
    store._retry_at = 0.0  # the retry is due now (every RETRY_S otherwise)
    assert store.next() == 13
    assert int((state / SEQ_FILE).read_text()) > 13


def test_state_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ob = Outbox(state / "outbox.sqlite3", BIG, 3600)
    ob.put([Item("thumb", "t/thumbs/1", b"\xff\xd8" + bytes(100))])
    SeqStore(state).next()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm", SEQ_FILE):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    ob.close()


def test_drops_by_the_byte_bound_are_logged_once_per_episode(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="agent.transport.outbox")
    ob = Outbox(tmp_path / "o.sqlite3", 64 * 1024, 3600)
    for i in range(50):
        ob.put([Item("thumb", f"t/thumbs/{i}", bytes(5_000)), Item("event", "t/events", b"{}")])
    assert ob.dropped["thumb"] > 30
    assert [r.getMessage() for r in caplog.records if "dropping rows" in r.getMessage()] == [
        f"outbox {tmp_path / 'o.sqlite3'}: dropping rows (cap): over outbox.max_bytes 65536; thumbnails go before "
        "events, oldest first (logged once until it ends; counted in health.dropped)"]
    ob.ack([r.id for r in ob.next_rows(0, 1000)])
    assert any(f"{ob.dropped['thumb']} thumbnail(s) dropped" in r.getMessage() for r in caplog.records)
    ob.close()


def _agent(url: str, state: Path, seconds: int, summary: Path, seed: int) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "agent.cli", "run", "--source",
            f"synthetic:?seed={seed}&duration_s={seconds}&width=640&height=360", "--mqtt", url,
            "--node-id", "n-full", "--state-dir", str(state), "--until-eof", "--summary-json", str(summary)]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=seconds + 120,
                          env={**os.environ, "EDGECAM_HEALTH__PERIOD_S": "2"})


@pytest.mark.slow
def test_agent_on_a_full_disk_keeps_detecting_and_publishing(small_fs: Path, tmp_path: Path) -> None:
    """The issue's run: broker down, 200 kB free; then a restart on the still-full disk, broker up."""
    state = small_fs / "state"
    down = _agent("mqtt://127.0.0.1:9", state, 20, tmp_path / "s1.json", seed=11)
    assert down.returncode == 0, down.stderr[-3000:]
    assert "Traceback" not in down.stderr, down.stderr[-3000:]
    made = json.loads((tmp_path / "s1.json").read_text())
    assert made["events"] > 0 and made["thumbnails"] > 0
    # every row is still in the outbox or counted as dropped (the 2 MiB disk, not max_bytes, is the bound)
    dropped = made["dropped"]["events"] + made["dropped"]["thumbnails"]
    assert made["outbox_depth"] + dropped == made["events"] + made["thumbnails"]

    broker = persistent_broker(tmp_path / "b").start()
    sub = Subscriber(broker.port, topic="edgecam/v1/n-full/#", persistent=True, client_id="centre-full")
    try:
        up = _agent(broker.url, state, 12, tmp_path / "s2.json", seed=12)
        assert up.returncode == 0, up.stderr[-3000:]
        again = json.loads((tmp_path / "s2.json").read_text())
        assert again["events"] > 0 and again["published"] > 0
        assert wait_until(lambda: len(sub.on("/events")) >= again["published"], timeout=30)
        health = [json.loads(m.payload) for m in sub.on("/health")]
        assert health and all(h["outbox_limit_bytes"] < BIG for h in health)
    finally:
        sub.close()
        broker.stop()
