"""What every frame source is: a ``Frame`` record and the ``Source`` interface the capture thread drives."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class TruthBox:
    """Ground truth of a synthetic frame: label and ``[x1, y1, x2, y2]`` normalised box."""

    label: str
    bbox: tuple[float, float, float, float]
    object_id: int


@dataclass(slots=True)
class Frame:
    """One captured frame. ``image`` is full resolution RGB uint8 (H, W, 3).

    ``lores`` is an optional low-resolution RGB view the camera already made (picamera2's lores
    stream); inference uses it when present instead of resizing ``image``.
    ``ts`` is the capture time in epoch seconds (for file sources: start time + media time).
    """

    image: np.ndarray
    ts: float
    index: int
    lores: np.ndarray | None = None
    truth: list[TruthBox] | None = field(default=None)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return w, h


class Source(abc.ABC):
    """A camera, stream or file. Not thread-safe: only the capture thread calls it.

    ``read`` returns the next frame, ``None`` at the end of a finite source, and raises
    ``SourceError`` when the device or stream failed (the capture thread reopens with backoff).
    """

    #: native frame rate when known (files pace at this unless ``--fast``)
    fps: float | None = None
    #: True for finite sources (files, synthetic with a duration): end of stream is normal
    finite: bool = False
    #: True for sources that produce frames at their own pace (cameras, streams)
    live: bool = True

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame | None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
