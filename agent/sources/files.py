"""File sources: a video (PyAV, frames as I420), a single image (a still scene shown for a while), a folder
of images."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from agent.errors import SourceError
from agent.sources.base import Frame, Source
from agent.sources.kinds import FileSource as FileSourceConfig
from agent.sources.video import VideoReader

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

    def __init__(self, cfg: FileSourceConfig, decode_threads: int = 1) -> None:
        self.cfg = cfg
        self.decode_threads = decode_threads
        self.path = Path(cfg.path)
        self.finite = not cfg.loop
        self._video: VideoReader | None = None
        self._images: list[Path] = []
        self._still: np.ndarray | None = None
        self._index = 0  # frames read since open: media time keeps moving forward through loops
        self._pos = 0  # the next picture of a folder
        self._t0 = 0.0

    def describe(self) -> str:
        return f"file:{self.path}"

    def open(self) -> None:
        p = self.path
        self._index = self._pos = 0
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
            try:
                self._video = VideoReader(str(p), name=str(p), threads=self.decode_threads)
            except SourceError:
                raise SourceError(f"{p}: not a readable video or image") from None
            self.fps = self.cfg.fps or self._video.fps or 25.0
        else:
            raise SourceError(f"{p}: no such file or folder")

    def _next_image(self) -> np.ndarray | None:
        if self._still is not None:
            if self._index >= STILL_FRAMES and not self.cfg.loop:
                return None
            return self._still
        if self._pos >= len(self._images):
            if not self.cfg.loop:
                return None
            self._pos = 0
        self._pos += 1
        return read_image(self._images[self._pos - 1])

    def _next_picture(self) -> tuple[np.ndarray, bool] | None:
        assert self._video is not None
        got = self._video.read()
        if got is None:
            if not self.cfg.loop or self._index == 0:
                return None
            self._video.rewind()
            got = self._video.read()
            if got is None:
                return None
        pixels, i420, _ = got  # media time from the frame count instead: a looped clip moves on
        return pixels, i420

    def read(self) -> Frame | None:
        # media time from the frame count at the nominal rate: a looped clip keeps moving forward
        ts = self._t0 + self._index / (self.fps or DEFAULT_IMAGE_FPS)
        if self._video is not None:
            got = self._next_picture()
            if got is None:
                return None
            pixels, i420 = got
            frame = Frame(None if i420 else pixels, ts, self._index, yuv=pixels if i420 else None)
        else:
            img = self._next_image()
            if img is None:
                return None
            frame = Frame(img, ts, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None
