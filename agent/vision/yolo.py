"""The YOLO format: YOLOv5 (objectness) and v8/v11 (class scores only) raw heads, int8 or float.

The head is ``[1, 4(+1) + classes, N]`` or transposed ``[1, N, ...]``. Decoding is vectorised: candidates
are thresholded in the quantised domain before anything is dequantised, so only the few dozen survivors
of 8400 are converted to float and passed to class-wise NMS. Registered in ``agent.vision.formats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent.errors import ModelError
from agent.vision.decoders import Decoded, nms
from agent.vision.interpreter import ModelRuntime, TensorInfo
from agent.vision.layout import ModelLayout


@dataclass(kw_only=True)
class YoloLayout(ModelLayout):
    head: TensorInfo
    transposed: bool = False  # head is [1, N, C] instead of [1, C, N]
    objectness: bool = False

    def describe(self) -> str:
        variant = "v5 (objectness)" if self.objectness else "v8/v11 (no objectness)"
        n = self.head.shape[1] if self.transposed else self.head.shape[2]
        return f"yolo {variant}, {self.num_classes} classes, {n} candidates"


def probe(image: TensorInfo, state: list, outs: list[TensorInfo], num_labels: int | None) -> YoloLayout | None:
    """One 3-D output that is not boxes; ``ModelError`` when its channels fit neither v5 nor v8/v11."""
    heads = [o for o in outs if len(o.shape) == 3 and o.shape[-1] != 4]
    if len(heads) != 1:
        return None
    head = heads[0]
    _, a, b = head.shape
    transposed = a > b  # [1, N, C]: more candidates than channels
    channels = b if transposed else a
    if channels < 5:
        raise ModelError(f"yolo head {list(head.shape)} has fewer than 5 channels")
    if num_labels is not None and channels == 5 + num_labels:
        objectness = True
    elif num_labels is not None and channels == 4 + num_labels:
        objectness = False
    elif num_labels is not None:
        raise ModelError(
            f"yolo head has {channels} channels but there are {num_labels} labels "
            f"(expected {4 + num_labels} for v8/v11 or {5 + num_labels} for v5)"
        )
    else:
        objectness = transposed  # v5 exports are [1, N, 5+C]; v8/v11 are [1, 4+C, N]
    num_classes = channels - (5 if objectness else 4)
    return YoloLayout(image, state, head=head, transposed=transposed, num_classes=num_classes,
                      objectness=objectness)


class YoloDecoder:
    def __init__(self, runtime: ModelRuntime, layout: YoloLayout) -> None:
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
