"""Motion gate: skip the detector on frames where nothing moved.

A small grey, blurred copy of each frame is compared with a running-average background. A frame is
"motion" when a changed blob covers at least ``min_area`` of the frame. Before comparing, the background
is fitted to the frame's global gain and offset (exposure steps), and changed pixels whose ratio to the
background is locally constant (a cloud shadow sweeping over the street, a lamp lighting a wall) are not
counted. A change covering more than ``max_area`` is a lighting change too (street lights switching): the
background is reset to the new image. The gate opens on motion, stays open ``hold_s`` after the
last motion or the last moment a caller reported live moving tracks, and opens every ``refresh_s``
regardless, so a car that parked while the gate was closed is still seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from agent.config import MotionConfig
from agent.sources.base import Frame

#: local std of log(frame / background) under which a change is illumination (cloud shadow, a lamp), not an
#: object; on the synthetic street it removes ~80 % of the gate openings on empty frames, keeps ~99.5 %
#: of objects
SHADOW_TAU = 0.1
#: morphological close before contours, so one walker is one blob rather than a dozen
_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass
class MotionCounters:
    checked: int = 0
    passed: int = 0
    motion: int = 0
    refresh: int = 0
    hold: int = 0
    lighting: int = 0


class MotionGate:
    """``check(frame, now, tracks_active)`` says whether the detector should run on ``frame``."""

    #: config sections ``reconfigure`` takes hot
    CONFIG_SECTIONS: ClassVar[frozenset[str]] = frozenset({"motion"})

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self.counters = MotionCounters()
        self._bg: np.ndarray | None = None
        self._last_pass = float("-inf")
        self._last_active = float("-inf")
        #: share of the frame covered by the largest moving blob on the last check
        self.last_area = 0.0

    def reconfigure(self, cfg: MotionConfig) -> None:
        if cfg.width != self.cfg.width:
            self._bg = None
        self.cfg = cfg

    @property
    def stats(self) -> dict[str, int]:
        return dict(vars(self.counters))

    def _small_grey(self, frame: Frame) -> np.ndarray:
        # the camera's lores view, or the decoder's Y plane of an I420 frame (no colour conversion), or RGB
        planes = frame.planes() if frame.lores is None else None
        src = frame.lores if frame.lores is not None else planes[0] if planes is not None else frame.image
        h, w = src.shape[:2]
        width = min(self.cfg.width, w)
        height = max(1, round(h * width / w))
        small = cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        elif src is not frame.lores:  # video luma is limited range (16-235): stretch it as RGB→grey would be
            grey = cv2.convertScaleAbs(small, alpha=255 / 219, beta=-16 * 255 / 219)
        else:
            grey = small
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def _motion(self, grey: np.ndarray) -> bool:
        """Compare with the background, then fold the frame into it. True when something moved."""
        cfg = self.cfg
        if self._bg is None or self._bg.shape != grey.shape:
            self._bg = grey.astype(np.float32)
            self.last_area = 0.0
            return False
        bg = self._bg
        # Fit the background to the frame's global gain and offset first (exposure steps, street lights,
        # clouds), saturating like the sensor does, so a global change never counts as motion.
        g_mean, g_std = cv2.meanStdDev(grey)
        b_mean, b_std = cv2.meanStdDev(bg)
        gain = float(g_std[0, 0]) / float(b_std[0, 0]) if b_std[0, 0] > 1.0 else 1.0
        ref = np.clip(bg * gain + (float(g_mean[0, 0]) - gain * float(b_mean[0, 0])), 0, 255)
        diff = cv2.absdiff(grey.astype(np.float32), ref)
        mask = (diff > cfg.pixel_threshold).astype(np.uint8)
        total = mask.size
        changed = int(np.count_nonzero(mask))
        if changed > cfg.max_area * total:
            self.counters.lighting += 1
            self._bg = grey.astype(np.float32)
            self.last_area = 0.0
            return False
        cv2.accumulateWeighted(grey, bg, cfg.alpha)
        if changed < max(1, cfg.min_area * total):
            self.last_area = 0.0
            return False
        # Shadows and local light changes scale the background by a locally constant factor; objects
        # replace it, so their log ratio to the background jumps at their outline. Keep only changed
        # pixels whose neighbourhood log ratio is not smooth (a flat object keeps its outline, enough
        # for its contour).
        lr = cv2.log(grey.astype(np.float32) + 1.0) - cv2.log(ref.astype(np.float32) + 1.0)
        m = cv2.blur(lr, (5, 5))
        var = cv2.blur(lr * lr, (5, 5)) - m * m
        mask[var < SHADOW_TAU * SHADOW_TAU] = 0
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _KERNEL)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        largest = max((cv2.contourArea(c) + cv2.arcLength(c, True) / 2 + 1 for c in contours), default=0.0)
        self.last_area = largest / total
        return self.last_area >= cfg.min_area

    def check(self, frame: Frame, now: float, tracks_active: bool) -> bool:
        """True when the detector should run on this frame.

        ``tracks_active``: the caller has live tracks that are still moving (not parked ones; a parked
        car must not hold the gate open forever: see ``EventEngine.moving_tracks``).
        """
        c = self.counters
        c.checked += 1
        if not self.cfg.enabled:
            c.passed += 1
            self._last_pass = now
            return True
        moved = self._motion(self._small_grey(frame))
        if tracks_active:
            self._last_active = now
        if moved:
            c.motion += 1
            self._last_active = now
        elif now - self._last_active <= self.cfg.hold_s:
            c.hold += 1
        elif now - self._last_pass >= self.cfg.refresh_s:
            c.refresh += 1
        else:
            return False
        c.passed += 1
        self._last_pass = now
        return True
