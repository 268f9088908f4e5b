"""Turn raw detector outputs into boxes, scores and class ids (input-normalised ``x1, y1, x2, y2``).

Vectorised: YOLO candidates are thresholded in the quantised domain before anything is dequantised, so
only the few dozen survivors of 8400 are converted to float and passed to class-wise NMS. Each decoder
works in two steps: ``take`` copies what decoding needs out of the interpreter's output buffers (on the
inference thread, before the next invoke overwrites them) and ``decode`` does the rest on any thread.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agent.vision.formats import ModelLayout
from agent.vision.interpreter import ModelRuntime

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [K,4] float32, scores [K], class ids [K] int


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Class-wise greedy NMS; returns kept indices, best score first.

    OpenCV's C++ ``NMSBoxesBatched`` (boxes of different classes never suppress each other): the Python
    loop it replaced cost 0.2 ms a frame with 30 candidates, a few percent of an 8 ms invoke.
    """
    if len(boxes) <= 1:
        return np.arange(min(len(boxes), limit), dtype=np.int64)
    xywh = np.empty((len(boxes), 4), np.float64)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    kept = cv2.dnn.NMSBoxesBatched(xywh, scores.astype(np.float32), classes.astype(np.int32), -np.inf, iou)
    return np.asarray(kept, np.int64).reshape(-1)[:limit]


class YoloDecoder:
    """YOLOv5 (objectness) and v8/v11 (class scores only) raw heads, int8 or float."""

    def __init__(self, runtime: ModelRuntime, layout: ModelLayout) -> None:
        self.runtime = runtime
        self.info = layout.head
        self.transposed = layout.transposed
        self.objectness = layout.objectness
        self.input_w, self.input_h = layout.input_size
        self.first_class = 5 if layout.objectness else 4
        self._thresholds: dict[float, float] = {}
        self._pixels: bool | None = None  # boxes in input pixels (some exports) rather than normalised
        self._input_scale = np.array([self.input_w, self.input_h, self.input_w, self.input_h], np.float32)
        self._head = runtime.input_view(self.info)  # a view of the output buffer: no 700 kB copy per frame

    def _quantised_threshold(self, floor: float) -> float:
        cached = self._thresholds.get(floor)
        if cached is not None:
            return cached
        info = self.info
        if not info.quantised:
            value = floor
        else:
            lim = np.iinfo(info.dtype)  # slow to build: once per floor, not per frame
            value = float(min(max(math.ceil(floor / info.scale + info.zero_point), lim.min), lim.max))
        self._thresholds[floor] = value
        return value

    def take(self, floor: float) -> np.ndarray:
        """Inference thread, right after invoke: the candidate columns ``[C, K]`` copied out of the output
        buffer (the next invoke overwrites it). Thresholding here keeps the copy to a few dozen columns."""
        raw = self._head()[0]
        head = raw.T if self.transposed else raw  # [C, N]
        gate_rows = head[4] if self.objectness else head[self.first_class:].max(axis=0)
        cand = (gate_rows >= self._quantised_threshold(floor)).nonzero()[0]
        sub = head[:, cand]  # fancy indexing copies
        del raw, head, gate_rows  # no view of the interpreter's buffer may outlive this call
        return sub

    def decode(self, sub: np.ndarray, floor: float, nms_iou: float, limit: int) -> Decoded:
        """Any thread: scores, boxes and class-wise NMS from what ``take`` copied out."""
        if sub.shape[1] == 0:
            return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
        dq = self.info.dequantise
        cls_q = sub[self.first_class:]
        class_ids = cls_q.argmax(axis=0)
        scores = dq(cls_q[class_ids, np.arange(sub.shape[1])])
        if self.objectness:
            scores = scores * dq(sub[4])
        ok = scores >= floor
        scores, class_ids = scores[ok], class_ids[ok]
        cx, cy, w, h = dq(sub[:4, ok])
        boxes = np.empty((len(scores), 4), np.float32)
        boxes[:, 0], boxes[:, 1] = cx - w / 2, cy - h / 2
        boxes[:, 2], boxes[:, 3] = cx + w / 2, cy + h / 2
        if self._pixels is None and boxes.size:  # settled on the first boxes: exported in pixels or normalised
            self._pixels = float(np.abs(boxes).max()) > 2.0
        if self._pixels:
            boxes /= self._input_scale
        keep = nms(boxes, scores, class_ids, nms_iou, limit)
        return boxes[keep], scores[keep], class_ids[keep]


class SsdDecoder:
    """``TFLite_Detection_PostProcess`` outputs: boxes as ymin, xmin, ymax, xmax; NMS already done in-graph."""

    def __init__(self, runtime: ModelRuntime, layout: ModelLayout) -> None:
        self.runtime = runtime
        self.layout = layout
        self._swap: bool | None = None  # TF2 exports order scores/classes differently; settled on first frame

    def take(self, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inference thread: the post-processed outputs (copies, at most a few dozen rows)."""
        lay, get = self.layout, self.runtime.get
        n = int(get(lay.count)[0])
        return get(lay.boxes)[0][:n], get(lay.classes)[0][:n], get(lay.scores)[0][:n]

    def decode(self, taken: tuple[np.ndarray, np.ndarray, np.ndarray], floor: float, nms_iou: float,
               limit: int) -> Decoded:
        boxes, classes, scores = taken
        n = len(scores)
        if self._swap is None and n:
            self._swap = bool(np.any(scores > 1.0) or (np.all(classes <= 1.0) and np.any(classes % 1 != 0)))
        if self._swap:
            classes, scores = scores, classes
        ok = scores >= floor
        yx = boxes[ok]
        xyxy = np.stack([yx[:, 1], yx[:, 0], yx[:, 3], yx[:, 2]], axis=1).astype(np.float32)
        order = np.argsort(-scores[ok], kind="stable")[:limit]
        return xyxy[order], scores[ok][order].astype(np.float32), classes[ok][order].astype(np.int64)


def make_decoder(runtime: ModelRuntime, layout: ModelLayout) -> YoloDecoder | SsdDecoder:
    return SsdDecoder(runtime, layout) if layout.kind == "ssd" else YoloDecoder(runtime, layout)
