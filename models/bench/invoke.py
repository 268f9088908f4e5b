"""``edgecam model bench``: invoke latency (p50 / p95) of a model per thread count, on this machine.

Only ``invoke`` is timed (the model's own cost); the input is a real synthetic street frame, quantised
into the input tensor once. Recurrent state inputs stay zero. Progress is reported through a callback
so the CLI can drive a rich progress bar and tests can run without one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.sources.scene import StreetScene
from agent.vision.interpreter import ModelRuntime, TensorInfo
from models.inspect import resolve


@dataclass(slots=True)
class BenchResult:
    threads: int
    runs: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {"threads": self.threads, "runs": self.runs, "p50_ms": round(self.p50_ms, 3),
                "p95_ms": round(self.p95_ms, 3), "mean_ms": round(self.mean_ms, 3), "min_ms": round(self.min_ms, 3)}


def sample_input(info: TensorInfo) -> np.ndarray:
    """A street frame resized to the image input and converted to its dtype (pixel/255 for int8 and float)."""
    _, h, w, c = info.shape
    rgb, _ = StreetScene(seed=11, width=max(w, 64), height=max(h, 64)).render(0)
    img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)[..., :c]
    if info.dtype == np.uint8:
        return img[None]
    real = img.astype(np.float32) / 255.0
    if info.quantised:
        lim = np.iinfo(info.dtype)
        return np.clip(np.round(real / info.scale + info.zero_point), lim.min, lim.max).astype(info.dtype)[None]
    return real.astype(info.dtype)[None]


def bench_model(path: Path, threads: list[int], runs: int = 100, warmup: int = 10,
                progress: Callable[[int, int], None] | None = None) -> list[BenchResult]:
    """Time ``runs`` invokes per thread count; ``progress(threads, done)`` after each invoke."""
    files = resolve(Path(path))
    results = []
    for n in threads:
        rt = ModelRuntime(files.model, n)
        image = max(rt.inputs, key=lambda t: int(np.prod(t.shape)) if len(t.shape) == 4 else 0)
        rt.set(image, sample_input(image))
        for _ in range(warmup):
            rt.invoke()
        times = np.empty(runs)
        for i in range(runs):
            t0 = time.perf_counter()
            rt.invoke()
            times[i] = (time.perf_counter() - t0) * 1000.0
            if progress:
                progress(n, i + 1)
        results.append(BenchResult(n, runs, float(np.percentile(times, 50)), float(np.percentile(times, 95)),
                                   float(times.mean()), float(times.min())))
        del rt
    return results
