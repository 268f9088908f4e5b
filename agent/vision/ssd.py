"""The SSD format: ``TFLite_Detection_PostProcess`` outputs (boxes, classes, scores, count), NMS done in-graph.

Recurrent LSTM-SSD models are SSD too: their state tensors are paired by ``agent.vision.layout`` before
the probe sees the outputs. Registered in ``agent.vision.formats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.vision.decoders import Decoded
from agent.vision.interpreter import ModelRuntime, TensorInfo
from agent.vision.layout import ModelLayout


@dataclass(kw_only=True)
class SsdLayout(ModelLayout):
    boxes: TensorInfo
    classes: TensorInfo
    scores: TensorInfo
    count: TensorInfo

    def describe(self) -> str:
        extra = f", {len(self.state)} recurrent state tensor(s) fed back" if self.state else ""
        return f"ssd (TFLite_Detection_PostProcess, up to {self.boxes.shape[1]} boxes{extra})"


def probe(image: TensorInfo, state: list, outs: list[TensorInfo], num_labels: int | None) -> SsdLayout | None:
    """Boxes ``[1,N,4]``, count ``[1]`` and two ``[1,N]`` (classes, scores); None for any other outputs."""
    boxes = [o for o in outs if len(o.shape) == 3 and o.shape[-1] == 4]
    count = [o for o in outs if len(o.shape) == 1 and o.shape[0] == 1]
    flat = [o for o in outs if len(o.shape) == 2]
    if len(boxes) != 1 or len(count) != 1 or len(flat) != 2:
        return None
    by_suffix = {o.name.rsplit(":", 1)[-1] if ":" in o.name else "0": o for o in outs}
    if "1" in by_suffix and "2" in by_suffix and by_suffix["1"] in flat and by_suffix["2"] in flat:
        classes, scores = by_suffix["1"], by_suffix["2"]  # TF1 object detection API naming
    else:
        # TF2 exports name outputs StatefulPartitionedCall:0..3 in another order; the decoder settles it by values
        classes, scores = flat
    return SsdLayout(image, state, boxes=boxes[0], classes=classes, scores=scores, count=count[0])


class SsdDecoder:
    """Post-processed outputs: boxes as ymin, xmin, ymax, xmax, already suppressed in-graph."""

    def __init__(self, runtime: ModelRuntime, layout: SsdLayout) -> None:
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
