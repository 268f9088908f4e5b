"""The reference: the bare interpreter's invoke rate (same model, same threads and interpreters, a real frame).

Nothing but ``invoke()`` is in the timed loop, so ``pipeline inference rate ÷ bare rate`` is the share of
the hardware's detection capacity the agent actually delivers.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from pydantic import BaseModel

from agent.config import ModelConfig
from agent.sources.base import Frame


class BareResult(BaseModel):
    invokes: int
    seconds: float
    rate_hz: float
    ms_p50: float
    ms_p95: float
    ms_mean: float
    cpu_cores: float  # process CPU time ÷ wall time while invoking (how much of the machine one invoke uses)


def measure_bare(model_cfg: ModelConfig, frame: Frame | None, seconds: float = 6.0, min_invokes: int = 20,
                 warmup: int = 3) -> BareResult:
    """Load the model as the agent does, write one real frame into the input, then only invoke.

    With ``model.interpreters`` > 1 every interpreter invokes in a loop of its own thread at the same time,
    as the agent runs them: the rate is all their invokes together."""
    from agent.config import DetectConfig
    from agent.vision.detector import Detector

    det = Detector(model_cfg, DetectConfig())
    runtimes = [lane.runtime for lane in det.lanes]
    for lane in det.lanes:
        if frame is not None:
            lane.writer.write(frame)
        for _ in range(warmup):
            lane.runtime.invoke()
    samples: list[list[float]] = [[] for _ in runtimes]
    start = threading.Barrier(len(runtimes) + 1)

    def loop(claim_cores: Callable[[], bool], invoke: Callable[[], None], out: list[float]) -> None:
        claim_cores()  # model.priority: the same scheduling as the agent gives its interpreters
        start.wait()
        t0 = time.perf_counter()
        while len(out) < min_invokes or time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            invoke()
            out.append((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=loop, args=(partial(det.claim_cores, i), rt.invoke, out), name=f"bare-{i}")
               for i, (rt, out) in enumerate(zip(runtimes, samples, strict=True))]
    for t in threads:
        t.start()
    start.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    del det, runtimes
    gc.collect()
    arr = np.concatenate([np.asarray(s) for s in samples])
    return BareResult(invokes=len(arr), seconds=round(wall, 3), rate_hz=len(arr) / wall,
                      ms_p50=float(np.percentile(arr, 50)), ms_p95=float(np.percentile(arr, 95)),
                      ms_mean=float(arr.mean()), cpu_cores=cpu / wall)
