"""Bad input through the real ``edgecam`` CLI: one line on stderr naming the problem, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import shared


def edgecam(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_corrupt_model(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(shared("models/yolov8n-coco/model.tflite").read_bytes()[:5000])
    labels = shared("models/yolov8n-coco/labels.txt")
    res = edgecam("run", "--model", str(bad), "--labels", str(labels), "--source", "synthetic:",
                  "--max-frames", "1", "--state-dir", str(tmp_path / "s"))
    assert_one_line_error(res, str(bad))


def test_unknown_source(tmp_path):
    res = edgecam("run", "--source", "webcam:0", "--state-dir", str(tmp_path))
    assert_one_line_error(res, "webcam:0", "unknown source")


def test_missing_source_file(tmp_path):
    res = edgecam("run", "--source", str(tmp_path / "nope.mp4"), "--state-dir", str(tmp_path))
    assert_one_line_error(res, "nope.mp4")


def test_missing_labels(tmp_path):
    res = edgecam("run", "--model", str(shared("models/yolov8n-coco/model.tflite")), "--labels",
                  str(tmp_path / "labels.txt"), "--source", "synthetic:", "--state-dir", str(tmp_path))
    assert_one_line_error(res, "labels.txt", "label file not found")


def test_invalid_config(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text("[motion]\nalpha = 7\n")
    res = edgecam("run", "--config", str(cfg))
    assert_one_line_error(res, "motion.alpha")


@pytest.mark.parametrize("args", [["run", "--threads", "x"], ["run", "--bogus"]])
def test_usage_errors_exit_2(args):
    res = edgecam(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
