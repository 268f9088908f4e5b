"""Recognise a detection model's format and tensor roles from its tensor shapes (and names).

Supported: SSD with ``TFLite_Detection_PostProcess`` (boxes/classes/scores/count) and YOLOv5/v8/v11 raw
heads ``[1, 4(+1) + classes, N]`` or transposed. Recurrent state inputs (LSTM-SSD) are paired with the
outputs that must be fed back to them on the next frame. A manifest may override the guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from agent.errors import ModelError
from agent.vision.interpreter import TensorInfo

Format = Literal["ssd", "yolo"]


@dataclass(slots=True)
class ModelLayout:
    kind: Format
    image: TensorInfo
    #: (state input, output fed back into it on the next frame)
    state: list[tuple[TensorInfo, TensorInfo]] = field(default_factory=list)
    # SSD post-process outputs
    boxes: TensorInfo | None = None
    classes: TensorInfo | None = None
    scores: TensorInfo | None = None
    count: TensorInfo | None = None
    # YOLO raw head
    head: TensorInfo | None = None
    transposed: bool = False  # head is [1, N, C] instead of [1, C, N]
    num_classes: int | None = None
    objectness: bool = False

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the image input."""
        return self.image.shape[2], self.image.shape[1]

    def describe(self) -> str:
        if self.kind == "ssd":
            extra = f", {len(self.state)} recurrent state tensor(s) fed back" if self.state else ""
            return f"ssd (TFLite_Detection_PostProcess, up to {self.boxes.shape[1]} boxes{extra})"
        variant = "v5 (objectness)" if self.objectness else "v8/v11 (no objectness)"
        n = self.head.shape[1] if self.transposed else self.head.shape[2]
        return f"yolo {variant}, {self.num_classes} classes, {n} candidates"


def _is_image(t: TensorInfo) -> bool:
    return len(t.shape) == 4 and t.shape[-1] in (1, 3) and t.shape[1] >= 32 and t.shape[2] >= 32


def _state_key(name: str) -> str:
    """``raw_inputs/init_lstm_c`` and ``raw_outputs/lstm_c`` share the key ``lstm_c``."""
    last = name.rsplit("/", 1)[-1].split(":")[0]
    return re.sub(r"^(init_|input_|in_|prev_)", "", last)


def _pair_state(extra_inputs: list[TensorInfo], outputs: list[TensorInfo]) -> list[tuple[TensorInfo, TensorInfo]]:
    pairs = []
    free = [o for o in outputs if len(o.shape) >= 2]
    for inp in extra_inputs:
        same = [o for o in free if o.shape == inp.shape and o.dtype == inp.dtype]
        named = [o for o in same if _state_key(o.name) == _state_key(inp.name)]
        pick = (named or same or [None])[0]
        if pick is None:
            raise ModelError(f"input {inp.name} {list(inp.shape)} is neither the image nor a recurrent state "
                             "with a matching output")
        pairs.append((inp, pick))
        free.remove(pick)
    return pairs


def _ssd_roles(outs: list[TensorInfo]) -> dict[str, TensorInfo] | None:
    boxes = [o for o in outs if len(o.shape) == 3 and o.shape[-1] == 4]
    count = [o for o in outs if len(o.shape) == 1 and o.shape[0] == 1]
    flat = [o for o in outs if len(o.shape) == 2]
    if len(boxes) != 1 or len(count) != 1 or len(flat) != 2:
        return None
    by_suffix = {o.name.rsplit(":", 1)[-1] if ":" in o.name else "0": o for o in outs}
    if "1" in by_suffix and "2" in by_suffix and by_suffix["1"] in flat and by_suffix["2"] in flat:
        classes, scores = by_suffix["1"], by_suffix["2"]  # TF1 object detection API naming
    else:
        # TF2 exports name outputs StatefulPartitionedCall:0..3 in another order; the caller refines by values
        classes, scores = flat
    return {"boxes": boxes[0], "classes": classes, "scores": scores, "count": count[0]}


def detect_layout(
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    num_labels: int | None = None,
    override: str = "auto",
) -> ModelLayout:
    """Work out the model's format; ``override`` ("ssd" | "yolo") comes from a manifest or config."""
    images = [t for t in inputs if _is_image(t)]
    if len(images) != 1:
        raise ModelError(f"expected one image input [1, H, W, 3], found {[list(t.shape) for t in inputs]}")
    image = images[0]
    extra = [t for t in inputs if t is not image]
    state = _pair_state(extra, outputs)
    fed_back = {o.index for _, o in state}
    outs = [o for o in outputs if o.index not in fed_back]

    ssd = _ssd_roles(outs)
    heads = [o for o in outs if len(o.shape) == 3 and o.shape[-1] != 4]
    kind = override if override != "auto" else ("ssd" if ssd else "yolo" if len(heads) == 1 else None)
    if kind == "ssd":
        if not ssd:
            raise ModelError("format ssd needs boxes [1,N,4], classes [1,N], scores [1,N], count [1] outputs; "
                             f"found {[list(o.shape) for o in outs]}")
        return ModelLayout("ssd", image, state, **ssd)
    if kind == "yolo":
        if len(heads) != 1:
            raise ModelError(f"format yolo needs one output [1, 4+classes, N]; found {[list(o.shape) for o in outs]}")
        return _yolo_layout(image, state, heads[0], num_labels)
    raise ModelError(
        f"unrecognised detector outputs {[list(o.shape) for o in outs]} (supported: SSD post-process, YOLO raw head)"
    )


def _yolo_layout(image: TensorInfo, state: list, head: TensorInfo, num_labels: int | None) -> ModelLayout:
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
    return ModelLayout("yolo", image, state, head=head, transposed=transposed, num_classes=num_classes,
                       objectness=objectness)
