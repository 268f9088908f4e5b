"""Tracker: association on scripted boxes, confirmation by median score, filters, masks, ends, parking."""

from __future__ import annotations

import numpy as np

from agent.config import DetectConfig, LabelFilter, Mask, TrackerConfig
from agent.tracking.tracker import MIN_MISSES, Tracker, greedy_match, iou_matrix
from agent.tracking.zones import ZoneSet
from agent.vision.types import Detection

FPS = 15.0


def det(label: str, score: float, bbox, class_id: int = 0) -> Detection:
    return Detection(label=label, class_id=class_id, score=score, bbox=tuple(float(v) for v in bbox))


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5]])
    b = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1], [2, 2, 3, 3]])
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, [[1, 0.25, 0], [0.25, 0, 0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_greedy_prefers_best_iou_then_centroid():
    tracks = np.array([[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.52, 0.52]])
    dets = np.array([[0.55, 0.5, 0.57, 0.52],  # small fast object: no overlap, near track 1
                     [0.11, 0.1, 0.21, 0.2]])  # overlaps track 0
    assert sorted(greedy_match(tracks, dets, 0.2, 0.1)) == [(0, 1), (1, 0)]
    assert greedy_match(tracks, dets, 0.2, 0.0) == [(0, 1)]
    same = np.array([[True, True], [False, True]])
    # the centroid pass needs the same label
    assert greedy_match(tracks, dets, 0.2, 0.1, lambda t, d: same[t, d]) == [(0, 1)]


def test_two_crossing_walkers_keep_their_ids():
    tr = Tracker(TrackerConfig(min_hits=2), DetectConfig())
    ids: dict[int, set[int]] = {0: set(), 1: set()}
    for i in range(60):
        x = i / 60
        boxes = [(x * 0.8, 0.4, x * 0.8 + 0.06, 0.6), (0.86 - x * 0.8, 0.42, 0.92 - x * 0.8, 0.62)]
        upd = tr.update([det("person", 0.8, b) for b in boxes], 100 + i / FPS)
        assert not upd.ended
        for t in upd.seen:
            # which walker is this track on? the one whose box it carries now
            ids[0 if t.bbox[1] == 0.4 else 1].add(t.uid)
    assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1]


def test_confirmation_by_median_and_min_hits():
    cfg = TrackerConfig(threshold=0.6, window=5, min_hits=3)
    tr = Tracker(cfg, DetectConfig())
    box = (0.4, 0.4, 0.5, 0.6)
    confirmed_at = None
    for i, s in enumerate([0.9, 0.4, 0.45, 0.7, 0.8, 0.75]):
        upd = tr.update([det("car", s, box)], i / FPS)
        if upd.confirmed:
            confirmed_at = i
            assert upd.confirmed[0].track_id == 1
    # medians: [.9]→min_hits, [.9,.4]→min_hits, [.9,.4,.45]=.45, [.9,.4,.45,.7]=.575, [...,.8]=.7 → frame 4
    assert confirmed_at == 4


def test_low_score_flicker_never_confirms_and_dies_silently():
    tr = Tracker(TrackerConfig(threshold=0.6, min_hits=2, lost_s=1.0), DetectConfig())
    for i in range(10):
        upd = tr.update([det("person", 0.4, (0.1, 0.1, 0.2, 0.3))], i / FPS)
        assert not upd.confirmed
    ended = []
    for i in range(10, 40):
        ended += tr.update([], i / FPS).ended
    assert len(ended) == 1 and not ended[0].confirmed
    assert tr.tracks == []


def test_filters_labels_floors_area_and_masks():
    detect = DetectConfig(labels=["person", "car"], score_floor=0.3,
                          per_label={"car": LabelFilter(min_score=0.5, min_area=0.01)})
    zones = ZoneSet(masks=[Mask(polygon=[(0, 0), (1, 0), (1, 0.2), (0, 0.2)])])  # the sky
    tr = Tracker(TrackerConfig(min_area=0.001), detect, zones)
    dets = [
        det("person", 0.35, (0.1, 0.3, 0.15, 0.5)),  # kept
        det("dog", 0.9, (0.3, 0.3, 0.4, 0.5)),  # not in the allow-list
        det("car", 0.45, (0.5, 0.5, 0.7, 0.7)),  # under the car floor: the detector's to drop, not the tracker's
        det("car", 0.8, (0.5, 0.5, 0.55, 0.52)),  # under the car min area
        det("car", 0.8, (0.6, 0.6, 0.8, 0.8)),  # kept
        det("person", 0.9, (0.2, 0.05, 0.25, 0.15)),  # feet in the masked sky
        det("person", 0.9, (0.2, 0.9, 0.21, 0.91)),  # under the tracker min area
    ]
    kept = tr.filter(dets)
    assert [(d.label, d.score) for d in kept] == [("person", 0.35), ("car", 0.45), ("car", 0.8)]
    upd = tr.update(dets, 0.0)
    assert upd.filtered == 4 and len(upd.seen) == 3


def test_label_is_score_weighted_majority():
    tr = Tracker(TrackerConfig(), DetectConfig())
    box = (0.4, 0.4, 0.6, 0.6)
    for i, (label, s) in enumerate([("car", 0.7), ("truck", 0.6), ("car", 0.7), ("truck", 0.9), ("car", 0.6)]):
        tr.update([det(label, s, box)], i / FPS)
    (t,) = tr.tracks
    assert t.label == "car"  # car 2.0 vs truck 1.5
    tr.update([det("truck", 0.9, box)], 1.0)
    assert t.label == "car"  # 2.0 vs 2.4: not clearly outweighed (hysteresis)
    tr.update([det("truck", 0.9, box)], 1.1)
    assert t.label == "truck"  # 2.0 vs 3.3


def test_duplicate_boxes_do_not_spawn_tracks():
    tr = Tracker(TrackerConfig(), DetectConfig())
    box = (0.4, 0.4, 0.6, 0.6)
    tr.update([det("car", 0.8, box)], 0.0)
    upd = tr.update([det("car", 0.8, box), det("truck", 0.6, (0.405, 0.4, 0.6, 0.6))], 0.1)
    assert len(tr.tracks) == 1 and upd.filtered == 1


def test_end_needs_misses_and_time_and_skipped_frames_do_not_age():
    cfg = TrackerConfig(lost_s=2.0, min_hits=1, threshold=0.1)
    tr = Tracker(cfg, DetectConfig())
    tr.update([det("person", 0.9, (0.1, 0.1, 0.2, 0.3))], 0.0)
    # 10 minutes of gate-closed frames: no evidence the person left, the track stays
    for i in range(1, 600):
        assert tr.tick(float(i)) == []
    # refresh inferences (one every 5 s) miss it: it ends once missed MIN_MISSES times
    ended = []
    for k in range(1, MIN_MISSES + 1):
        ended = tr.update([], 600.0 + 5 * k).ended
        assert bool(ended) == (k == MIN_MISSES)
    # inferred frames at 15 fps: ends after lost_s even though MIN_MISSES was reached long before
    tr.update([det("person", 0.9, (0.5, 0.1, 0.6, 0.3))], 1000.0)
    ends_at = None
    for i in range(1, 60):
        if tr.update([], 1000.0 + i / FPS).ended:
            ends_at = i
            break
    assert ends_at == 30  # 2 s at 15 fps


def test_parked_track_survives_occlusion_longer_than_lost_s():
    cfg = TrackerConfig(lost_s=2.0, stationary_s=30.0, min_hits=1, threshold=0.1)
    tr = Tracker(cfg, DetectConfig())
    rng = np.random.default_rng(0)
    car = np.array([0.3, 0.5, 0.5, 0.7])
    t = 0.0
    for _ in range(int(40 * FPS)):  # 40 s parked, with jitter
        tr.update([det("car", 0.8, car + rng.normal(0, 0.002, 4))], t)
        t += 1 / FPS
    (track,) = tr.tracks
    assert track.stationary(t, cfg.stationary_s)
    assert tr.moving(t) == 0
    for _ in range(int(10 * FPS)):  # a bus hides it for 10 s
        assert tr.update([], t).ended == []
        t += 1 / FPS
    tr.update([det("car", 0.8, car)], t)
    assert tr.tracks == [track]
    # a car that drives off: not stationary any more, ends lost_s after it was last seen
    for i in range(10):
        tr.update([det("car", 0.8, car + np.array([0.03 * i, 0, 0.03 * i, 0]))], t)
        t += 1 / FPS
    assert tr.moving(t) == 1
    while not tr.update([], t).ended:
        t += 1 / FPS
    assert abs(t - track.last_seen - cfg.lost_s) < 1.01 / FPS
