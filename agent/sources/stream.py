"""Live sources: USB/V4L2 cameras (OpenCV) and RTSP IP cameras (PyAV, frames as I420)."""

from __future__ import annotations

import time

import cv2

from agent.errors import SourceError
from agent.sources.base import Frame, Source
from agent.sources.kinds import RtspSource, V4l2Source
from agent.sources.video import VideoReader

#: RTSP socket timeout: a camera that stops answering is reopened instead of hanging the capture thread
RTSP_TIMEOUT_S = 5.0


class StreamSource(Source):
    """Frames arrive at the camera's pace; a failed read raises ``SourceError`` so the capture thread
    reopens the stream with backoff."""

    live = True
    finite = False

    def __init__(self, cfg: V4l2Source | RtspSource, decode_threads: int = 1) -> None:
        self.cfg = cfg
        self.decode_threads = decode_threads
        self._cap: cv2.VideoCapture | None = None
        self._video: VideoReader | None = None
        self._index = 0

    def describe(self) -> str:
        return self.cfg.device if isinstance(self.cfg, V4l2Source) else str(self.cfg.url)

    def open(self) -> None:
        if isinstance(self.cfg, RtspSource):
            self._open_rtsp(self.cfg)
            return
        cap = cv2.VideoCapture(self.cfg.device, cv2.CAP_V4L2)
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width), (cv2.CAP_PROP_FRAME_HEIGHT,
                            self.cfg.height), (cv2.CAP_PROP_FPS, self.cfg.fps)):
            if value:
                cap.set(prop, value)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: cannot open stream")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        native = cap.get(cv2.CAP_PROP_FPS)
        self.fps = native if 0 < native < 1000 else None
        self._cap = cap

    def _open_rtsp(self, cfg: RtspSource) -> None:
        self._video = VideoReader(cfg.url.reveal(), name=self.describe(), threads=self.decode_threads,
                                  options=rtsp_options(cfg), timeout_s=RTSP_TIMEOUT_S)
        self.fps = self._video.fps

    def read(self) -> Frame | None:
        if self._video is not None:
            got = self._video.read()
            if got is None:
                raise SourceError(f"{self.describe()}: stream ended (camera restarted or dropped the session)")
            pixels, i420, _ = got
            self._index += 1
            return Frame(None if i420 else pixels, time.time(), self._index - 1, yuv=pixels if i420 else None)
        if self._cap is None:
            raise SourceError(f"{self.describe()}: not open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceError(f"{self.describe()}: read failed (camera unplugged or stream dropped)")
        self._index += 1
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.time(), self._index - 1)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def rtsp_options(cfg: RtspSource) -> dict[str, str]:
    """FFmpeg options for an RTSP camera.

    UDP RTP drops packets on busy city networks; TCP interleaving is the safe default. Not
    ``fflags=nobuffer``: it discards the packets FFmpeg reads while probing the stream, the keyframe the
    camera sends at PLAY among them, so every (re)open waited for the camera's next keyframe (a whole
    GOP, seconds on many cameras) and it lowered no steady-state latency (tests/test_rtsp_source.py).
    """
    return {"rtsp_transport": "tcp" if cfg.tcp else "udp", "flags": "low_delay"}

