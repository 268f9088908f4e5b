"""A short clip decoded once into memory and replayed: frames arrive already decoded.

That is how a CSI camera hands frames over (the ISP delivers YUV; the CPU decodes nothing), so a replay
measures what the agent itself costs per frame, apart from a video decoder that shares the same cores.
The pictures are the clip's own (real motion, real objects), kept as the decoder gave them (I420).
"""

from __future__ import annotations

import time

import numpy as np

from agent.errors import SourceError
from agent.sources.base import Frame, Source

#: a bench clip is short; this bounds the memory a long file could take (960x540 I420: 0.8 MB a picture)
MAX_PICTURES = 600


class ReplaySource(Source):
    """Decodes ``inner`` (a finite source) on ``open`` and replays its pictures in a loop, paced by nobody."""

    live = False
    finite = False

    def __init__(self, inner: Source, fps: float | None = None) -> None:
        self.inner = inner
        self.fps = fps
        self._pictures: list[tuple[np.ndarray | None, np.ndarray | None]] = []  # (rgb, i420)
        self._index = 0
        self._t0 = 0.0

    def describe(self) -> str:
        return f"replay of {self.inner.describe()}"

    def open(self) -> None:
        if not self._pictures:
            self.inner.open()
            try:
                while len(self._pictures) < MAX_PICTURES and (frame := self.inner.read()) is not None:
                    self._pictures.append((None, frame.yuv) if frame.yuv is not None else (frame.image, None))
                self.fps = self.fps or self.inner.fps
            finally:
                self.inner.close()
            if not self._pictures:
                raise SourceError(f"{self.inner.describe()}: no frames to replay")
        self._t0 = time.time()

    def read(self) -> Frame | None:
        rgb, yuv = self._pictures[self._index % len(self._pictures)]
        frame = Frame(rgb, self._t0 + self._index / (self.fps or 30.0), self._index, yuv=yuv)
        self._index += 1
        return frame

    def close(self) -> None:
        """Nothing to release: the pictures stay for the next open."""
