"""Training data for the demo detector: frames rendered by ``StreetScene`` and their dense grid targets.

Numpy only (no TensorFlow), so the targets can be checked without the training extra.
Targets per grid cell (stride 8 on the model input):
  heat [gh, gw, C]   CenterNet-style gaussian per class, exactly 1 at the cell holding an object's centre
  box  [gh, gw, 4]   cx, cy, w, h (input-normalised) of the object this cell regresses
  wt   [gh, gw, 1]   weight of the box regression (0 where the cell regresses nothing)
"""

from __future__ import annotations

import cv2
import numpy as np

from agent.sources.scene import LABELS, StreetScene

STRIDE = 8


def sigma_for(size_cells: float) -> float:
    """Gaussian spread (cells) for an object this many cells across: wider objects spread further."""
    return float(np.clip(size_cells / 8.0, 0.5, 1.2))


def make_targets(boxes: np.ndarray, classes: np.ndarray, gw: int, gh: int, num_classes: int) -> np.ndarray:
    """Pack heat, box and weight maps into one ``[gh, gw, C + 5]`` float32 array."""
    heat = np.zeros((gh, gw, num_classes), np.float32)
    box = np.zeros((gh, gw, 4), np.float32)
    wt = np.zeros((gh, gw, 1), np.float32)
    owner = np.zeros((gh, gw), np.float32)  # gaussian value of the object that owns the cell's regression
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for (x1, y1, x2, y2), c in zip(boxes, classes, strict=True):
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        pj, pi = min(int(cx * gw), gw - 1), min(int(cy * gh), gh - 1)
        sx, sy = sigma_for(w * gw), sigma_for(h * gh)
        g = np.exp(-((xs - pj) ** 2 / (2 * sx * sx) + (ys - pi) ** 2 / (2 * sy * sy)))
        heat[..., c] = np.maximum(heat[..., c], g)
        inside = ((xs + 0.5) / gw >= x1) & ((xs + 0.5) / gw <= x2) & ((ys + 0.5) / gh >= y1) & ((ys + 0.5) / gh <= y2)
        claim = ((g > 0.2) & inside & (g > owner)) | ((xs == pj) & (ys == pi))
        owner[claim] = g[claim]
        box[claim] = (cx, cy, w, h)
        wt[claim, 0] = g[claim]
    return np.concatenate([heat, box, wt], axis=-1)


def render_set(seeds: list[int], per_seed: int, in_w: int, in_h: int, rng: np.random.Generator,
               span_s: float = 3600.0, crop_prob: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Frames of several seeds at random times, resized to the model input, with packed targets.

    Rendering sizes and resize filters vary (as on nodes: 1280x720 → area filter, 640x360 → bilinear);
    some frames are a random crop (0.75-1 of the frame) so object sizes and positions vary beyond the
    scene's fixed lanes.
    """
    gw, gh = in_w // STRIDE, in_h // STRIDE
    sizes = [(640, 360), (960, 540), (1280, 720)]
    scenes = {(s, wh): StreetScene(s, wh[0], wh[1], 15.0) for s in seeds for wh in sizes}
    images = np.empty((len(seeds) * per_seed, in_h, in_w, 3), np.uint8)
    targets = np.empty((len(seeds) * per_seed, gh, gw, len(LABELS) + 5), np.float32)
    k = 0
    for seed in seeds:
        for _ in range(per_seed):
            wh = sizes[int(rng.choice(3, p=[0.6, 0.15, 0.25]))]
            scene = scenes[(seed, wh)]
            rgb, truth = scene.render(int(rng.uniform(0, span_s) * scene.fps))
            x0 = y0 = 0.0
            cw = ch = 1.0
            if rng.random() < crop_prob:
                s = float(rng.uniform(0.75, 1.0))
                cw, ch = s, min(1.0, s * float(rng.uniform(0.92, 1.08)))
                x0, y0 = float(rng.uniform(0, 1 - cw)), float(rng.uniform(0, 1 - ch))
                px0, py0 = int(x0 * wh[0]), int(y0 * wh[1])
                rgb = rgb[py0: py0 + int(ch * wh[1]), px0: px0 + int(cw * wh[0])]
            interp = cv2.INTER_AREA if rgb.shape[1] > 2 * in_w else cv2.INTER_LINEAR
            images[k] = cv2.resize(rgb, (in_w, in_h), interpolation=interp)
            boxes, classes = [], []
            for t in truth:
                b = np.array(t.bbox, np.float32)
                b = np.clip((b - [x0, y0, x0, y0]) / [cw, ch, cw, ch], 0.0, 1.0)
                full = (t.bbox[2] - t.bbox[0]) * (t.bbox[3] - t.bbox[1]) / (cw * ch)
                if (b[2] - b[0]) * (b[3] - b[1]) < 0.5 * full or b[3] - b[1] < 0.03 or b[2] - b[0] < 0.008:
                    continue  # mostly cut off by the crop: background, like objects leaving the frame
                boxes.append(b)
                classes.append(LABELS.index(t.label))
            targets[k] = make_targets(np.array(boxes).reshape(-1, 4), np.array(classes, np.int64), gw, gh,
                                      len(LABELS))
            k += 1
    return images, targets
