"""Records passed between the detector, the tracker and the event engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Detection:
    """One detection in full-frame normalised coordinates ``[x1, y1, x2, y2]`` (0..1)."""

    label: str
    class_id: int
    score: float
    bbox: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)
