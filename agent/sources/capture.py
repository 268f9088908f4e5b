"""The capture thread: reads a Source off the inference thread and hands over the newest frame.

Live and paced sources use a one-slot buffer where the newest frame wins and overwritten frames are
counted as skipped. In ``fast`` mode a finite source is read as fast as the consumer takes frames and
nothing is skipped (the bench needs every frame inferred). A failing source is reopened with full-jitter
exponential backoff; the failure is counted and logged, never raised into the pipeline.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.backoff import Backoff
from agent.config import CaptureConfig
from agent.errors import SourceError
from agent.sources.base import Frame, Source
from agent.thread_priority import CAPTURE_NICENESS, lower_thread_priority

log = logging.getLogger(__name__)

@dataclass
class CaptureStats:
    captured: int = 0
    skipped: int = 0
    reopens: int = 0
    errors: int = 0
    decode_ms: float = 0.0  # reading the source (decoding)
    prepare_ms: float = 0.0  # the detector's input made from it (resize, quantise)
    last_error: str | None = None


class Capture:
    def __init__(self, source: Source, cfg: CaptureConfig, max_frames: int | None = None,
                 rng: random.Random | None = None, opened: bool = False,
                 prepare: Callable[[Frame], None] | None = None, niceness: int = CAPTURE_NICENESS) -> None:
        self.source = source
        #: how much nicer than the interpreter this thread runs (0 when interpreters leave no idle gaps to fill)
        self.niceness = niceness
        #: per-frame work done here rather than on the inference thread (the detector's resize)
        self.prepare = prepare
        self.cfg = cfg
        self.max_frames = max_frames
        # a looping file is not finite but is still ours to pace: --fast must not decode frames only to drop them
        self.lossless = cfg.fast and (source.finite or not source.live)
        self.stats = CaptureStats()
        self._delays = Backoff(cfg.reopen_min_s, cfg.reopen_max_s, rng)
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._opened = opened
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    # ------------------------------------------------------------ consumer side

    def start(self) -> Capture:
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, waiting up to ``timeout``; None on timeout or at the end of the source."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slot is not None or self._ended, timeout):
                return None
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended and self._slot is None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------ capture thread

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.lossless:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set())
            elif self._slot is not None:
                self.stats.skipped += 1
            self._slot = frame
            self.stats.captured += 1
            self._cond.notify_all()

    def _finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _backoff(self) -> None:
        self.stats.reopens += 1
        self._stop.wait(self._delays.next())

    def _open(self) -> bool:
        while not self._stop.is_set():
            try:
                self.source.open()
                return True
            except SourceError as exc:
                self._failed(exc)
                self._backoff()
        return False

    def _failed(self, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc)
        log.warning("source %s: %s (reopening)", self.source.describe(), exc)

    def _run(self) -> None:
        if self.niceness:
            lower_thread_priority(self.niceness)
        try:
            if not self._opened and not self._open():
                return
            fresh = True  # the first frame of each opening starts a new sequence
            paced = not self.source.live and not self.cfg.fast and self.source.fps
            t0 = time.monotonic()
            n = 0
            while not self._stop.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    break
                if paced:
                    delay = t0 + n / self.source.fps - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                t = time.thread_time()  # CPU time: this thread yields to the interpreter's by design
                try:
                    frame = self.source.read()
                except SourceError as exc:
                    self._failed(exc)
                    self.source.close()
                    self._backoff()
                    if not self._open():
                        break
                    fresh = True
                    continue
                self._delays.reset()
                if frame is None:
                    break
                frame.fresh, fresh = fresh, False
                t1 = time.thread_time()
                if self.prepare is not None:
                    self.prepare(frame)
                self.stats.decode_ms += (t1 - t) * 1e3
                self.stats.prepare_ms += (time.thread_time() - t1) * 1e3
                n += 1
                self._put(frame)
        finally:
            self.source.close()
            self._finish()
