"""The detector: model resolution (file, folder + manifest, bundled demo), input writing, invoke, decoding.

``Detector.detect(frame)`` returns detections in full-frame normalised coordinates. It is two steps so
the agent can overlap them: ``infer`` (inference thread: input, invoke, outputs copied out) and ``decode``
(post-processing thread). Recurrent state outputs (LSTM-SSD) are copied back into their inputs after each
invoke. With ``model.interpreters`` > 1 the model is loaded that many times, one ``Lane`` each, and
``infer(frame, lane)`` may run on several threads at once, one per lane. Per-stage times are accumulated
per lane for the run summary and the bench.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.config import DetectConfig, ModelConfig
from agent.contract import ModelRef
from agent.errors import ModelError
from agent.sources.base import Frame
from agent.thread_priority import realtime_threads
from agent.vision.decoders import Decoder
from agent.vision.formats import FORMATS
from agent.vision.interpreter import ModelRuntime
from agent.vision.layout import ModelLayout, detect_layout
from agent.vision.preprocess import Geometry, InputWriter, default_normalization
from agent.vision.types import Detection

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "demo"
DEFAULT_FLOOR = 0.3


def load_labels(path: Path) -> list[str]:
    """One name a line (index = class id), or ``id name`` lines as Coral label files have."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelError(f"{path}: label file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read label file: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"{path}: label file is empty")
    pairs = [re.match(r"^\s*(\d+)[\s:,]+(.+?)\s*$", ln) for ln in lines]
    if all(pairs):
        ids = {int(m.group(1)): m.group(2) for m in pairs if m}
        return [ids.get(i, f"class{i}") for i in range(max(ids) + 1)]
    return [ln.strip() for ln in lines]


@dataclass
class ResolvedModel:
    """Where the model and its labels are, and what its manifest (if any) says."""

    file: Path
    labels: list[str]
    labels_file: Path
    name: str
    format: str = "auto"
    resize: str = "auto"
    normalization: str | None = None
    score: float | None = None
    nms_iou: float | None = None
    manifest: Any = None


def resolve_model(cfg: ModelConfig) -> ResolvedModel:
    """Model path → file + labels + manifest hints. A folder must hold ``manifest.json``."""
    path = cfg.path or DEMO_MODEL_DIR
    if cfg.path is None and not (path / "manifest.json").exists():
        raise ModelError(f"{path}: the bundled demo model is missing (see models/train/README.md)")
    if path.is_dir():
        from agent.vision.manifest import load_manifest

        man = load_manifest(path)
        labels_file = cfg.labels or path / man.labels
        return ResolvedModel(
            file=path / man.file, labels=load_labels(labels_file), labels_file=labels_file, name=man.name,
            format=man.format if cfg.format == "auto" else cfg.format,
            resize=man.input.resize if cfg.resize == "auto" else cfg.resize,
            normalization=getattr(man.input, "normalization", None),
            score=man.thresholds.score, nms_iou=man.thresholds.nms_iou, manifest=man,
        )
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    labels_file = cfg.labels or path.with_name("labels.txt")
    if cfg.labels is None and not labels_file.exists():
        raise ModelError(f"{path}: no labels.txt beside the model; pass --labels FILE")
    return ResolvedModel(file=path, labels=load_labels(labels_file), labels_file=labels_file, name=path.stem,
                         format=cfg.format, resize=cfg.resize)


@dataclass
class StageTimes:
    """Accumulated milliseconds per stage (for summaries and the bench)."""

    preprocess_ms: float = 0.0  # the prepared input copied into the tensor (inference thread)
    invoke_ms: float = 0.0
    take_ms: float = 0.0  # candidates copied out of the output buffers (inference thread)
    decode_ms: float = 0.0  # the rest of output decoding (post-processing thread)
    count: int = 0
    invoke_samples: list[float] = field(default_factory=list)  # the first 100,000, for the run summary

    def as_dict(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"preprocess_ms": self.preprocess_ms / n, "invoke_ms": self.invoke_ms / n,
                "take_ms": self.take_ms / n, "decode_ms": self.decode_ms / n}

    @classmethod
    def merged(cls, parts: list[StageTimes]) -> StageTimes:
        """One account of several accounts (each interpreter's, the decoder's): totals and samples added up."""
        out = cls()
        for p in parts:
            out.preprocess_ms += p.preprocess_ms
            out.invoke_ms += p.invoke_ms
            out.take_ms += p.take_ms
            out.decode_ms += p.decode_ms
            out.count += p.count
            out.invoke_samples.extend(p.invoke_samples)
        return out


@dataclass(slots=True)
class Lane:
    """One interpreter with its own input writer and output reader; used by one thread at a time."""

    runtime: ModelRuntime
    writer: InputWriter
    decoder: Decoder
    times: StageTimes = field(default_factory=StageTimes)


@dataclass(slots=True)
class RawOutput:
    """What one invoke left for decoding: the decoder's copy of its outputs and the input geometry."""

    taken: Any
    geometry: Geometry
    invoke_ms: float = 0.0


class Detector:
    #: config sections ``configure`` takes hot (``model`` is read once, at start)
    CONFIG_SECTIONS: ClassVar[frozenset[str]] = frozenset({"detect"})

    def __init__(self, model_cfg: ModelConfig, detect_cfg: DetectConfig) -> None:
        self.resolved = resolve_model(model_cfg)
        first = ModelRuntime(self.resolved.file, model_cfg.threads, model_cfg.delegate)
        self.layout: ModelLayout = detect_layout(
            first.inputs, first.outputs, len(self.resolved.labels), self.resolved.format
        )
        if model_cfg.interpreters > 1 and self.layout.state:
            raise ModelError(f"{self.resolved.file}: model.interpreters = {model_cfg.interpreters}, but this model "
                             "carries recurrent state from each frame to the next; set model.interpreters = 1")
        fmt = FORMATS[self.layout.kind]
        resize = self.resolved.resize if self.resolved.resize != "auto" else fmt.traits["resize"]
        norm = self.resolved.normalization or default_normalization(self.layout.image,
                                                                    fmt.traits["float_normalization"])
        make_decoder = fmt.load("decoder")  # the format's decoder class (agent.vision.formats)

        def lane(runtime: ModelRuntime) -> Lane:
            writer = InputWriter(runtime, self.layout.image, resize, norm)
            return Lane(runtime, writer, make_decoder(runtime, self.layout))

        #: one per interpreter (``model.interpreters``); lane 0 also serves single-threaded callers
        self.lanes = [lane(first)] + [
            lane(ModelRuntime(self.resolved.file, model_cfg.threads, model_cfg.delegate, content=first.content))
            for _ in range(model_cfg.interpreters - 1)]
        self.runtime, self.writer, self.decoder = first, self.lanes[0].writer, self.lanes[0].decoder
        self.labels = self.resolved.labels
        self.sha256 = hashlib.sha256(first.content).hexdigest()
        self.model_ref = ModelRef(name=self.resolved.name, sha256=self.sha256)
        self._decode_times = StageTimes()  # decode runs on the post-processing thread, whichever lane inferred
        self.priority = model_cfg.priority
        #: lanes whose threads run real-time (``claim_cores``)
        self.realtime_lanes = 0
        self.configure(detect_cfg)

    @property
    def times(self) -> StageTimes:
        """Every lane's stage times and the decoding time in one account (a snapshot)."""
        return StageTimes.merged([*(ln.times for ln in self.lanes), self._decode_times])

    def claim_cores(self, lane: int = 0) -> bool:
        """Called on the thread that will invoke ``lane``: with ``model.priority = "realtime"`` that thread and
        the interpreter's worker threads run real-time (``thread_priority.realtime_threads``). True if they do;
        where that is not permitted, one warning and normal priority."""
        if self.priority != "realtime":
            return False
        if realtime_threads([0, *self.lanes[lane].runtime.worker_tids]):
            self.realtime_lanes += 1
            return True
        log.warning("model.priority = realtime: not permitted here (needs RLIMIT_RTPRIO >= 1, e.g. systemd "
                    "LimitRTPRIO=1, or CAP_SYS_NICE); the interpreter runs at normal priority")
        self.priority = "normal"  # one warning, not one per lane
        return False

    def configure(self, cfg: DetectConfig) -> None:
        """Thresholds can change at run time (config/desired).

        The detector owns the score floors (``detect.per_label.*.min_score``, else ``detect.score_floor``,
        else the manifest's, else 0.3): only it knows the model's default, and its decoder cuts candidates
        in the quantised domain at the lowest floor any label needs. Which labels, sizes and places become
        tracks (``detect.labels``, ``min_area``, masks) is the tracker's filter."""
        self.default_floor = cfg.score_floor if cfg.score_floor is not None else (self.resolved.score or DEFAULT_FLOOR)
        self.label_floors = {k: f.min_score for k, f in cfg.per_label.items() if f.min_score is not None}
        self.floor = min([self.default_floor, *self.label_floors.values()])
        self.nms_iou = cfg.nms_iou if "nms_iou" in cfg.model_fields_set else (self.resolved.nms_iou or cfg.nms_iou)
        self.max_detections = cfg.max_detections

    def _reset_state(self, runtime: ModelRuntime) -> None:
        """Zero the recurrent state: a reopened camera or stream starts a new sequence (``Frame.fresh``)."""
        for inp, _ in self.layout.state:
            runtime.set(inp, np.full(inp.shape, inp.zero_point if inp.quantised else 0, inp.dtype))

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else f"class{class_id}"

    def prepare(self, frame: Frame) -> None:
        """Capture-thread hook: attach this model's input for the frame (resized and quantised) as
        ``frame.model_input``, so the inference thread only copies it into the tensor."""
        frame.model_input = self.writer.prepare(frame)

    def infer(self, frame: Frame, lane: int = 0) -> RawOutput:
        """Inference thread (the one thread using ``lane`` now): input into the tensor, invoke, recurrent
        state fed back, outputs copied out."""
        ln = self.lanes[lane]
        if frame.fresh and self.layout.state:
            self._reset_state(ln.runtime)
        t0 = time.perf_counter()
        geom = ln.writer.write(frame)
        frame.model_input = None  # in the tensor now; the frame lives on (tracking, thumbnails) without it
        t1 = time.perf_counter()
        ln.runtime.invoke()
        t2 = time.perf_counter()
        for inp, out in self.layout.state:
            ln.runtime.set(inp, ln.runtime.get(out))
        raw = RawOutput(ln.decoder.take(self.floor), geom, (t2 - t1) * 1e3)
        t3 = time.perf_counter()
        t = ln.times
        t.preprocess_ms += (t1 - t0) * 1e3
        t.invoke_ms += (t2 - t1) * 1e3
        t.take_ms += (t3 - t2) * 1e3
        t.count += 1
        if len(t.invoke_samples) < 100_000:
            t.invoke_samples.append((t2 - t1) * 1e3)
        return raw

    def decode(self, raw: RawOutput) -> list[Detection]:
        """Any thread (one at a time): detections in full-frame normalised coordinates (timed in this
        thread's CPU time: off the inference thread it is preempted by the interpreter's threads)."""
        t0 = time.thread_time()
        boxes, scores, classes = self.decoder.decode(raw.taken, self.floor, self.nms_iou, self.max_detections)
        boxes = raw.geometry.to_frame(boxes)
        floors, default = self.label_floors, self.default_floor
        dets = []
        for box, score, cid in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            label = self.label(int(cid))
            if score < floors.get(label, default) or box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                continue
            dets.append(Detection(label, int(cid), float(score), tuple(box)))  # type: ignore[arg-type]
        self._decode_times.decode_ms += (time.thread_time() - t0) * 1e3
        return dets

    def detect(self, frame: Frame) -> list[Detection]:
        return self.decode(self.infer(frame))
