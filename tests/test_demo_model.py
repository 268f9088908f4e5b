"""The committed demo model, run by the real LiteRT interpreter on street scenes it never saw in training.

Two decoders are exercised: the reference numpy decoder in ``models.evaluate`` (written from the format
description), and the agent's own ``Detector`` as a node runs it (manifest thresholds, class-wise NMS).
Both must find at least 90% of the ground-truth objects at IoU 0.5, with few false positives.
"""

from __future__ import annotations

import pytest

from agent.config import DetectConfig, ModelConfig
from agent.sources.base import Frame
from agent.sources.scene import LABELS, StreetScene
from agent.vision.detector import Detector
from agent.vision.manifest import load_manifest, sha256_file
from models.evaluate import Box, SceneDetector, evaluate, match
from tests.conftest import REPO

DEMO = REPO / "models" / "demo"
MANIFEST = load_manifest(DEMO)
#: the manifest's held-out evaluation seed, and one more that no recipe run has used
HELD_OUT = [MANIFEST.metrics.eval_seed or 7, 4242]


def test_demo_model_files_agree_with_the_manifest() -> None:
    model = DEMO / MANIFEST.file
    assert model.stat().st_size < 2 * 1024 * 1024
    assert sha256_file(model) == MANIFEST.sha256
    assert (DEMO / MANIFEST.labels).read_text().split() == list(LABELS) == MANIFEST.classes
    assert MANIFEST.format == "yolo" and MANIFEST.input.dtype == "int8" and MANIFEST.input.resize == "stretch"
    for seed in HELD_OUT:
        assert seed not in MANIFEST.provenance.seeds, f"seed {seed} was used in training"


@pytest.mark.parametrize("seed", HELD_OUT)
def test_reference_decoder_finds_90_percent_of_objects(seed: int) -> None:
    det = SceneDetector(DEMO / MANIFEST.file, list(LABELS), threads=2)
    m = evaluate(det, seed, frames=150, step=41, start=997, score=MANIFEST.thresholds.score,
                 nms_iou=MANIFEST.thresholds.nms_iou)
    print(m.summary())
    assert m.truths > 400, "enough objects to mean something"
    assert m.recall >= 0.9
    assert m.precision >= 0.9
    assert m.map50 >= 0.85


def test_agent_detector_finds_90_percent_of_objects() -> None:
    """The node's own path: Detector with the bundled demo model (default config), full 720p frames."""
    det = Detector(ModelConfig(), DetectConfig())
    assert det.layout.kind == "yolo" and det.labels == list(LABELS)
    scene = StreetScene(seed=HELD_OUT[1], width=1280, height=720, fps=15)
    found = truths = hits = dets = 0
    for k in range(120):
        index = 331 + k * 53
        rgb, truth = scene.render(index)
        out = det.detect(Frame(image=rgb, ts=index / 15, index=index))
        boxes = [Box(d.label, d.score, d.bbox) for d in out]
        flags, matched = match(boxes, truth)
        found += matched
        truths += len(truth)
        hits += sum(flags)
        dets += len(boxes)
    recall, precision = found / truths, hits / max(dets, 1)
    print(f"agent detector: recall {recall:.3f} precision {precision:.3f} ({truths} objects, {dets} detections)")
    assert truths > 300
    assert recall >= 0.9
    assert precision >= 0.9
