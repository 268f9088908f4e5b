"""The SQLite outbox on its own: order, persistence, byte/age bounds and the drop policy."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.transport.outbox import Item, Outbox

MIN = 64 * 1024


def ev(n: int, size: int = 100) -> Item:
    return Item("event", "t/events", bytes([n % 256]) * size)


def th(n: int, size: int = 1000) -> Item:
    return Item("thumb", f"t/thumbs/{n}", bytes([n % 256]) * size)


def test_rows_come_back_in_order_and_leave_only_on_ack(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", MIN, 3600)
    ids = ob.put([th(1), ev(1), ev(2)])
    assert ids == sorted(ids)
    rows = ob.next_rows(0, 10)
    assert [(r.kind, r.topic) for r in rows] == [("thumb", "t/thumbs/1"), ("event", "t/events"), ("event", "t/events")]
    assert ob.next_rows(ids[1], 10)[0].id == ids[2]
    assert ob.depth == 3 and ob.bytes == 1200
    assert ob.ack([ids[0], ids[1]]) == 2
    assert ob.ack([ids[0]]) == 0  # a repeated PUBACK deletes nothing
    assert [r.id for r in ob.next_rows(0, 10)] == [ids[2]]
    assert ob.acked == {"event": 1, "thumb": 1} and ob.depth == 1 and ob.bytes == 100
    assert sqlite3.connect(tmp_path / "o.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_and_counters_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, MIN, 3600)
    ids = ob.put([ev(1), ev(2)])
    ob.mark_attempted([ids[0]])
    assert ob.incr("bd_seq") == 1
    ob.close()
    ob2 = Outbox(path, MIN, 3600)
    rows = ob2.next_rows(0, 10)
    assert [r.id for r in rows] == ids and [r.attempts for r in rows] == [1, 0]
    assert ob2.startup_max_id == ids[-1]
    assert ob2.incr("bd_seq") == 2
    assert ob2.depth == 2 and ob2.bytes == 200


def test_full_outbox_drops_thumbnails_first_oldest_first(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", MIN, 3600)
    ob.put([th(i, 10_000) for i in range(5)])  # 50 kB of thumbnails
    ob.put([ev(i, 1000) for i in range(10)])  # 10 kB of events: 60 kB total, under 64 KiB
    assert ob.dropped == {"event": 0, "thumb": 0}
    ob.put([ev(99, 10_000)])  # 70 kB: the oldest thumbnail must go
    assert ob.dropped == {"event": 0, "thumb": 1}
    topics = [r.topic for r in ob.next_rows(0, 100) if r.kind == "thumb"]
    assert topics == [f"t/thumbs/{i}" for i in range(1, 5)]
    assert sum(1 for r in ob.next_rows(0, 100) if r.kind == "event") == 11
    assert ob.bytes <= MIN


def test_only_events_left_drops_new_thumbnail_then_oldest_events(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, MIN, 3600)
    ob.put([ev(i, 1024) for i in range(64)])  # exactly full
    ob.put([th(1, 2000)])
    assert ob.dropped == {"event": 0, "thumb": 1}  # the thumbnail, not an event
    ob.put([ev(100, 1024)])
    assert ob.dropped == {"event": 1, "thumb": 1}
    first = ob.next_rows(0, 1)[0]
    assert first.payload[0] == 1  # event 0 was the one dropped
    ob.close()
    assert Outbox(path, MIN, 3600).dropped_total == {"event": 1, "thumb": 1}  # persisted


def test_age_bound_drops_expired_rows(tmp_path: Path) -> None:
    now = [1000.0]
    ob = Outbox(tmp_path / "o.sqlite3", MIN, max_age_s=60, clock=lambda: now[0])
    ob.put([th(1), ev(1)])
    now[0] += 30
    ob.put([ev(2)])
    now[0] += 40  # the first two are 70 s old now
    ob.expire()
    assert ob.dropped == {"event": 1, "thumb": 1}
    assert [r.created for r in ob.next_rows(0, 10)] == [1030.0]
    assert ob.oldest_age_s() == 40.0


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", 16 * 1024 * 1024, 3600)

    def writer(k: int) -> None:
        for i in range(50):
            ob.put([th(k * 1000 + i, 300), ev(k * 1000 + i, 50)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    acked = 0
    while any(t.is_alive() for t in threads) or ob.depth:
        rows = ob.next_rows(0, 25)
        acked += ob.ack([r.id for r in rows])
    for t in threads:
        t.join()
    assert acked == 400 and ob.depth == 0 and ob.bytes == 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["event", "thumb"]), st.integers(1, 30_000)),
                         min_size=1, max_size=6), min_size=1, max_size=25))
def test_drop_policy_invariants(tmp_path_factory, batches) -> None:
    """Within bounds after every put; an event is dropped only when no thumbnail is left; all accounted."""
    ob = Outbox(tmp_path_factory.mktemp("ob") / "o.sqlite3", MIN, 3600)
    stored = 0
    for batch in batches:
        before = dict(ob.dropped)
        ob.put([Item(k, f"t/{k}", b"x" * n) for k, n in batch])
        stored += len(batch)
        kinds = [r.kind for r in ob.next_rows(0, 10_000)]
        assert ob.bytes <= MIN
        assert ob.bytes == sum(len(r.payload) for r in ob.next_rows(0, 10_000))
        if ob.dropped["event"] > before["event"]:
            assert "thumb" not in kinds
        assert ob.depth == len(kinds) == stored - sum(ob.dropped.values())
    ob.close()
