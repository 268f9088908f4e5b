"""The model manifest: what a model folder holds and how to run it, read by the agent, OTA and the tools.

A model folder is ``manifest.json`` + the ``.tflite`` it names + the label file it names. Unknown fields are
ignored on read (newer tools may add some); every problem is a one-line ``ModelError`` naming the file and
the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ModelError
from agent.vision.formats import FormatName

MANIFEST_NAME = "manifest.json"


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputSpec(_Part):
    """The image input: size, dtype and how pixels map to it (``real = (q - zero_point) * scale``)."""

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    dtype: Literal["int8", "uint8", "float32"]
    scale: float = Field(ge=0, description="quantisation scale of the input tensor (0 for float)")
    zero_point: int = 0
    resize: Literal["letterbox", "stretch"]
    color: Literal["RGB"] = "RGB"
    normalization: Literal["raw", "unit", "symmetric"] | None = Field(
        None, description="pixel → real value: raw pixels, pixel/255, or pixel/127.5 - 1 (default by dtype)")


class Thresholds(_Part):
    score: float = Field(ge=0, le=1, description="per-detection score floor")
    nms_iou: float = Field(gt=0, le=1, description="class-wise NMS IoU")
    per_label: dict[str, float] = Field(default_factory=dict)


class Provenance(_Part):
    recipe: str
    seeds: list[int] = Field(default_factory=list)
    commit: str | None = None
    framework: str | None = None
    source: str | None = Field(None, description="where a third-party model came from")


class Metrics(_Part):
    map50: float | None = Field(None, ge=0, le=1)
    recall: float | None = Field(None, ge=0, le=1)
    precision: float | None = Field(None, ge=0, le=1)
    eval_seed: int | None = None
    eval_frames: int | None = None
    invoke_ms_p50: float | None = Field(None, ge=0)
    threads: int | None = None
    machine: str | None = None


class ModelManifest(_Part):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    format: FormatName
    input: InputSpec
    labels: str = Field(min_length=1, description="label file name in the model folder")
    num_classes: int = Field(gt=0)
    classes: list[str] | None = Field(None, description="class names by id, as the model was trained; "
                                      "verify checks the label file against them")
    file: str = Field(min_length=1, description="the .tflite file name in the model folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str = Field(min_length=1)
    thresholds: Thresholds
    stateful: bool = False
    provenance: Provenance
    metrics: Metrics = Field(default_factory=Metrics)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (models can be tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {where}: {err['msg']}{more}"


def parse_manifest(data: object, origin: str) -> ModelManifest:
    """Validate already-parsed JSON; ``origin`` names the file in the error."""
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ModelError(f"{origin}: {_first_error(exc)}") from None


def load_manifest(model_dir: Path) -> ModelManifest:
    """Read and validate ``model_dir/manifest.json`` (one-line ``ModelError`` on any problem)."""
    path = Path(model_dir) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse_manifest(data, str(path))


def write_manifest(model_dir: Path, manifest: ModelManifest) -> Path:
    path = Path(model_dir) / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    return path
