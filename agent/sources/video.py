"""Video decoding through PyAV (FFmpeg's libraries): video files and RTSP streams.

Why PyAV rather than OpenCV's VideoCapture here: it hands over the decoder's own I420 planes (no
colour conversion of every full frame; the detector and the motion gate read them directly), it lets us
choose the decoder's thread count (FFmpeg otherwise starts a frame thread per core that competes with the
interpreter's threads: on a 2-core node that cost more than decoding itself), and it takes per-stream
options (RTSP transport, socket timeout) instead of a process-wide environment variable. picamera2
depends on PyAV too, so a Pi already has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from agent.errors import SourceError


class VideoReader:
    """One opened video (file or stream): decoded pictures as I420 arrays (RGB when a side is odd).

    Not thread-safe: the capture thread owns it.
    """

    def __init__(self, url: str, *, name: str, threads: int = 1, options: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> None:
        import av  # lazy: a node without video sources starts without loading FFmpeg

        self.name = name
        try:
            self._container = av.open(url, options=options or {}, timeout=timeout_s)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{name}: cannot open ({_reason(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{name}: has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = threads  # 0: FFmpeg chooses (one per core)
        self._frames: Iterator[Any] = self._container.decode(self._stream)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate and 0 < float(rate) < 1000 else None

    def read(self) -> tuple[np.ndarray, bool, float | None] | None:
        """The next picture: (pixels, is_i420, media time in s), or None at the end of the stream."""
        import av

        try:
            frame = next(self._frames, None)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.name}: decoding failed ({_reason(exc)})") from None
        if frame is None:
            return None
        t = float(frame.pts * self._stream.time_base) if frame.pts is not None and self._stream.time_base else None
        if frame.width % 2 == 0 and frame.height % 2 == 0:
            # limited-range BT.601 I420, as OpenCV's conversions expect: the planes as they are for yuv420p,
            # converted by swscale for anything else (full-range yuvj420p from MJPEG cameras, 4:2:2, NV12)
            return frame.to_ndarray(format="yuv420p"), True, t
        return frame.to_ndarray(format="rgb24"), False, t

    def rewind(self) -> None:
        """Back to the first picture (looping a file); the decoder is flushed by the seek."""
        import av

        try:
            self._container.seek(0)
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"{self.name}: cannot rewind ({_reason(exc)})") from None
        self._frames = self._container.decode(self._stream)

    def close(self) -> None:
        self._container.close()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__

