"""Several interpreters invoked side by side, one thread each (``model.interpreters`` > 1).

Why: on a small CPU one interpreter with N threads wastes part of every core waiting at the barrier after
each operation, and any other thread that takes a core mid-operation stalls the whole invoke. N
interpreters with one thread each keep the cores busier (2-core bench: 148 against 125 invokes a second),
at the cost of one more copy of the model in memory and one single-threaded invoke of latency.

A frame goes to whichever interpreter is free; its result comes back as a future, which the caller hands
on in frame order (the post-processing queue), so tracking sees frames in order however the lanes finish.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.sources.base import Frame
    from agent.vision.detector import Detector, RawOutput


class InferenceLanes:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        n = len(detector.lanes)
        self._free: queue.Queue[int] = queue.Queue()
        self._jobs: list[queue.Queue[tuple[Frame, Future[RawOutput]] | None]] = [queue.Queue(1) for _ in range(n)]
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"infer-{i}", daemon=True)
                         for i in range(n)]
        for i, t in enumerate(self._threads):
            self._free.put(i)
            t.start()

    def submit(self, frame: Frame) -> Future[RawOutput]:
        """Start inferring ``frame`` on the first free interpreter (waits while all are busy)."""
        lane = self._free.get()
        done: Future[RawOutput] = Future()
        self._jobs[lane].put((frame, done))
        return done

    def stop(self) -> None:
        """Finish the frames in flight, then end the threads."""
        for jobs in self._jobs:
            jobs.put(None)
        for t in self._threads:
            t.join()

    def _run(self, lane: int) -> None:
        self.detector.claim_cores(lane)
        jobs = self._jobs[lane]
        while (item := jobs.get()) is not None:
            frame, done = item
            try:
                done.set_result(self.detector.infer(frame, lane))
            except BaseException as exc:  # raised where the result is used (post-processing), not lost here
                done.set_exception(exc)
            finally:
                self._free.put(lane)


def resolved(raw: Any) -> RawOutput | None:
    """A lane's future waited for, or a result that was produced in place (one interpreter)."""
    return raw.result() if isinstance(raw, Future) else raw
