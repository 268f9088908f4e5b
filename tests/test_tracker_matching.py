"""Tracker hot path: the vectorised matcher and the scalar IoU agree with their plain definitions.

The references below are the straightforward loops the fast code replaced; random boxes (ties, touching
and degenerate ones included) must give the very same pairs in the very same order, and the same IoU.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.tracking.tracker import greedy_match, iou, iou_matrix

GRID = [i / 8 for i in range(9)]  # coarse coordinates: many equal IoUs and distances, so ties are exercised


def reference_match(tb: np.ndarray, db: np.ndarray, iou_min: float, max_dist: float,
                    same: np.ndarray | None) -> list[tuple[int, int]]:
    """Greedy by IoU (best first, stable on ties), then by centre distance, one element at a time."""
    n, m = len(tb), len(db)
    if n == 0 or m == 0:
        return []
    ious = iou_matrix(tb, db)
    used_t, used_d, pairs = set(), set(), []
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        t, d = divmod(int(flat), m)
        if ious[t, d] < iou_min or ious[t, d] <= 0:
            break
        if t not in used_t and d not in used_d:
            used_t.add(t)
            used_d.add(d)
            pairs.append((t, d))
    if max_dist > 0 and len(used_t) < n and len(used_d) < m:
        ct = np.stack([(tb[:, 0] + tb[:, 2]) / 2, (tb[:, 1] + tb[:, 3]) / 2], axis=1)
        cd = np.stack([(db[:, 0] + db[:, 2]) / 2, (db[:, 1] + db[:, 3]) / 2], axis=1)
        dist = np.linalg.norm(ct[:, None, :] - cd[None, :, :], axis=2)
        for t in used_t:
            dist[t, :] = np.inf
        for d in used_d:
            dist[:, d] = np.inf
        if same is not None:
            dist[~same] = np.inf
        for flat in np.argsort(dist, axis=None, kind="stable"):
            t, d = divmod(int(flat), m)
            if not dist[t, d] <= max_dist:
                break
            if t not in used_t and d not in used_d:
                used_t.add(t)
                used_d.add(d)
                pairs.append((t, d))
    return pairs


def ordered(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])


grid_box = st.tuples(*[st.sampled_from(GRID)] * 4).map(ordered)
float_box = st.tuples(*[st.floats(0, 1)] * 4).map(ordered)
box = st.one_of(grid_box, float_box)


@settings(max_examples=300, deadline=None)
@given(tracks=st.lists(box, max_size=7), dets=st.lists(box, max_size=7),
       iou_min=st.sampled_from([0.0, 0.2, 0.5]), max_dist=st.sampled_from([0.0, 0.15, 0.5]),
       labels=st.lists(st.sampled_from("ab"), min_size=14, max_size=14), use_labels=st.booleans())
def test_greedy_match_equals_reference(tracks, dets, iou_min, max_dist, labels, use_labels):
    tb = np.asarray(tracks, dtype=np.float64).reshape(-1, 4)
    db = np.asarray(dets, dtype=np.float64).reshape(-1, 4)
    same = same_fn = None
    if use_labels:
        same = np.asarray(labels[:len(tb)])[:, None] == np.asarray(labels[7:7 + len(db)])[None, :]
        same_fn = lambda t, d: bool(same[t, d])  # noqa: E731 - the tracker passes a function
    expected = reference_match(tb, db, iou_min, max_dist, same)
    assert greedy_match(tb, db, iou_min, max_dist, same_fn) == expected
    if len(tb) and len(db):  # the caller's precomputed matrix gives the same answer
        assert greedy_match(tb, db, iou_min, max_dist, same_fn, iou_matrix(tb, db)) == expected


@settings(max_examples=300, deadline=None)
@given(a=box, b=box, jitter=st.floats(0, 0.01))
def test_scalar_iou_equals_matrix(a, b, jitter):
    a = tuple(v + jitter for v in a)
    assert iou(a, b) == float(iou_matrix(np.asarray([a]), np.asarray([b]))[0, 0])


def test_filter_follows_reconfigured_labels_and_areas():
    """Per-label limits are looked up once per label; a new config must still apply from the next frame."""
    from agent.config import DetectConfig, LabelFilter, TrackerConfig
    from agent.tracking.tracker import Tracker
    from agent.vision.types import Detection

    car = Detection("car", 2, 0.5, (0.1, 0.1, 0.2, 0.2))  # area 0.01
    tr = Tracker(TrackerConfig(), DetectConfig())
    assert tr.filter([car]) == [car]
    tr.reconfigure(TrackerConfig(), DetectConfig(labels=["person"]))
    assert tr.filter([car]) == []
    tr.reconfigure(TrackerConfig(min_area=0.02), DetectConfig())
    assert tr.filter([car]) == []
    tr.reconfigure(TrackerConfig(min_area=0.02), DetectConfig(per_label={"car": LabelFilter(min_area=0.005)}))
    assert tr.filter([car]) == [car]
