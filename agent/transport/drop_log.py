"""Outbox drops in the log: one warning when an episode starts, one line with its totals when it ends.

A full outbox drops on every write until the backlog drains; a line per dropped row would flood the
journal (and, on a full disk, the disk). Episodes are kept per reason (``age``, ``cap``, ``disk full``),
so a node that is both out of disk and holding stale rows says both, once each.
"""

from __future__ import annotations

import logging

log = logging.getLogger("agent.transport.outbox")


class DropEpisodes:
    def __init__(self, where: str) -> None:
        self.where = where
        self._open: dict[str, dict[str, int]] = {}

    def note(self, reason: str, counts: dict[str, int], why: str) -> None:
        """Rows of ``counts`` (kind → n) were dropped for ``reason``; ``why`` is said when an episode starts."""
        if not any(counts.values()):
            return
        episode = self._open.get(reason)
        if episode is None:
            self._open[reason] = dict(counts)
            log.warning("%s: dropping rows (%s): %s; thumbnails go before events, oldest first (logged once "
                        "until it ends; counted in health.dropped)", self.where, reason, why)
            return
        for kind, n in counts.items():
            episode[kind] = episode.get(kind, 0) + n

    def end(self, reason: str) -> None:
        episode = self._open.pop(reason, None)
        if episode is not None:
            log.warning("%s: no longer dropping (%s); %d event(s) and %d thumbnail(s) dropped in that episode",
                        self.where, reason, episode.get("event", 0), episode.get("thumb", 0))

    def active(self) -> list[str]:
        return sorted(self._open)
