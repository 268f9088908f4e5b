"""Several interpreters side by side (``model.interpreters``), and letterbox padding written once.

Real LiteRT interpreters on the bundled demo model (and YOLOv8n / LSTM-SSD from ../shared/data where present).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from agent.config import DetectConfig, ModelConfig, build_config
from agent.errors import ConfigError, ModelError
from agent.sources.base import Frame
from agent.sources.kinds import SyntheticSource
from agent.sources.synthetic import SyntheticSceneSource
from agent.vision.detector import Detector
from agent.vision.inference_lanes import InferenceLanes, resolved
from tests.conftest import shared


def street_frames(n: int) -> list[Frame]:
    src = SyntheticSceneSource(SyntheticSource(seed=3, fps=15.0))
    src.open()
    try:
        return [src.read() for _ in range(n)]
    finally:
        src.close()


def as_tuples(dets) -> list[tuple]:
    return [(d.label, round(d.score, 6), tuple(round(v, 6) for v in d.bbox)) for d in dets]


def test_lanes_give_what_one_interpreter_gives_in_frame_order():
    frames = street_frames(12)
    one = Detector(ModelConfig(threads=1), DetectConfig())
    expected = [as_tuples(one.detect(f)) for f in frames]
    assert sum(map(len, expected)) > 0, "the synthetic street must show the demo model something"

    det = Detector(ModelConfig(threads=1, interpreters=2), DetectConfig())
    assert len(det.lanes) == 2 and det.lanes[0].runtime is not det.lanes[1].runtime
    lanes = InferenceLanes(det)
    try:
        futures = [lanes.submit(f) for f in frames]
        got = [as_tuples(det.decode(resolved(fut))) for fut in futures]
    finally:
        lanes.stop()
    assert got == expected
    assert det.times.count == len(frames)
    assert all(lane.times.count > 0 for lane in det.lanes), "both interpreters took frames"


def test_a_failing_lane_reports_through_its_future_and_stays_usable():
    det = Detector(ModelConfig(threads=1, interpreters=2), DetectConfig())
    infer = det.infer

    def failing_on_frame_0(frame, lane=0):
        if frame.index == 0:
            raise RuntimeError("interpreter failed on frame 0")
        return infer(frame, lane)

    det.infer = failing_on_frame_0  # type: ignore[method-assign]
    frames = street_frames(5)
    one = Detector(ModelConfig(threads=1), DetectConfig())
    expected = [as_tuples(one.detect(f)) for f in frames[1:]]
    lanes = InferenceLanes(det)
    try:
        with pytest.raises(RuntimeError, match="frame 0"):
            resolved(lanes.submit(frames[0]))
        got = [as_tuples(det.decode(resolved(lanes.submit(f)))) for f in frames[1:]]  # both lanes free again
    finally:
        lanes.stop()
    assert got == expected and sum(map(len, expected)) > 0  # right detections, not just some result


def test_lanes_run_on_their_own_threads_at_once():
    det = Detector(ModelConfig(threads=1, interpreters=2), DetectConfig())
    seen: set[str] = set()
    infer = det.infer

    def noting(frame, lane=0):
        seen.add(threading.current_thread().name)
        return infer(frame, lane)

    det.infer = noting  # type: ignore[method-assign]
    lanes = InferenceLanes(det)
    try:
        for fut in [lanes.submit(f) for f in street_frames(8)]:
            resolved(fut)
    finally:
        lanes.stop()
    assert seen == {"infer-0", "infer-1"}


def test_recurrent_model_needs_one_interpreter():
    model = shared("models/traffic-ssd-lstm/model.tflite")
    with pytest.raises(ModelError, match=r"model\.interpreters = 2.*recurrent state"):
        Detector(ModelConfig(path=model, interpreters=2), DetectConfig())


def test_an_accelerator_serves_one_interpreter():
    with pytest.raises(ConfigError, match=r"model\.delegate: an edgetpu device serves one interpreter"):
        build_config({"model": {"interpreters": 2, "delegate": {"kind": "edgetpu"}}}, "node.toml")


def test_yolov8_lanes_agree_with_one_interpreter_on_real_footage():
    model = shared("models/yolov8n-coco/model.tflite")
    cap = cv2.VideoCapture(str(shared("clips/traffic_frames.mp4")))
    frames = []
    while len(frames) < 6:
        ok, bgr = cap.read()
        assert ok
        frames.append(Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), len(frames) / 30, len(frames)))
    one = Detector(ModelConfig(path=model, threads=1), DetectConfig(score_floor=0.3))
    expected = [as_tuples(one.detect(f)) for f in frames]
    det = Detector(ModelConfig(path=model, threads=1, interpreters=2), DetectConfig(score_floor=0.3))
    lanes = InferenceLanes(det)
    try:
        got = [as_tuples(det.decode(resolved(fut))) for fut in [lanes.submit(f) for f in frames]]
    finally:
        lanes.stop()
    assert got == expected and any(expected)


# ---------------------------------------------------------------- letterbox padding, once per placement


def expected_input(det: Detector, frame: Frame) -> np.ndarray:
    w = det.writer
    px, py, nw, nh = w.placement(*frame.size)
    full = np.full((w.height, w.width, 3), w._pad, w.info.dtype)
    full[py:py + nh, px:px + nw] = w.prepare(frame).pixels
    return full


def test_letterbox_padding_is_written_once_and_survives_invokes():
    det = Detector(ModelConfig(threads=1, resize="letterbox"), DetectConfig())
    tensor = det.writer._tensor
    wide = street_frames(2)  # 1280x720 into 384x224: bars left and right
    tall = Frame(cv2.resize(wide[0].image, (480, 720)), 1.0, 2)  # 2:3: bars on the sides, wider ones

    for frame in (*wide, tall, wide[0]):
        det.writer.write(frame)
        det.runtime.invoke()  # LiteRT must leave its input as written
        assert np.array_equal(tensor()[0], expected_input(det, frame)), f"input after invoke, frame {frame.index}"

    # a runtime that used the input buffer as scratch space: the padding is noticed and written again
    tensor()[0][:, :] = 0
    det.writer.write(wide[1])
    assert np.array_equal(tensor()[0], expected_input(det, wide[1]))
