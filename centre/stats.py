"""What one receiver process saw: its own counts, printed by the live view and as its summary line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    """What this receiver process saw (the store holds the union of all receivers)."""

    events: int = 0
    duplicates: int = 0
    thumbnails: int = 0
    thumbs_pending: int = 0
    thumbs_bad: int = 0
    thumbs_refused: int = 0
    status: int = 0
    invalid: int = 0
    errors: int = 0
    event_ids: set[str] = field(default_factory=set)
    tracks: set[tuple[str, str, str, int]] = field(default_factory=set)

    def line(self) -> str:
        return (f"summary: events={self.events} unique_event_ids={len(self.event_ids)} tracks={len(self.tracks)} "
                f"thumbnails={self.thumbnails} invalid={self.invalid}")
