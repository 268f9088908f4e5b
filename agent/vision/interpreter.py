"""Load a TFLite model into LiteRT (``ai_edge_litert``), falling back to ``tflite_runtime``.

One interpreter per ``model.interpreters`` (usually one), each reused for every frame it gets. Bad model
files become one-line ``ModelError``s naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import ModelError
from agent.thread_priority import thread_ids
from agent.vision.delegates import DELEGATES

log = logging.getLogger(__name__)


def _runtime() -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate, runtime name); LiteRT first, tflite_runtime as fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime: install ai-edge-litert (or tflite-runtime on boards without a LiteRT wheel)"
        ) from None


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, d: dict[str, Any]) -> TensorInfo:
        scale, zp = d.get("quantization", (0.0, 0))
        return cls(d["name"], int(d["index"]), tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]),
                   float(scale), int(zp))

    @property
    def quantised(self) -> bool:
        return self.scale != 0.0 and self.dtype in (np.dtype(np.int8), np.dtype(np.uint8))

    def dequantise(self, values: np.ndarray) -> np.ndarray:
        if not self.quantised:
            return values.astype(np.float32, copy=False)
        return (values.astype(np.float32) - self.zero_point) * self.scale

    def describe(self) -> str:
        q = f" q=({self.scale:.6g}, {self.zero_point})" if self.quantised else ""
        return f"{self.name} {self.dtype.name}{list(self.shape)}{q}"


TFLITE_MAGIC = b"TFL3"


def check_tflite_file(path: Path) -> bytes:
    """Read a model file, rejecting what is plainly not a TFLite flatbuffer with a clear message."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a folder without manifest.json (give a .tflite or a model folder)") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model: {exc.strerror}") from None
    if len(data) < 16 or data[4:8] != TFLITE_MAGIC:
        raise ModelError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    return data


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """The TFLite C++ runtime prints ``INFO: Created … XNNPACK delegate`` straight to fd 2; route what it
    prints while loading into our log (debug level) so the CLI's stderr stays for real errors."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (daemonised): nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                log.debug("litert: %s", line)


class ModelRuntime:
    """A loaded interpreter with its tensors described; ``invoke`` is the only per-frame call."""

    def __init__(self, path: Path, threads: int = 2, delegate: Any = None, content: bytes | None = None) -> None:
        interpreter_cls, load_delegate, self.runtime_name = _runtime()
        self.path = Path(path)
        self.content = content if content is not None else check_tflite_file(self.path)
        self.delegate_name = "cpu"
        delegates = []
        if delegate is not None:
            try:
                delegates = DELEGATES[delegate.kind].load()(delegate, load_delegate)
                self.delegate_name = delegate.kind
            except (ValueError, OSError) as exc:
                log.warning("%s delegate (%s) did not load (%s); running on CPU", delegate.kind, delegate, exc)
        before = thread_ids()
        try:
            with native_stderr_to_log():
                self.interpreter = interpreter_cls(
                    model_content=self.content, num_threads=threads, experimental_delegates=delegates or None
                )
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: the interpreter rejected the model: {first}") from None
        self.threads = threads
        #: the worker threads the interpreter started (XNNPACK's pool: ``threads`` - 1 of them; the invoking
        #: thread is the last worker); the threads that appeared while it loaded, so none may start elsewhere
        #: meanwhile (the agent loads its model before it starts any thread)
        self.worker_tids = sorted(thread_ids() - before)
        self.inputs = [TensorInfo.from_details(d) for d in self.interpreter.get_input_details()]
        self.outputs = [TensorInfo.from_details(d) for d in self.interpreter.get_output_details()]

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get(self, info: TensorInfo) -> np.ndarray:
        return self.interpreter.get_tensor(info.index)

    def set(self, info: TensorInfo, value: np.ndarray) -> None:
        self.interpreter.set_tensor(info.index, value)

    def input_view(self, info: TensorInfo):
        """A function returning a writable view of an input tensor (call it per frame, drop it before invoke)."""
        return self.interpreter.tensor(info.index)

    def ops(self) -> list[str]:
        """Operator names, when the runtime exposes them (LiteRT does)."""
        get_ops = getattr(self.interpreter, "_get_ops_details", None)
        if get_ops is None:
            return []
        try:
            return [op["op_name"] for op in get_ops()]
        except Exception:  # private API; absence is not an error
            return []
