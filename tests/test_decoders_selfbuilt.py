"""Decoders on self-built YOLO models (tests/fixtures/make_yolo_fixtures.py) whose heads we chose:
YOLOv5 layout with objectness (float, pixel boxes; int8, normalised boxes) and YOLOv8 layout in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config import DetectConfig, ModelConfig
from agent.sources.base import Frame
from agent.vision.detector import Detector

FIXTURES = Path(__file__).parent / "fixtures" / "models"
PERSON = (0.1875, 0.125, 0.3125, 0.375)  # cx 16, cy 16, w 8, h 16 on a 64 px input
CAR = (0.59375, 0.546875, 0.90625, 0.703125)  # cx 48, cy 40, w 20, h 10


def detect(name: str) -> tuple[Detector, list]:
    det = Detector(ModelConfig(path=FIXTURES / name, labels=FIXTURES / "labels.txt", resize="stretch"),
                   DetectConfig(score_floor=0.5, nms_iou=0.5))
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    return det, det.detect(Frame(image, 0.0, 0))


@pytest.mark.parametrize("name", ["yolov5_float.tflite", "yolov5_int8.tflite"])
def test_yolov5_objectness_head(name):
    det, dets = detect(name)
    assert det.layout.objectness and det.layout.transposed and det.layout.num_classes == 3
    by_label = {d.label: d for d in dets}
    assert sorted(by_label) == ["car", "person"], "duplicate person removed by NMS, low-objectness bicycle gone"
    tol = 0.02 if "int8" in name else 1e-4
    assert np.allclose(by_label["person"].bbox, PERSON, atol=tol)
    assert np.allclose(by_label["car"].bbox, CAR, atol=tol)
    assert by_label["person"].score == pytest.approx(0.9 * 0.95, abs=0.03)  # objectness × class score


def test_yolov8_float_head():
    det, dets = detect("yolov8_float.tflite")
    assert not det.layout.objectness and not det.layout.transposed
    by_label = {d.label: d for d in dets}
    assert sorted(by_label) == ["car", "person"]
    assert np.allclose(by_label["person"].bbox, (0.1875, 0.125, 0.3125, 0.375), atol=1e-4)
    assert np.allclose(by_label["car"].bbox, CAR, atol=1e-4)
    assert by_label["car"].score == pytest.approx(0.88, abs=1e-4)
