"""Outbox checkpoints run on the sending side (ack/drop/expire), never inside ``put``."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from agent.transport.outbox import CHECKPOINT_EVERY, Item, Outbox


def batch(n: int) -> list[Item]:
    return [Item("thumb", f"t/thumbs/{n}", os.urandom(5_000)), Item("event", "t/events", b"{}" * 200)]


def test_puts_leave_checkpoints_to_the_sender(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 64 << 20, 3600)
    assert not ob.checkpoint_if_due()  # nothing written yet
    base = path.stat().st_size
    ids = []
    for i in range(CHECKPOINT_EVERY + 3):
        ids += ob.put(batch(i))
    # every row is committed (a second connection sees them) but still only in the WAL
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == len(ids)
    assert path.stat().st_size == base
    assert ob.ack(ids[:2]) == 2  # the sending side's call checkpoints
    assert path.stat().st_size > base + (CHECKPOINT_EVERY + 3) * 5_000
    assert not ob.checkpoint_if_due()  # and not again before the next CHECKPOINT_EVERY puts
    ob.close()
    assert not ob.checkpoint_if_due()  # closed: a late call from the link thread is harmless
    again = Outbox(path, 64 << 20, 3600)
    assert [r.id for r in again.next_rows(0, 1_000)] == ids[2:]
    again.close()


def test_checkpoints_concurrent_with_puts_lose_nothing(tmp_path: Path) -> None:
    """The pipeline writes while the link thread acks and checkpoints: every row arrives exactly once."""
    ob = Outbox(tmp_path / "o.sqlite3", 64 << 20, 3600)
    total = 6 * CHECKPOINT_EVERY
    written = threading.Event()

    def pipeline() -> None:
        for i in range(total):
            ob.put(batch(i))
        written.set()

    t = threading.Thread(target=pipeline)
    t.start()
    cursor, seen = 0, []
    while not (written.is_set() and ob.depth == 0):
        rows = ob.next_rows(cursor, 16)
        if rows:
            cursor = rows[-1].id
            seen += [r.topic for r in rows if r.kind == "thumb"]
            ob.ack([r.id for r in rows])
    t.join()
    assert seen == [f"t/thumbs/{i}" for i in range(total)]
    assert ob.acked == {"event": total, "thumb": total} and ob.bytes == 0
    ob.close()
