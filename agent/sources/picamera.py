"""Raspberry Pi CSI cameras through picamera2: a full-resolution ``main`` stream for thumbnails and a
``lores`` stream the ISP scales for inference (no CPU resize). picamera2 is imported only here."""

from __future__ import annotations

import time

import cv2

from agent.errors import SourceError
from agent.sources.base import Frame, Source
from agent.sources.kinds import Picamera2Source as Picamera2Config


class Picamera2Source(Source):
    live = True
    finite = False

    def __init__(self, cfg: Picamera2Config) -> None:
        self.cfg = cfg
        self.fps = cfg.fps
        self._cam = None
        self._index = 0

    def describe(self) -> str:
        return f"picamera2:{self.cfg.index}"

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(f"{self.describe()}: picamera2 is not installed (pip install 'edgecam[picamera2]' "
                              "or apt install python3-picamera2)") from None
        try:
            cam = Picamera2(self.cfg.index)
            # "BGR888" is libcamera's name for bytes in R, G, B order: numpy gets RGB
            config = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "BGR888"},
                lores={"size": (self.cfg.lores_width, self.cfg.lores_height), "format": "YUV420"},
                controls={"FrameRate": self.cfg.fps},
                buffer_count=4,
            )
            cam.configure(config)
            cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(f"{self.describe()}: cannot start camera: {exc}") from None
        self._cam = cam

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError(f"{self.describe()}: not open")
        try:
            request = self._cam.capture_request()
            try:
                main = request.make_array("main")
                lores = request.make_array("lores")
            finally:
                request.release()
        except (RuntimeError, OSError) as exc:
            raise SourceError(f"{self.describe()}: capture failed: {exc}") from None
        # the request's SensorTimestamp is CLOCK_BOOTTIME; events need wall time, taken at capture
        self._index += 1
        rgb_lores = cv2.cvtColor(lores, cv2.COLOR_YUV2RGB_I420) if lores.ndim == 2 else lores
        return Frame(main[..., :3], time.time(), self._index - 1, lores=rgb_lores)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
