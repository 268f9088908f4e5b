"""Thumbnails: crop with context, never upscale, max_side, byte budget always kept, sha256 of the bytes."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ThumbnailConfig
from agent.events.thumbnails import Thumbnailer, box_region, downscale, encode_jpeg
from agent.sources.base import Frame


@pytest.fixture(scope="module")
def noise_frame() -> np.ndarray:
    """Full HD noise: the worst case for JPEG size."""
    return np.random.default_rng(0).integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8)


def thumb_pixels(image: np.ndarray, bbox, context: float, max_side: int) -> np.ndarray:
    """What the engine keeps of a track's best frame (``cut_frame``) as it is encoded (``scaled``)."""
    th = Thumbnailer(ThumbnailConfig(context=context, max_side=max_side))
    return th.cut_frame(Frame(image=image), bbox).scaled()


def test_crop_adds_context_and_clips_to_frame():
    img = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    crop = thumb_pixels(img, (0.25, 0.25, 0.75, 0.75), context=0.1, max_side=10_000)
    # box is 100 x 50 px; 10 % margin each side → 120 x 60, starting at (40, 20)
    np.testing.assert_array_equal(crop, img[20:80, 40:160])
    edge = thumb_pixels(img, (0.0, 0.0, 0.5, 0.5), context=0.5, max_side=10_000)
    np.testing.assert_array_equal(edge, img[0:75, 0:150])  # clipped at the top-left border


def test_never_upscales_and_respects_max_side():
    img = np.random.default_rng(1).integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
    small = thumb_pixels(img, (0.5, 0.5, 0.52, 0.55), context=0.0, max_side=320)
    np.testing.assert_array_equal(small, img[360:396, 640:666])  # native: 25.6 x 36 → whole pixels around it
    big = thumb_pixels(img, (0.0, 0.0, 1.0, 1.0), context=0.0, max_side=320)
    assert big.shape[:2] == (180, 320)
    tiny = thumb_pixels(img, (0.5, 0.5, 0.5001, 0.5001), context=0.0, max_side=320)
    assert min(tiny.shape[:2]) >= 8


def test_budget_kept_and_sha_matches(noise_frame):
    th = Thumbnailer(ThumbnailConfig(max_bytes=5_000, max_side=320, quality=90, min_quality=40))
    crop = th.cut(noise_frame, (0.1, 0.1, 0.6, 0.9)).scaled()
    thumb = th.encode(crop)
    assert thumb is not None
    assert len(thumb.jpeg) <= 5_000
    assert hashlib.sha256(thumb.jpeg).hexdigest() == thumb.sha256 == thumb.ref.sha256
    assert thumb.ref.bytes == len(thumb.jpeg)
    decoded = simplejpeg.decode_jpeg(thumb.jpeg)
    assert decoded.shape[:2] == (thumb.h, thumb.w)
    # noise does not fit at full size: the size was stepped down below the crop's
    assert thumb.w < crop.shape[1]


def test_quality_first_on_easy_content():
    th = Thumbnailer(ThumbnailConfig(max_bytes=24_000, max_side=320))
    smooth = np.zeros((200, 300, 3), np.uint8)
    smooth[:, :, 0] = np.linspace(0, 255, 300, dtype=np.uint8)
    thumb = th.encode(smooth)
    assert thumb is not None and (thumb.w, thumb.h) == (300, 200)  # fits at full size and top quality
    assert thumb.jpeg == encode_jpeg(smooth, th.cfg.quality)
    assert th.encodes == 1


@settings(max_examples=25, deadline=None)
@given(
    budget=st.integers(1_000, 60_000),
    box=st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.01, 1), st.floats(0.01, 1)),
    max_side=st.integers(32, 640),
)
def test_budget_property(noise_frame, budget, box, max_side):
    x1, y1, w, h = box
    bbox = (x1, y1, min(1.0, x1 + w), min(1.0, y1 + h))
    th = Thumbnailer(ThumbnailConfig(max_bytes=budget, max_side=max_side))
    thumb = th.encode(th.cut(noise_frame, bbox).scaled())
    assert thumb is not None
    assert len(thumb.jpeg) <= budget
    assert max(thumb.w, thumb.h) <= max_side


def test_runtime_budget_shrinks(noise_frame):
    th = Thumbnailer(ThumbnailConfig(max_bytes=40_000))
    crop = th.cut(noise_frame, (0.2, 0.2, 0.5, 0.8)).scaled()
    first = th.encode(crop)
    th.set_budget(3_000)
    assert th.budget == 3_000
    second = th.encode(crop)
    assert first is not None and second is not None
    assert len(second.jpeg) <= 3_000 < len(first.jpeg)
    th.set_budget(10**9)
    assert th.budget == 40_000  # a cap never raises the configured budget
    th.set_budget(200)  # smaller than any JPEG (headers alone): no thumbnail rather than an oversized one
    assert th.encode(crop) is None and th.over_budget == 1


def test_opencv_fallback_encodes_same_size(monkeypatch):
    import agent.events.thumbnails as mod

    img = cv2.resize(np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 48))
    monkeypatch.setattr(mod, "simplejpeg", None)
    data = mod.encode_jpeg(img, 80)
    assert data[:2] == b"\xff\xd8"
    assert simplejpeg.decode_jpeg(data).shape == (48, 64, 3)


@settings(max_examples=25, deadline=None)
@given(
    box=st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.0001, 1), st.floats(0.0001, 1)),
    max_side=st.integers(32, 640),
    context=st.floats(0, 0.5),
)
def test_cut_then_encode_equals_crop_then_encode(noise_frame, box, max_side, context):
    """The engine keeps native cuts and downscales at encode time: the same JPEG as cropping right away."""
    x1, y1, w, h = box
    bbox = (x1, y1, min(1.0, x1 + w), min(1.0, y1 + h))
    th = Thumbnailer(ThumbnailConfig(max_bytes=60_000, max_side=max_side, context=context))
    cut = th.cut(noise_frame, bbox)
    assert cut.pixels.base is None  # a copy: the frame may be reused by its source
    at_once = downscale(box_region(noise_frame, bbox, context), max_side)  # cropped and downscaled right away
    np.testing.assert_array_equal(cut.scaled(), at_once)
    assert th.encode(cut) == th.encode(at_once)


@settings(max_examples=60, deadline=None)
@given(
    box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
    context=st.floats(0, 0.5),
)
def test_cut_of_an_i420_frame_converts_only_the_region_to_the_same_pixels(box, context):
    from agent.sources.base import Frame

    rng = np.random.default_rng(1)
    yuv = rng.integers(0, 256, (540 * 3 // 2, 960), dtype=np.uint8)
    x1, x2 = sorted(box[0::2])
    y1, y2 = sorted(box[1::2])
    th = Thumbnailer(ThumbnailConfig(context=context))
    cut = th.cut_frame(Frame(yuv=yuv), (x1, y1, x2, y2))
    whole = th.cut(cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420), (x1, y1, x2, y2))
    np.testing.assert_array_equal(cut.pixels, whole.pixels)
    assert cut.pixels.base is None  # its own array: no frame kept alive
    rgb = Frame(image=cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420))  # RGB frames: a plain cut
    np.testing.assert_array_equal(th.cut_frame(rgb, (x1, y1, x2, y2)).pixels, whole.pixels)
