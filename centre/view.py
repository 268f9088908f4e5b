"""Terminal output of the centre tools: one line per event while listening, tables for ``summary``."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from agent.contract import Event
    from centre.stats import Stats

THUMB_MARK = {"ok": "[green]ok[/]", "pending": "[yellow]wait[/]", "mismatch": "[red]BAD[/]", None: "-"}
TYPE_STYLE = {"start": "green", "update": "cyan", "end": "magenta"}


class EventView:
    """Live view: time, node, type, label, score, track, thumbnail state.

    An event whose thumbnail has not arrived yet is held back up to ``grace_s`` so its line can say
    whether the thumbnail joined (nodes publish the event first, then the JPEG).
    """

    def __init__(self, quiet: bool = False, console: Console | None = None, grace_s: float = 2.0) -> None:
        self.quiet = quiet
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.grace_s = grace_s
        self._held: dict[str, tuple[Event, bool, float]] = {}

    def started(self, url: str, group: str) -> None:
        """On stderr, always: scripts wait for this line to know the subscriptions are in place."""
        print(f"listening on {url} (share group {group!r})", file=sys.stderr, flush=True)

    def event(self, ev: Event, thumb: str | None, duplicate: bool = False) -> None:
        if self.quiet:
            return
        if thumb == "pending" and not duplicate:
            self._held[ev.event_id] = (ev, duplicate, time.monotonic() + self.grace_s)
            return
        self._line(ev, thumb, duplicate)

    def thumb(self, event_id: str, status: str) -> None:
        held = self._held.pop(event_id, None)
        if held is not None:
            self._line(held[0], status, held[1])

    def tick(self, flush: bool = False) -> None:
        """Print held events whose thumbnail did not come in time (or all of them, at exit)."""
        now = time.monotonic()
        for event_id, (ev, dup, deadline) in list(self._held.items()):
            if flush or now >= deadline:
                del self._held[event_id]
                self._line(ev, "pending", dup)

    def _line(self, ev: Event, thumb: str | None, duplicate: bool) -> None:
        style = TYPE_STYLE.get(ev.type, "white")
        mark = THUMB_MARK.get(thumb, thumb)
        dup = " [dim](again)[/]" if duplicate else ""
        hist = " [dim]historical[/]" if ev.historical else ""
        self.console.print(
            f"{ev.ts.strftime('%H:%M:%S.%f')[:-3]}  {escape(ev.node_id):<16} [{style}]{ev.type:<6}[/] "
            f"{escape(ev.label):<12} {ev.score:4.2f}  track {ev.track_id:<5} thumb {mark}{dup}{hist}"
        )

    def summary(self, stats: Stats) -> None:
        self.tick(flush=True)
        # Plain print: scripts and tests parse this line.
        print(stats.line(), flush=True)


def print_summary(s: dict[str, Any], console: Console | None = None) -> None:
    """Human tables for ``edgecam centre summary``."""
    con = console or Console(highlight=False, soft_wrap=True)
    th = s["thumbnails"]
    con.print(f"[bold]{s['store']}[/]: {s['events']} events ({s['deliveries']} deliveries), {s['tracks']} tracks, "
              f"{th['ok']} thumbnails, {s['invalid']} invalid payloads")
    nodes = Table("node", "events", "tracks", "online", "thumbnails refused", title="per node")
    for node, row in s["per_node"].items():
        refused = ", ".join(f"{k}={v}" for k, v in row.get("thumbs_refused", {}).items()) or "-"
        nodes.add_row(node, str(row.get("events", 0)), str(row.get("tracks", 0)), str(row.get("online", "?")),
                      refused)
    con.print(nodes)
    labels = Table("label", "events", "tracks", title="per label")
    for label, n in s["per_label"].items():
        labels.add_row(label, str(n), str(s["track_labels"].get(label, 0)))
    con.print(labels)
    con.print("per type: " + ", ".join(f"{k}={v}" for k, v in s["per_type"].items()))
    pending = th.get("pending", 0) + th.get("orphans", 0)
    refused = sum(th.get("refused", {}).values())
    con.print(f"thumbnails: {th['ok']} ok, {th.get('mismatch', 0)} sha256 mismatch, {pending} waiting "
              f"({th.get('pending_bytes', 0)} bytes), {refused} refused or expired")
    for path in th["paths"][:20]:
        con.print(f"  {s['store']}/{path}")
    if len(th["paths"]) > 20:
        con.print(f"  … and {len(th['paths']) - 20} more")
