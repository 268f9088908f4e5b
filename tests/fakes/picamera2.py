"""A scripted stand-in for the ``picamera2`` module (this machine has no CSI camera).

It speaks the subset of picamera2's real API the agent uses: ``Picamera2(index)``,
``create_video_configuration(main=, lores=, controls=, buffer_count=)``, ``configure``, ``start``,
``capture_request()`` → request with ``make_array(stream)`` / ``get_metadata()`` / ``release()``,
``stop``, ``close``. Formats follow libcamera: main ``BGR888`` is R,G,B bytes; lores ``YUV420`` is I420
with shape (h * 3 / 2, w).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np

CAMERAS = 1
FAIL_AFTER: int | None = None  # raise RuntimeError from capture_request after this many frames
#: block in capture_request after this many frames, as libcamera does when the sensor stops delivering
#: (env FAKE_PICAMERA2_STALL_AFTER, for an agent in a subprocess); FAKE_PICAMERA2_STALLED names a file
#: touched when the stall begins, so a test can wait on it
STALL_AFTER: int | None = int(os.environ["FAKE_PICAMERA2_STALL_AFTER"]) if os.environ.get(
    "FAKE_PICAMERA2_STALL_AFTER") else None
opened: list[FakePicamera2] = []


class _Request:
    def __init__(self, cam: FakePicamera2, n: int) -> None:
        self.cam, self.n, self.released = cam, n, False

    def make_array(self, stream: str) -> np.ndarray:
        cfg = self.cam.config[stream]
        w, h = cfg["size"]
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = (self.n * 10) % 256  # red ramps with the frame number
        rgb[: h // 2, : w // 2, 1] = 200  # a green block top-left
        if cfg["format"] == "BGR888":
            return rgb
        if cfg["format"] == "YUV420":
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        raise ValueError(f"fake picamera2: unsupported format {cfg['format']}")

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": self.n * 66_666_000, "FrameDuration": 66_666}

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= CAMERAS:
            raise IndexError("list index out of range")  # what picamera2 raises for a missing camera
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = False
        self.frames = 0
        opened.append(self)

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=6, **_):
        return {"main": {"format": "XBGR8888", **(main or {})}, "lores": lores, "controls": controls or {},
                "buffer_count": buffer_count}

    def configure(self, config: dict) -> None:
        if config["lores"] and config["lores"]["format"] != "YUV420":
            raise RuntimeError("lores stream must be YUV420 on this platform")
        self.config = config

    def start(self) -> None:
        assert self.config is not None, "configure() before start()"
        self.started = True

    def capture_request(self) -> _Request:
        if not self.started:
            raise RuntimeError("camera not started")
        if FAIL_AFTER is not None and self.frames >= FAIL_AFTER:
            raise RuntimeError("Camera frontend has timed out!")
        if STALL_AFTER is not None and self.frames >= STALL_AFTER:
            if os.environ.get("FAKE_PICAMERA2_STALLED"):
                Path(os.environ["FAKE_PICAMERA2_STALLED"]).touch()
            threading.Event().wait()  # never returns: the capture thread is stuck, as with a dead sensor
        self.frames += 1
        return _Request(self, self.frames)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False


Picamera2 = FakePicamera2
