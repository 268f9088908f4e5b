"""The outbox: every event and thumbnail is stored here (SQLite, WAL) before it is published.

A row leaves only when the broker acknowledged it (``ack``) or when the bounds force a drop. Bounds are
total payload bytes and age; when over, thumbnails go first (oldest first, the newest included), then
events (oldest first), so events survive longer than pictures. Every drop is counted, in memory for this
process and persistently (``meta`` table) for the node's lifetime.

Two connections share one file: the writer (``synchronous=FULL``: a row that ``put`` returned for
survives a power cut) and the sender's (``synchronous=NORMAL``: losing an ack-delete only causes a
duplicate, which consumers tolerate). One lock serialises them so the in-memory totals stay exact.

Checkpoints (copying the WAL into the database file, two fsyncs) are the sending side's job: ``ack``,
``drop`` and ``expire`` run one on a third connection, outside the lock, once ``CHECKPOINT_EVERY`` puts
went into the WAL. ``put``, on the pipeline's thread, then pays only for its own commit (one fsync), and
the WAL stays small enough to be rewritten in place rather than grown (growing it makes every fsync also
commit file-size metadata). While nothing is acknowledged (broker unreachable) SQLite's own
auto-checkpoint on the writer (at 1,000 pages) still bounds the WAL. Durability is unchanged: every
transaction is on disk when its ``COMMIT`` returns, checkpointed or not.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EdgecamError

log = logging.getLogger(__name__)

KINDS = ("event", "thumb")
#: puts (transactions) between checkpoints run by the sending side (~8 pages of WAL each)
CHECKPOINT_EVERY = 32
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    late INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Item:
    """One row to store: ``late`` marks an item submitted while the link was down (it will be historical)."""

    kind: str
    topic: str
    payload: bytes
    late: bool = False


@dataclass(frozen=True)
class Row:
    id: int
    kind: str
    topic: str
    payload: bytes
    created: float
    attempts: int
    late: bool


class Outbox:
    """Thread-safe bounded store of unacknowledged messages; see the module doc for the drop policy."""

    def __init__(self, path: Path, max_bytes: int, max_age_s: float, clock=time.time) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._w = self._connect("FULL")
            self._w.executescript(SCHEMA)
            self._r = self._connect("NORMAL")
            self._ck = self._connect("NORMAL")  # checkpoints only, never under ``_lock``
        except (OSError, sqlite3.Error) as exc:
            raise EdgecamError(f"state_dir {self.path}: cannot open the outbox ({exc})") from None
        row = self._w.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox").fetchone()
        self._depth, self._bytes, self.startup_max_id = int(row[0]), int(row[1]), int(row[2])
        self.dropped = {k: 0 for k in KINDS}  # this process
        self.acked = {k: 0 for k in KINDS}  # this process
        self.dropped_total = {k: self._meta(f"dropped_{k}") for k in KINDS}  # node lifetime (persisted)
        self._closed = False
        self._ck_lock = threading.Lock()
        self._puts_since_checkpoint = 0

    def _connect(self, sync: str) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={sync}")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    # ------------------------------------------------------------ writing

    def put(self, items: Sequence[Item]) -> list[int]:
        """Store items in one transaction (in order), then enforce the bounds; returns the new row ids."""
        if not items:
            return []
        now = self._clock()
        with self._lock:
            con = self._w
            con.execute("BEGIN IMMEDIATE")
            try:
                ids = []
                for it in items:
                    cur = con.execute(
                        "INSERT INTO outbox (kind, topic, size, created, late, payload) VALUES (?, ?, ?, ?, ?, ?)",
                        (it.kind, it.topic, len(it.payload), now, int(it.late), it.payload),
                    )
                    ids.append(int(cur.lastrowid))
                added = sum(len(it.payload) for it in items)
                self._bytes += added
                self._depth += len(items)
                self._enforce(con, now)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                self._recount(con)
                raise
            self._puts_since_checkpoint += 1
            return ids

    def _recount(self, con: sqlite3.Connection) -> None:
        row = con.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(row[0]), int(row[1])

    def _enforce(self, con: sqlite3.Connection, now: float) -> None:
        """Inside a transaction: drop expired rows, then thumbnails, then events, until within bounds."""
        expired = con.execute(
            "SELECT id, kind, size FROM outbox WHERE created < ? ORDER BY id", (now - self.max_age_s,)
        ).fetchall()
        self._delete_dropped(con, expired)
        for kind in ("thumb", "event"):
            if self._bytes <= self.max_bytes:
                return
            victims, freed = [], 0
            excess = self._bytes - self.max_bytes
            for rid, k, size in con.execute("SELECT id, kind, size FROM outbox WHERE kind = ? ORDER BY id", (kind,)):
                victims.append((rid, k, size))
                freed += size
                if freed >= excess:
                    break
            self._delete_dropped(con, victims)
        if self._bytes > self.max_bytes:  # other kinds (none today) go last
            rows = con.execute("SELECT id, kind, size FROM outbox ORDER BY id").fetchall()
            victims, freed = [], 0
            for r in rows:
                if freed >= self._bytes - self.max_bytes:
                    break
                victims.append(r)
                freed += r[2]
            self._delete_dropped(con, victims)

    def _delete_dropped(self, con: sqlite3.Connection, rows: Iterable[tuple[int, str, int]]) -> None:
        rows = list(rows)
        if not rows:
            return
        con.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        counts: dict[str, int] = {}
        for _, kind, size in rows:
            counts[kind] = counts.get(kind, 0) + 1
            self._bytes -= size
            self._depth -= 1
        for kind, n in counts.items():
            self.dropped[kind] = self.dropped.get(kind, 0) + n
            self.dropped_total[kind] = self.dropped_total.get(kind, 0) + n
            con.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
                (f"dropped_{kind}", n, n),
            )

    # ------------------------------------------------------------ sending side

    def next_rows(self, after_id: int, limit: int) -> list[Row]:
        """Oldest rows with ``id > after_id`` (the sender's cursor), in order."""
        with self._lock:
            cur = self._r.execute(
                "SELECT id, kind, topic, payload, created, attempts, late FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
            return [Row(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], bool(r[6])) for r in cur]

    def mark_attempted(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._r.execute("BEGIN")
            self._r.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])
            self._r.execute("COMMIT")

    def ack(self, ids: Sequence[int]) -> int:
        """Delete acknowledged rows (one transaction); returns how many still existed. Sending side only."""
        n = self._remove(ids, dropped=False)
        self.checkpoint_if_due()
        return n

    def drop(self, ids: Sequence[int]) -> int:
        """Delete rows that can never be delivered (too large for the broker, refused); counted as drops.
        Sending side only."""
        n = self._remove(ids, dropped=True)
        self.checkpoint_if_due()
        return n

    def _remove(self, ids: Sequence[int], dropped: bool) -> int:
        if not ids:
            return 0
        with self._lock:
            con = self._r
            con.execute("BEGIN IMMEDIATE")
            try:
                rows = []
                for i in ids:
                    r = con.execute("SELECT id, kind, size FROM outbox WHERE id = ?", (i,)).fetchone()
                    if r:
                        rows.append(r)
                if dropped:
                    self._delete_dropped(con, rows)
                else:
                    con.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
                    for _, kind, size in rows:
                        self.acked[kind] = self.acked.get(kind, 0) + 1
                        self._bytes -= size
                        self._depth -= 1
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                self._recount(con)
                raise
            return len(rows)

    def expire(self) -> None:
        """Apply the age bound now (the sender calls this periodically; ``put`` does it too)."""
        with self._lock:
            con = self._r
            con.execute("BEGIN IMMEDIATE")
            try:
                self._enforce(con, self._clock())
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                self._recount(con)
                raise
        self.checkpoint_if_due()

    def checkpoint_if_due(self) -> bool:
        """Copy the WAL into the database once ``CHECKPOINT_EVERY`` puts went in (see the module doc).

        PASSIVE: never waits for the writer, which may commit meanwhile (those frames wait for the next
        checkpoint). Returns whether one ran. Sending side only: the pipeline must not pay for it.
        """
        if self._puts_since_checkpoint < CHECKPOINT_EVERY:
            return False
        with self._ck_lock:
            if self._closed:
                return False
            self._puts_since_checkpoint = 0
            try:
                self._ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # best effort: the writer's auto-checkpoint still bounds the WAL
                log.warning("outbox: checkpoint failed (%s)", exc)
                return False
        return True

    # ------------------------------------------------------------ counters and stats

    def incr(self, key: str, by: int = 1) -> int:
        """A persisted counter (``bd_seq`` and the like); returns the new value."""
        with self._lock:
            con = self._w
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
                (key, by, by),
            )
            value = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
            con.execute("COMMIT")
            return int(value)

    def meta(self, key: str) -> int:
        with self._lock:
            return self._meta(key)

    def _meta(self, key: str) -> int:
        row = self._w.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def bytes(self) -> int:
        return self._bytes

    def oldest_age_s(self) -> float | None:
        with self._lock:
            if self._closed:
                return None
            row = self._r.execute("SELECT MIN(created) FROM outbox").fetchone()
        return None if row is None or row[0] is None else max(0.0, self._clock() - row[0])

    def close(self) -> None:
        with self._lock, self._ck_lock:
            if self._closed:
                return
            self._closed = True
            for con in (self._ck, self._r, self._w):
                with contextlib.suppress(sqlite3.Error):
                    con.close()
