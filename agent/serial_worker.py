"""A thread that runs submitted calls one at a time, in submission order.

The agent post-processes frame N (output decoding, tracking, events, thumbnails, outbox writes) on one
of these while the interpreter already works on frame N+1. One thread keeps the event engine and the
outbox single-threaded, and submission order is frame order. The queue is bounded: when post-processing
falls behind, the inference loop waits (back-pressure) instead of frames piling up in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class WorkerFailed(RuntimeError):
    """A submitted call raised; the worker stopped running calls (raised in the submitting thread)."""


class SerialWorker:
    def __init__(self, name: str, depth: int = 4, on_start: Callable[[], Any] | None = None) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=depth)
        self._failure: BaseException | None = None
        self._on_start = on_start
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; blocks while the queue is full. Raises if an earlier call failed."""
        self._raise_failure()
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until every call submitted so far has run; raises if one of them failed."""
        self._queue.join()
        self._raise_failure()

    def stop(self) -> None:
        """Run what is queued, then end the thread (a failure is left for ``drain``/``submit`` to raise)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise WorkerFailed(f"{self._thread.name}: {self._failure!r}") from self._failure

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._failure is None:  # after a failure, calls are dropped so submitters never block
                    fn, args = item
                    fn(*args)
            except BaseException as exc:  # handed to the submitting thread, not swallowed
                log.exception("%s: call failed", self._thread.name)
                self._failure = exc
            finally:
                self._queue.task_done()
