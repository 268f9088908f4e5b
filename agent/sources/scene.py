"""A procedural street scene with ground truth: the default source, and the demo model's training data.

A fixed camera looks down a city street from the side: buildings, a far and a near pavement, a parked
car, two traffic lanes, a cycle lane and a zebra crossing. People, cars, motorbikes and bicycles enter,
cross and leave; nearer objects are drawn larger (perspective). Activity swings between quiet and busy
stretches, the light drifts, a cloud shadow passes now and then, and the sensor adds gaussian noise.

``StreetScene(seed, width, height, fps).render(index)`` is a pure function of ``(seed, index)``: the
traffic of each minute is drawn from its own seeded generator, so any frame can be rendered without
rendering the ones before it (random access for training and tests). Speed comes from drawing the
static background once, drawing actors with OpenCV primitives, and adding noise from a precomputed bank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from agent.sources.base import TruthBox

LABELS: tuple[str, ...] = ("person", "car", "motorbike", "bicycle")

#: seconds of scene time whose traffic one generator draws; every actor lives shorter than this
BLOCK_S = 60.0
MAX_LIFE_S = 55.0
#: a truth box is reported only when this share of the object is visible (in frame, not hidden)
MIN_VISIBLE = 0.5
#: ... and its visible part is at least this big (normalised to the frame)
MIN_BOX_W, MIN_BOX_H = 0.008, 0.03

# vertical layout, as a share of the frame height (y of the feet / wheels' contact line)
HORIZON = 0.40           # bottom of the building facades
FAR_WALK = 0.475         # far pavement
PARKING = 0.545          # parked car at the far kerb
LANE_LEFT = 0.635        # traffic towards the left
LANE_RIGHT = 0.755       # traffic towards the right
CYCLE = 0.835            # cycle lane (towards the right)
NEAR_WALK = 0.965        # near pavement
KERB_FAR, KERB_NEAR, CYCLE_LINE = 0.50, 0.865, 0.795

# full object height (share of frame height) at the nearest depth, and width / height
_HEIGHT = {"person": 0.25, "car": 0.19, "motorbike": 0.21, "bicycle": 0.22}
_ASPECT = {"person": 0.36, "car": 2.45, "motorbike": 1.3, "bicycle": 1.15}

_CAR_COLOURS = [(235, 235, 235), (190, 192, 196), (35, 35, 40), (170, 30, 30), (30, 60, 150), (40, 90, 60),
                (230, 190, 40), (120, 120, 130), (90, 40, 30), (200, 110, 40), (20, 110, 160)]
_SKIN = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (90, 60, 40)]
_CLOTHES = [(200, 40, 40), (40, 60, 160), (30, 30, 30), (230, 230, 230), (60, 130, 60), (230, 180, 40),
            (120, 70, 140), (90, 90, 100), (160, 110, 70), (30, 120, 150), (220, 120, 150)]
_FACADES = [(170, 90, 70), (200, 180, 150), (150, 150, 155), (215, 200, 170), (120, 80, 60), (185, 160, 120),
            (100, 110, 120), (225, 215, 195)]


def depth_scale(y: float) -> float:
    """Size factor of an object whose feet are at ``y`` (share of height): 0.5 far, 1.0 near."""
    return 0.5 + 0.5 * (y - FAR_WALK) / (NEAR_WALK - FAR_WALK)


@dataclass(slots=True)
class Actor:
    """One object's whole life: where it enters, how it moves, what it looks like."""

    object_id: int
    label: str
    t0: float
    t1: float
    x0: float            # centre x (share of width) at t0
    vx: float            # share of width per second
    y0: float            # feet y (share of height) at t0
    vy: float            # share of height per second (pedestrians on the crossing)
    size: float          # height multiplier (individual variation)
    variant: int
    colours: tuple[tuple[int, int, int], ...]
    phase: float

    def box_px(self, t: float, width: int, height: int) -> tuple[float, float, float, float]:
        dt = t - self.t0
        y = self.y0 + self.vy * dt
        h = _HEIGHT[self.label] * depth_scale(y) * self.size * height
        w = _ASPECT[self.label] * h * (1.12 if self.label == "car" and self.variant == 2 else 1.0)
        cx = (self.x0 + self.vx * dt) * width
        bottom = y * height
        return cx - w / 2, bottom - h, cx + w / 2, bottom

    @property
    def facing(self) -> int:
        return 1 if self.vx >= 0 else -1


def activity(seed_phase: float, period: float, t: float) -> float:
    """Traffic intensity in 0.1..2.0: long quiet stretches and busy ones."""
    wave = 0.5 + 0.5 * math.sin(2 * math.pi * t / period + seed_phase)
    return 0.1 + 1.9 * wave**2


class _Spawner:
    """A stream of actors of one kind on one path (a lane, a pavement or the crossing)."""

    def __init__(self, name: str, labels: tuple[str, ...], weights: tuple[float, ...], rate: float,
                 y: float, direction: int, keep_gap: bool, crossing: bool = False) -> None:
        self.name, self.labels, self.weights, self.rate = name, labels, weights, rate
        self.y, self.direction, self.keep_gap, self.crossing = y, direction, keep_gap, crossing


_SPAWNERS = (
    _Spawner("far-walk", ("person",), (1.0,), 1 / 9, FAR_WALK, 0, keep_gap=False),
    _Spawner("near-walk", ("person",), (1.0,), 1 / 8, NEAR_WALK, 0, keep_gap=False),
    _Spawner("lane-left", ("car", "motorbike"), (0.72, 0.28), 1 / 6, LANE_LEFT, -1, keep_gap=True),
    _Spawner("lane-right", ("car", "motorbike"), (0.72, 0.28), 1 / 6, LANE_RIGHT, 1, keep_gap=True),
    _Spawner("cycle", ("bicycle",), (1.0,), 1 / 10, CYCLE, 1, keep_gap=True),
    _Spawner("crossing", ("person",), (1.0,), 1 / 25, FAR_WALK, 0, keep_gap=False, crossing=True),
)


class StreetScene:
    """Deterministic street scene for a seed; ``render(index)`` gives the frame and its truth boxes."""

    def __init__(self, seed: int = 7, width: int = 1280, height: int = 720, fps: float = 15.0,
                 noise_sigma: float = 3.0) -> None:
        if width < 64 or height < 64 or fps <= 0:
            raise ValueError("scene needs width, height >= 64 and fps > 0")
        self.seed, self.width, self.height, self.fps = int(seed), int(width), int(height), float(fps)
        rng = np.random.default_rng([self.seed, 0xC0FFEE])
        self._act_phase = float(rng.uniform(0, 2 * math.pi))
        self._act_period = float(rng.uniform(100, 200))
        self._light_phase = rng.uniform(0, 2 * math.pi, 3)
        self._light_period = float(rng.uniform(60, 120))
        self._shadow_period = float(rng.uniform(40, 70))
        self._shadow_offset = float(rng.uniform(0, self._shadow_period))
        self._lane_speed = {
            "lane-left": float(rng.uniform(1.1, 1.6)),   # car lengths per second
            "lane-right": float(rng.uniform(1.1, 1.6)),
            "cycle": float(rng.uniform(1.2, 1.7)),
        }
        self._crossing_x = float(rng.uniform(0.45, 0.7))
        self.parked = Actor(0, "car", -1e9, 1e18, float(rng.uniform(0.12, 0.3)), 0.0, PARKING, 0.0,
                            float(rng.uniform(0.95, 1.05)), int(rng.integers(0, 3)),
                            (_CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))],), 0.0)
        self._background = self._draw_background(rng)
        self._noise_pos, self._noise_neg = self._noise_bank(rng, noise_sigma)
        self._block = lru_cache(maxsize=8)(self._make_block)

    # ------------------------------------------------------------ background (drawn once)

    def _draw_background(self, rng: np.random.Generator) -> np.ndarray:
        w, h = self.width, self.height
        img = np.zeros((h, w, 3), np.uint8)
        Y = lambda f: round(f * h)  # noqa: E731 - tiny local helper
        sky = np.linspace([150, 190, 235], [205, 225, 245], Y(0.2)).astype(np.uint8)
        img[: Y(0.2)] = sky[:, None, :]
        img[Y(0.2): Y(HORIZON)] = (200, 220, 240)
        x = -int(rng.integers(0, max(2, w // 20)))
        while x < w:
            bw = int(rng.uniform(0.09, 0.22) * w)
            top = Y(rng.uniform(0.0, 0.16))
            colour = _jitter(rng, _FACADES[int(rng.integers(len(_FACADES)))], 12)
            cv2.rectangle(img, (x, top), (x + bw, Y(HORIZON)), colour, -1)
            cv2.rectangle(img, (x, top), (x + bw, top + max(2, Y(0.012))), _shade(colour, 0.7), -1)
            self._windows(img, rng, x, top, bw, Y(HORIZON))
            x += bw + int(rng.integers(0, max(2, w // 60)))
        # far pavement, kerb, road, cycle lane, near kerb and pavement
        img[Y(HORIZON): Y(KERB_FAR)] = (168, 166, 160)
        for yy in np.linspace(HORIZON + 0.02, KERB_FAR - 0.01, 3):
            cv2.line(img, (0, Y(yy)), (w, Y(yy)), (150, 148, 143), 1)
        for xx in range(0, w, max(8, w // 24)):
            cv2.line(img, (xx, Y(HORIZON)), (xx - w // 80, Y(KERB_FAR)), (150, 148, 143), 1)
        img[Y(KERB_FAR): Y(KERB_FAR) + max(2, Y(0.008))] = (200, 198, 190)
        road_top = Y(KERB_FAR) + max(2, Y(0.008))
        img[road_top: Y(KERB_NEAR)] = (78, 80, 84)
        texture = rng.normal(0, 4, (Y(KERB_NEAR) - road_top, w, 1))
        img[road_top: Y(KERB_NEAR)] = np.clip(img[road_top: Y(KERB_NEAR)] + texture, 0, 255).astype(np.uint8)
        img[Y(CYCLE_LINE): Y(KERB_NEAR)] = (img[Y(CYCLE_LINE): Y(KERB_NEAR)] * np.array([1.25, 0.8, 0.75])).clip(
            0, 255).astype(np.uint8)
        dash, mid = max(8, w // 20), Y((LANE_LEFT + LANE_RIGHT) / 2 - 0.04)
        for xx in range(0, w, 2 * dash):
            cv2.rectangle(img, (xx, mid), (xx + dash, mid + max(1, Y(0.006))), (225, 225, 215), -1)
        cv2.rectangle(img, (0, Y(CYCLE_LINE)), (w, Y(CYCLE_LINE) + max(1, Y(0.006))), (230, 230, 225), -1)
        cx, stripe = int(self._crossing_x * w), max(3, Y(0.018))
        for yy in range(Y(KERB_FAR) + stripe, Y(KERB_NEAR) - stripe, 2 * stripe):
            half = int(w * 0.05 * (0.8 + 0.4 * (yy / h)))
            cv2.rectangle(img, (cx - half, yy), (cx + half, yy + stripe), (215, 215, 210), -1)
        img[Y(KERB_NEAR): Y(KERB_NEAR) + max(2, Y(0.012))] = (205, 203, 195)
        img[Y(KERB_NEAR) + max(2, Y(0.012)):] = (175, 172, 165)
        for xx in range(0, w, max(10, w // 14)):
            cv2.line(img, (xx, Y(KERB_NEAR)), (xx + w // 40, h), (155, 152, 146), 1)
        for post_x in rng.uniform(0.05, 0.95, 2):  # lamp posts on the far pavement, behind everyone
            px = int(post_x * w)
            cv2.line(img, (px, Y(HORIZON + 0.03)), (px, Y(0.12)), (50, 55, 60), max(2, w // 400))
            cv2.line(img, (px, Y(0.12)), (px + w // 40, Y(0.13)), (50, 55, 60), max(2, w // 400))
        return img

    @staticmethod
    def _windows(img: np.ndarray, rng: np.random.Generator, x: int, top: int, bw: int, bottom: int) -> None:
        h = bottom - top
        cols = max(2, int(bw / max(8, h * 0.12)))
        floors = max(2, int(h / max(8, bw * 0.25)))
        ww, wh = bw / cols * 0.55, h / (floors + 1) * 0.5
        glass = (60, 80, 100) if rng.random() < 0.5 else (90, 110, 130)
        for f in range(floors):
            for c in range(cols):
                x1 = int(x + (c + 0.225) * bw / cols)
                y1 = int(top + (f + 0.45) * h / (floors + 1))
                lit = rng.random() < 0.15
                cv2.rectangle(img, (x1, y1), (int(x1 + ww), int(y1 + wh)), (230, 210, 140) if lit else glass, -1)
        door_w = max(3, int(bw * 0.18))
        dx = int(x + rng.uniform(0.1, 0.7) * bw)
        cv2.rectangle(img, (dx, int(bottom - h * 0.16)), (dx + door_w, bottom), (60, 45, 40), -1)

    def _noise_bank(self, rng: np.random.Generator, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative parts of one gaussian noise field a little larger than the frame."""
        pad = 32
        noise = rng.standard_normal((self.height + pad, self.width + pad, 3), dtype=np.float32) * sigma
        noise = np.clip(np.rint(noise), -255, 255)
        return np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)

    # ------------------------------------------------------------ traffic

    def _make_block(self, block: int) -> tuple[Actor, ...]:
        rng = np.random.default_rng([self.seed, 0xB10C, block + 1_000_000])
        start = block * BLOCK_S
        actors: list[Actor] = []
        for si, sp in enumerate(_SPAWNERS):
            peak = sp.rate * 2.0
            t = start
            last = -1e9
            while True:
                t += float(rng.exponential(1 / peak))
                if t >= start + BLOCK_S:
                    break
                if rng.random() > activity(self._act_phase, self._act_period, t) / 2.0:
                    continue
                label = sp.labels[int(rng.choice(len(sp.labels), p=sp.weights))]
                actor = self._make_actor(rng, sp, label, t, block * 100_000 + si * 10_000 + len(actors) + 1)
                if sp.keep_gap:
                    w_norm = _HEIGHT["car"] * depth_scale(sp.y) * _ASPECT["car"] * 1.2 * self.height / self.width
                    gap = 1.5 * w_norm / abs(actor.vx) + 0.3
                    if t - last < gap or t - start < gap:
                        continue
                    last = t
                actors.append(actor)
        return tuple(actors)

    def _make_actor(self, rng: np.random.Generator, sp: _Spawner, label: str, t: float, oid: int) -> Actor:
        size = float(rng.uniform(0.85, 1.12))
        variant = int(rng.integers(0, 3))
        hw = self.height / self.width
        colours = self._colours(rng, label)
        if sp.crossing:
            down = rng.random() < 0.5
            y0, y1 = (FAR_WALK, NEAR_WALK) if down else (NEAR_WALK, FAR_WALK)
            speed = float(rng.uniform(0.045, 0.07))  # share of height per second
            vy = speed if down else -speed
            x0 = self._crossing_x + float(rng.uniform(-0.03, 0.03))
            return Actor(oid, label, t, t + abs(y1 - y0) / speed, x0, float(rng.uniform(-0.004, 0.004)), y0, vy,
                         size, variant, colours, float(rng.uniform(0, 2 * math.pi)))
        height_h = _HEIGHT[label] * depth_scale(sp.y) * size
        w_norm = _ASPECT[label] * height_h * hw * (1.12 if label == "car" and variant == 2 else 1.0)
        if label == "person":
            direction = 1 if rng.random() < 0.5 else -1
            speed_h = float(rng.uniform(0.6, 1.0)) * height_h  # body heights per second
        else:
            direction = sp.direction
            speed_h = self._lane_speed[sp.name] * _HEIGHT["car"] * depth_scale(sp.y) * _ASPECT["car"]
        vx = max(speed_h * hw, (1 + 2 * w_norm) / MAX_LIFE_S) * direction
        x0 = -w_norm / 2 if direction > 0 else 1 + w_norm / 2
        life = (1 + w_norm) / abs(vx)
        return Actor(oid, label, t, t + life, x0, vx, sp.y, 0.0, size, variant, colours,
                     float(rng.uniform(0, 2 * math.pi)))

    @staticmethod
    def _colours(rng: np.random.Generator, label: str) -> tuple[tuple[int, int, int], ...]:
        pick = lambda pal: _jitter(rng, pal[int(rng.integers(len(pal)))], 18)  # noqa: E731
        if label == "car":
            return (pick(_CAR_COLOURS),)
        if label == "person":
            return pick(_SKIN), pick(_CLOTHES), pick(_CLOTHES), pick([(20, 15, 10), (90, 60, 30), (200, 170, 90),
                                                                       (140, 140, 140)])
        frame = pick(_CAR_COLOURS) if label == "motorbike" else pick(_CLOTHES)
        return frame, pick(_SKIN), pick(_CLOTHES), pick(_CLOTHES)

    def actors_at(self, t: float) -> list[Actor]:
        """Every actor alive at scene time ``t`` (the parked car first)."""
        block = math.floor(t / BLOCK_S)
        alive = [self.parked]
        for b in (block - 1, block):
            alive.extend(a for a in self._block(b) if a.t0 <= t < a.t1)
        return alive

    # ------------------------------------------------------------ frames

    def time_of(self, index: int) -> float:
        return index / self.fps

    def truth(self, index: int) -> list[TruthBox]:
        return self._layout(self.time_of(index))[1]

    def _layout(self, t: float) -> tuple[list[tuple[Actor, tuple[float, float, float, float]]], list[TruthBox]]:
        """Actors in drawing order (far to near) with pixel boxes, and the truth boxes of the visible ones."""
        w, h = self.width, self.height
        placed = [(a, a.box_px(t, w, h)) for a in self.actors_at(t)]
        placed.sort(key=lambda p: (p[1][3], p[0].object_id))
        truth: list[TruthBox] = []
        for i, (actor, box) in enumerate(placed):
            full = (box[2] - box[0]) * (box[3] - box[1])
            clipped = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(w)), min(box[3], float(h)))
            cw, ch = clipped[2] - clipped[0], clipped[3] - clipped[1]
            if cw <= 0 or ch <= 0 or full <= 0:
                continue
            hidden = sum(_overlap(clipped, other) for _, other in placed[i + 1:])
            visible = cw * ch - hidden
            if visible < MIN_VISIBLE * full or cw < MIN_BOX_W * w or ch < MIN_BOX_H * h:
                continue
            truth.append(TruthBox(actor.label, (clipped[0] / w, clipped[1] / h, clipped[2] / w, clipped[3] / h),
                                  actor.object_id))
        return placed, truth

    def render(self, index: int) -> tuple[np.ndarray, list[TruthBox]]:
        """The RGB frame (H, W, 3 uint8) at ``index`` and the truth boxes of the objects visible in it."""
        t = self.time_of(index)
        placed, truth = self._layout(t)
        img = self._background.copy()
        for actor, box in placed:
            if box[2] < 0 or box[0] > self.width or box[3] < 0 or box[1] > self.height:
                continue
            _DRAW[actor.label](img, box, actor, t)
        out = cv2.LUT(img, self._light_lut(t, 1.0))
        self._shadow(img, out, t)
        self._add_noise(out, index)
        return out, truth

    def _light_lut(self, t: float, factor: float) -> np.ndarray:
        p = self._light_phase
        gain = 1.0 + 0.16 * math.sin(2 * math.pi * t / self._light_period + p[0]) + 0.05 * math.sin(t / 7 + p[1])
        tint = 0.04 * math.sin(2 * math.pi * t / (1.7 * self._light_period) + p[2])
        g = np.array([gain * (1 + tint), gain, gain * (1 - tint)]) * factor
        return np.clip(np.arange(256, dtype=np.float32)[:, None] * g[None, :], 0, 255).astype(np.uint8)[:, None, :]

    def _shadow(self, src: np.ndarray, out: np.ndarray, t: float) -> None:
        """A slanted cloud shadow band sweeping left to right for part of each shadow period."""
        w, h = self.width, self.height
        phase = ((t + self._shadow_offset) % self._shadow_period) / self._shadow_period
        band, slant = 0.28, 0.25
        left = -band - slant + phase * 2.2  # sweeps in the first half of the period, absent otherwise
        if left > 1.0:
            return
        lut_dark, lut_edge = self._light_lut(t, 0.6), self._light_lut(t, 0.8)
        top = int(0.12 * h)  # the sky stays bright
        strips = max(8, (h - top) // 12)
        for s in range(strips):
            y1, y2 = top + s * (h - top) // strips, top + (s + 1) * (h - top) // strips
            off = slant * (1 - s / strips)
            x1, x2 = left + off, left + off + band
            edge = 0.03
            for a, b, lut in ((x1, x1 + edge, lut_edge), (x1 + edge, x2 - edge, lut_dark), (x2 - edge, x2, lut_edge)):
                xa, xb = max(0, int(a * w)), min(w, int(b * w))
                if xb > xa:
                    out[y1:y2, xa:xb] = cv2.LUT(src[y1:y2, xa:xb], lut)

    def _add_noise(self, out: np.ndarray, index: int) -> None:
        mix = (index * 2654435761 + self.seed * 40503) & 0xFFFFFFFF
        dy, dx = mix % 32, (mix >> 8) % 32
        h, w = self.height, self.width
        cv2.add(out, self._noise_pos[dy: dy + h, dx: dx + w], dst=out)
        cv2.subtract(out, self._noise_neg[dy: dy + h, dx: dx + w], dst=out)


# ---------------------------------------------------------------- drawing helpers


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _shade(colour: tuple[int, ...], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * f)) for c in colour)  # type: ignore[return-value]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


_SHIFT = 3
_ONE = 1 << _SHIFT


class _Pen:
    """Maps box-relative coordinates (u across, v down, 0..1; u mirrored when facing left) to pixels."""

    def __init__(self, img: np.ndarray, box: tuple[float, float, float, float], facing: int) -> None:
        self.img, self.facing = img, facing
        self.x1, self.y1 = box[0], box[1]
        self.w, self.h = box[2] - box[0], box[3] - box[1]

    def pt(self, u: float, v: float) -> tuple[int, int]:
        u = u if self.facing > 0 else 1 - u
        return int((self.x1 + u * self.w) * _ONE), int((self.y1 + v * self.h) * _ONE)

    def poly(self, pts: list[tuple[float, float]], colour: tuple[int, ...]) -> None:
        arr = np.array([self.pt(u, v) for u, v in pts], np.int32)
        cv2.fillPoly(self.img, [arr], colour, cv2.LINE_8, _SHIFT)

    def circle(self, u: float, v: float, r: float, colour: tuple[int, ...], thickness: int = -1) -> None:
        """``r`` is a share of the box height."""
        cv2.circle(self.img, self.pt(u, v), max(_ONE, int(r * self.h * _ONE)), colour, thickness, cv2.LINE_8, _SHIFT)

    def line(self, a: tuple[float, float], b: tuple[float, float], colour: tuple[int, ...], t: float) -> None:
        """``t`` is the thickness as a share of the box height."""
        cv2.line(self.img, self.pt(*a), self.pt(*b), colour, max(1, round(t * self.h)), cv2.LINE_8, _SHIFT)


def _draw_car(img: np.ndarray, box: tuple[float, ...], a: Actor, t: float) -> None:
    pen = _Pen(img, box, a.facing)  # type: ignore[arg-type]
    body = a.colours[0]
    dark, glass = _shade(body, 0.6), (45, 60, 75)
    van = a.variant == 2
    roof_v = 0.0
    cab = [(0.2, 0.47), (0.3 if not van else 0.04, roof_v), (0.72 if not van else 0.8, roof_v), (0.86, 0.47)]
    if a.variant == 1:  # hatchback: steep rear
        cab = [(0.08, 0.47), (0.14, roof_v + 0.03), (0.66, roof_v), (0.84, 0.47)]
    pen.poly(cab, body)
    inset = [(u + (0.03 if u < 0.5 else -0.03), v + 0.07) for u, v in cab]
    inset[0], inset[3] = (inset[0][0] + 0.02, 0.45), (inset[3][0] - 0.02, 0.45)
    pen.poly(inset, glass)
    mid_u = (inset[1][0] + inset[2][0]) / 2
    pen.line((mid_u, 0.06), (mid_u + 0.01, 0.47), body, 0.06)
    pen.poly([(0.0, 0.5), (0.05, 0.43), (0.95, 0.43), (1.0, 0.55), (1.0, 0.82), (0.0, 0.82)], body)
    pen.line((0.02, 0.62), (0.98, 0.62), dark, 0.03)
    pen.poly([(0.965, 0.5), (1.0, 0.52), (1.0, 0.6), (0.96, 0.58)], (250, 245, 210))
    pen.poly([(0.0, 0.52), (0.03, 0.52), (0.03, 0.6), (0.0, 0.6)], (200, 30, 30))
    for u in (0.2, 0.8):
        pen.circle(u, 0.8, 0.2, (20, 20, 22))
        pen.circle(u, 0.8, 0.09, (150, 150, 155))


def _draw_person(img: np.ndarray, box: tuple[float, ...], a: Actor, t: float) -> None:
    pen = _Pen(img, box, a.facing)  # type: ignore[arg-type]
    skin, shirt, trousers, hair = a.colours
    stride = 0.25 if a.vy == 0 else 0.12  # side view walking, or seen from the front on the crossing
    swing = math.sin(a.phase + t * 7.0)
    hip = (0.5, 0.55)
    pen.line(hip, (0.5 + stride * swing, 0.98), trousers, 0.09)
    pen.line(hip, (0.5 - stride * swing, 0.98), _shade(trousers, 0.8), 0.09)
    pen.poly([(0.25, 0.2), (0.75, 0.2), (0.7, 0.58), (0.3, 0.58)], shirt)
    pen.line((0.5, 0.22), (0.5 + 0.3 * swing, 0.5), _shade(shirt, 0.85), 0.06)
    pen.line((0.5, 0.22), (0.5 - 0.3 * swing, 0.5), _shade(shirt, 0.85), 0.06)
    pen.circle(0.5, 0.1, 0.085, skin)
    pen.circle(0.48, 0.07, 0.07, hair)


def _draw_two_wheeler(img: np.ndarray, box: tuple[float, ...], a: Actor, t: float) -> None:
    pen = _Pen(img, box, a.facing)  # type: ignore[arg-type]
    frame, skin, jacket, trousers = a.colours
    motor = a.label == "motorbike"
    r = 0.19 if motor else 0.2
    wheel_v = 1 - r
    wheel_u = (r * pen.h / max(pen.w, 1e-6), 1 - r * pen.h / max(pen.w, 1e-6))
    for u in wheel_u:
        if motor:
            pen.circle(u, wheel_v, r, (25, 25, 25))
            pen.circle(u, wheel_v, r * 0.45, (160, 160, 165))
        else:
            pen.circle(u, wheel_v, r * 0.95, (30, 30, 30), max(1, int(0.035 * pen.h)))
    seat, bar = (0.4, 0.52), (0.78, 0.4)
    if motor:
        pen.poly([(wheel_u[0], wheel_v), (0.3, 0.55), (0.68, 0.5), (0.8, 0.58), (wheel_u[1], wheel_v),
                  (0.55, 0.82)], frame)
        pen.poly([(0.45, 0.48), (0.7, 0.45), (0.72, 0.55), (0.45, 0.58)], _shade(frame, 0.7))
    else:
        crank = (0.5, wheel_v)
        for p, q in ((wheel_u[0], crank), (crank, seat), (seat, (wheel_u[0], wheel_v)), (seat, bar),
                     (bar, crank), (bar, (wheel_u[1], wheel_v))):
            pa = (p, wheel_v) if isinstance(p, float) else p
            pen.line(pa, q, frame, 0.03)
    lean = 0.12 if motor else 0.06
    shoulder = (seat[0] + lean + 0.05, 0.2)
    pedal = math.sin(a.phase + t * 6.0)
    knee = (seat[0] + 0.18, 0.55 + 0.05 * pedal)
    pen.line(seat, knee, trousers, 0.08)
    pen.line(knee, (0.5 + 0.05 * pedal, 0.86), trousers, 0.07)
    pen.poly([(seat[0] - 0.06, seat[1]), (seat[0] + 0.08, seat[1]), (shoulder[0] + 0.07, shoulder[1]),
              (shoulder[0] - 0.06, shoulder[1])], jacket)
    pen.line(shoulder, bar, _shade(jacket, 0.85), 0.06)
    head = (shoulder[0] + 0.03, 0.09)
    if motor:
        pen.circle(*head, 0.095, _shade(frame, 0.5))
        pen.circle(head[0] + 0.04, head[1] + 0.01, 0.04, (40, 50, 60))
    else:
        pen.circle(*head, 0.08, skin)


_DRAW = {"car": _draw_car, "person": _draw_person, "motorbike": _draw_two_wheeler, "bicycle": _draw_two_wheeler}
