"""The outbox: every event and thumbnail is stored here (SQLite, WAL) before it is published.

A row leaves only when the broker acknowledged it (``ack``) or when the bounds force a drop. Bounds are
total payload bytes and age; when over, thumbnails go first (oldest first, the newest included), then
events (oldest first), so events survive longer than pictures. Every drop is counted, in memory for this
process and persistently (``meta`` table) for the node's lifetime, and logged once per episode.

The byte bound is the smaller of ``max_bytes`` and what the disk can still take: the outbox's own bytes
plus its free pages plus the file system's free space, less ``disk_reserve_bytes`` (so logs and the OS
keep room). Below the reserve the outbox still keeps a small working set (``WORKING_SET_BYTES``, never the
disk's last ``HARD_MARGIN_BYTES``) so a node on a full disk goes on publishing live events. Within
``TIGHT_BYTES`` of the reserve the writer also checkpoints and truncates the WAL after each write, so
the WAL cannot eat the space the bound leaves. If SQLite still reports a full disk (another program took the space),
the write drops old rows to make room and tries again, and drops the new rows (counted) if that fails
too: a full disk costs data by the drop policy, never the process.

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

At open, ``PRAGMA quick_check`` reads every page once; a damaged file is moved aside and the rows that
can still be read are carried into a fresh outbox (``outbox_salvage``; ``recovery`` says what happened).
The file and its WAL are 0600 in a 0700 folder (``agent.state_files``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.atomic import fsync_dir
from agent.errors import EdgecamError
from agent.state_files import file_identity, private_dir, private_file
from agent.transport.drop_log import DropEpisodes
from agent.transport.outbox_salvage import ROW_COLUMNS, Salvage, is_damage, move_aside, quick_check, salvage

log = logging.getLogger(__name__)

KINDS = ("event", "thumb")
#: puts (transactions) between checkpoints run by the sending side (~8 pages of WAL each)
CHECKPOINT_EVERY = 32
#: free disk the outbox leaves to others (``outbox.disk_reserve_bytes``)
DISK_RESERVE_BYTES = 16 * 1024 * 1024
#: what the outbox may hold when the disk is below its reserve: enough to keep live events flowing
WORKING_SET_BYTES = 256 * 1024
#: free disk the working set never takes: a delete or checkpoint needs some room to write its WAL frames
HARD_MARGIN_BYTES = 64 * 1024
#: the WAL is truncated back to this after a checkpoint (it would otherwise keep its largest size)
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
#: free disk above the reserve below which every write also truncates the WAL (SQLite's auto-checkpoint
#: lets it reach ~4 MB while nothing is acknowledged)
TIGHT_BYTES = 2 * JOURNAL_SIZE_LIMIT
SQLITE_FULL = 13
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


def disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL ("database or disk is full"), however SQLite reported it."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == SQLITE_FULL
    return "disk is full" in str(exc)


def write_copy(path: Path, rows: Sequence[tuple], meta: Sequence[tuple], last_id: int) -> None:
    """A self-contained outbox file (no WAL left) at ``path`` (0600) holding ``rows`` (``ROW_COLUMNS``),
    ``meta`` counters and the id sequence at ``last_id`` (so new rows get ids above every earlier one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a copy left by an earlier attempt
    private_file(path)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(SCHEMA)
        con.execute("BEGIN IMMEDIATE")
        con.executemany(f"INSERT INTO outbox ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta)
        con.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
        con.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)",
                    (max([last_id, *(r[0] for r in rows)]),))
        con.execute("COMMIT")
    finally:
        con.close()


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


@dataclass(frozen=True)
class Recovery:
    """A damaged outbox found at open: where it went, why, and how many rows were carried over or lost."""

    moved_to: str
    error: str
    salvaged: int
    unreadable: int
    ts: float


class Outbox:
    """Thread-safe bounded store of unacknowledged messages; see the module doc for the drop policy."""

    def __init__(self, path: Path, max_bytes: int, max_age_s: float, clock=time.time,
                 disk_reserve_bytes: int = DISK_RESERVE_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.disk_reserve_bytes = disk_reserve_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._drops = DropEpisodes(f"outbox {self.path}")
        self.recovery: Recovery | None = None
        self.limit_bytes = max_bytes  # the byte bound at the last write (see the module doc)
        self.disk_limited = False
        self._disk_tight = False  # so little free disk that the WAL must not grow between writes
        try:
            private_dir(self.path.parent)
            try:
                self._open()
                self._load_counts()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                self._close_connections()
                self._recover(salvage(self.path, str(exc), clock()))
        except (OSError, sqlite3.Error) as exc:
            raise EdgecamError(f"state_dir {self.path}: cannot open the outbox ({exc})") from None
        self._closed = False
        self._ck_lock = threading.Lock()
        self._puts_since_checkpoint = 0

    def _open(self) -> None:
        private_file(self.path)
        for suffix in ("-wal", "-shm"):  # left by an older version at 0644
            if Path(f"{self.path}{suffix}").exists():
                private_file(Path(f"{self.path}{suffix}"))
        self._w = self._connect("FULL")
        quick_check(self._w)
        self._w.executescript(SCHEMA)
        self._r = self._connect("NORMAL")
        self._ck = self._connect("NORMAL")  # checkpoints only, never under ``_lock``
        self._page_size = int(self._w.execute("PRAGMA page_size").fetchone()[0])
        self._identity = file_identity(self.path)

    def lost(self) -> bool:
        """The file was deleted or replaced under the open connections (they write to an unlinked inode then).

        By name, not by an extra descriptor on the file: closing any descriptor of a database drops every
        POSIX lock SQLite holds on it. The open connections keep the inode alive, so its number cannot be
        reused by a new file while this compares."""
        with self._lock:
            return not self._closed and file_identity(self.path) != self._identity

    def rehome(self) -> int:
        """Carry every row and counter into a fresh file at ``path`` (its folder recreated); the row count.

        The old connections can still read the unlinked file, so nothing is lost. The copy is built beside
        the path and renamed into place only after the old connections are closed: closing the last one
        deletes ``<path>-wal`` by name, which must not be the fresh file's WAL. Row ids are kept and so is
        the id sequence, so the sender's cursor and its in-flight rows stay valid. Raises ``OSError`` or
        ``sqlite3.Error`` with the old file still in use when the copy cannot be made (tried again later), and
        ``OSError`` with a file open at ``path`` when the copy cannot be put in place (it stays beside it)."""
        with self._lock, self._ck_lock:
            rows = self._w.execute(f"SELECT {ROW_COLUMNS} FROM outbox ORDER BY id").fetchall()
            meta = self._w.execute("SELECT key, value FROM meta").fetchall()
            last = self._w.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            private_dir(self.path.parent)
            fresh = self.path.with_name(f".{self.path.name}.rehome")
            write_copy(fresh, rows, meta, last[0] if last else 0)
            self._close_connections()
            try:
                if self.path.exists():  # replaced by some other file: keep it for inspection, do not mix
                    log.warning("outbox %s replaced under the agent: moved to %s", self.path,
                                move_aside(self.path, self._clock(), "replaced"))
                for suffix in ("-wal", "-shm"):  # the deleted file's, if its connections left them behind
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
                os.replace(fresh, self.path)
                fsync_dir(self.path.parent)
            except BaseException:
                # the old connections are gone: open what is at the path now (the copy if it got there, else
                # a new file, the copy waiting beside it), so the agent goes on writing instead of crashing
                self._open()
                raise
            self._open()
            return len(rows)

    def _load_counts(self) -> None:
        row = self._w.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox").fetchone()
        self._depth, self._bytes, self.startup_max_id = int(row[0]), int(row[1]), int(row[2])
        self.dropped = {k: 0 for k in KINDS}  # this process
        self.acked = {k: 0 for k in KINDS}  # this process
        self.dropped_total = {k: self._meta(f"dropped_{k}") for k in KINDS}  # node lifetime (persisted)
        self._unsaved_meta: dict[str, int] = {}  # counter increments a full disk did not take yet

    def _connect(self, sync: str) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={sync}")
        con.execute("PRAGMA busy_timeout=30000")
        con.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        return con

    def _close_connections(self) -> None:
        for name in ("_ck", "_r", "_w"):
            con = getattr(self, name, None)
            if con is not None:
                with contextlib.suppress(sqlite3.Error):
                    con.close()

    def _recover(self, found: Salvage) -> None:
        """Open a fresh outbox and put back what the damaged one still held (same ids, counters kept)."""
        self._open()
        self._load_counts()
        meta = found.meta
        if meta is None:  # counters unreadable: bd_seq must still grow, so continue from the clock
            meta = {"bd_seq": int(self._clock())}
        with self._transaction(self._w) as con:
            con.executemany(f"INSERT INTO outbox ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", found.rows)
            con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
        self._load_counts()  # depth, bytes, totals and startup_max_id from what was carried over
        self.recovery = Recovery(moved_to=str(found.moved_to), error=found.error, salvaged=len(found.rows),
                                 unreadable=found.unreadable, ts=self._clock())
        log.error("outbox %s was damaged (%s): moved to %s; %d row(s) carried over, %d unreadable",
                  self.path, found.error, found.moved_to, len(found.rows), found.unreadable)

    @contextlib.contextmanager
    def _transaction(self, con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; on failure roll back (unless SQLite already did) and restore the totals."""
        saved = (dict(self.dropped), dict(self.dropped_total), dict(self.acked), dict(self._unsaved_meta),
                 self._depth, self._bytes)
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            # after SQLITE_FULL or an I/O error SQLite has rolled back already; a second ROLLBACK would
            # raise "no transaction is active" and hide the real error
            if con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
            self.dropped, self.dropped_total, self.acked, self._unsaved_meta, self._depth, self._bytes = saved
            raise

    # ------------------------------------------------------------ writing

    def put(self, items: Sequence[Item]) -> list[int]:
        """Store items in one transaction (in order), then enforce the bounds; returns the new row ids.

        A full disk never raises: rows are dropped by the policy (the new ones last) and counted."""
        if not items:
            return []
        now = self._clock()
        with self._lock:
            limit = self._limit()
            try:
                ids = self._insert(items, now, limit)
                self._drops.end("disk full")
            except sqlite3.OperationalError as exc:
                if not disk_full(exc):
                    raise
                ids = self._insert_on_full_disk(items, now, str(exc))
            if self._disk_tight:
                self._truncate_wal()
            if self._bytes <= limit // 2:
                self._drops.end("cap")
            self._puts_since_checkpoint += 1
            return ids

    def _insert(self, items: Sequence[Item], now: float, limit: int, reason: str = "cap",
                why: str | None = None) -> list[int]:
        """One transaction: expired rows out, room made by the drop policy, then the rows that stay go in.

        Old rows are deleted before the new ones are written so the new ones reuse their pages: at the
        cap the file does not grow, which is what keeps a full disk writable."""
        with self._transaction(self._w) as con:
            self._drop_expired(con, now)
            keep = self._make_room(con, items, limit, reason, why or self._cap_reason(limit))
            ids = []
            for it in keep:
                cur = con.execute(
                    "INSERT INTO outbox (kind, topic, size, created, late, payload) VALUES (?, ?, ?, ?, ?, ?)",
                    (it.kind, it.topic, len(it.payload), now, int(it.late), it.payload),
                )
                ids.append(int(cur.lastrowid))
            self._bytes += sum(len(it.payload) for it in keep)
            self._depth += len(keep)
        return ids

    def _insert_on_full_disk(self, items: Sequence[Item], now: float, error: str) -> list[int]:
        """SQLite said the disk is full: free the WAL, then write the rows in the space of older ones
        (thumbnails first); without the new thumbnails if that fails; else drop the new rows, counted."""
        self._truncate_wal()
        events = [it for it in items if it.kind == "event"]
        for attempt in (list(items), events):  # events outlive pictures
            if not attempt:
                continue
            try:
                return self._insert(attempt, now, self._bytes, "disk full", error)
            except sqlite3.OperationalError as exc:
                if not disk_full(exc):
                    raise
                self._truncate_wal()
        lost = {k: sum(1 for it in items if it.kind == k) for k in KINDS}
        self._count_drops(lost, persist=None)
        self._drops.note("disk full", lost, error)
        return []

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database and cut it to zero bytes (two fsyncs; only when disk is short)."""
        try:
            self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("outbox: WAL truncation failed (%s)", exc)

    def _limit(self) -> int:
        """The byte bound now: ``max_bytes``, or less when the disk is short (see the module doc)."""
        try:
            st = os.statvfs(self.path.parent)
            free_pages = int(self._w.execute("PRAGMA freelist_count").fetchone()[0]) * self._page_size
        except (OSError, sqlite3.Error):
            return self.max_bytes
        fs_free = st.f_bavail * st.f_frsize
        usable = self._bytes + free_pages + fs_free
        room = usable - self.disk_reserve_bytes
        # half: pages are not full and a write needs its WAL frames too, so payload bytes cost about double
        floor = min(WORKING_SET_BYTES, (usable - HARD_MARGIN_BYTES) // 2)
        self.limit_bytes = max(0, min(self.max_bytes, max(room, floor)))
        self.disk_limited = room < self.max_bytes
        self._disk_tight = fs_free - self.disk_reserve_bytes < TIGHT_BYTES
        return self.limit_bytes

    def _cap_reason(self, limit: int) -> str:
        if self.disk_limited:
            return (f"over the disk-limited cap of {limit} bytes (free space less outbox.disk_reserve_bytes "
                    f"{self.disk_reserve_bytes})")
        return f"over outbox.max_bytes {self.max_bytes}"

    def _drop_expired(self, con: sqlite3.Connection, now: float) -> None:
        expired = con.execute(
            "SELECT id, kind, size FROM outbox WHERE created < ? ORDER BY id", (now - self.max_age_s,)
        ).fetchall()
        self._drops.note("age", self._delete_dropped(con, expired), f"older than outbox.max_age_s {self.max_age_s}s")

    def _make_room(self, con: sqlite3.Connection, incoming: Sequence[Item], limit: int, reason: str,
                   why: str) -> list[Item]:
        """Inside a transaction: the drop policy for ``limit`` over stored rows plus ``incoming``.

        Thumbnails, then events, then anything; oldest first, stored rows before the incoming ones (which
        are the newest). Deletes the stored victims and returns the incoming items that stay."""
        excess = self._bytes + sum(len(it.payload) for it in incoming) - limit
        lost: set[int] = set()
        for kind in ("thumb", "event", None):
            if excess <= 0:
                break
            where, args = ("WHERE kind = ?", (kind,)) if kind else ("", ())
            victims = []
            for rid, k, size in con.execute(f"SELECT id, kind, size FROM outbox {where} ORDER BY id", args):
                if excess <= 0:
                    break
                victims.append((rid, k, size))
                excess -= size
            self._drops.note(reason, self._delete_dropped(con, victims), why)
            for i, it in enumerate(incoming):
                if excess <= 0:
                    break
                if i not in lost and (kind is None or it.kind == kind):
                    lost.add(i)
                    excess -= len(it.payload)
        if lost:
            counts = {k: sum(1 for i in lost if incoming[i].kind == k) for k in KINDS}
            self._count_drops(counts, persist=con)
            self._drops.note(reason, counts, why)
        return [it for i, it in enumerate(incoming) if i not in lost]

    def _delete_dropped(self, con: sqlite3.Connection, rows: Iterable[tuple[int, str, int]]) -> dict[str, int]:
        rows = list(rows)
        if not rows:
            return {}
        con.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in rows])
        counts: dict[str, int] = {}
        for _, kind, size in rows:
            counts[kind] = counts.get(kind, 0) + 1
            self._bytes -= size
            self._depth -= 1
        self._count_drops(counts, persist=con)
        return counts

    def _count_drops(self, counts: dict[str, int], persist: sqlite3.Connection | None) -> None:
        """Add to the totals; ``persist`` (inside a transaction) also stores them, else they wait for one."""
        for kind, n in counts.items():
            self.dropped[kind] = self.dropped.get(kind, 0) + n
            self.dropped_total[kind] = self.dropped_total.get(kind, 0) + n
            key = f"dropped_{kind}"
            self._unsaved_meta[key] = self._unsaved_meta.get(key, 0) + n
        if persist is not None:
            self._save_meta(persist)

    def _save_meta(self, con: sqlite3.Connection) -> None:
        for key, n in self._unsaved_meta.items():
            con.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
                (key, n, n),
            )
        self._unsaved_meta = {}

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
        """Count a publish attempt (it makes a resend ``historical``); skipped, not raised, on a full disk."""
        if not ids:
            return
        with self._lock, self._unless_disk_full("mark attempts"), self._transaction(self._r) as con:
            con.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])

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
        """Delete rows; on a full disk they stay (and are sent again: a duplicate, not a loss)."""
        if not ids:
            return 0
        rows: list = []
        with self._lock, self._unless_disk_full("delete sent rows"):
            with self._transaction(self._r) as con:
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
                    self._save_meta(con)
            if self._disk_tight:  # the deletes' WAL frames would otherwise hold on to the space they freed
                self._truncate_wal()
        if self._bytes <= self.limit_bytes // 2:
            self._drops.end("cap")
        return len(rows)

    @contextlib.contextmanager
    def _unless_disk_full(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if not disk_full(exc):
                raise
            self._drops.note("disk full", {}, str(exc))
            log.debug("outbox: cannot %s: %s", what, exc)

    def expire(self) -> None:
        """Apply the bounds now (the sender calls this periodically; ``put`` does it too)."""
        with self._lock, self._unless_disk_full("expire rows"):
            with self._transaction(self._r) as con:
                limit = self._limit()
                self._drop_expired(con, self._clock())
                self._make_room(con, [], limit, "cap", self._cap_reason(limit))
            if self._disk_tight:
                self._truncate_wal()
            oldest = self._r.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
            if oldest is None or self._clock() - oldest < self.max_age_s / 2:
                self._drops.end("age")
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
        """A persisted counter (``bd_seq`` and the like); returns the new value.

        On a full disk the increment is kept in memory and written with the next one that succeeds, so
        the value still grows within this process (a restart before then may repeat it)."""
        with self._lock:
            self._unsaved_meta[key] = self._unsaved_meta.get(key, 0) + by
            try:
                with self._transaction(self._w) as con:
                    self._save_meta(con)
                    return int(con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
            except sqlite3.OperationalError as exc:
                if not disk_full(exc):
                    raise
                log.warning("outbox: %s not saved (%s); kept in memory until the disk has room", key, exc)
                return self._meta(key) + self._unsaved_meta[key]

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

    def dropping(self) -> list[str]:
        """Reasons of the drop episodes going on now (``age``, ``cap``, ``disk full``)."""
        return self._drops.active()

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
            self._close_connections()
