"""A detection model's layout: its image input, recurrent state and output roles, found from its tensors.

What every format shares lives here: the one image input, and the pairing of recurrent state inputs
(LSTM-SSD) with the outputs fed back to them on the next frame. The output roles are the format's: each
registered format's probe (``agent.vision.formats``) looks at the remaining outputs; a manifest or
``model.format`` may name the format instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.errors import ModelError
from agent.vision.formats import AUTO, FORMATS
from agent.vision.interpreter import TensorInfo


@dataclass
class ModelLayout:
    """The part of a layout every format has; a format subclasses it with its output roles."""

    image: TensorInfo
    #: (state input, output fed back into it on the next frame)
    state: list[tuple[TensorInfo, TensorInfo]] = field(default_factory=list)
    #: the registered format name (set by ``detect_layout``)
    kind: str = ""
    #: classes the output tensors fix (a raw head has one channel per class); None when they do not say
    num_classes: int | None = None
    #: the raw head that fixes ``num_classes`` (for messages), if there is one
    head: TensorInfo | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the image input."""
        return self.image.shape[2], self.image.shape[1]

    def describe(self) -> str:
        return self.kind


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


def detect_layout(
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    num_labels: int | None = None,
    override: str = AUTO,
) -> ModelLayout:
    """Work out the model's format; ``override`` (a registered format name) comes from a manifest or config.

    ``auto`` asks every registered format's probe and takes the one that recognises the outputs; when
    none does, the first probe's error (its format, but inconsistent) or the outputs each format needs."""
    images = [t for t in inputs if _is_image(t)]
    if len(images) != 1:
        raise ModelError(f"expected one image input [1, H, W, 3], found {[list(t.shape) for t in inputs]}")
    image = images[0]
    state = _pair_state([t for t in inputs if t is not image], outputs)
    fed_back = {o.index for _, o in state}
    outs = [o for o in outputs if o.index not in fed_back]
    shapes = [list(o.shape) for o in outs]

    def probe(kind: str) -> ModelLayout | None:
        layout = FORMATS[kind].load("probe")(image, state, outs, num_labels)
        if layout is not None:
            layout.kind = kind
        return layout

    if override != AUTO:
        if override not in FORMATS:
            raise ModelError(f"unknown model format {override!r} (known: {', '.join(FORMATS.kinds)})")
        layout = probe(override)
        if layout is None:
            raise ModelError(f"format {override} needs {FORMATS[override].traits['needs']}; found {shapes}")
        return layout
    found: list[ModelLayout] = []
    errors: list[ModelError] = []
    for kind in FORMATS.kinds:
        try:
            layout = probe(kind)
        except ModelError as exc:
            errors.append(exc)
            continue
        if layout is not None:
            found.append(layout)
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelError(f"detector outputs {shapes} fit several formats ({', '.join(f.kind for f in found)}); "
                         "set model.format (or the manifest's format)")
    if errors:
        raise errors[0]
    needs = "; ".join(f"{e.kind}: {e.traits['needs']}" for e in FORMATS)
    raise ModelError(f"unrecognised detector outputs {shapes} (supported: {needs})")
