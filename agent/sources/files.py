"""File sources: a video (OpenCV/FFmpeg), a single image (a still scene shown for a while), a folder of images."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from agent.config import FileSource as FileSourceConfig
from agent.errors import SourceError
from agent.sources.base import Frame, Source

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
#: a single photo is a still scene this many frames long, so tracks are confirmed and then end
STILL_FRAMES = 10
DEFAULT_IMAGE_FPS = 10.0


def read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), np.uint8) if path.exists() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise SourceError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class FileSource(Source):
    live = False
    finite = True

    def __init__(self, cfg: FileSourceConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.finite = not cfg.loop
        self._cap: cv2.VideoCapture | None = None
        self._images: list[Path] = []
        self._still: np.ndarray | None = None
        self._index = 0
        self._t0 = 0.0

    def describe(self) -> str:
        return f"file:{self.path}"

    def open(self) -> None:
        p = self.path
        self._index = 0
        self._t0 = time.time()
        if p.is_dir():
            self._images = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise SourceError(f"{p}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self.fps = self.cfg.fps or DEFAULT_IMAGE_FPS
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            self._still = read_image(p)
            self.fps = self.cfg.fps or DEFAULT_IMAGE_FPS
        elif p.is_file():
            cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                cap.release()
                raise SourceError(f"{p}: not a readable video or image")
            native = cap.get(cv2.CAP_PROP_FPS)
            self.fps = self.cfg.fps or (native if 0 < native < 1000 else 25.0)
            self._cap = cap
        else:
            raise SourceError(f"{p}: no such file or folder")

    def _next_image(self) -> np.ndarray | None:
        if self._still is not None:
            if self._index >= STILL_FRAMES and not self.cfg.loop:
                return None
            return self._still
        if self._images:
            if self._index >= len(self._images):
                if not self.cfg.loop:
                    return None
                self._index = 0
            return read_image(self._images[self._index])
        assert self._cap is not None
        ok, bgr = self._cap.read()
        if not ok:
            if not self.cfg.loop or self._index == 0:
                return None
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
            if not ok:
                return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read(self) -> Frame | None:
        img = self._next_image()
        if img is None:
            return None
        frame = Frame(img, self._t0 + self._index / (self.fps or DEFAULT_IMAGE_FPS), self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
