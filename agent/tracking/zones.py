"""Polygon zones and masks in normalised coordinates.

A box belongs to a zone when its bottom-centre point (where the object touches the ground) lies inside
the zone's polygon: the usual convention for ground-plane zones such as crossings or parking bays.
Masks use the same anchor, so a tree masked out stops producing detections but a person standing in
front of it (feet below the mask) is still seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from agent.config import Mask, Zone

BBox = tuple[float, float, float, float]


def anchor(bbox: BBox) -> tuple[float, float]:
    """The bottom-centre point of ``[x1, y1, x2, y2]``."""
    x1, _, x2, y2 = bbox
    return (x1 + x2) / 2.0, y2


def anchors(boxes: np.ndarray) -> np.ndarray:
    """Bottom-centre points of an (N, 4) box array, as (N, 2)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, boxes[:, 3]], axis=1)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray casting of (N, 2) points against one (M, 2) polygon, vectorised over both.

    Returns a bool array of N. Points exactly on an edge may fall either way (irrelevant for zones).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    px, py = pts[:, 0:1], pts[:, 1:2]  # (N, 1)
    x1, y1 = poly[:, 0], poly[:, 1]  # (M,)
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > py) != (y2 > py)  # (N, M): edge straddles the horizontal line through the point
    dy = np.where(y2 == y1, 1.0, y2 - y1)
    with np.errstate(over="ignore", invalid="ignore"):  # near-horizontal edges: huge x_at is still right
        x_at = x1 + (py - y1) * (x2 - x1) / dy
    hits = crosses & (px < x_at)
    return (np.count_nonzero(hits, axis=1) % 2) == 1


class ZoneSet:
    """The configured zones and masks, pre-converted to arrays for fast membership tests."""

    def __init__(self, zones: Sequence[Zone] = (), masks: Sequence[Mask] = ()) -> None:
        self._zones = [(z.name, np.asarray(z.polygon, dtype=np.float64),
                        frozenset(z.labels) if z.labels else None) for z in zones]
        self._masks = [np.asarray(m.polygon, dtype=np.float64) for m in masks]

    @property
    def has_masks(self) -> bool:
        return bool(self._masks)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self._zones]

    def zones_of(self, label: str, bbox: BBox) -> list[str]:
        """Names (in config order) of the zones whose polygon holds the box's anchor and admit the label."""
        if not self._zones:
            return []
        pt = np.asarray([anchor(bbox)])
        return [name for name, poly, labels in self._zones
                if (labels is None or label in labels) and bool(points_in_polygon(pt, poly)[0])]

    def masked(self, boxes: Iterable[BBox]) -> np.ndarray:
        """A bool per box: True when its anchor lies inside any mask."""
        arr = np.asarray(list(boxes), dtype=np.float64).reshape(-1, 4)
        out = np.zeros(len(arr), dtype=bool)
        if not self._masks or len(arr) == 0:
            return out
        pts = anchors(arr)
        for poly in self._masks:
            out |= points_in_polygon(pts, poly)
        return out
