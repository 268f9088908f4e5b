"""Detector pieces on the real LiteRT interpreter: format detection, input writing, decoders, state feedback."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config import DetectConfig, LabelFilter, ModelConfig
from agent.errors import ModelError
from agent.sources.base import Frame
from agent.vision.decoders import nms
from agent.vision.detector import Detector, load_labels
from agent.vision.interpreter import TensorInfo
from agent.vision.preprocess import AffineQuantiser, Geometry, build_lut
from tests.conftest import shared

YOLO = "models/yolov8n-coco/model.tflite"
SSD = "models/traffic-ssd-lstm/model.tflite"


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_yolov8_int8_finds_cars_on_real_frame():
    det = Detector(ModelConfig(path=shared(YOLO)), DetectConfig(score_floor=0.4))
    assert det.layout.kind == "yolo" and not det.layout.objectness and det.layout.num_classes == 80
    dets = det.detect(Frame(rgb(shared("clips/traffic_full_0001.png")), 0.0, 0))
    cars = [d for d in dets if d.label == "car"]
    assert len(cars) >= 2
    # the pickup at the right edge that the SSD reference also sees (shared/data README)
    assert any(iou(d.bbox, (0.85, 0.56, 1.0, 0.74)) > 0.5 for d in cars)
    assert all(0 <= v <= 1 for d in dets for v in d.bbox)


def test_letterbox_and_stretch_agree_on_boxes():
    img = rgb(shared("clips/traffic_full_0001.png"))
    lb = Detector(ModelConfig(path=shared(YOLO), resize="letterbox"), DetectConfig(score_floor=0.5))
    st = Detector(ModelConfig(path=shared(YOLO), resize="stretch"), DetectConfig(score_floor=0.5))
    a = lb.detect(Frame(img, 0.0, 0))
    b = st.detect(Frame(img, 0.0, 0))
    assert a and b
    best = max(a, key=lambda d: d.score)
    assert max(iou(best.bbox, d.bbox) for d in b) > 0.7


def test_ssd_lstm_state_is_fed_back():
    det = Detector(ModelConfig(path=shared(SSD)), DetectConfig(score_floor=0.35))
    assert det.layout.kind == "ssd" and len(det.layout.state) == 2
    assert [(i.name, o.name) for i, o in det.layout.state] == [
        ("raw_inputs/init_lstm_c", "raw_outputs/lstm_c"), ("raw_inputs/init_lstm_h", "raw_outputs/lstm_h")]
    cap = cv2.VideoCapture(str(shared("clips/traffic_frames.mp4")))
    ok, bgr = cap.read()
    assert ok
    first = det.detect(Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 0.0, 0))
    # README: frame 1 gives pickup_suv_van ~0.44 at ymin 0.56, xmin 0.85, ymax 0.74, xmax 1.0
    assert any(d.label == "pickup_suv_van" and iou(d.bbox, (0.85, 0.56, 1.0, 0.74)) > 0.6 for d in first)
    # plant a recognisable state; after the next frame the inputs must hold what the model just output
    for inp, _ in det.layout.state:
        det.runtime.set(inp, np.full(inp.shape, 77, inp.dtype))
    ok, bgr = cap.read()
    det.detect(Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 0.0, 1))
    for inp, out in det.layout.state:
        assert np.array_equal(det.runtime.get(inp), det.runtime.get(out))
        assert not (det.runtime.get(inp) == 77).all()


def test_ssd_lstm_state_starts_over_on_a_fresh_frame():
    """After a source reopens, its first frame (``fresh``) is inferred from zero state, not the old stream's."""
    det = Detector(ModelConfig(path=shared(SSD)), DetectConfig(score_floor=0.2))
    cap = cv2.VideoCapture(str(shared("clips/traffic_frames.mp4")))
    ok, bgr = cap.read()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def detections(fresh: bool, planted: int | None = None) -> list:
        if planted is not None:  # what an earlier stream might have left in the state
            for inp, _ in det.layout.state:
                det.runtime.set(inp, np.full(inp.shape, planted, inp.dtype))
        frame = Frame(rgb, 0.0, 0)
        frame.fresh = fresh
        return det.detect(frame)

    from_zero = detections(fresh=False, planted=0)
    assert detections(fresh=True, planted=200) == from_zero
    assert detections(fresh=False, planted=200) != from_zero  # the state matters to this model


def test_score_floors_are_per_label_with_the_default_for_the_rest():
    """One owner of score floors: a low floor for one label lowers the decoder's cut, not the others' floor."""
    frame = Frame(rgb(shared("clips/traffic_full_0001.png")), 0.0, 0)
    loose = Detector(ModelConfig(path=shared(YOLO)), DetectConfig(score_floor=0.1)).detect(frame)
    assert any(d.label == "car" and 0.1 <= d.score < 0.7 for d in loose)  # something for the floor to drop
    strict_cars = {(d.label, d.score) for d in loose if d.label != "car" or d.score >= 0.7}
    for cfg in (DetectConfig(score_floor=0.7, per_label={"truck": LabelFilter(min_score=0.1)}),
                DetectConfig(score_floor=0.1, per_label={"car": LabelFilter(min_score=0.7)})):
        det = Detector(ModelConfig(path=shared(YOLO)), cfg)
        assert det.floor == 0.1  # the decoder keeps candidates down to the lowest floor
        assert {(d.label, d.score) for d in det.detect(frame)} == strict_cars, cfg


def test_nms_is_classwise():
    boxes = np.array([[0, 0, 1, 1], [0.01, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 0, 1])
    keep = nms(boxes, scores, classes, 0.5, 10)
    assert keep.tolist() == [0, 2]


def greedy_nms(boxes, scores, classes, iou, limit):
    """The textbook algorithm, in plain Python: the reference the library call must agree with."""
    def overlap(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    keep = []
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        if all(classes[i] != classes[k] or overlap(boxes[i], boxes[k]) <= iou for k in keep):
            keep.append(i)
    return keep[:limit]


@pytest.mark.parametrize("seed", range(40))
def test_nms_agrees_with_greedy_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    xy = rng.uniform(0, 0.7, (n, 2))
    boxes = np.hstack([xy, xy + rng.uniform(0.02, 0.3, (n, 2))]).astype(np.float32)
    scores = rng.permutation(np.linspace(0.3, 0.95, n)).astype(np.float32)  # distinct: one right order
    classes = rng.integers(0, 3, n)
    limit = int(rng.integers(1, 20))
    expect = greedy_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.45, limit)
    assert nms(boxes, scores, classes, 0.45, limit).tolist() == expect


def test_lut_quantises_like_float_math():
    info = TensorInfo("x", 0, (1, 8, 8, 3), np.dtype(np.int8), 0.018658, -14)
    lut = build_lut(info, "unit")
    px = np.arange(256)
    expect = np.clip(np.round(px / 255.0 / 0.018658 - 14), -128, 127)
    assert np.array_equal(lut.astype(int), expect.astype(int))
    assert build_lut(TensorInfo("x", 0, (1, 8, 8, 3), np.dtype(np.uint8), 1 / 128, 128), "raw") is None


def test_letterbox_geometry_maps_back_to_frame():
    g = Geometry(sx=1.0, sy=0.5, ox=0.0, oy=0.25)  # 2:1 frame letterboxed into a square
    out = g.to_frame(np.array([[0.0, 0.25, 1.0, 0.75], [0.5, 0.5, 0.75, 0.625]], np.float32))
    assert np.allclose(out, [[0, 0, 1, 1], [0.5, 0.5, 0.75, 0.75]])


def test_labels_file_formats(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_text("person\nbicycle\ncar\n\n")
    assert load_labels(plain) == ["person", "bicycle", "car"]
    coral = tmp_path / "b.txt"
    coral.write_text("0  person\n2  car\n")
    assert load_labels(coral) == ["person", "class1", "car"]
    with pytest.raises(ModelError, match="label file not found"):
        load_labels(tmp_path / "missing.txt")


def test_bad_model_files_are_one_line_errors(tmp_path):
    real = shared(YOLO)
    labels = real.with_name("labels.txt")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(real.read_bytes()[: 200_000])
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a model\n" * 10)
    for bad, needle in ((truncated, "rejected the model"), (text, "not a TFLite model"),
                        (tmp_path / "none.tflite", "not found")):
        with pytest.raises(ModelError) as err:
            Detector(ModelConfig(path=bad, labels=labels), DetectConfig())
        msg = str(err.value)
        assert needle in msg and str(bad) in msg and "\n" not in msg


def test_label_count_must_match_yolo_head(tmp_path):
    few = tmp_path / "labels.txt"
    few.write_text("a\nb\nc\n")
    with pytest.raises(ModelError, match="84 channels but there are 3 labels"):
        Detector(ModelConfig(path=shared(YOLO), labels=few), DetectConfig())


def test_model_without_labels_is_refused(tmp_path):
    copy = tmp_path / "m.tflite"
    copy.write_bytes(shared(YOLO).read_bytes())
    with pytest.raises(ModelError, match=r"no labels\.txt beside the model"):
        Detector(ModelConfig(path=copy), DetectConfig())


@pytest.mark.parametrize(("dtype", "scale", "zp", "norm"), [
    (np.int8, 0.018658, -14, "unit"), (np.uint8, 1 / 128, 128, "symmetric"), (np.int8, 1 / 255, -128, "unit"),
    (np.int8, 0.0078125, 0, "symmetric"), (np.uint8, 0.02, 3, "unit")])
def test_affine_quantiser_gives_the_tables_bytes(dtype, scale, zp, norm):
    info = TensorInfo("x", 0, (1, 8, 8, 3), np.dtype(dtype), scale, zp)
    lut = build_lut(info, norm)
    quantiser = AffineQuantiser.matching(info, norm, lut)
    assert quantiser is not None
    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert np.array_equal(quantiser.apply(img), cv2.LUT(img, lut.view(np.uint8)))


def test_affine_quantiser_refuses_a_table_it_cannot_reproduce():
    info = TensorInfo("x", 0, (1, 8, 8, 3), np.dtype(np.int8), 0.018658, -14)
    lut = build_lut(info, "unit").copy()
    lut[200] += 1  # one entry off: the lookup table must be used
    assert AffineQuantiser.matching(info, "unit", lut) is None
    assert AffineQuantiser.matching(TensorInfo("x", 0, (1, 8, 8, 3), np.dtype(np.float32), 0.0, 0), "unit",
                                    build_lut(TensorInfo("x", 0, (1, 8, 8, 3), np.dtype(np.float32), 0.0, 0),
                                              "unit")) is None
