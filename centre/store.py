"""The centre's SQLite store: events upserted by ``event_id``, thumbnails joined to their events.

Several receivers may share one store (they split a shared subscription, so an event and its
thumbnail can reach different processes). Every message is handled in one ``BEGIN IMMEDIATE``
transaction, so "is the event/thumbnail already here?" and the write that follows are atomic across
processes. A thumbnail may arrive before its event: it waits in ``pending_thumbs`` until the event
brings the sha256 to verify it against, within the bounds of :class:`centre.limits.ThumbLimits` (what a
node cannot make the centre keep is refused and counted per node in ``thumb_refusals``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from agent.atomic import write_atomic
from agent.contract import Event, is_node_id, node_id_problem
from agent.errors import EdgecamError
from centre.limits import EXPIRED, ThumbLimits

DB_NAME = "centre.sqlite3"
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Event ids become file names (``{event_id}.jpg``): no slashes, no leading dot (always ``fullmatch``).
Node ids (the folder) follow the contract's node-id rule."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    track_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    top_score REAL NOT NULL,
    bbox TEXT NOT NULL,
    zones TEXT NOT NULL,
    ts TEXT NOT NULL,
    start_ts TEXT NOT NULL,
    end_ts TEXT,
    clock_synced INTEGER NOT NULL,
    historical INTEGER NOT NULL,
    thumb_sha256 TEXT,
    thumb_status TEXT,          -- NULL: no thumbnail; 'pending', 'ok', 'mismatch'
    thumb_path TEXT,
    payload TEXT NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    receiver TEXT
);
CREATE INDEX IF NOT EXISTS events_track ON events (node_id, camera_id, boot_id, track_id);
CREATE TABLE IF NOT EXISTS pending_thumbs (
    event_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    data BLOB NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS thumb_refusals (
    node_id TEXT NOT NULL,
    reason TEXT NOT NULL,       -- centre.limits.REFUSED or 'expired'
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (node_id, reason)
);
CREATE TABLE IF NOT EXISTS node_status (
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,         -- state, health, cmd/res, config/reported
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (node_id, kind)
);
CREATE TABLE IF NOT EXISTS invalid (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    error TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS tracks AS
SELECT node_id, camera_id, boot_id, track_id,
       MIN(start_ts) AS start_ts,
       MAX(ts) AS last_ts,
       (SELECT e2.type FROM events e2
         WHERE e2.node_id = e.node_id AND e2.camera_id = e.camera_id AND e2.boot_id = e.boot_id
           AND e2.track_id = e.track_id ORDER BY e2.seq DESC LIMIT 1) AS latest_type,
       (SELECT e2.label FROM events e2
         WHERE e2.node_id = e.node_id AND e2.camera_id = e.camera_id AND e2.boot_id = e.boot_id
           AND e2.track_id = e.track_id ORDER BY e2.seq DESC LIMIT 1) AS label,
       MAX(top_score) AS top_score,
       COUNT(*) AS events,
       SUM(thumb_status = 'ok') AS thumbnails
FROM events e
GROUP BY node_id, camera_id, boot_id, track_id;
"""

ThumbStatus = Literal["ok", "pending", "mismatch", "duplicate", "too_big", "node_pending_full",
                      "total_pending_full"]
"""``duplicate``: the thumbnail was already verified and written (a redelivery); nothing changed.
The last three are refusals (``centre.limits.REFUSED``): nothing was kept, the refusal was counted."""


@dataclass(frozen=True)
class EventResult:
    new: bool
    thumb: ThumbStatus | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """One SQLite connection (WAL) plus the thumbnail folder, used from one thread."""

    def __init__(self, root: Path, receiver: str | None = None, limits: ThumbLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or ThumbLimits()
        self.thumbs_dir = self.root / "thumbs"
        self.receiver = receiver
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.root / DB_NAME, timeout=30.0, isolation_level=None)
            self._initialise()
        except (OSError, sqlite3.Error) as exc:
            raise EdgecamError(f"{self.root / DB_NAME}: cannot open the centre store ({exc})") from None

    def _initialise(self, attempts: int = 100) -> None:
        """WAL mode and schema. Switching a new file to WAL ignores the busy timeout (SQLite answers "database
        is locked" at once), so receivers starting together on one store retry here instead of failing."""
        for attempt in range(attempts):
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 + random.random() * 0.05)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------ writes

    def thumb_path(self, node_id: str, event_id: str) -> Path:
        return self.thumbs_dir / node_id / f"{event_id}.jpg"

    def _write_thumb(self, node_id: str, event_id: str, data: bytes) -> str:
        path = self.thumb_path(node_id, event_id)
        write_atomic(path, data)
        return str(path.relative_to(self.root))

    def _join(self, db: sqlite3.Connection, node_id: str, event_id: str, expected: str, data: bytes) -> ThumbStatus:
        if hashlib.sha256(data).hexdigest() != expected:
            db.execute("UPDATE events SET thumb_status = 'mismatch' WHERE event_id = ?", (event_id,))
            return "mismatch"
        rel = self._write_thumb(node_id, event_id, data)
        db.execute("UPDATE events SET thumb_status = 'ok', thumb_path = ? WHERE event_id = ?", (rel, event_id))
        return "ok"

    def add_event(self, ev: Event) -> EventResult:
        """Upsert by ``event_id`` (a redelivery bumps ``deliveries``); join a thumbnail that came first."""
        if not SAFE_ID.fullmatch(ev.event_id):
            raise ValueError(f"event_id {ev.event_id!r} is not a safe id")
        if not is_node_id(ev.node_id):
            raise ValueError(f"node_id: {node_id_problem(ev.node_id)}")
        now = _now()
        payload = ev.model_dump_json()
        sha = ev.thumb.sha256 if ev.thumb else None
        with self._tx() as db:
            row = db.execute("SELECT thumb_status FROM events WHERE event_id = ?", (ev.event_id,)).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE events SET deliveries = deliveries + 1, last_seen = ?, receiver = ? WHERE event_id = ?",
                    (now, self.receiver, ev.event_id),
                )
                return EventResult(new=False, thumb=row[0])
            db.execute(
                "INSERT INTO events (event_id, node_id, camera_id, boot_id, seq, type, track_id, label, score,"
                " top_score, bbox, zones, ts, start_ts, end_ts, clock_synced, historical, thumb_sha256,"
                " thumb_status, payload, first_seen, last_seen, receiver)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ev.event_id, ev.node_id, ev.camera_id, ev.boot_id, ev.seq, ev.type, ev.track_id, ev.label,
                 ev.score, ev.top_score, json.dumps(list(ev.bbox)), json.dumps(ev.zones),
                 _iso(ev.ts), _iso(ev.start_ts), _iso(ev.end_ts) if ev.end_ts else None,
                 int(ev.clock_synced), int(ev.historical), sha, "pending" if sha else None,
                 payload, now, now, self.receiver),
            )
            status: ThumbStatus | None = "pending" if sha else None
            pending = db.execute("SELECT data FROM pending_thumbs WHERE event_id = ?", (ev.event_id,)).fetchone()
            if pending is not None:
                db.execute("DELETE FROM pending_thumbs WHERE event_id = ?", (ev.event_id,))
                if sha:
                    status = self._join(db, ev.node_id, ev.event_id, sha, pending[0])
                else:  # a thumbnail for an event that says it has none
                    db.execute("UPDATE events SET thumb_status = 'mismatch' WHERE event_id = ?", (ev.event_id,))
                    status = "mismatch"
            return EventResult(new=True, thumb=status)

    def add_thumb(self, node_id: str, event_id: str, data: bytes) -> ThumbStatus:
        """Verify against the event's ``thumb.sha256`` and write the file, or park it until the event comes
        (within the pending limits); a refusal is counted and returned as its reason."""
        if not (is_node_id(node_id) and SAFE_ID.fullmatch(event_id)):
            raise ValueError(f"thumbs/{event_id} of {node_id}: not a safe id")
        with self._tx() as db:
            if len(data) > self.limits.max_bytes:
                return self._refuse(db, node_id, "too_big", len(data))
            row = db.execute("SELECT node_id, thumb_sha256, thumb_status FROM events WHERE event_id = ?",
                             (event_id,)).fetchone()
            if row is None:
                return self._park(db, node_id, event_id, data)
            ev_node, sha, status = row
            if ev_node != node_id or sha is None:
                return "mismatch"
            if status == "ok":
                return "duplicate"
            return self._join(db, node_id, event_id, sha, data)

    def _park(self, db: sqlite3.Connection, node_id: str, event_id: str, data: bytes) -> ThumbStatus:
        """Keep a thumbnail whose event has not come yet, if its node and the store stay under their caps.

        The sums are read in the same ``BEGIN IMMEDIATE`` transaction as the insert, so receivers sharing
        the store cannot together exceed a cap. A redelivery replaces its own row (not counted twice).
        """
        self._expire(db)
        lim = self.limits
        (node_bytes,) = db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM pending_thumbs"
                                   " WHERE node_id = ? AND event_id != ?", (node_id, event_id)).fetchone()
        (all_bytes,) = db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM pending_thumbs"
                                  " WHERE event_id != ?", (event_id,)).fetchone()
        if node_bytes + len(data) > lim.pending_node_bytes:
            return self._refuse(db, node_id, "node_pending_full", len(data))
        if all_bytes + len(data) > lim.pending_total_bytes:
            return self._refuse(db, node_id, "total_pending_full", len(data))
        db.execute("INSERT OR REPLACE INTO pending_thumbs (event_id, node_id, data, received_at)"
                   " VALUES (?, ?, ?, ?)", (event_id, node_id, data, _now()))
        return "pending"

    def _expire(self, db: sqlite3.Connection) -> None:
        """Drop pending thumbnails older than the window, counted per node as ``expired``."""
        cutoff = _iso(datetime.now(timezone.utc) - timedelta(seconds=self.limits.pending_window_s))
        old = db.execute("SELECT node_id, COUNT(*), SUM(LENGTH(data)) FROM pending_thumbs WHERE received_at < ?"
                         " GROUP BY node_id", (cutoff,)).fetchall()
        for node_id, n, size in old:
            self._count(db, node_id, EXPIRED, n, size)
        if old:
            db.execute("DELETE FROM pending_thumbs WHERE received_at < ?", (cutoff,))

    def _refuse(self, db: sqlite3.Connection, node_id: str, reason: ThumbStatus, size: int) -> ThumbStatus:
        self._count(db, node_id, reason, 1, size)
        return reason

    @staticmethod
    def _count(db: sqlite3.Connection, node_id: str, reason: str, n: int, size: int) -> None:
        db.execute("INSERT INTO thumb_refusals (node_id, reason, count, bytes, last_at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (node_id, reason) DO UPDATE SET count = count + excluded.count,"
                   " bytes = bytes + excluded.bytes, last_at = excluded.last_at", (node_id, reason, n, size, _now()))

    def set_status(self, node_id: str, kind: str, payload: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO node_status (node_id, kind, payload, received_at) VALUES (?, ?, ?, ?)",
                       (node_id, kind, json.dumps(payload), _now()))

    def add_invalid(self, topic: str, error: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO invalid (topic, error, received_at) VALUES (?, ?, ?)", (topic, error, _now()))

    # ------------------------------------------------------------ reads

    def statuses(self, kind: str) -> dict[str, tuple[dict[str, Any], str]]:
        """The newest message of one status channel (``state``, ``ota/status``, …) per node, with when it came."""
        rows = self.db.execute("SELECT node_id, payload, received_at FROM node_status WHERE kind = ? ORDER BY node_id",
                               (kind,))
        return {node: (json.loads(payload), at) for node, payload, at in rows}

    def summary(self) -> dict[str, Any]:
        """Everything ``edgecam centre summary`` shows, as plain JSON-able data."""
        q = self.db.execute

        def counts(sql: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in q(sql).fetchall()}

        per_node = {}
        for node, n, uniq_tracks in q("SELECT node_id, COUNT(*), COUNT(DISTINCT boot_id || ':' || camera_id || ':'"
                                      " || track_id) FROM events GROUP BY node_id ORDER BY node_id"):
            per_node[node] = {"events": n, "tracks": uniq_tracks}
        for node, kind, payload, at in q("SELECT node_id, kind, payload, received_at FROM node_status"):
            entry = per_node.setdefault(node, {"events": 0, "tracks": 0})
            if kind == "state":
                entry["online"] = json.loads(payload).get("online")
            entry.setdefault("last_seen", {})[kind] = at
        refused: dict[str, int] = {}
        for node, reason, n in q("SELECT node_id, reason, count FROM thumb_refusals ORDER BY node_id, reason"):
            per_node.setdefault(node, {"events": 0, "tracks": 0}).setdefault("thumbs_refused", {})[reason] = n
            refused[reason] = refused.get(reason, 0) + n
        thumbs = [r[0] for r in q("SELECT thumb_path FROM events WHERE thumb_status = 'ok' ORDER BY thumb_path")]
        return {
            "store": str(self.root),
            "events": q("SELECT COUNT(*) FROM events").fetchone()[0],
            "deliveries": q("SELECT COALESCE(SUM(deliveries), 0) FROM events").fetchone()[0],
            "tracks": q("SELECT COUNT(*) FROM tracks").fetchone()[0],
            "per_node": per_node,
            "per_label": counts("SELECT label, COUNT(*) FROM events GROUP BY label ORDER BY label"),
            "per_type": counts("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type"),
            "track_labels": counts("SELECT label, COUNT(*) FROM tracks GROUP BY label ORDER BY label"),
            "thumbnails": {
                "ok": len(thumbs),
                **counts("SELECT thumb_status, COUNT(*) FROM events WHERE thumb_status IN ('pending', 'mismatch')"
                         " GROUP BY thumb_status"),
                "orphans": q("SELECT COUNT(*) FROM pending_thumbs").fetchone()[0],
                "pending_bytes": q("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM pending_thumbs").fetchone()[0],
                "refused": refused,
                "paths": thumbs,
            },
            "invalid": q("SELECT COUNT(*) FROM invalid").fetchone()[0],
        }


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_existing(root: Path) -> Store:
    """A store that must already exist (for ``summary``): a wrong path is a one-line error, not a new DB."""
    if not (Path(root) / DB_NAME).is_file():
        raise EdgecamError(f"{Path(root) / DB_NAME}: no centre store here (run `edgecam centre listen --store`)")
    return Store(root)
