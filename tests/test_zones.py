"""Zone geometry: point-in-polygon against OpenCV's reference, anchors, zone labels, masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import Mask, Zone
from agent.tracking.zones import ZoneSet, anchor, points_in_polygon

coord = st.floats(0.0, 1.0, allow_nan=False)


def _reference(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x, y in points])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(coord, coord), min_size=3, max_size=9), st.lists(st.tuples(coord, coord), min_size=1,
                                                                             max_size=30))
def test_points_in_polygon_matches_opencv(poly, points):
    poly_a, pts = np.array(poly), np.array(points)
    ours = points_in_polygon(pts, poly_a)
    dist = _reference(pts, poly_a)
    clear = np.abs(dist) > 1e-6  # points on an edge may fall either way
    assert np.array_equal(ours[clear], (dist > 0)[clear])


def test_concave_polygon():
    # a "U" shape: the notch in the middle is outside
    u = [(0.1, 0.1), (0.3, 0.1), (0.3, 0.7), (0.7, 0.7), (0.7, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)]
    pts = np.array([[0.2, 0.5], [0.5, 0.5], [0.8, 0.5], [0.5, 0.8], [0.95, 0.5]])
    assert points_in_polygon(pts, np.array(u)).tolist() == [True, False, True, True, False]


def test_zone_membership_uses_bottom_centre():
    zones = ZoneSet([Zone(name="kerb", polygon=[(0, 0.8), (1, 0.8), (1, 1), (0, 1)])])
    assert anchor((0.2, 0.1, 0.4, 0.9)) == pytest.approx((0.3, 0.9))
    # box mostly above the kerb, feet inside it → in the zone
    assert zones.zones_of("person", (0.2, 0.1, 0.4, 0.9)) == ["kerb"]
    # box overlapping the kerb band but with its feet above it → not in the zone
    assert zones.zones_of("person", (0.2, 0.5, 0.4, 0.75)) == []


def test_zone_labels_filter_and_order():
    zones = ZoneSet([
        Zone(name="road", polygon=[(0, 0.5), (1, 0.5), (1, 1), (0, 1)], labels=["car", "bus"]),
        Zone(name="all", polygon=[(0, 0), (1, 0), (1, 1), (0, 1)]),
    ])
    box = (0.4, 0.6, 0.6, 0.8)
    assert zones.zones_of("car", box) == ["road", "all"]
    assert zones.zones_of("person", box) == ["all"]
    assert zones.names == ["road", "all"]


def test_masks():
    zs = ZoneSet(masks=[Mask(polygon=[(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)])])
    boxes = [(0.1, 0.1, 0.2, 0.3), (0.1, 0.1, 0.2, 0.7), (0.6, 0.1, 0.7, 0.3)]
    assert zs.masked(boxes).tolist() == [True, False, False]
    assert ZoneSet().masked(boxes).tolist() == [False, False, False]
    assert zs.masked([]).tolist() == []
