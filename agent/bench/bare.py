"""The reference: the bare interpreter's invoke rate (same model, same threads, a real frame as input).

Nothing but ``invoke()`` is in the timed loop, so ``pipeline inference rate ÷ bare rate`` is the share of
the hardware's detection capacity the agent actually delivers.
"""

from __future__ import annotations

import gc
import time

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
    """Load the model as the agent does, write one real frame into the input, then only invoke."""
    from agent.config import DetectConfig
    from agent.vision.detector import Detector

    det = Detector(model_cfg, DetectConfig())
    if frame is not None:
        det.writer.write(frame)
    runtime = det.runtime
    for _ in range(warmup):
        runtime.invoke()
    samples: list[float] = []
    c0, t0 = time.process_time(), time.perf_counter()
    while len(samples) < min_invokes or time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        runtime.invoke()
        samples.append((time.perf_counter() - t) * 1e3)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    del det, runtime
    gc.collect()
    arr = np.asarray(samples)
    return BareResult(invokes=len(samples), seconds=round(wall, 3), rate_hz=len(samples) / wall,
                      ms_p50=float(np.percentile(arr, 50)), ms_p95=float(np.percentile(arr, 95)),
                      ms_mean=float(arr.mean()), cpu_cores=cpu / wall)
