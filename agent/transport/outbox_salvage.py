"""A damaged outbox file: recognise it, move it aside, and read back every row that can still be read.

A power cut on a cheap SD card, or a bad sector, can leave pages of ``outbox.sqlite3`` unreadable. The
node must start anyway (an outbox that cannot open means no events at all) and should not throw away the
rows that survive: they are events the centre has not seen. Rows are found by every route that may
still work (the table in both directions, both indexes), each is then read by its id on its own, so one
broken page costs only the rows on it. What was read goes into a fresh outbox with the same ids (order
kept; they count as historical); the damaged file stays next to it for inspection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
DAMAGE_CODES = {11, 26}
ROW_COLUMNS = "id, kind, topic, size, created, attempts, late, payload"
#: routes to row ids; each may fail at a broken page, the others may get past it
ID_ROUTES = (
    "SELECT id FROM outbox ORDER BY id",
    "SELECT id FROM outbox ORDER BY id DESC",
    "SELECT id FROM outbox INDEXED BY outbox_kind WHERE kind >= ''",
    "SELECT id FROM outbox INDEXED BY outbox_created WHERE created > -1e300",
)


class Damaged(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the file damaged."""


def is_damage(exc: BaseException) -> bool:
    if isinstance(exc, Damaged):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in DAMAGE_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def quick_check(con: sqlite3.Connection) -> None:
    """Raise ``Damaged`` with SQLite's first complaint unless the file checks out (reads every page once)."""
    rows = con.execute("PRAGMA quick_check(5)").fetchall()
    if [r[0] for r in rows] != ["ok"]:
        raise Damaged("; ".join(str(r[0]) for r in rows))


@dataclass
class Salvage:
    """What a damaged file still gave: rows (``ROW_COLUMNS`` tuples, by id), ``meta`` counters, losses."""

    moved_to: Path
    error: str
    rows: list[tuple] = field(default_factory=list)
    meta: dict[str, int] | None = None
    unreadable: int = 0


def move_aside(path: Path, now: float, why: str = "damaged") -> Path:
    """Rename the database and its WAL/SHM to ``<name>.<why>-<UTC time>`` (kept for inspection)."""
    dest = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{dest}{suffix}")
    return dest


def salvage(path: Path, error: str, now: float) -> Salvage:
    """Move the damaged outbox aside and read what it still holds; never raises for damage."""
    moved = move_aside(path, now)
    out = Salvage(moved_to=moved, error=error)
    try:
        con = sqlite3.connect(moved, isolation_level=None)  # read-write: a left-over WAL is read too
    except sqlite3.Error as exc:
        log.warning("outbox: %s cannot be opened for salvage (%s)", moved, exc)
        return out
    try:
        ids: set[int] = set()
        for sql in ID_ROUTES:
            _collect(con, sql, ids)
        for rid in sorted(ids):
            row = _read_row(con, rid)
            if row is None:
                out.unreadable += 1
            else:
                out.rows.append(row)
        with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
            out.meta = {str(k): int(v) for k, v in con.execute("SELECT key, value FROM meta")}
    finally:
        con.close()
    return out


def _collect(con: sqlite3.Connection, sql: str, ids: set[int]) -> None:
    with contextlib.suppress(sqlite3.Error):
        for (rid,) in con.execute(sql):
            if isinstance(rid, int):
                ids.add(rid)


def _read_row(con: sqlite3.Connection, rid: int) -> tuple | None:
    """One row by id, or None when its page is broken or what comes back is not a plausible row."""
    try:
        row = con.execute(f"SELECT {ROW_COLUMNS} FROM outbox WHERE id = ?", (rid,)).fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    _, kind, topic, size, _, _, _, payload = row
    if kind not in ("event", "thumb") or not isinstance(topic, str) or not isinstance(payload, bytes):
        return None
    if len(payload) != size:
        return None
    if kind == "event":
        try:
            json.loads(payload)
        except ValueError:
            return None
    return row
