"""``edgecam bench`` on a tiny input: the JSON report's structure and its internal consistency.

Nothing here asserts speed: figures vary with the machine; what must hold is that they agree with each
other (ratios are the quotients of the reported rates, stage totals add up to the loop time, the bytes the
meter counted match the events the agent says it published, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from models.bench.metrics import HOST_STAGES, ON_MAIN_THREAD, STAGES
from tests.conftest import shared

FRAMES = 40


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    clip = shared("clips/traffic_frames.mp4")
    model = shared("models/yolov8n-coco/model.tflite")
    out = tmp_path_factory.mktemp("bench")
    res = _cli("--source", str(clip), "--loop", "--no-motion", "--model", str(model), "--threads", "2",
               "--frames", str(FRAMES), "--bare-seconds", "0.3", "--json", str(out / "r.json"),
               "--chart", str(out / "stages.png"), "--doc", str(out / "PERF.md"))
    assert res.returncode == 0, res.stderr
    assert "inference rate ÷ bare rate" in res.stdout  # the table
    return json.loads((out / "r.json").read_text()), out


def test_report_structure(report):
    rep, out = report
    assert set(rep) >= {"command", "date", "machine", "scenarios", "derived", "checks", "raw"}
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["cpu"]
    assert list(rep["derived"]) == ["custom"] and rep["checks"] == []  # no must-show checks for a custom source
    d = rep["derived"]["custom"]
    assert set(d["stage_ms_per_inference"]) == set(STAGES) == set(d["stage_ms_per_frame"])
    assert (out / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = (out / "PERF.md").read_text()
    assert "inference rate ÷ bare rate" in doc and "stages.png" in doc and rep["command"] in doc


def test_rates_and_ratios_agree(report):
    rep, _ = report
    d, raw = rep["derived"]["custom"], rep["raw"]["custom"]
    s = raw["summary"]
    assert d["frames"] == s["frames"] == FRAMES  # --fast on a looped file is lossless
    assert d["inferences"] == s["inferences"] == FRAMES  # gate off: every frame inferred
    assert d["gate_ratio"] == pytest.approx(1.0)
    assert d["bare_hz"] == pytest.approx((raw["bare_before"]["rate_hz"] + raw["bare_after"]["rate_hz"]) / 2)
    for bare in (raw["bare_before"], raw["bare_after"]):
        assert bare["rate_hz"] == pytest.approx(bare["invokes"] / bare["seconds"], rel=1e-2)
    assert d["inference_hz"] == pytest.approx(s["inferences"] / s["loop_s"])
    assert d["inference_ratio"] == pytest.approx(d["inference_hz"] / d["bare_hz"])
    assert d["fps"] == pytest.approx(s["frames"] / s["loop_s"])


def test_stage_times_add_up(report):
    rep, _ = report
    d, s = rep["derived"]["custom"], rep["raw"]["custom"]["summary"]
    per_inf = d["stage_ms_per_inference"]
    assert all(v is None or v >= 0 for v in per_inf.values())
    main_ms = sum(per_inf[k] * d["inferences"] for k, (_, thread) in STAGES.items() if thread in ON_MAIN_THREAD)
    assert main_ms == pytest.approx(s["loop_s"] * 1e3, rel=1e-3)  # loop overhead is the remainder, not a guess
    host = sum(per_inf[k] for k in HOST_STAGES)
    assert "invoke" not in HOST_STAGES and "capture_decode" not in HOST_STAGES  # video decoding is reported apart
    assert d["host_ms_per_inference"] == pytest.approx(host)
    assert d["host_share_of_invoke"] == pytest.approx(host / per_inf["invoke"])
    assert per_inf["invoke"] == pytest.approx(s["timings_ms"]["invoke"])
    assert 0 < d["cpu_bound_ratio"] <= 1 and d["other_threads_cpu_ms_per_inference"] > 0
    assert d["process_cpu_ms_per_inference"] > 0
    period = 1e3 / d["bare_hz"]  # ms per invoke at the bare rate
    assert d["cpu_bound_ratio"] == pytest.approx(
        period / max(period, d["process_cpu_ms_per_inference"] / rep["machine"]["cores"]))


def test_uplink_matches_what_the_agent_published(report):
    rep, _ = report
    d, raw = rep["derived"]["custom"], rep["raw"]["custom"]
    s, up = raw["summary"], d["uplink"]
    assert s["events"] > 0  # the highway clip has cars: something must have been published
    assert up["events"] == s["events"] == s["published"]
    assert up["thumbnails"] == s["thumbnails"] == len(raw["thumbs"])
    for kind in ("events", "thumbs"):
        totals = raw["uplink"][kind]
        assert totals["wire_bytes"] > totals["payload_bytes"] > 0  # headers and topic on top of the payload
    source_s = FRAMES / raw["source_fps"]
    assert up["source_s"] == pytest.approx(source_s, abs=0.1)
    content = up["event_bytes"] + up["thumb_bytes"]
    assert up["bytes_per_hour"] == pytest.approx(content * 3600 / source_s + up["health_bytes_per_hour"], abs=1)
    assert up["share_of_2mbit"] == pytest.approx(up["bytes_per_hour"] * 8 / (2e6 * 3600), rel=1e-3)
    th = d["thumbnails"]
    assert th["encodes"] == len(raw["encodes"]) >= up["thumbnails"]
    assert th["long_side_max"] <= 320


def test_memory_and_cold_start_reported(report):
    rep, _ = report
    d, cold = rep["derived"]["custom"], rep["raw"]["custom"]["cold_start"]
    assert cold["exit_code"] == 0 and cold["frames"] > 0
    assert d["cold_start_peak_rss_mb"] == cold["peak_rss_mb"] > 0
    assert d["cold_start_first_frame_s"] == cold["first_frame_s"] > 0
    assert d["peak_rss_mb_in_bench"] > 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "bench", *args], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(("args", "needle"), [
    (("--scenario", "nope"), "--scenario nope"),
    (("--source", "synthetic:", "--loop"), "--loop"),
    (("--source", "webcam:0"), "webcam:0"),
])
def test_bad_bench_arguments_are_one_line_errors(args, needle):
    res = _cli(*args)
    err = res.stderr.strip()
    assert res.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert needle in err


def test_broker_ports_stay_out_of_the_ephemeral_range(monkeypatch):
    """A restarted test broker must get its port back; outgoing connections never take ports below this range,
    and a parallel test worker's slice (``EDGECAM_FREE_PORTS``) is never left."""
    from agent.errors import EdgecamError
    from provisioning.local_broker import PORTS_ENV, _ephemeral_low, free_port, port_range

    low = _ephemeral_low()
    if low is None:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    assert all(free_port() < low for _ in range(20))
    monkeypatch.setenv(PORTS_ENV, "12000-12010")
    assert {free_port() for _ in range(50)} <= set(range(12000, 12010))
    monkeypatch.setenv(PORTS_ENV, "12010-12000")
    with pytest.raises(EdgecamError, match="EDGECAM_FREE_PORTS"):
        port_range()


def test_interpreters_side_by_side_are_benched_like_for_like(tmp_path):
    """``--interpreters 2``: the bare reference runs both interpreters at once (the same setup as the
    pipeline), and one interpreter with all the threads is measured beside it."""
    clip = shared("clips/traffic_frames.mp4")
    model = shared("models/yolov8n-coco/model.tflite")
    res = _cli("--source", str(clip), "--loop", "--no-motion", "--model", str(model), "--threads", "1",
               "--interpreters", "2", "--frames", "24", "--bare-seconds", "0.3", "--no-cold-start",
               "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    d, raw = rep["derived"]["custom"], rep["raw"]["custom"]
    assert d["interpreters"] == 2 and d["threads"] == 1 and raw["summary"]["model"]["interpreters"] == 2
    assert d["inferences"] == 24
    assert raw["reference_model"] == {"interpreters": 1, "threads": 2, "priority": "normal"}
    assert d["reference_hz"] == pytest.approx(raw["bare_reference"]["rate_hz"])
    assert d["ratio_to_reference"] == pytest.approx(d["inference_hz"] / d["reference_hz"])
    # each interpreter invokes at least 20 times in its own loop: the bare rate counts both
    assert raw["bare_before"]["invokes"] >= 40
    assert raw["main_cpu_ms"] is not None and d["stage_ms_per_inference"]["loop_other"] >= 0


def test_repeated_runs_report_the_median_run_whole(tmp_path):
    """``--repeat``: a gate-off scenario runs N times; the report is the run with the median ratio (its rates,
    stages and bytes together), every run's headline figures beside it, the cold start from the first run."""
    res = _cli("--source", "synthetic:", "--no-motion", "--frames", "20", "--bare-seconds", "0.2", "--repeat", "3",
               "--json", str(tmp_path / "r.json"), "--doc", str(tmp_path / "PERF.md"))
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    d, raw = rep["derived"]["custom"], rep["raw"]["custom"]
    ratios = [r["inference_ratio"] for r in d["runs"]]
    assert len(ratios) == 3 and d["inference_ratio"] == sorted(ratios)[1]
    chosen = d["runs"][ratios.index(d["inference_ratio"])]
    assert d["bare_hz"] == chosen["bare_hz"] == pytest.approx(
        (raw["bare_before"]["rate_hz"] + raw["bare_after"]["rate_hz"]) / 2)  # raw is that same run
    assert d["cold_start_first_frame_s"] == raw["cold_start"]["first_frame_s"] > 0
    assert "in each of 3 runs" in (tmp_path / "PERF.md").read_text()


def test_checks_of_a_repeated_scenario_show_the_range():
    from models.bench.suite import evaluate

    runs = [{"inference_ratio": r, "host_share_of_invoke": h} for r, h in ((0.97, 0.08), (0.91, 0.12), (0.93, 0.11))]
    derived = {"every-frame": {"inference_ratio": 0.93, "host_share_of_invoke": 0.11, "runs": runs,
                               "cold_start_peak_rss_mb": 150.0, "cold_start_first_frame_s": 0.4}}
    checks = {c["check"]: c for c in evaluate(derived)}
    ratio = checks["inference rate ≥ 0.95 × bare invoke rate"]
    assert ratio["value"] == "0.930 (median of 3 runs: 0.910 to 0.970)" and not ratio["pass"]  # the median decides
    host = checks["host work per inferred frame ≤ 10% of invoke (video decoding aside)"]
    assert host["value"] == "11.00% (median of 3 runs: 8.00% to 12.00%)" and not host["pass"]
    rss = checks["peak RSS ≤ 200 MB with the model loaded (cold `edgecam run`)"]
    assert rss["value"] == "150" and rss["pass"]  # measured once: no range


def test_realtime_priority_is_benched_on_both_sides(tmp_path):
    """``--priority realtime``: the pipeline's interpreter and the bare one get the same scheduling."""
    from agent.thread_priority import realtime_permitted

    res = _cli("--source", "synthetic:", "--no-motion", "--frames", "20", "--bare-seconds", "0.2", "--no-cold-start",
               "--priority", "realtime", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["scenarios"]["custom"]["config"]["model"]["priority"] == "realtime"
    permitted = realtime_permitted()
    assert rep["raw"]["custom"]["summary"]["model"]["priority"] == ("realtime" if permitted else "normal")
    assert ("not permitted" in res.stderr) is not permitted
