"""``edgecam run`` end to end: real files, the real interpreter, a real Mosquitto, a subscribing 'centre'."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

from agent.contract import Event, State
from agent.thread_priority import realtime_permitted
from tests.conftest import shared
from tests.mqtt_collect import Collector


def run_node(tmp_path, broker, *args: str, node: str = "n1", env: dict[str, str] | None = None) -> dict:
    summary = tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "agent.cli", "run", "--mqtt", broker.url, "--node-id", node, "--until-eof",
           "--state-dir", str(tmp_path / "state"), "--summary-json", str(summary), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(summary.read_text())


def events_of(col: Collector) -> list[Event]:
    return [Event.model_validate_json(m.payload) for m in col.on("/events")]


def test_photo_with_yolov8_gives_one_start_and_end_per_object(tmp_path, broker):
    col = Collector(broker.port)
    model = shared("models/yolov8n-coco/model.tflite")
    summary = run_node(tmp_path, broker, "--source", str(shared("clips/traffic_full_0001.png")),
                       "--model", str(model), "--labels", str(model.with_name("labels.txt")))
    assert col.wait_for(lambda: len(col.on("/events")) >= summary["events"] and summary["events"] > 0)
    assert col.wait_for(lambda: any(not State.model_validate_json(m.payload).online for m in col.on("/state")))
    col.close()

    events = events_of(col)
    by_track: dict[int, list[Event]] = {}
    for e in events:
        by_track.setdefault(e.track_id, []).append(e)
    assert summary["tracks"] == len(by_track) >= 2
    for track_events in by_track.values():
        kinds = Counter(e.type for e in track_events)
        assert kinds["start"] == 1 and kinds["end"] == 1, kinds
        assert {e.label for e in track_events} <= {"car", "truck"}
    # the pickup at the right edge of frame 1 (see ../shared/data/README.md)
    assert any(e.bbox[0] > 0.8 and 0.5 < e.bbox[1] < 0.62 for e in events)

    # every track has a thumbnail whose sha256 matches what was published on thumbs/{event_id}
    thumbs = {m.topic.rsplit("/", 1)[1]: m for m in col.prefixed("/thumbs/")}
    for track_events in by_track.values():
        with_thumb = [e for e in track_events if e.thumb is not None]
        assert with_thumb, "every track gets a thumbnail by its end"
        for e in with_thumb:
            msg = thumbs[e.event_id]
            assert hashlib.sha256(msg.payload).hexdigest() == e.thumb.sha256
            assert len(msg.payload) == e.thumb.bytes and msg.payload[:2] == b"\xff\xd8"
            assert msg.props.get("ContentType") == "image/jpeg"

    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len({e.boot_id for e in events}) == 1 and all(e.node_id == "n1" for e in events)

    states = [State.model_validate_json(m.payload) for m in col.on("/state")]
    assert states[0].online and not states[-1].online
    assert states[0].versions.model and "yolo" in " ".join(states[0].caps)


def test_traffic_lstm_ssd_follows_vehicles_across_the_clip(tmp_path, broker):
    col = Collector(broker.port)
    model = shared("models/traffic-ssd-lstm/model.tflite")
    cfg = tmp_path / "node.toml"
    cfg.write_text("[detect]\nscore_floor = 0.3\n[tracker]\nthreshold = 0.35\n[motion]\nenabled = false\n")
    summary = run_node(tmp_path, broker, "--config", str(cfg), "--source",
                       str(shared("clips/traffic_frames.mp4")), "--model", str(model), "--fast")
    assert summary["frames"] == 20 and summary["inferences"] == 20
    assert col.wait_for(lambda: len(col.on("/events")) >= summary["events"])
    col.close()
    events = events_of(col)
    tracks = {e.track_id for e in events}
    assert 1 <= len(tracks) <= 6, f"{len(tracks)} tracks for 20 frames: vehicles must be followed, not re-found"
    assert {e.label for e in events} <= {"sedan", "pickup_suv_van", "large_veh_bus"}
    assert Counter(e.type for e in events)["start"] == len(tracks)


def test_retained_state_survives_for_a_late_subscriber(tmp_path, broker):
    run_node(tmp_path, broker, "--source", str(shared("clips/traffic_full_0001.png")),
             "--model", str(shared("models/yolov8n-coco/model.tflite")))
    late = Collector(broker.port, "edgecam/v1/n1/state", client_id="late")
    assert late.wait_for(lambda: late.on("/state"), 10)
    msg = late.on("/state")[0]
    late.close()
    assert msg.retain and State.model_validate_json(msg.payload).online is False


def _event_stream(tmp_path, broker, node: str, env: dict[str, str], threads: int = 1) -> tuple[dict, list[tuple]]:
    """A 150-frame synthetic street, every frame inferred: the node's summary and the events the centre got."""
    col = Collector(broker.port)
    summary = run_node(tmp_path / node, broker, "--source", "synthetic:?seed=5", "--fast", "--no-motion",
                       "--max-frames", "150", "--threads", str(threads), node=node, env=env)
    want = summary["events"]
    assert summary["inferences"] == 150
    assert want > 0 and col.wait_for(lambda: len(col.on("/events")) >= want)
    col.close()
    return summary, [(e.type, e.track_id, e.label, round(e.score, 5), tuple(round(v, 5) for v in e.bbox))
                     for e in sorted(events_of(col), key=lambda e: e.seq)]


def test_two_interpreters_publish_the_same_events_as_one(tmp_path, broker):
    """``model.interpreters = 2``: frames inferred side by side, tracked in frame order (same event stream)."""
    one, two = (_event_stream(tmp_path, broker, f"lanes{n}", {"EDGECAM_MODEL__INTERPRETERS": str(n)}) for n in (1, 2))
    assert one[0]["model"]["interpreters"] == 1 and two[0]["model"]["interpreters"] == 2
    assert one[1] == two[1]


def test_realtime_interpreter_publishes_the_same_events(tmp_path, broker):
    """``model.priority = "realtime"``: the same events; the summary says whether the threads got it."""
    normal = _event_stream(tmp_path, broker, "prio-normal", {}, threads=2)
    realtime = _event_stream(tmp_path, broker, "prio-rt", {"EDGECAM_MODEL__PRIORITY": "realtime"}, threads=2)
    assert normal[0]["model"]["priority"] == "normal"
    assert realtime[0]["model"]["priority"] == ("realtime" if realtime_permitted() else "normal")
    assert normal[1] == realtime[1]
