"""Live sources through OpenCV: USB/V4L2 cameras and RTSP IP cameras (FFmpeg backend)."""

from __future__ import annotations

import os
import time

import cv2

from agent.config import RtspSource, V4l2Source
from agent.errors import SourceError
from agent.sources.base import Frame, Source


class StreamSource(Source):
    """Frames arrive at the camera's pace; a failed read raises ``SourceError`` so the capture thread
    reopens the stream with backoff."""

    live = True
    finite = False

    def __init__(self, cfg: V4l2Source | RtspSource) -> None:
        self.cfg = cfg
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def describe(self) -> str:
        return self.cfg.device if isinstance(self.cfg, V4l2Source) else _redact(self.cfg.url)

    def open(self) -> None:
        if isinstance(self.cfg, V4l2Source):
            cap = cv2.VideoCapture(self.cfg.device, cv2.CAP_V4L2)
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width), (cv2.CAP_PROP_FRAME_HEIGHT,
                                self.cfg.height), (cv2.CAP_PROP_FPS, self.cfg.fps)):
                if value:
                    cap.set(prop, value)
        else:
            if self.cfg.tcp:  # UDP RTP drops packets on busy city networks; TCP interleaving is the safe default
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|stimeout;5000000")
            cap = cv2.VideoCapture(self.cfg.url, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: cannot open stream")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        native = cap.get(cv2.CAP_PROP_FPS)
        self.fps = native if 0 < native < 1000 else None
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.describe()}: not open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceError(f"{self.describe()}: read failed (camera unplugged or stream dropped)")
        self._index += 1
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.time(), self._index - 1)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _redact(url: str) -> str:
    """Hide credentials in ``rtsp://user:pass@host/…`` before it reaches a log or an error."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
