"""The synthetic street scene and the ``synthetic:`` source: determinism, truth, traffic, light and noise."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.config import load_config
from agent.sources import open_source, source_config_from_uri
from agent.sources.kinds import SyntheticSource
from agent.sources.scene import LABELS, StreetScene
from agent.sources.synthetic import SyntheticSceneSource

FPS = 15.0


@pytest.fixture(scope="module")
def scene() -> StreetScene:
    return StreetScene(seed=3, width=640, height=360, fps=FPS)


def sample_truth(scene: StreetScene, minutes: float, every_s: float = 1.0):
    step = int(every_s * scene.fps)
    return [(i, scene.truth(i)) for i in range(0, int(minutes * 60 * scene.fps), step)]


def test_render_is_a_pure_function_of_seed_and_index(scene: StreetScene) -> None:
    img_a, truth_a = scene.render(1234)
    scene.render(5)  # other frames in between must not matter (random access)
    fresh = StreetScene(seed=3, width=640, height=360, fps=FPS)
    img_b, truth_b = fresh.render(1234)
    assert img_a.shape == (360, 640, 3) and img_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b)
    assert truth_a == truth_b
    other, _ = StreetScene(seed=4, width=640, height=360, fps=FPS).render(1234)
    assert not np.array_equal(img_a, other)


def test_truth_boxes_are_normalised_labelled_and_resolution_independent(scene: StreetScene) -> None:
    big = StreetScene(seed=3, width=1280, height=720, fps=FPS)
    seen = 0
    for i, truth in sample_truth(scene, 3):
        for t in truth:
            x1, y1, x2, y2 = t.bbox
            assert t.label in LABELS
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        big_truth = big.truth(i)
        assert [t.object_id for t in truth] == [t.object_id for t in big_truth]
        for a, b in zip(truth, big_truth, strict=True):
            assert np.allclose(a.bbox, b.bbox, atol=1e-6)
        seen += len(truth)
    assert seen > 100


def test_traffic_has_all_labels_a_parked_car_quiet_and_busy_stretches(scene: StreetScene) -> None:
    samples = sample_truth(scene, 20)
    labels = {t.label for _, truth in samples for t in truth}
    assert labels == set(LABELS)
    parked = [next((t for t in truth if t.object_id == 0), None) for _, truth in samples]
    assert sum(p is not None for p in parked) >= 0.95 * len(samples)
    boxes = {p.bbox for p in parked if p is not None}
    assert len(boxes) == 1, "the parked car never moves"
    moving = np.array([sum(t.object_id != 0 for t in truth) for _, truth in samples])
    assert moving.min() <= 1, "there are quiet stretches"
    assert moving.max() >= 6, "there are busy stretches"
    assert 1.5 <= moving.mean() <= 8, "a few objects in view on average"


def test_objects_enter_cross_and_leave(scene: StreetScene) -> None:
    tracks: dict[int, list[tuple[float, ...]]] = {}
    for i in range(0, int(120 * FPS), 3):
        for t in scene.truth(i):
            tracks.setdefault(t.object_id, []).append(t.bbox)
    crossed = [b for oid, b in tracks.items() if oid != 0 and len(b) > 5]
    assert len(crossed) >= 10
    # a crossing object's first and last boxes touch opposite sides of the frame (or the pavements)
    moved = [abs((b[-1][0] + b[-1][2]) - (b[0][0] + b[0][2])) / 2 for b in crossed]
    assert np.median(moved) > 0.5
    at_edge = [b for bs in crossed for b in bs if b[0] == 0.0 or b[2] == 1.0]
    assert at_edge, "objects partially leaving the frame are clipped at its edges"


def test_perspective_nearer_is_bigger(scene: StreetScene) -> None:
    people = [t.bbox for _, truth in sample_truth(scene, 20) for t in truth if t.label == "person"
              and t.bbox[1] > 0.0 and t.bbox[3] < 1.0]
    far = [b[3] - b[1] for b in people if b[3] < 0.55]
    near = [b[3] - b[1] for b in people if b[3] > 0.9]
    assert far and near
    assert np.median(near) > 1.6 * np.median(far)


def test_light_drifts_and_sensor_noise_changes_every_frame(scene: StreetScene) -> None:
    sky = [scene.render(i)[0][:20, :, :].astype(np.float32) for i in range(0, int(240 * FPS), int(10 * FPS))]
    means = [s.mean() for s in sky]
    assert max(means) - min(means) > 8, "lighting drifts over minutes"
    a, b = scene.render(100)[0], scene.render(101)[0]
    diff = a[:20].astype(np.int16) - b[:20].astype(np.int16)  # the sky: no objects, no shadow
    assert 1.0 < diff.std() < 10.0


def test_a_shadow_band_passes(scene: StreetScene) -> None:
    # road brightness across the frame: the shadow makes one region much darker than the rest for a while
    spread = []
    for i in range(0, int(120 * FPS), int(2 * FPS)):
        road = scene.render(i)[0][int(0.9 * 360):, :, :].astype(np.float32).mean(axis=(0, 2))
        cols = road.reshape(16, -1).mean(axis=1)
        spread.append(cols.max() / max(cols.min(), 1.0))
    assert max(spread) > 1.3 and min(spread) < 1.1


def test_the_scene_does_not_depend_on_the_resolution() -> None:
    """A 720p street is the 360p street with more pixels: same objects, same boxes, the same picture.

    (Render speed belongs to the bench, not here.)"""
    hd, _ = StreetScene(seed=1, width=1280, height=720).render(500)
    truth_hd = StreetScene(seed=1, width=1280, height=720).truth(500)
    small, truth = StreetScene(seed=1, width=640, height=360).render(500)
    assert hd.shape == (720, 1280, 3) and len(truth) >= 5
    assert truth_hd == truth
    shrunk = cv2.resize(hd, (640, 360), interpolation=cv2.INTER_AREA).astype(np.int16)
    other, _ = StreetScene(seed=2, width=640, height=360).render(500)
    same_diff = np.abs(shrunk - small).mean()  # per-pixel sensor noise differs, the scene does not
    assert same_diff < 20 and same_diff < np.abs(shrunk - other).mean() / 2


def test_synthetic_source_frames_times_and_end() -> None:
    cfg = SyntheticSource(seed=5, width=320, height=180, fps=10.0, duration_s=1.5)
    src = SyntheticSceneSource(cfg)
    assert src.fps == 10.0 and src.live is False and src.finite is True
    frames = []
    with src:
        while (f := src.read()) is not None:
            frames.append(f)
    assert len(frames) == 15
    t0 = frames[0].ts
    for k, f in enumerate(frames):
        assert f.index == k and f.image.shape == (180, 320, 3) and f.truth is not None
        assert f.ts == pytest.approx(t0 + k / 10.0)
    scene_img, scene_truth = StreetScene(5, 320, 180, 10.0).render(7)
    assert np.array_equal(frames[7].image, scene_img) and frames[7].truth == scene_truth


def test_synthetic_source_is_endless_without_duration_and_the_default() -> None:
    src = SyntheticSceneSource(SyntheticSource(width=160, height=90))
    assert src.finite is False
    src.open()
    assert all(src.read() is not None for _ in range(5))
    src.close()
    cfg = load_config(environ={})
    assert cfg.source.kind == "synthetic"


def test_synthetic_uri_goes_through_the_registry() -> None:
    cfg = load_config(overrides={"source": source_config_from_uri(
        "synthetic:?seed=9&width=256&height=144&fps=5&duration_s=2")}, environ={})
    src = open_source(cfg.source)
    assert isinstance(src, SyntheticSceneSource)
    with src:
        n = 0
        while src.read() is not None:
            n += 1
    assert n == 10
    assert "seed=9" in src.describe()


@pytest.mark.parametrize(("width", "height", "fps"), [(64, 64, 240.0), (97, 65, 1.0), (360, 640, 30.0)])
def test_any_resolution_and_frame_rate(width: int, height: int, fps: float) -> None:
    s = StreetScene(seed=2, width=width, height=height, fps=fps)
    for index in (0, 1, 12345):
        img, truth = s.render(index)
        assert img.shape == (height, width, 3)
        assert all(0 <= t.bbox[0] < t.bbox[2] <= 1 for t in truth)
