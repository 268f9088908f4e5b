"""Identifiers: UUIDv7 event ids, boot ids, and the per-node ``seq`` persisted across restarts.

``seq`` must be monotonic per node across restarts without an fsync per event, so the store *reserves*
blocks: the file holds a number no issued seq has reached yet; when the block runs out the next
boundary is written (``write_atomic``: a crash leaves the old number or the new) before any seq
of the new block is issued. A crash therefore skips at most one block, never repeats a number.
A clean ``close`` writes the exact next value so restarts leave no gap. ``save_again`` writes the
reservation again when the file was lost with its folder (``agent.state_dir``): numbers go on from memory.

A write that fails (full disk, read-only remount) does not stop the node: numbers go on from memory, the
failure is logged once, and the write is retried every ``RETRY_S`` until it succeeds. While the file lags
behind, a crash can repeat numbers issued since the last good write (``event_id`` stays unique).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path

from agent.atomic import write_atomic
from agent.errors import EdgecamError
from agent.state_files import FILE_MODE, private_dir

log = logging.getLogger(__name__)

SEQ_FILE = "seq"
SEQ_BLOCK = 64
RETRY_S = 5.0


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits; sorts by time."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def new_boot_id() -> str:
    """A fresh id for this process's lifetime (UUIDv7 so boots sort by start time)."""
    return uuid7()


class SeqStore:
    """Issues ``seq`` numbers from ``state_dir/seq``; see the module doc for the reservation scheme.

    Thread-safe: the event engine's thread issues numbers, the state-dir check may save them again."""

    def __init__(self, state_dir: Path, block: int = SEQ_BLOCK) -> None:
        self.path = Path(state_dir) / SEQ_FILE
        self.block = max(1, block)
        try:
            private_dir(self.path.parent)
        except OSError as exc:
            raise EdgecamError(f"state_dir {self.path.parent}: cannot create ({exc.strerror})") from None
        self._next = self._load()
        self._reserved = self._next
        self._retry_at: float | None = None  # set while the file could not be written
        self._lock = threading.Lock()

    def _load(self) -> int:
        try:
            raw = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raw = f"<unreadable: {exc}>"
        try:
            value = int(raw)
            if value < 0:
                raise ValueError(raw)
            return value
        except ValueError:
            # A damaged file must not stop the node nor repeat numbers: continue from the epoch time in
            # milliseconds, which is larger than any seq a node can have issued one by one.
            fallback = int(time.time() * 1000)
            log.warning("%s: unreadable seq %r; continuing from %d", self.path, raw[:40], fallback)
            return fallback

    def next(self) -> int:
        with self._lock:
            return self._issue()

    def _issue(self) -> int:
        if self._next >= self._reserved or (self._retry_at is not None and time.monotonic() >= self._retry_at):
            self._reserved = max(self._reserved, self._next + self.block)
            self._write(self._reserved)
        value = self._next
        self._next += 1
        return value

    def peek(self) -> int:
        return self._next

    def close(self) -> None:
        """Record the exact next value (no gap on restart); later ``next`` calls reserve a new block."""
        with self._lock:
            self._write(self._next)
            self._reserved = self._next

    def save_again(self) -> str:
        """Write the current reservation again (the file was lost): no number issued so far can recur."""
        with self._lock:
            self._write(self._reserved)
            if self._retry_at is not None:
                raise OSError(f"{self.path}: not written; retrying every {RETRY_S:g} s")
            return f"written again from memory ({self._reserved}, next {self._next})"

    def _write(self, value: int) -> None:
        """Persist ``value``; on failure keep going from memory and retry later (see the module doc)."""
        try:
            write_atomic(self.path, f"{value}\n", mode=FILE_MODE)
        except OSError as exc:
            if self._retry_at is None:
                log.warning("%s: cannot write seq (%s); continuing in memory, retrying every %.0f s",
                            self.path, exc.strerror, RETRY_S)
            self._retry_at = time.monotonic() + RETRY_S
            return
        if self._retry_at is not None:
            log.warning("%s: seq saved again (%d)", self.path, value)
            self._retry_at = None
