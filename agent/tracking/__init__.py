"""Tracking: detections → tracks (association, confirmation, stationary objects) and zone geometry."""

from agent.tracking.tracker import Track, Tracker, TrackUpdate, iou_matrix
from agent.tracking.zones import ZoneSet, anchor, points_in_polygon

__all__ = ["Track", "TrackUpdate", "Tracker", "ZoneSet", "anchor", "iou_matrix",
           "points_in_polygon"]
