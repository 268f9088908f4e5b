"""The model format registry: a format registered outside the production code (a toy one, here) is
selectable by config and manifest, recognised in ``auto``, and run by the detector; unknown names are
one-line errors naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig, build_config
from agent.errors import ConfigError, ModelError
from agent.sources.base import Frame
from agent.vision.detector import Detector
from agent.vision.formats import FORMATS, register_format
from agent.vision.interpreter import ModelRuntime, TensorInfo
from agent.vision.layout import ModelLayout, detect_layout
from agent.vision.manifest import parse_manifest
from tests.test_cli_errors import assert_one_line_error, edgecam

FIXTURES = Path(__file__).parent / "fixtures" / "models"
IMAGE = TensorInfo("image", 0, (1, 64, 64, 3), np.dtype(np.uint8), 0.0, 0)


@dataclass(kw_only=True)
class ToyLayout(ModelLayout):
    output: TensorInfo


def toy_probe(image: TensorInfo, state: list, outs: list[TensorInfo], num_labels: int | None) -> ToyLayout | None:
    """One output of anything: the toy format takes the model's only output as a map of scores."""
    return ToyLayout(image, state, output=outs[0]) if len(outs) == 1 else None


class ToyDecoder:
    """One whole-input box of class 0 scored by the output's peak (enough to see the data flow through)."""

    def __init__(self, runtime: ModelRuntime, layout: ToyLayout) -> None:
        self.runtime, self.layout = runtime, layout

    def take(self, floor: float) -> float:
        return float(self.runtime.get(self.layout.output).max())

    def decode(self, peak: float, floor: float, nms_iou: float, limit: int):
        keep = [peak] if peak >= floor else []
        return (np.array([[0.0, 0.0, 1.0, 1.0]] * len(keep), np.float32).reshape(-1, 4),
                np.array(keep, np.float32), np.zeros(len(keep), np.int64))


def manifest(fmt: str) -> dict:
    return {"name": "t", "version": "1", "format": fmt, "labels": "labels.txt", "num_classes": 1,
            "file": "m.tflite", "sha256": "0" * 64, "license": "MIT", "provenance": {"recipe": "x"},
            "input": {"width": 64, "height": 64, "dtype": "uint8", "scale": 0, "resize": "stretch"},
            "thresholds": {"score": 0.3, "nms_iou": 0.5}}


@pytest.fixture
def toy(monkeypatch):
    """``toy`` registered for this test only: the registry's table is a copy, put back afterwards."""
    monkeypatch.setattr(FORMATS, "_entries", dict(FORMATS._entries))
    register_format("toy", f"{__name__}:toy_probe", f"{__name__}:ToyDecoder", needs="exactly one output",
                    resize="stretch")
    return "toy"


def test_a_registered_format_is_selectable_by_config_and_manifest(toy) -> None:
    assert build_config({"model": {"format": toy}}).model.format == toy
    schema = AgentConfig.model_json_schema()["$defs"]["ModelConfig"]["properties"]["format"]
    assert schema["enum"] == ["auto", "ssd", "yolo", toy]
    assert parse_manifest(manifest(toy), "manifest.json").format == toy


def test_a_registered_format_is_recognised_in_auto(toy) -> None:
    flat = TensorInfo("scores", 1, (1, 60), np.dtype(np.float32), 0.0, 0)  # neither SSD's nor YOLO's outputs
    layout = detect_layout([IMAGE], [flat])
    assert isinstance(layout, ToyLayout) and layout.kind == toy and layout.output is flat
    # a YOLO head fits the toy format too: auto refuses to guess and says where to choose
    head = TensorInfo("head", 1, (1, 7, 84), np.dtype(np.float32), 0.0, 0)
    with pytest.raises(ModelError, match=r"fit several formats \(yolo, toy\); set model.format"):
        detect_layout([IMAGE], [head])
    assert detect_layout([IMAGE], [head], override="yolo").kind == "yolo"


def test_the_detector_runs_a_format_chosen_by_config(toy) -> None:
    cfg = build_config({"model": {"path": str(FIXTURES / "yolov8_float.tflite"), "labels": str(FIXTURES / "labels.txt"),
                                  "format": toy}, "detect": {"score_floor": 0.01}})
    det = Detector(cfg.model, cfg.detect)
    assert det.layout.kind == toy and isinstance(det.decoder, ToyDecoder) and det.writer.resize == "stretch"
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    (found,) = det.detect(Frame(frame, 0.0, 0))
    peak = float(det.runtime.get(det.layout.output).max())  # the output of that invoke
    assert found.label == "person" and found.score == pytest.approx(peak) and found.bbox == (0.0, 0.0, 1.0, 1.0)


def test_forcing_a_format_the_outputs_do_not_fit_names_what_it_needs() -> None:
    boxes = TensorInfo("boxes", 1, (1, 10, 4), np.dtype(np.float32), 0.0, 0)
    with pytest.raises(ModelError) as forced:
        detect_layout([IMAGE], [boxes], override="yolo")
    assert str(forced.value) == "format yolo needs one output [1, 4+classes, N]; found [[1, 10, 4]]"
    with pytest.raises(ModelError) as auto:
        detect_layout([IMAGE], [boxes])
    assert str(auto.value).startswith("unrecognised detector outputs [[1, 10, 4]] (supported: ssd: boxes [1,N,4]")


def test_an_unknown_format_is_a_one_line_error_naming_the_field(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"model": {"format": "efficientdet"}})
    assert str(err.value) == "config: model.format: unknown model format 'efficientdet' (known: auto, ssd, yolo)"
    with pytest.raises(ModelError) as bad:
        parse_manifest(manifest("toy"), "manifest.json")
    assert str(bad.value) == "manifest.json: field format: unknown model format 'toy' (known: ssd, yolo)"
    cfg = tmp_path / "edgecam.toml"
    cfg.write_text('[model]\nformat = "efficientdet"\n')
    assert_one_line_error(edgecam("run", "--config", str(cfg), "--state-dir", str(tmp_path / "s")),
                          str(cfg), "model.format", "efficientdet")
