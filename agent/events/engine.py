"""Event engine: turns tracks into contract events (``start`` / ``update`` / ``end``) with thumbnails.

Per confirmed track: one ``start`` (with the best thumbnail so far), ``update`` only on a significant
change (label, zones, top score up by ``top_score_delta``, centre moved by ``bbox_move`` of the box
diagonal, or a heartbeat), and one ``end`` when the track is lost or the source ends. Changes other than
the heartbeat are rate-limited by ``min_update_interval_s``. Parked (stationary) tracks send no score or
movement updates and heartbeat ``STATIONARY_HEARTBEAT`` times less often: a parked car is one event
chain, not one event a minute.

Thumbnails: the best frame of a track (score × √area, halved when the box touches the frame edge) is
cropped whenever it improves by ``THUMB_IMPROVE``; it is JPEG-encoded only when an event is about to
carry it, and attached to a later event only if it beats the one sent by ``THUMB_RESEND``. The ``start``
always carries one, so every track has a thumbnail by its ``end`` (unless thumbnails are disabled); a
track whose best view is still cut by the frame border defers its ``start`` up to ``START_DEFER_S`` for a
full view, so one picture per passer-by usually suffices (the uplink budget of a busy street).

Frames the motion gate skipped (``on_skipped_frame``) carry no detections: they never count as misses
(nothing moved, so nothing left), but heartbeats and ends already due (a track missed on enough inferred
frames, see ``agent.tracking.tracker``) are still emitted on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ClassVar

from agent.config import AgentConfig
from agent.contract import Event, ModelRef, ThumbRef
from agent.events.clock import CachedClockSync
from agent.events.ids import SeqStore, uuid7
from agent.events.thumbnails import Cut, Thumb, Thumbnailer
from agent.sources.base import Frame
from agent.tracking.tracker import Track, Tracker
from agent.tracking.zones import BBox, ZoneSet
from agent.vision.types import Detection

#: a parked track heartbeats this many times less often than ``events.heartbeat_s``
STATIONARY_HEARTBEAT = 10
#: a new best frame must beat the current one by this share to be cropped again
THUMB_IMPROVE = 0.10
#: boxes within this distance of the frame border are likely cut off (a walker half in view)
EDGE_MARGIN = 0.005
#: a later event re-sends the thumbnail only when the best frame is this much better than the one sent
#: (one good picture per passer-by, not one per step: the uplink is shared by a whole city)
THUMB_RESEND = 2.0
#: a confirmed track whose best view is still cut by the frame border waits up to this long (since first
#: seen) for a full view before its ``start``, so the start's thumbnail is the one worth keeping
START_DEFER_S = 1.5
#: seconds by which an idle track's next update decision is brought forward (float rounding margin)
WAKE_EARLY = 1e-3


@dataclass
class Outgoing:
    event: Event
    thumb: bytes | None  # JPEG to publish on thumbs/{event.event_id}, or None


@dataclass(eq=False)
class _TrackState:
    """What the engine remembers about one track: what it last sent and its best frame."""

    track: Track
    zones: list[str] = field(default_factory=list)
    started: bool = False
    last_event_ts: float = 0.0
    sent_label: str = ""
    sent_zones: list[str] = field(default_factory=list)
    sent_top: float = 0.0
    sent_bbox: BBox = (0.0, 0.0, 0.0, 0.0)
    best_q: float = -1.0
    best_edge: bool = False
    sent_q: float = 0.0
    best_crop: Cut | None = None
    best_version: int = 0
    thumb: Thumb | None = None
    thumb_version: int = -1
    thumb_budget: int = 0
    #: the crop ``thumb`` is to be encoded from, when that encode was put off (its result was not needed)
    thumb_pending: Cut | None = None
    sent_sha: str | None = None
    #: an unseen track needs no update decision before this time (see ``EventEngine._wake``)
    wake: float = -math.inf


def _dt(ts: float) -> datetime:
    """Epoch seconds → UTC datetime at the contract's millisecond precision (so JSON round-trips)."""
    return datetime.fromtimestamp(round(ts, 3), timezone.utc)


def frame_quality(score: float, bbox: BBox) -> float:
    """How good a frame of the object is for a thumbnail: confident, large, and not cut by the border."""
    x1, y1, x2, y2 = bbox
    q = score * math.sqrt(max(0.0, x2 - x1) * max(0.0, y2 - y1))
    if min(x1, y1) <= EDGE_MARGIN or max(x2, y2) >= 1 - EDGE_MARGIN:
        q *= 0.5
    return q


class EventEngine:
    """Tracker + event decisions + thumbnails for one camera. Not thread-safe: the runner's loop calls it."""

    #: config sections ``reconfigure`` takes hot (node_id and camera_id are read too, but restart the agent)
    CONFIG_SECTIONS: ClassVar[frozenset[str]] = frozenset(
        {"detect", "tracker", "events", "zones", "masks", "thumbnails"})

    def __init__(self, cfg: AgentConfig, *, boot_id: str, model: ModelRef,
                 clock_synced: Callable[[], bool] | None = None) -> None:
        self.boot_id = boot_id
        self.model = model
        self._clock_synced = clock_synced or CachedClockSync()
        self._seq = SeqStore(cfg.state_dir)
        self._zones = ZoneSet(cfg.zones, cfg.masks)
        self.tracker = Tracker(cfg.tracker, cfg.detect, self._zones)
        self.thumbnailer = Thumbnailer(cfg.thumbnails)
        self._states: dict[int, _TrackState] = {}
        self._last_ts = 0.0
        self._counts: dict[str, int] = {
            "frames": 0, "skipped_frames": 0, "detections": 0, "detections_filtered": 0,
            "tracks_started": 0, "tracks_ended": 0, "tracks_discarded": 0, "thumbnails": 0,
            "thumb_bytes": 0, "crops": 0,
        }
        self._events = {"start": 0, "update": 0, "end": 0}
        self._reasons: dict[str, int] = {}
        self.cfg = cfg

    # ------------------------------------------------------------ runner API

    def on_frame(self, frame: Frame, detections: list[Detection]) -> list[Outgoing]:
        ts = frame.ts
        self._last_ts = ts
        self._counts["frames"] += 1
        self._counts["detections"] += len(detections)
        upd = self.tracker.update(detections, ts)
        self._counts["detections_filtered"] += upd.filtered
        out = self._end(upd.ended, ts)
        for track in upd.seen:
            st = self._states.get(track.uid)
            if st is None:
                st = self._states[track.uid] = _TrackState(track=track)
            st.zones = self._zones.zones_of(track.label, track.bbox)
            st.wake = -math.inf
            self._consider_thumb(st, frame)
        out += self._decide(ts)
        return out

    def on_skipped_frame(self, frame: Frame) -> list[Outgoing]:
        ts = frame.ts
        self._last_ts = ts
        self._counts["skipped_frames"] += 1
        out = self._end(self.tracker.tick(ts), ts)
        return out + self._decide(ts)

    def finish(self, ts: float) -> list[Outgoing]:
        """End every open track (source ended or shutdown) and record the exact next seq.

        ``ts`` may be wall-clock time while frames carry media time (a ``--fast`` file replay runs ahead of
        the clock): the end is never stamped before the last frame.
        """
        out = self._end(self.tracker.end_all(), max(ts, self._last_ts))
        self._seq.close()
        return out

    def save_seq(self) -> str:
        """Write the seq file again from memory (its folder was lost); safe from any thread."""
        return self._seq.save_again()

    def reconfigure(self, cfg: AgentConfig) -> None:
        """Apply thresholds, filters, zones, masks and thumbnail settings to live tracks from now on."""
        self._zones = ZoneSet(cfg.zones, cfg.masks)
        self.tracker.reconfigure(cfg.tracker, cfg.detect, self._zones)
        self.thumbnailer.reconfigure(cfg.thumbnails)
        self.cfg = cfg
        for st in self._states.values():  # new intervals and rules: decide afresh
            st.wake = -math.inf

    def set_thumb_budget(self, max_bytes: int) -> None:
        """Shrink the JPEG budget below ``thumbnails.max_bytes`` (the broker's max packet size)."""
        self.thumbnailer.set_budget(max_bytes)

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks currently open."""
        return sum(1 for t in self.tracker.tracks if t.confirmed)

    @property
    def moving_tracks(self) -> int:
        """Live tracks that are not parked: pass ``moving_tracks > 0`` as the gate's ``tracks_active``."""
        return self.tracker.moving(self._last_ts)

    @property
    def stats(self) -> dict:
        th = self.thumbnailer
        return {**self._counts, "events": dict(self._events), "update_reasons": dict(self._reasons),
                "active_tracks": self.active_tracks, "thumb_encodes": th.encodes,
                "thumb_encode_ms": round(th.encode_ms, 3), "thumb_over_budget": th.over_budget,
                "thumb_budget": th.budget, "seq_next": self._seq.peek()}

    # ------------------------------------------------------------ decisions

    def _decide(self, ts: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for track in self.tracker.tracks:
            if not track.confirmed:
                continue
            st = self._states[track.uid]
            if not st.started:
                if self._defer_start(st, ts):
                    continue
                self._counts["tracks_started"] += 1
                out.append(self._emit("start", st, ts))
            elif ts >= st.wake:
                reasons = self._update_reasons(st, ts)
                if reasons:
                    for r in reasons:
                        self._reasons[r] = self._reasons.get(r, 0) + 1
                    out.append(self._emit("update", st, ts))
            else:
                continue
            st.wake = self._wake(st)
        return out

    def _wake(self, st: _TrackState) -> float:
        """Until a track is seen again, ``_update_reasons`` stays empty before this time.

        Without a new observation only time moves: a heartbeat needs ``heartbeat_s`` since the last event
        (parked tracks longer still), and a change already pending (label, zones, top score, movement;
        parking only ever suppresses some) needs ``min_update_interval_s``. ``WAKE_EARLY`` keeps the
        float rounding of ``ts - last`` versus ``last + interval`` on the early side.
        """
        ev, t = self.cfg.events, st.track
        pending = ((ev.on_label_change and t.label != st.sent_label)
                   or (ev.on_zone_change and st.zones != st.sent_zones)
                   or (ev.top_score_delta > 0 and t.top_score >= st.sent_top + ev.top_score_delta)
                   or (ev.bbox_move > 0 and self._moved(st.sent_bbox, t.bbox) >= ev.bbox_move))
        gap = min(ev.heartbeat_s, ev.min_update_interval_s) if pending else ev.heartbeat_s
        return st.last_event_ts + gap - WAKE_EARLY

    def _defer_start(self, st: _TrackState, ts: float) -> bool:
        return (self.cfg.thumbnails.enabled and st.best_edge and st.best_crop is not None
                and ts - st.track.first_ts < START_DEFER_S)

    def _update_reasons(self, st: _TrackState, ts: float) -> list[str]:
        ev, t = self.cfg.events, st.track
        since = ts - st.last_event_ts
        parked = t.stationary(ts, self.cfg.tracker.stationary_s)
        reasons = []
        if since >= ev.heartbeat_s * (STATIONARY_HEARTBEAT if parked else 1):
            reasons.append("heartbeat")
        if since < ev.min_update_interval_s:
            return reasons
        if ev.on_label_change and t.label != st.sent_label:
            reasons.append("label")
        if ev.on_zone_change and st.zones != st.sent_zones:
            reasons.append("zones")
        if not parked:
            if t.top_score >= st.sent_top + ev.top_score_delta and ev.top_score_delta > 0:
                reasons.append("top_score")
            if ev.bbox_move > 0 and self._moved(st.sent_bbox, t.bbox) >= ev.bbox_move:
                reasons.append("moved")
        return reasons

    @staticmethod
    def _moved(a: BBox, b: BBox) -> float:
        """Centre displacement from ``a`` to ``b`` as a share of ``a``'s diagonal."""
        diag = math.hypot(a[2] - a[0], a[3] - a[1])
        d = math.hypot((b[0] + b[2] - a[0] - a[2]) / 2, (b[1] + b[3] - a[1] - a[3]) / 2)
        return d / diag if diag > 0 else math.inf

    def _end(self, tracks: list[Track], ts: float) -> list[Outgoing]:
        out = []
        for track in tracks:
            st = self._states.pop(track.uid, None)
            if st is not None and not st.started and track.confirmed:  # ended while its start was deferred
                self._counts["tracks_started"] += 1
                out.append(self._emit("start", st, ts))
            if st is None or not st.started:
                self._counts["tracks_discarded"] += 1
                continue
            self._counts["tracks_ended"] += 1
            out.append(self._emit("end", st, ts))
        return out

    # ------------------------------------------------------------ building

    def _emit(self, kind: str, st: _TrackState, ts: float) -> Outgoing:
        t = st.track
        ref, jpeg = self._thumb(st)
        assert t.track_id is not None
        event = Event(
            event_id=uuid7(int(ts * 1000)),
            node_id=self.cfg.node_id,
            camera_id=self.cfg.camera_id,
            boot_id=self.boot_id,
            seq=self._seq.next(),
            type=kind,
            track_id=t.track_id,
            label=t.label,
            score=round(min(1.0, max(0.0, t.score)), 4),
            top_score=round(min(1.0, max(0.0, t.top_score)), 4),
            bbox=tuple(round(min(1.0, max(0.0, v)), 4) for v in t.bbox),
            zones=list(st.zones),
            ts=_dt(ts),
            start_ts=_dt(t.first_ts),
            end_ts=_dt(min(t.last_seen, ts)) if kind == "end" else None,
            clock_synced=bool(self._clock_synced()),
            thumb=ref,
            model=self.model,
        )
        self._events[kind] += 1
        st.started = True
        st.last_event_ts = ts
        st.sent_label, st.sent_zones, st.sent_top, st.sent_bbox = t.label, list(st.zones), t.top_score, t.bbox
        return Outgoing(event=event, thumb=jpeg)

    def _consider_thumb(self, st: _TrackState, frame: Frame) -> None:
        if not self.cfg.thumbnails.enabled:
            return
        t = st.track
        q = frame_quality(t.score, t.bbox)
        if st.best_crop is not None and q <= st.best_q * (1 + THUMB_IMPROVE):
            return
        st.best_q = q
        x1, y1, x2, y2 = t.bbox
        st.best_edge = min(x1, y1) <= EDGE_MARGIN or max(x2, y2) >= 1 - EDGE_MARGIN
        st.best_crop = self.thumbnailer.cut_frame(frame, t.bbox)  # RGB of the region only (I420 frames)
        st.best_version += 1
        self._counts["crops"] += 1

    def _thumb(self, st: _TrackState) -> tuple[ThumbRef | None, bytes | None]:
        if not self.cfg.thumbnails.enabled or st.best_crop is None:
            return None, None
        budget = self.thumbnailer.budget
        stale = st.thumb_version != st.best_version
        misfit = st.thumb_budget != budget and (self._held(st) is None or len(st.thumb.jpeg) > budget)
        if stale or misfit:
            # an encode whose JPEG would not be sent whatever it is waits: ``_held`` makes it if a budget
            # change ever needs its size (so decisions stay those of encoding right away)
            if self._resend_declined(st, misfit):
                st.thumb, st.thumb_pending = None, st.best_crop
            else:
                st.thumb, st.thumb_pending = self.thumbnailer.encode(st.best_crop), None
            st.thumb_version, st.thumb_budget = st.best_version, budget
            if st.thumb_pending is not None:
                return None, None
        if st.thumb is None or st.thumb.sha256 == st.sent_sha:
            return None, None
        if self._resend_declined(st, misfit):
            return None, None
        st.sent_sha, st.sent_q = st.thumb.sha256, st.best_q
        self._counts["thumbnails"] += 1
        self._counts["thumb_bytes"] += len(st.thumb.jpeg)
        return st.thumb.ref, st.thumb.jpeg

    @staticmethod
    def _resend_declined(st: _TrackState, misfit: bool) -> bool:
        """A track's later thumbnail goes out only when the held one misfits or the view got much better."""
        return st.sent_sha is not None and not misfit and st.best_q < st.sent_q * THUMB_RESEND

    def _held(self, st: _TrackState) -> Thumb | None:
        """The thumbnail last made for the track, encoding a put-off one now (at the budget it was for)."""
        if st.thumb_pending is not None:
            st.thumb = self.thumbnailer.encode(st.thumb_pending, st.thumb_budget)
            st.thumb_pending = None
        return st.thumb
