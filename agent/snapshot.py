"""Snapshots for aiming a camera and checking its zones, with the video never leaving the node.

Two ways to the current frame, because the camera has one owner:

- **An agent runs** on the state dir: it owns the camera (a V4L2 device or a CSI camera opens once), so
  ``edgecam snapshot`` asks it over its control socket (``agent.control``: a Unix socket in the 0700
  state dir, reachable with no broker, so it works before enrolment and during an outage). The agent
  answers with the newest frame the detector ran on and that frame's detections, so boxes and picture
  always belong together. The motion gate runs the detector at least every ``motion.refresh_s``, so that
  frame is at most that old on a still street (the reply's ``frame_ts`` says when it was taken).
- **No agent runs** (first visit on the pole, agent stopped): ``edgecam snapshot`` opens the configured
  source itself (``--config``, ``--source``, ``--model`` as ``edgecam run``, plus the centre's last
  committed config document from the state dir, so the zones drawn are the ones the node would use), reads
  frames for a short warm-up (cameras settle exposure), and runs the detector once on the last one.

Through the centre, the ``snapshot`` command with ``annotate: true`` draws the same way on the running
agent and publishes the JPEG on ``thumbs/{id}`` like the plain snapshot (same byte budget and delivery).
Drawing is ``agent.events.annotate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from agent.config import AgentConfig
from agent.errors import SourceError
from agent.events.annotate import draw
from agent.sources.base import Frame
from agent.vision.types import Detection

#: JPEG quality of a snapshot written on the node (no uplink budget: detail for the technician's eye)
LOCAL_QUALITY = 92
#: seconds of frames a live source delivers before the one-shot snapshot is taken (auto exposure settles)
WARMUP_S = 1.0


@dataclass(frozen=True)
class Seen:
    """One frame and the detections the detector made on it."""

    frame: Frame
    detections: list[Detection]


def picture(seen: Seen, cfg: AgentConfig, annotate: bool, max_side: int | None = None) -> np.ndarray:
    """The frame as RGB (downscaled to ``max_side`` first when given), with the drawing when ``annotate``.

    Drawing after the downscale keeps the lines crisp at the size the picture is looked at."""
    rgb = seen.frame.image
    if max_side is not None:
        from agent.events.thumbnails import downscale

        rgb = downscale(rgb, max_side)
    return draw(rgb, seen.detections, cfg.zones, cfg.masks) if annotate else rgb


def describe(seen: Seen, annotate: bool) -> dict[str, Any]:
    """What a reply says about the picture: when, how big, and the detections drawn (normalised boxes)."""
    w, h = seen.frame.size
    out: dict[str, Any] = {"frame_ts": seen.frame.ts, "frame_w": w, "frame_h": h, "annotated": annotate}
    if annotate:
        out["detections"] = [{"label": d.label, "score": round(d.score, 4), "bbox": [round(v, 5) for v in d.bbox]}
                             for d in seen.detections]
    return out


def encode_local(rgb: np.ndarray) -> bytes:
    """A full-resolution JPEG for a file on the node."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, LOCAL_QUALITY])
    if not ok:  # pragma: no cover - OpenCV without a JPEG codec
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def grab(cfg: AgentConfig, warmup_s: float = WARMUP_S) -> Seen:
    """Open the configured source and model, take one frame (after ``warmup_s`` of a live source's frames),
    run the detector on it once, release both. One-line errors for a source or model that fails."""
    from agent.sources import open_source
    from agent.vision.detector import Detector

    detector = Detector(cfg.model, cfg.detect)  # a bad model fails before the camera is touched
    source = open_source(cfg.source, cfg.capture.decode_threads)
    frame: Frame | None = None
    source.open()
    try:
        until = time.monotonic() + (warmup_s if source.live and not source.finite else 0.0)
        while True:
            nxt = source.read()
            if nxt is None:
                break
            frame = nxt
            if time.monotonic() >= until:
                break
    finally:
        source.close()
    if frame is None:
        raise SourceError(f"{source.describe()}: no frame")
    frame.fresh = True
    return Seen(frame, detector.detect(frame))


def take(cfg: AgentConfig, annotate: bool, warmup_s: float = WARMUP_S) -> tuple[dict[str, Any], bytes]:
    """The snapshot for ``edgecam snapshot``: from the agent running on ``cfg.state_dir`` if one answers,
    else from the configured source and model (one frame, one detector run). Result and JPEG bytes; the
    result's ``via`` says which way it came."""
    from agent.config_owner import ConfigOwner
    from agent.control import NoAgent, ask

    try:
        result, jpeg = ask(cfg.state_dir, "snapshot", {"annotate": annotate})
        return {**result, "via": "running agent"}, jpeg
    except NoAgent:
        pass
    effective = ConfigOwner(cfg).committed()  # the centre's zones and masks too, as the agent would run
    seen = grab(effective, warmup_s)
    return {**describe(seen, annotate), "via": f"one frame from {effective.source.kind} source"}, \
        encode_local(picture(seen, effective, annotate))
