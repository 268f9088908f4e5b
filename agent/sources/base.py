"""What every frame source is: a ``Frame`` record and the ``Source`` interface the capture thread drives."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(slots=True)
class TruthBox:
    """Ground truth of a synthetic frame: label and ``[x1, y1, x2, y2]`` normalised box."""

    label: str
    bbox: tuple[float, float, float, float]
    object_id: int


class Frame:
    """One captured frame: full-resolution pixels, capture time, index.

    Pixels come either as RGB (``image``, uint8 (H, W, 3)) or, from a video decoder, as I420 (``yuv``, uint8
    (H*3/2, W)). I420 is what decoders and camera ISPs produce; the detector reads it directly and the RGB
    ``image`` is converted from it only when something needs full-resolution colour (a thumbnail crop),
    so most frames never pay for that conversion.

    ``lores`` is an optional low-resolution RGB view the camera already made (picamera2's lores stream);
    inference uses it when present. ``model_input`` is the detector's input for this frame, prepared on
    the capture thread (``Detector.prepare``). ``ts`` is the capture time in epoch seconds (for file
    sources: start time + media time). ``fresh`` marks the first frame after the source (re)opened: what
    came before is another sequence, so a recurrent model's state starts over (``Detector.infer``).
    """

    __slots__ = ("_image", "fresh", "index", "lores", "model_input", "truth", "ts", "yuv")

    def __init__(self, image: np.ndarray | None = None, ts: float = 0.0, index: int = 0,
                 lores: np.ndarray | None = None, truth: list[TruthBox] | None = None,
                 yuv: np.ndarray | None = None) -> None:
        if image is None and yuv is None:
            raise ValueError("a Frame needs image (RGB) or yuv (I420) pixels")
        self._image = image
        self.yuv = yuv
        self.ts = ts
        self.index = index
        self.lores = lores
        self.truth = truth
        self.model_input: Any = None
        self.fresh = False

    @property
    def image(self) -> np.ndarray:
        """Full-resolution RGB (converted from I420 on first use, then kept)."""
        if self._image is None:
            self._image = cv2.cvtColor(self.yuv, cv2.COLOR_YUV2RGB_I420)
        return self._image

    @property
    def size(self) -> tuple[int, int]:
        if self._image is not None:
            h, w = self._image.shape[:2]
            return w, h
        return self.yuv.shape[1], self.yuv.shape[0] * 2 // 3

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The Y, U and V planes of an I420 frame (views, no copy); None for RGB frames."""
        if self.yuv is None:
            return None
        w, h = self.size
        y = self.yuv[:h]
        chroma = self.yuv[h:].reshape(2, h // 2, w // 2)
        return y, chroma[0], chroma[1]


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
