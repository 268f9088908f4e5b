"""Multi-object tracker: greedy IoU association with a centroid fallback, score-over-time confirmation.

Why this shape:
- Greedy matching on a numpy IoU matrix is exact enough for street scenes at 5–30 fps and costs
  microseconds for tens of objects (no scipy on the node).
- A single detection is not an object: a track is *confirmed* only once it has ``min_hits`` detections and
  the median of its recent scores reaches the (per-label) threshold. Unconfirmed tracks die silently.
- Track ends are decided on *inferred* frames only (frames the motion gate skipped carry no evidence that
  an object left). A track ends when it was missed on at least ``MIN_MISSES`` consecutive inferred frames
  AND ``lost_s`` seconds passed since it was last seen; stationary (parked) tracks get ``stationary_s``
  instead of ``lost_s`` so a passing bus occluding a parked car does not split its event chain.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent.config import DetectConfig, TrackerConfig
from agent.tracking.zones import BBox, ZoneSet
from agent.vision.types import Detection

#: consecutive missed inferences before a track may end (with a gate-closed scene, inferences are the
#: periodic refresh frames: one unlucky missed detection must not end a parked car's track)
MIN_MISSES = 3
#: an unmatched detection overlapping a live track this much is a duplicate (e.g. car + truck boxes)
DUPLICATE_IOU = 0.7
#: per-observation decay of a track's label weights: an effective memory of ~100 detections (~7 s at
#: 15 fps), long enough that occasional car/truck confusions never win, short enough to correct a label
LABEL_DECAY = 0.99
#: a challenger label must outweigh the current one by this factor to replace it (no car/truck flapping)
LABEL_HYSTERESIS = 1.25
#: association uses boxes moved by the track's velocity over at most this long (crossing walkers keep ids;
#: long gaps, e.g. between gate-refresh frames, do not fling a parked car's box across the frame)
MAX_PREDICT_S = 0.5
#: weight of the newest velocity sample in the track's velocity average
VELOCITY_ALPHA = 0.5
#: weight of the newest box in the smoothed box that decides whether a track is parked (detector jitter
#: on a parked car must not look like movement)
SMOOTH_ALPHA = 0.3


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in (N, 4) ``a`` against every box in (M, 4) ``b``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    np.maximum(wh, 0.0, out=wh)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def iou(a: BBox, b: BBox) -> float:
    """IoU of two boxes: the same float64 arithmetic as ``iou_matrix``, without numpy's per-call overhead
    (it runs for every observation)."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_match(
    track_boxes: np.ndarray,
    det_boxes: np.ndarray,
    iou_min: float,
    max_dist: float,
    same: Callable[[int, int], bool] | None = None,
    ious: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Pairs (track index, detection index): best IoU first, then nearest centre for the rest.

    The centroid pass catches small fast objects whose boxes no longer overlap between frames; with
    ``same`` it only pairs a track and a detection for which ``same(t, d)`` (the tracker asks it only for
    the few pairs left). ``ious`` is ``iou_matrix(track_boxes, det_boxes)`` when the caller has it. Ties go
    to the lower flat index ``t * m + d`` in both passes (a stable sort of the row-major matrix).
    """
    n, m = len(track_boxes), len(det_boxes)
    if n == 0 or m == 0:
        return []
    if ious is None:
        ious = iou_matrix(track_boxes, det_boxes)
    pairs: list[tuple[int, int]] = []
    used_t = [False] * n
    used_d = [False] * m

    def take(candidates: list[tuple[float, int]]) -> None:
        """Pair ``(key, t * m + d)`` candidates, lowest key first, each track and detection once."""
        candidates.sort()
        for _, flat in candidates:
            t, d = divmod(flat, m)
            if used_t[t] or used_d[d]:
                continue
            used_t[t] = used_d[d] = True
            pairs.append((t, d))

    # the pairs that pass the threshold, best IoU first (a few of n * m: sorted as plain floats)
    take([(-v, flat) for flat, v in enumerate(ious.ravel().tolist()) if v >= iou_min and v > 0])
    if max_dist > 0 and len(pairs) < min(n, m):
        # the few boxes left, in plain floats: sqrt(dx² + dy²) is what numpy's norm computes, bit for bit
        tb, db = track_boxes.tolist(), det_boxes.tolist()
        free_d = [(d, (db[d][0] + db[d][2]) / 2, (db[d][1] + db[d][3]) / 2) for d in range(m) if not used_d[d]]
        near = []
        for t in range(n):
            if used_t[t]:
                continue
            cx, cy = (tb[t][0] + tb[t][2]) / 2, (tb[t][1] + tb[t][3]) / 2
            for d, dx, dy in free_d:
                dist = math.sqrt((cx - dx) * (cx - dx) + (cy - dy) * (cy - dy))
                if dist <= max_dist and (same is None or same(t, d)):
                    near.append((dist, t * m + d))
        take(near)
    return pairs


@dataclass(eq=False)
class Track:
    """One object followed over frames. ``track_id`` is assigned when the track is confirmed."""

    uid: int
    bbox: BBox
    score: float
    first_ts: float
    last_seen: float
    window: int
    track_id: int | None = None
    top_score: float = 0.0
    hits: int = 0
    misses: int = 0
    matched: bool = False
    scores: deque[float] = field(default_factory=deque)
    label_weights: dict[str, float] = field(default_factory=dict)
    anchor_bbox: BBox | None = None
    anchor_ts: float = 0.0
    label: str = ""
    velocity: tuple[float, float] = (0.0, 0.0)
    smooth_bbox: BBox | None = None

    def __post_init__(self) -> None:
        self.scores = deque(maxlen=self.window)

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    @property
    def median_score(self) -> float:
        return statistics.median(self.scores) if self.scores else 0.0

    def stationary(self, ts: float, stationary_s: float) -> bool:
        return self.anchor_bbox is not None and ts - self.anchor_ts >= stationary_s

    def predicted(self, ts: float) -> BBox:
        """The box moved by the velocity estimate to time ``ts`` (for association only)."""
        dt = min(MAX_PREDICT_S, max(0.0, ts - self.last_seen))
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.bbox
        return x1 + dx, y1 + dy, x2 + dx, y2 + dy

    def observe(self, det: Detection, ts: float, stationary_iou: float) -> None:
        dt = ts - self.last_seen
        if self.hits and dt > 0:
            ox, oy = (self.bbox[0] + self.bbox[2]) / 2, (self.bbox[1] + self.bbox[3]) / 2
            nx, ny = (det.bbox[0] + det.bbox[2]) / 2, (det.bbox[1] + det.bbox[3]) / 2
            a = VELOCITY_ALPHA
            self.velocity = (a * (nx - ox) / dt + (1 - a) * self.velocity[0],
                             a * (ny - oy) / dt + (1 - a) * self.velocity[1])
        self.bbox = det.bbox
        self.score = det.score
        self.top_score = max(self.top_score, det.score)
        self.scores.append(det.score)
        for k in self.label_weights:
            self.label_weights[k] *= LABEL_DECAY
        self.label_weights[det.label] = self.label_weights.get(det.label, 0.0) + det.score
        self.label = _vote(self.label_weights, self.label)
        self.hits += 1
        self.misses = 0
        self.last_seen = ts
        self.matched = True
        if self.smooth_bbox is None:
            self.smooth_bbox = det.bbox
        else:
            a, b, o = SMOOTH_ALPHA, 1 - SMOOTH_ALPHA, self.smooth_bbox
            n = det.bbox
            self.smooth_bbox = (a * n[0] + b * o[0], a * n[1] + b * o[1], a * n[2] + b * o[2], a * n[3] + b * o[3])
        if self.anchor_bbox is None or iou(self.anchor_bbox, self.smooth_bbox) < stationary_iou:
            self.anchor_bbox, self.anchor_ts = self.smooth_bbox, ts


def _vote(weight: dict[str, float], current: str) -> str:
    """Score-weighted majority of recent labels; the current label stays unless clearly outweighed."""
    best = max(weight, key=weight.__getitem__)
    if current and current != best and weight[best] <= weight.get(current, 0.0) * LABEL_HYSTERESIS:
        return current
    return best


@dataclass
class TrackUpdate:
    """What one inferred frame did: tracks seen (new ones included), newly confirmed, ended."""

    seen: list[Track]
    confirmed: list[Track]
    ended: list[Track]
    filtered: int = 0


class Tracker:
    """Associates detections to tracks frame by frame; decides which detections may become tracks (labels,
    areas, masks). Score floors are the detector's (``Detector.configure``): it alone knows the model's."""

    def __init__(self, cfg: TrackerConfig, detect: DetectConfig, zones: ZoneSet | None = None) -> None:
        self._next_uid = 1
        self._next_track_id = 1
        self.tracks: list[Track] = []
        self.reconfigure(cfg, detect, zones)

    def reconfigure(self, cfg: TrackerConfig, detect: DetectConfig, zones: ZoneSet | None = None) -> None:
        self.cfg = cfg
        self.detect = detect
        self.zones = zones or ZoneSet()
        self._allow = frozenset(detect.labels) if detect.labels else None
        self._min_areas: dict[str, float] = {}  # label → min_area, filled as labels come

    # ------------------------------------------------------------ thresholds

    def threshold(self, label: str) -> float:
        f = self.detect.per_label.get(label)
        return f.threshold if f is not None and f.threshold is not None else self.cfg.threshold

    def min_area(self, label: str) -> float:
        f = self.detect.per_label.get(label)
        return f.min_area if f is not None and f.min_area is not None else self.cfg.min_area

    def filter(self, detections: list[Detection]) -> list[Detection]:
        """Drop detections of unwanted labels, under their min area, or anchored in a mask."""
        allow, min_areas = self._allow, self._min_areas
        kept = []
        for d in detections:
            if allow is not None and d.label not in allow:
                continue
            least = min_areas.get(d.label)
            if least is None:
                least = min_areas[d.label] = self.min_area(d.label)
            if d.area >= least:
                kept.append(d)
        if kept and self.zones.has_masks:
            masked = self.zones.masked(d.bbox for d in kept)
            kept = [d for d, m in zip(kept, masked, strict=True) if not m]
        return kept

    # ------------------------------------------------------------ frames

    def update(self, detections: list[Detection], ts: float) -> TrackUpdate:
        """Process the detections of one inferred frame at time ``ts``."""
        dets = self.filter(detections)
        filtered = len(detections) - len(dets)
        for t in self.tracks:
            t.matched = False
        tboxes = np.asarray([t.predicted(ts) for t in self.tracks], dtype=np.float64).reshape(-1, 4)
        dboxes = np.asarray([d.bbox for d in dets], dtype=np.float64).reshape(-1, 4)
        tracks = self.tracks
        ious = iou_matrix(tboxes, dboxes) if tracks and dets else None

        def same(t: int, d: int) -> bool:
            return tracks[t].label == dets[d].label

        pairs = greedy_match(tboxes, dboxes, self.cfg.iou_match, self.cfg.max_centroid_dist, same, ious)
        matched_d = set()
        for ti, di in pairs:
            self.tracks[ti].observe(dets[di], ts, self.cfg.stationary_iou)
            matched_d.add(di)
        seen = [self.tracks[ti] for ti, _ in pairs]
        for di, det in enumerate(dets):
            if di in matched_d:
                continue
            if ious is not None and float(ious[:, di].max()) >= DUPLICATE_IOU:
                filtered += 1
                continue
            track = Track(uid=self._next_uid, bbox=det.bbox, score=det.score, first_ts=ts, last_seen=ts,
                          window=self.cfg.window)
            self._next_uid += 1
            track.observe(det, ts, self.cfg.stationary_iou)
            self.tracks.append(track)
            seen.append(track)
        confirmed = []
        for t in seen:
            if not t.confirmed and t.hits >= self.cfg.min_hits and t.median_score >= self.threshold(t.label):
                t.track_id = self._next_track_id
                self._next_track_id += 1
                confirmed.append(t)
        for t in self.tracks:
            if not t.matched:
                t.misses += 1
        return TrackUpdate(seen=seen, confirmed=confirmed, ended=self._expire(ts), filtered=filtered)

    def tick(self, ts: float) -> list[Track]:
        """A frame without inference (gate closed): only tracks already missed enough may end."""
        for t in self.tracks:
            t.matched = False
        return self._expire(ts)

    def end_all(self) -> list[Track]:
        ended, self.tracks = self.tracks, []
        return ended

    def _expire(self, ts: float) -> list[Track]:
        lost, parked_s = self.cfg.lost_s, self.cfg.stationary_s
        parked_timeout = max(lost, parked_s)
        ended = []
        for t in self.tracks:
            if t.misses >= MIN_MISSES:
                parked = t.stationary(t.last_seen, parked_s)
                if ts - t.last_seen >= (parked_timeout if parked else lost):
                    ended.append(t)
        if ended:
            gone = set(map(id, ended))
            self.tracks = [t for t in self.tracks if id(t) not in gone]
        return ended

    def moving(self, ts: float) -> int:
        """Live tracks that are not parked: what keeps the motion gate open."""
        parked_s = self.cfg.stationary_s
        return sum(1 for t in self.tracks if not t.stationary(ts, parked_s))
