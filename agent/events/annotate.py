"""Draw what the node sees on a frame: detections (box, label, score), zones and masks.

For aiming a camera and checking zones on the pole (``edgecam snapshot --annotate``, or the ``snapshot``
command with ``annotate: true`` through the centre). Everything the node works with is in normalised
full-frame coordinates (detections' ``bbox``, ``[[zones]]`` and ``[[masks]]`` polygons); this module maps
them onto whatever image it is given (the full frame, or a downscaled copy of it) by the image's own
size, so the drawing lands where the detector and the zone tests put it. One colour per kind, fixed, so a
technician (and the tests) can tell them apart:

- a detection the tracker would take: green box, a green tag above it with ``label score``;
- a detection whose anchor (bottom centre) lies in a mask, which the tracker ignores: grey box and tag;
- a zone: amber outline with its name at its first point (a zone limited to labels says which);
- a mask: the area darkened, with a grey outline.

Count lines are not drawn: the config has no counters yet (DESIGN: planned); they belong here when it does.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from agent.config import Mask, Zone
from agent.tracking.zones import ZoneSet
from agent.vision.types import Detection

# RGB (frames are RGB throughout the agent)
BOX_COLOUR = (0, 255, 0)
MASKED_BOX_COLOUR = (170, 170, 170)
ZONE_COLOUR = (255, 191, 0)
MASK_OUTLINE_COLOUR = (128, 128, 128)
TEXT_COLOUR = (0, 0, 0)
#: how much of a masked area's brightness stays (0: black, 1: untouched)
MASK_KEEP = 0.45
FONT = cv2.FONT_HERSHEY_SIMPLEX


def line_width(w: int, h: int) -> int:
    """Box and outline thickness in pixels: legible on a phone at full size, 3 px at least (JPEG's 4:2:0
    chroma halves colour resolution; a thinner line would come back grey)."""
    return max(3, round(min(w, h) / 240))


def to_pixels(w: int, h: int, bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """Normalised ``[x1, y1, x2, y2]`` → pixel corners in a ``w`` x ``h`` image, clipped to it."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    px = [min(w - 1, max(0, round(x * w))) for x in (x1, x2)]
    py = [min(h - 1, max(0, round(y * h))) for y in (y1, y2)]
    return px[0], py[0], px[1], py[1]


def _polygon(w: int, h: int, points: Sequence[tuple[float, float]]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) * (w, h)
    return np.round(pts).astype(np.int32).reshape(-1, 1, 2)


def tag_rect(shape: tuple[int, ...], text: str, x: int, y: int, scale: float, thick: int) -> tuple[int, int, int, int]:
    """Where ``_tag`` puts ``text`` whose bottom-left is asked at (x, y): ``(x1, y1, x2, y2)`` in pixels,
    moved inside the image (above the point when there is room, else just below it)."""
    w = shape[1]
    (tw, th), base = cv2.getTextSize(text, FONT, scale, max(1, thick - 1))
    pad = max(2, thick)
    x = min(max(0, x), max(0, w - tw - 2 * pad))
    top = y - th - base - 2 * pad
    if top < 0:  # no room above: put it just inside the box instead
        top = y
    return x, top, x + tw + 2 * pad, top + th + base + 2 * pad


def _tag(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float,
         thick: int) -> None:
    """``text`` on a filled ``colour`` tag (``tag_rect``)."""
    x1, y1, x2, y2 = tag_rect(img.shape, text, x, y, scale, thick)
    (_, th), _ = cv2.getTextSize(text, FONT, scale, max(1, thick - 1))
    pad = max(2, thick)
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, cv2.FILLED)
    cv2.putText(img, text, (x1 + pad, y1 + pad + th), FONT, scale, TEXT_COLOUR, max(1, thick - 1), cv2.LINE_AA)


def text_scale(w: int, h: int) -> float:
    return max(0.4, min(w, h) / 900)


def detection_text(det: Detection, masked: bool) -> str:
    return f"{det.label} {det.score:.2f}" + (" masked" if masked else "")


def draw(image: np.ndarray, detections: Sequence[Detection], zones: Sequence[Zone] = (),
         masks: Sequence[Mask] = ()) -> np.ndarray:
    """A copy of the RGB ``image`` with masks, zones and detections drawn (in that order: boxes on top)."""
    img = np.ascontiguousarray(image).copy()
    h, w = img.shape[:2]
    thick = line_width(w, h)
    scale = text_scale(w, h)
    if masks:
        shade = np.zeros((h, w), np.uint8)
        for m in masks:
            cv2.fillPoly(shade, [_polygon(w, h, m.polygon)], 255)
        inside = shade.astype(bool)
        img[inside] = (img[inside].astype(np.float32) * MASK_KEEP).astype(np.uint8)
        for m in masks:
            cv2.polylines(img, [_polygon(w, h, m.polygon)], True, MASK_OUTLINE_COLOUR, max(1, thick - 1))
    for z in zones:
        poly = _polygon(w, h, z.polygon)
        cv2.polylines(img, [poly], True, ZONE_COLOUR, thick, cv2.LINE_AA)
        name = z.name if not z.labels else f"{z.name} ({', '.join(z.labels)})"
        x0, y0 = (int(v) for v in poly[0, 0])
        _tag(img, name, x0 + thick, y0 + thick + 1, ZONE_COLOUR, scale, thick)
    masked = ZoneSet((), masks).masked([d.bbox for d in detections])
    # masked ones first, so a kept box is never hidden under an ignored one
    for det, is_masked in sorted(zip(detections, masked, strict=True), key=lambda p: not p[1]):
        colour = MASKED_BOX_COLOUR if is_masked else BOX_COLOUR
        x1, y1, x2, y2 = to_pixels(w, h, det.bbox)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick)
        text = detection_text(det, bool(is_masked))
        _tag(img, text, x1 - thick // 2, y1 - thick // 2, colour, scale, thick)
    return img
