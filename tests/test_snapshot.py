"""Aim and check on the pole: ``edgecam snapshot --annotate`` and the annotated ``snapshot`` command.

The pictures are decoded and their pixels read: every detection's box must be drawn in its colour on the
edges where its normalised bbox puts them, and that colour must appear nowhere else (but in the label
tags). Real LiteRT interpreter, a real COCO model and a real street frame from ../shared/data (skipped with
the reason when absent), a real Mosquitto and real agent processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config import AgentConfig, Mask, ModelConfig, Zone
from agent.contract import State
from agent.events.annotate import (
    BOX_COLOUR,
    MASKED_BOX_COLOUR,
    ZONE_COLOUR,
    detection_text,
    line_width,
    tag_rect,
    text_scale,
    to_pixels,
)
from agent.sources.files import read_image
from agent.vision.detector import Detector
from agent.vision.types import Detection
from tests.conftest import shared
from tests.mqtt_collect import Collector

IMAGE = "clips/traffic_full_0001.png"
MODEL = "models/yolov8n-coco/model.tflite"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def decode(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def near(img: np.ndarray, colour: tuple[int, int, int], tol: int = 60) -> np.ndarray:
    """Pixels within ``tol`` of ``colour`` on every channel (JPEG moves colours a little)."""
    return np.all(np.abs(img.astype(np.int16) - np.asarray(colour, np.int16)) <= tol, axis=-1)


def edge_points(box: tuple[int, int, int, int], step: int = 7) -> list[tuple[int, int]]:
    """(x, y) points along the four edges of a pixel box, corners left out (tags may cover the top-left)."""
    x1, y1, x2, y2 = box
    mx, my = min(8, (x2 - x1) // 4), min(8, (y2 - y1) // 4)
    step = min(step, max(1, (x2 - x1) // 4), max(1, (y2 - y1) // 4))
    xs, ys = range(x1 + mx, x2 - mx, step), range(y1 + my, y2 - my, step)
    return [*((x, y1) for x in xs), *((x, y2) for x in xs), *((x1, y) for y in ys), *((x2, y) for y in ys)]


def drawn_where_expected(img: np.ndarray, original: np.ndarray, dets: list[Detection], colour, masked: bool,
                         only_there: bool = True):
    """Every edge point of every box in ``colour``; with ``only_there``, ``colour`` nowhere new outside the
    edges and tags (not for grey, which a street and a darkened mask are full of)."""
    h, w = img.shape[:2]
    t = line_width(w, h)
    allowed = np.zeros((h, w), bool)
    for d in dets:
        box = to_pixels(w, h, d.bbox)
        x1, y1, x2, y2 = box
        points = edge_points(box)
        assert points, f"box too small to check: {box}"
        hits = [bool(near(img, colour)[y, x]) for x, y in points]
        assert np.mean(hits) >= 0.95, f"{d.label} {d.score:.2f} at {box}: only {np.mean(hits):.0%} of its edge is drawn"
        m = t + 2  # the line is centred on the edge; JPEG smears a pixel or two
        band = np.zeros((h, w), bool)
        band[max(0, y1 - m):y2 + m + 1, max(0, x1 - m):x2 + m + 1] = True
        band[y1 + m:y2 - m, x1 + m:x2 - m] = False  # the inside of the box is not the edge
        allowed |= band
        tx1, ty1, tx2, ty2 = tag_rect(img.shape, detection_text(d, masked), x1 - t // 2, y1 - t // 2,
                                      text_scale(w, h), t)
        allowed[max(0, ty1 - 2):ty2 + 3, max(0, tx1 - 2):tx2 + 3] = True
    if not only_there:
        return
    new = near(img, colour) & ~near(original, colour, 80)
    stray = new & ~allowed
    assert stray.sum() <= 0.001 * h * w, f"{int(stray.sum())} pixels of the box colour away from every box"


@pytest.fixture(scope="module")
def street():
    image, model = shared(IMAGE), shared(MODEL)
    return image, model, read_image(image)


@pytest.fixture(scope="module")
def expected(street) -> list[Detection]:
    """What the detector itself finds on the frame (in this process, no drawing involved)."""
    _image, model, rgb = street
    from agent.sources.base import Frame

    dets = Detector(ModelConfig(path=model), AgentConfig().detect).detect(Frame(rgb.copy()))
    assert any(d.label == "car" for d in dets), dets
    return dets


def same_detections(reported: list[dict], dets: list[Detection]) -> None:
    assert len(reported) == len(dets)
    for r, d in zip(sorted(reported, key=lambda r: r["bbox"]), sorted(dets, key=lambda d: d.bbox), strict=True):
        assert r["label"] == d.label and abs(r["score"] - d.score) < 1e-3
        assert np.allclose(r["bbox"], d.bbox, atol=1e-4)


def test_annotated_snapshot_without_an_agent_draws_each_detection_at_its_place(tmp_path, street, expected):
    image, model, rgb = street
    out = tmp_path / "aim.jpg"
    res = subprocess.run(cli("snapshot", "--annotate", str(out), "--json", "--source", str(image), "--model",
                             str(model), "--state-dir", str(tmp_path / "state")),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    said = json.loads(res.stdout.strip().splitlines()[-1])
    assert said["via"].startswith("one frame") and said["annotated"] is True
    same_detections(said["detections"], expected)
    img = decode(out)
    assert img.shape == rgb.shape  # full resolution on the node
    drawn_where_expected(img, rgb, expected, BOX_COLOUR, masked=False)
    # plain: the frame as it is (no box colour anywhere it was not already)
    plain = tmp_path / "plain.jpg"
    res = subprocess.run(cli("snapshot", str(plain), "--source", str(image), "--model", str(model), "--state-dir",
                             str(tmp_path / "state")), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (near(decode(plain), BOX_COLOUR) & ~near(rgb, BOX_COLOUR, 80)).sum() <= 0.0005 * rgb.shape[0] * rgb.shape[1]


def test_zones_and_masks_are_drawn_and_masked_detections_greyed(tmp_path, street, expected):
    image, model, rgb = street
    h, w = rgb.shape[:2]
    right = [d for d in expected if (d.bbox[0] + d.bbox[2]) / 2 > 0.8]
    left = [d for d in expected if (d.bbox[0] + d.bbox[2]) / 2 <= 0.8]
    assert right and left, "the frame has cars on both sides"
    (tmp_path / "node.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[[zones]]\nname = "lane"\npolygon = [[0.05, 0.2], [0.6, 0.2], [0.6, 0.45], [0.05, 0.45]]\n'
        '[[masks]]\npolygon = [[0.8, 0.3], [1.0, 0.3], [1.0, 1.0], [0.8, 1.0]]\n')
    out = tmp_path / "zones.jpg"
    res = subprocess.run(cli("snapshot", "--annotate", str(out), "--config", str(tmp_path / "node.toml"),
                             "--source", str(image), "--model", str(model)), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    img = decode(out)
    drawn_where_expected(img, rgb, left, BOX_COLOUR, masked=False)
    drawn_where_expected(img, rgb, right, MASKED_BOX_COLOUR, masked=True, only_there=False)
    for d in right:  # and not in the colour of the boxes the tracker takes
        assert not any(near(img, BOX_COLOUR)[y, x] for x, y in edge_points(to_pixels(w, h, d.bbox)))
    # the zone's outline in its colour along its edges (its name tag sits at the top-left corner)
    zone = Zone(name="lane", polygon=[(0.05, 0.2), (0.6, 0.2), (0.6, 0.45), (0.05, 0.45)])
    x1, y1, x2, y2 = to_pixels(w, h, (0.05, 0.2, 0.6, 0.45))
    on_edge = [near(img, ZONE_COLOUR, 70)[y, x] for x, y in edge_points((x1, y1, x2, y2)) if x > x1 + 150]
    assert np.mean(on_edge) >= 0.95 and zone.name
    # the masked area darkened, outside it untouched
    mask = Mask(polygon=[(0.8, 0.3), (1.0, 0.3), (1.0, 1.0), (0.8, 1.0)])
    mx1, my1, _, _ = to_pixels(w, h, (mask.polygon[0][0], mask.polygon[0][1], 1, 1))
    inside = (slice(my1 + 10, h - 5), slice(mx1 + 10, w - 5))
    dark = img[inside].astype(float).mean() / max(rgb[inside].astype(float).mean(), 1)
    assert 0.3 < dark < 0.65, dark
    outside = (slice(5, my1 - 10), slice(mx1 + 10, w - 5))
    assert abs(img[outside].astype(float).mean() - rgb[outside].astype(float).mean()) < 4


def test_the_running_agent_answers_on_the_node_and_through_the_centre(tmp_path, street, expected, broker,
                                                                      processes):
    """One agent on the street frame: the node-local snapshot comes from it (not from a second open of the
    source), the centre's annotated snapshot arrives on thumbs/{id} under the byte budget, and doctor asks
    the agent instead of connecting as the node beside it."""
    image, model, rgb = street
    state = tmp_path / "state"
    col = Collector(broker.port)
    agent = processes.popen(cli("run", "--source", str(image), "--model", str(model), "--mqtt", broker.url,
                                "--node-id", "n-aim", "--state-dir", str(state)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert col.wait_for(lambda: any(State.model_validate_json(m.payload).online for m in col.on("/state")), 90)

        # on the node: the agent's newest detected frame; the image source already ended, so this cannot be
        # a fresh open of it (that path says "one frame from …")
        out = tmp_path / "local.jpg"
        res = subprocess.run(cli("snapshot", "--annotate", str(out), "--json", "--state-dir", str(state)),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        said = json.loads(res.stdout.strip().splitlines()[-1])
        assert said["via"] == "running agent"
        same_detections(said["detections"], expected)
        img = decode(out)
        assert img.shape == rgb.shape
        drawn_where_expected(img, rgb, expected, BOX_COLOUR, masked=False)

        # through the centre: the same boxes, on the picture under the thumbnail budget
        saved = tmp_path / "centre.jpg"
        res = subprocess.run(cli("centre", "command", "n-aim", "snapshot", "--annotate", "--out", str(saved),
                                 "--mqtt", broker.url, "--timeout", "30"), capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        reply = json.loads(res.stdout.strip().splitlines()[0])
        result = reply["result"]
        assert reply["status"] == "ok" and result["annotated"] is True
        assert result["topic"].startswith("edgecam/v1/n-aim/thumbs/")
        same_detections(result["detections"], expected)
        data = saved.read_bytes()
        assert len(data) == result["bytes"] <= AgentConfig().thumbnails.max_bytes
        small = decode(saved)
        assert max(small.shape[:2]) == AgentConfig().thumbnails.max_side
        small_original = cv2.resize(rgb, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
        drawn_where_expected(small, small_original, expected, BOX_COLOUR, masked=False)
        assert col.wait_for(lambda: any(m.topic == result["topic"] for m in col.messages), 20)

        # doctor: asks the running agent about its link rather than taking its connection over
        res = subprocess.run(cli("doctor", "--state-dir", str(state), "--mqtt", broker.url, "--node-id", "n-aim"),
                             capture_output=True, text=True, timeout=120)
        assert "the running agent is connected" in res.stdout, res.stdout + res.stderr
        assert agent.poll() is None
        assert len([m for m in col.on("/state") if State.model_validate_json(m.payload).online]) == 1, \
            "the agent's connection was not disturbed"
    finally:
        col.close()


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path):
    res = subprocess.run(cli("snapshot", "--annotate", str(tmp_path / "x.jpg"), "--source", str(tmp_path / "none.png"),
                             "--state-dir", str(tmp_path / "state")), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "none.png" in res.stderr
    assert not (tmp_path / "x.jpg").exists()
    res = subprocess.run(cli("centre", "command", "n1", "ping", "--annotate", "--mqtt", "mqtt://127.0.0.1:1"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "snapshot" in res.stderr and len(res.stderr.strip().splitlines()) == 1
