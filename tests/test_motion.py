"""Motion gate on still, moving, relit frames; refresh and hold; disabled gate; lores view."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.config import MotionConfig
from agent.sources.base import Frame
from agent.vision.motion import MotionGate
from tests.conftest import shared

FPS = 15.0
H, W = 360, 640


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    rng = np.random.default_rng(1)
    base = rng.integers(40, 200, size=(H // 8, W // 8, 3), dtype=np.uint8)
    return cv2.resize(base, (W, H), interpolation=cv2.INTER_CUBIC)


_NOISE = np.random.default_rng(99).normal(0, 3.0, (16, H, W, 3)).round().astype(np.int16)


def noisy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise (sigma 3, from a bank of 16 patterns): what a still camera delivers frame to frame."""
    h, w = img.shape[:2]
    return np.clip(img + _NOISE[rng.integers(len(_NOISE)), :h, :w], 0, 255).astype(np.uint8)


def with_box(img: np.ndarray, x: int, y: int, w: int = 40, h: int = 80, colour=(230, 20, 20)) -> np.ndarray:
    out = img.copy()
    out[y:y + h, x:x + w] = colour
    return out


def run(gate: MotionGate, frames: list[np.ndarray], t0: float = 1000.0, active: bool = False) -> list[bool]:
    return [gate.check(Frame(image=img, ts=t0 + i / FPS, index=i), t0 + i / FPS, active)
            for i, img in enumerate(frames)]


def test_still_frames_are_skipped_except_refresh(background):
    rng = np.random.default_rng(2)
    gate = MotionGate(MotionConfig(refresh_s=5.0, hold_s=2.0))
    n = int(20 * FPS)  # 20 s of a still scene
    passed = run(gate, [noisy(background, rng) for _ in range(n)])
    idx = [i for i, p in enumerate(passed) if p]
    # the first frame (no background yet) and then one refresh every 5 s: 0, 5, 10, 15 s
    assert idx == [0, 75, 150, 225]
    assert gate.counters.motion == 0
    assert gate.counters.refresh == 4
    assert gate.counters.checked == n


def test_moving_object_opens_the_gate_and_hold_keeps_it_open(background):
    rng = np.random.default_rng(3)
    gate = MotionGate(MotionConfig(refresh_s=60.0, hold_s=1.0))
    still = [noisy(background, rng) for _ in range(30)]
    moving = [noisy(with_box(background, 20 + 12 * i, 200), rng) for i in range(30)]
    after = [noisy(background, rng) for _ in range(60)]  # the object is gone (left the frame)
    passed = run(gate, still + moving + after)
    assert not any(passed[1:30])
    assert all(passed[31:60]), "every frame with a moving object runs the detector"
    assert gate.counters.motion >= 28
    tail = passed[60:]
    # while the background absorbs the removal, then hold_s (15 frames) after the last motion, then closed
    assert not any(tail[-20:])
    assert gate.stats["passed"] == sum(passed)


def test_small_motion_below_min_area_is_ignored(background):
    rng = np.random.default_rng(4)
    gate = MotionGate(MotionConfig(refresh_s=60.0, min_area=0.01))
    frames = [noisy(background, rng)] + [noisy(with_box(background, 100 + 3 * i, 100, 4, 4), rng) for i in range(30)]
    assert not any(run(gate, frames)[1:])


def test_lighting_change_is_not_motion(background):
    rng = np.random.default_rng(5)
    gate = MotionGate(MotionConfig(refresh_s=60.0, hold_s=0.5))
    bright = np.clip(background.astype(np.int16) * 1.6 + 30, 0, 255).astype(np.uint8)
    dim = (background * 0.85).astype(np.uint8)  # a uniform exposure step
    frames = [noisy(background, rng) for _ in range(15)] + [noisy(dim, rng) for _ in range(15)] \
        + [noisy(bright, rng) for _ in range(30)]
    passed = run(gate, frames)
    assert not any(passed[1:]), "a lighting change must not run the detector"
    assert gate.counters.motion == 0
    # a shadow lifting off most of the frame at once (not uniform): too large to be an object
    lit = background.copy()
    lit[:, : int(W * 0.75)] = np.clip(bright[:, : int(W * 0.75)].astype(np.int16) + 60, 0, 255)
    before = gate.counters.lighting
    assert not any(run(gate, [noisy(lit, rng) for _ in range(15)], t0=1005.0))
    assert gate.counters.lighting == before + 1 and gate.counters.motion == 0
    # and motion after the relight is seen against the new background
    more = [noisy(with_box(lit, 20 + 12 * i, 200), rng) for i in range(10)]
    assert all(run(gate, more, t0=1010.0)[1:])
    assert gate.counters.motion >= 8


def test_tracks_active_keeps_gate_open(background):
    rng = np.random.default_rng(6)
    gate = MotionGate(MotionConfig(refresh_s=60.0, hold_s=0.0))
    frames = [noisy(background, rng) for _ in range(20)]
    assert all(run(gate, frames, active=True))
    assert not any(run(gate, frames, t0=1000.0 + 20 / FPS, active=False))


def test_disabled_gate_passes_everything_and_reconfigure(background):
    rng = np.random.default_rng(7)
    gate = MotionGate(MotionConfig(enabled=False))
    frames = [noisy(background, rng) for _ in range(10)]
    assert all(run(gate, frames))
    gate.reconfigure(MotionConfig(enabled=True, width=96, refresh_s=60.0))
    passed = run(gate, frames, t0=2000.0)
    assert passed[0] is True and not any(passed[1:])  # first frame at the new width seeds the background


def test_uses_lores_when_present(background):
    rng = np.random.default_rng(8)
    gate = MotionGate(MotionConfig(refresh_s=60.0))
    still_full = background  # the full frame never changes; only the lores view shows the motion
    lores_bg = cv2.resize(background, (320, 180), interpolation=cv2.INTER_AREA)
    results = []
    for i in range(20):
        lores = noisy(lores_bg if i < 10 else with_box(lores_bg, 10 + 8 * i, 60, 20, 40), rng)
        results.append(gate.check(Frame(image=still_full, ts=i / FPS, index=i, lores=lores), i / FPS, False))
    assert not any(results[1:10]) and all(results[11:])


def shadow(img: np.ndarray, left: int, width: int = 240, factor: float = 0.6, edge: float = 40.0) -> np.ndarray:
    """A cloud shadow band darkening ``[left, left + width)`` with soft edges (a cloud's penumbra)."""
    x = np.arange(W, dtype=np.float32)
    ramp = np.clip(np.minimum(x - left, left + width - x) / edge, 0, 1)
    gain = 1 - (1 - factor) * ramp
    return np.clip(img.astype(np.float32) * gain[None, :, None], 0, 255).astype(np.uint8)


def test_sweeping_shadow_is_not_motion_but_a_walker_in_it_is(background):
    rng = np.random.default_rng(9)
    gate = MotionGate(MotionConfig(refresh_s=600.0, hold_s=0.0))
    frames = [noisy(background, rng) for _ in range(15)]
    frames += [noisy(shadow(background, -200 + 3 * i), rng) for i in range(200)]  # 3 px per frame
    passed = run(gate, frames)
    assert not any(passed[1:]), f"shadow opened the gate {sum(passed[1:])} times"
    # a light-coloured walker (a red coat on a shadowed wall is the same grey: invisible to any grey diff)
    walker = [noisy(with_box(shadow(background, 400), 420 + 6 * i, 150, 30, 70, (235, 235, 225)), rng)
              for i in range(20)]
    assert sum(run(gate, walker, t0=1100.0)[1:]) >= 18


def test_street_scene_gate_sees_every_object(tmp_path):
    """On the synthetic street (light drift, cloud shadows, noise) the gate skips frames without objects
    yet runs the detector on (nearly) every frame that shows a moving object."""
    from agent.sources.scene import StreetScene

    scene = StreetScene(seed=3, width=640, height=360, fps=FPS)
    gate = MotionGate(MotionConfig())
    boxes = covered = empty = empty_passed = 0
    for i in range(int(120 * FPS)):
        img, truth = scene.render(i)
        moving = [tb for tb in truth if tb.object_id != scene.parked.object_id]
        p = gate.check(Frame(image=img, ts=i / FPS, index=i), i / FPS, False)
        boxes += len(moving)
        covered += len(moving) * p
        empty += not moving
        empty_passed += p and not moving
    assert boxes > 100 and empty > 100
    assert covered >= 0.98 * boxes
    assert empty_passed <= 0.5 * empty


def test_video_luma_is_seen_as_the_rgb_frame_would_be():
    """I420 frames feed the gate their Y plane (no colour conversion); stretched from video's limited range
    it must match the grey of the same picture converted to RGB, or thresholds would mean other things."""
    import av

    with av.open(str(shared("clips/traffic_frames.mp4"))) as container:
        yuv = next(container.decode(video=0)).to_ndarray(format="yuv420p")
    rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    gate = MotionGate(MotionConfig())
    from_luma = gate._small_grey(Frame(None, 0.0, 0, yuv=yuv)).astype(int)
    from_rgb = gate._small_grey(Frame(rgb, 0.0, 0)).astype(int)
    assert from_luma.shape == from_rgb.shape
    assert np.abs(from_luma - from_rgb).max() <= 2
