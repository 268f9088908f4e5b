"""Score a YOLO-layout detector on the synthetic street scene: recall, precision and mAP@0.5 against truth.

This is the recipe's (and the demo-model test's) own reference: a small numpy decoder written from the
format description, independent of the agent's decoder, run through the real LiteRT interpreter on frames
from ``StreetScene``. Boxes are matched to truth greedily by score at IoU >= 0.5, same label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.sources.base import TruthBox
from agent.sources.scene import LABELS, StreetScene
from agent.vision.interpreter import ModelRuntime


@dataclass(slots=True)
class Box:
    label: str
    score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to the frame


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decode_head(head: np.ndarray, labels: list[str], floor: float, nms_iou: float) -> list[Box]:
    """``head`` is the dequantised ``[4 + C, N]`` output: cx, cy, w, h (normalised), C class scores."""
    scores_all = head[4:]
    cls = scores_all.argmax(axis=0)
    score = scores_all.max(axis=0)
    keep = np.flatnonzero(score >= floor)
    keep = keep[np.argsort(-score[keep], kind="stable")]
    out: list[Box] = []
    for i in keep:
        cx, cy, w, h = (float(v) for v in head[:4, i])
        box = (max(cx - w / 2, 0.0), max(cy - h / 2, 0.0), min(cx + w / 2, 1.0), min(cy + h / 2, 1.0))
        label = labels[int(cls[i])]
        if all(o.label != label or iou(o.bbox, box) <= nms_iou for o in out):
            out.append(Box(label, float(score[i]), box))
    return out


def match(dets: list[Box], truth: list[TruthBox], thr: float = 0.5) -> tuple[list[bool], int]:
    """Greedy by score: each detection is a true positive when it takes an unmatched same-label truth box."""
    taken = [False] * len(truth)
    flags: list[bool] = []
    for d in sorted(dets, key=lambda d: -d.score):
        best, best_iou = -1, thr
        for j, t in enumerate(truth):
            if taken[j] or t.label != d.label:
                continue
            v = iou(d.bbox, t.bbox)
            if v >= best_iou:
                best, best_iou = j, v
        if best >= 0:
            taken[best] = True
        flags.append(best >= 0)
    return flags, sum(taken)


def average_precision(scores: list[float], tp: list[bool], n_truth: int) -> float:
    """Area under the interpolated precision/recall curve (VOC all-points)."""
    if n_truth == 0:
        return float("nan")
    if not scores:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, dtype=np.float64)[order]
    cum_tp = np.cumsum(hits)
    recall = cum_tp / n_truth
    precision = cum_tp / np.arange(1, len(hits) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


class SceneDetector:
    """The model under test: stretch-resize, quantise, invoke, dequantise, decode."""

    def __init__(self, model_file: Path, labels: list[str], threads: int = 2) -> None:
        self.runtime = ModelRuntime(Path(model_file), threads)
        self.image = self.runtime.inputs[0]
        self.head = self.runtime.outputs[0]
        self.labels = labels
        _, self.in_h, self.in_w, _ = self.image.shape
        pixels = np.arange(256, dtype=np.float64) / 255.0
        if self.image.quantised:
            lim = np.iinfo(self.image.dtype)
            q = np.round(pixels / self.image.scale + self.image.zero_point)
            self.lut = np.clip(q, lim.min, lim.max).astype(self.image.dtype)
        else:
            self.lut = pixels.astype(self.image.dtype)

    def raw(self, rgb: np.ndarray) -> np.ndarray:
        """The dequantised head ``[4 + C, N]`` for one RGB frame."""
        w = rgb.shape[1]
        interp = cv2.INTER_AREA if w > 2 * self.in_w else cv2.INTER_LINEAR
        small = cv2.resize(rgb, (self.in_w, self.in_h), interpolation=interp)
        self.runtime.set(self.image, self.lut[small][None])
        self.runtime.invoke()
        return self.head.dequantise(self.runtime.get(self.head))[0]

    def detect(self, rgb: np.ndarray, floor: float, nms_iou: float) -> list[Box]:
        return decode_head(self.raw(rgb), self.labels, floor, nms_iou)


@dataclass(slots=True)
class SceneMetrics:
    map50: float
    recall: float
    precision: float
    per_label: dict[str, dict[str, float]]
    truths: int
    detections: int
    frames: int

    def summary(self) -> str:
        return (f"mAP@0.5 {self.map50:.3f}  recall {self.recall:.3f}  precision {self.precision:.3f}  "
                f"({self.truths} objects, {self.detections} detections, {self.frames} frames)")


def evaluate(detector: SceneDetector, seed: int, frames: int = 300, step: int = 30, start: int = 0,
             width: int = 1280, height: int = 720, fps: float = 15.0, score: float = 0.35,
             nms_iou: float = 0.45, ap_floor: float = 0.05) -> SceneMetrics:
    """Render ``frames`` frames of ``seed`` (every ``step``-th) and score the detector on them.

    Recall and precision are at ``score``; mAP@0.5 uses every detection above ``ap_floor``.
    """
    scene = StreetScene(seed, width, height, fps)
    per: dict[str, dict[str, list]] = {lb: {"scores": [], "tp": [], "n": [0]} for lb in detector.labels}
    hit = found = n_truth = n_det = 0
    for k in range(frames):
        rgb, truth = scene.render(start + k * step)
        dets = detector.detect(rgb, ap_floor, nms_iou)
        flags, _ = match(dets, truth)
        for d, f in zip(sorted(dets, key=lambda d: -d.score), flags, strict=True):
            per[d.label]["scores"].append(d.score)
            per[d.label]["tp"].append(f)
        for t in truth:
            per[t.label]["n"][0] += 1
        confident = [d for d in dets if d.score >= score]
        flags, matched = match(confident, truth)
        hit += sum(flags)
        found += matched
        n_truth += len(truth)
        n_det += len(confident)
    per_label: dict[str, dict[str, float]] = {}
    aps = []
    for label, rec in per.items():
        ap = average_precision(rec["scores"], rec["tp"], rec["n"][0])
        per_label[label] = {"ap50": ap, "objects": float(rec["n"][0])}
        if rec["n"][0]:
            aps.append(ap)
    return SceneMetrics(
        map50=float(np.mean(aps)) if aps else 0.0,
        recall=found / n_truth if n_truth else 1.0,
        precision=hit / n_det if n_det else 1.0,
        per_label=per_label, truths=n_truth, detections=n_det, frames=frames,
    )


__all__ = ["LABELS", "Box", "SceneDetector", "SceneMetrics", "average_precision", "decode_head", "evaluate",
           "iou", "match"]
