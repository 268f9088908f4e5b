"""``edgecam model inspect | bench | verify`` and the manifest model, on the demo model and the shared models.

The CLI runs as a real subprocess (the console entry point) so exit codes and the one-line errors are
what a maintainer sees. Broken models are made by damaging copies in tmp_path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ModelError
from agent.vision.manifest import load_manifest, sha256_file
from models.bench.invoke import bench_model
from models.verify import first_failure, verify_folder
from tests.conftest import REPO, shared

DEMO = REPO / "models" / "demo"


def edgecam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "demo"
    shutil.copytree(DEMO, dst)
    return dst


# ---------------------------------------------------------------- inspect


def test_inspect_demo_model_json() -> None:
    proc = edgecam("model", "inspect", str(DEMO), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["format"] == "yolo" and info["num_classes"] == 4 and info["labels"] == 4
    (inp,) = info["inputs"]
    (out,) = info["outputs"]
    man = load_manifest(DEMO)
    assert inp["dtype"] == "int8" and inp["shape"] == [1, man.input.height, man.input.width, 3]
    assert inp["scale"] == pytest.approx(1 / 255, rel=1e-4) and inp["zero_point"] == -128
    assert out["dtype"] == "int8" and out["shape"][:2] == [1, 8]
    assert info["sha256"] == man.sha256
    assert info["ops"].get("CONV_2D", 0) > 0 and "DELEGATE" not in info["ops"]


def test_inspect_text_names_format_quantisation_and_labels() -> None:
    proc = edgecam("model", "inspect", str(DEMO / "model.tflite"))
    assert proc.returncode == 0, proc.stderr
    assert "format    yolo v8/v11 (no objectness), 4 classes" in proc.stdout
    assert "scale 0.00392157, zero point -128" in proc.stdout
    assert "4 labels = 4 head classes" in proc.stdout


@pytest.mark.shared_data
def test_inspect_shared_yolov8n() -> None:
    folder = shared("models/yolov8n-coco")
    info = json.loads(edgecam("model", "inspect", str(folder), "--json").stdout)
    assert info["format"] == "yolo" and info["num_classes"] == 80 and info["labels"] == 80
    assert info["inputs"][0]["shape"] == [1, 640, 640, 3] and info["inputs"][0]["zero_point"] == -14
    assert info["outputs"][0]["shape"] == [1, 84, 8400]
    assert not info["stateful"]


@pytest.mark.shared_data
def test_inspect_shared_ssd_lstm() -> None:
    folder = shared("models/traffic-ssd-lstm")
    info = json.loads(edgecam("model", "inspect", str(folder / "model.tflite"), "--json").stdout)
    assert info["format"] == "ssd" and info["stateful"] and info["labels"] == 3
    assert "TFLite_Detection_PostProcess" in info["ops"]
    assert "2 recurrent state" in info["format_detail"]


def test_inspect_rejects_label_count_mismatch(demo_copy: Path) -> None:
    (demo_copy / "labels.txt").write_text("person\ncar\nmotorbike\n")
    line = one_line_error(edgecam("model", "inspect", str(demo_copy)))
    assert "labels.txt: 3 labels but the yolo head" in line and "4 classes" in line


def test_inspect_rejects_missing_and_non_tflite(tmp_path: Path) -> None:
    assert "model file not found" in one_line_error(edgecam("model", "inspect", str(tmp_path / "nope.tflite")))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all, just text")
    assert "not a TFLite model" in one_line_error(edgecam("model", "inspect", str(junk)))


# ---------------------------------------------------------------- verify


def test_verify_demo_model() -> None:
    proc = edgecam("model", "verify", str(DEMO))
    assert proc.returncode == 0, proc.stderr
    assert "FAIL" not in proc.stdout and proc.stdout.rstrip().endswith("verified")
    checks = {c.name: c for c in verify_folder(DEMO)}
    assert {"sha256", "format", "input quantisation", "class names", "num_classes"} <= set(checks)
    assert all(c.ok for c in checks.values())


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "fmt"), [("yolov8n-coco", "yolo"), ("traffic-ssd-lstm", "ssd")])
def test_verify_shared_models(name: str, fmt: str) -> None:
    folder = shared(f"models/{name}")
    proc = edgecam("model", "verify", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert f"ok   format: {fmt}" in proc.stdout


def test_verify_rejects_truncated_model(demo_copy: Path) -> None:
    model = demo_copy / "model.tflite"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    line = one_line_error(edgecam("model", "verify", str(demo_copy)))
    assert line.startswith(f"edgecam: error: {demo_copy}: sha256 check failed")


def test_verify_rejects_truncated_model_even_with_a_matching_sha(demo_copy: Path) -> None:
    model = demo_copy / "model.tflite"
    model.write_bytes(model.read_bytes()[:4096])
    data = json.loads((demo_copy / "manifest.json").read_text())
    data["sha256"] = sha256_file(model)
    (demo_copy / "manifest.json").write_text(json.dumps(data))
    line = one_line_error(edgecam("model", "verify", str(demo_copy)))
    assert "loads check failed" in line and "model.tflite" in line


def test_verify_rejects_renamed_class(demo_copy: Path) -> None:
    labels = demo_copy / "labels.txt"
    labels.write_text(labels.read_text().replace("car\n", "automobile\n"))
    line = one_line_error(edgecam("model", "verify", str(demo_copy)))
    assert "class names check failed" in line and "'automobile'" in line and "'car'" in line


def test_verify_rejects_manifest_that_disagrees_with_tensors(demo_copy: Path) -> None:
    data = json.loads((demo_copy / "manifest.json").read_text())
    data["input"]["width"] = 640
    data["format"] = "ssd"
    (demo_copy / "manifest.json").write_text(json.dumps(data))
    checks = verify_folder(demo_copy)
    failed = [c.name for c in checks if not c.ok]
    assert failed == ["format", "input size"]
    err = first_failure(demo_copy, checks)
    assert isinstance(err, ModelError) and "format check failed" in str(err)


def test_verify_rejects_unknown_per_label_threshold(demo_copy: Path) -> None:
    data = json.loads((demo_copy / "manifest.json").read_text())
    data["thresholds"]["per_label"] = {"tram": 0.5}
    (demo_copy / "manifest.json").write_text(json.dumps(data))
    assert "per-label thresholds check failed" in one_line_error(edgecam("model", "verify", str(demo_copy)))


# ---------------------------------------------------------------- manifest


def test_manifest_errors_are_one_line_and_name_the_field(demo_copy: Path) -> None:
    path = demo_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["input"]["dtype"] = "int4"
    data["some_future_field"] = {"ignored": True}
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError) as exc:
        load_manifest(demo_copy)
    assert str(exc.value).startswith(f"{path}: field input.dtype:") and "\n" not in str(exc.value)
    path.write_text("{ not json")
    with pytest.raises(ModelError, match=r"manifest.json: invalid JSON at line 1"):
        load_manifest(demo_copy)
    path.unlink()
    with pytest.raises(ModelError, match=r"manifest.json: manifest not found"):
        load_manifest(demo_copy)


def test_manifest_ignores_unknown_fields(demo_copy: Path) -> None:
    path = demo_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["added_by_a_newer_tool"] = 1
    path.write_text(json.dumps(data))
    man = load_manifest(demo_copy)
    assert man.sha256 == sha256_file(demo_copy / man.file)


# ---------------------------------------------------------------- bench


def test_bench_reports_percentiles_per_thread_count() -> None:
    results = bench_model(DEMO, [1, 2], runs=20, warmup=2)
    assert [r.threads for r in results] == [1, 2]
    for r in results:
        assert r.runs == 20 and 0 < r.min_ms <= r.p50_ms <= r.p95_ms


def test_bench_cli_json() -> None:
    proc = edgecam("model", "bench", str(DEMO), "--threads", "2", "--runs", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["threads"] for r in out["results"]] == [2] and out["results"][0]["p50_ms"] > 0
