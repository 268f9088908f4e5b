"""Model output formats: each one's name, how it recognises a model from its tensors, and its decoder.

A format is one module (its ``ModelLayout`` subclass, shape probe and decoder: ``agent.vision.ssd``,
``agent.vision.yolo``) plus one ``register_format`` call here. ``model.format`` and a manifest's
``format`` accept the registered names (checked when validated, so a format registered later is
selectable too); ``agent.vision.layout.detect_layout`` asks every probe when the format is ``auto``.
Nothing here imports a format's module (numpy, cv2): this module is loaded with the config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from agent.registry import NamedRegistry

#: roles: ``probe(image, state, outputs, num_labels) -> ModelLayout | None`` (None: not this format; raises
#: ``ModelError`` when the outputs are this format's but inconsistent) and ``decoder(runtime, layout)`` (an
#: object with ``take`` and ``decode``, see ``agent.vision.decoders.Decoder``)
FORMATS = NamedRegistry("model format", roles=("probe", "decoder"))
AUTO = "auto"


def register_format(name: str, probe: str, decoder: str, *, needs: str,
                    resize: Literal["letterbox", "stretch"] = "letterbox",
                    float_normalization: Literal["raw", "unit", "symmetric"] = "unit") -> None:
    """Register format ``name``: ``probe`` and ``decoder`` are lazy ``"module:attribute"`` targets; ``needs``
    says which outputs the probe wants (for errors); ``resize`` is used when neither config nor manifest
    choose one; ``float_normalization`` maps pixels for a float input (quantised inputs follow their dtype)."""
    FORMATS.register(name, {"probe": probe, "decoder": decoder}, needs=needs, resize=resize,
                     float_normalization=float_normalization)


def _format_name(allow_auto: bool) -> Any:
    """A ``str`` field that must name a registered format (or ``auto``), listed as an enum in the schema."""

    def choices() -> list[str]:
        return [AUTO, *FORMATS.kinds] if allow_auto else FORMATS.kinds

    def check(name: str) -> str:
        if name not in choices():
            raise PydanticCustomError("model_format", "unknown model format '{name}' (known: {known})",
                                      {"name": name, "known": ", ".join(choices())})
        return name

    return Annotated[str, AfterValidator(check), Field(json_schema_extra=lambda schema: schema.update(enum=choices()))]


#: a registered format name (a manifest says what its model is)
FormatName = _format_name(allow_auto=False)
#: a registered format name or ``auto`` (recognised from the tensors)
FormatChoice = _format_name(allow_auto=True)


register_format("ssd", "agent.vision.ssd:probe", "agent.vision.ssd:SsdDecoder",
                needs="boxes [1,N,4], classes [1,N], scores [1,N], count [1] outputs",
                resize="stretch", float_normalization="symmetric")
register_format("yolo", "agent.vision.yolo:probe", "agent.vision.yolo:YoloDecoder",
                needs="one output [1, 4+classes, N]")
