"""The engine's shortcuts change no event: idle tracks skipped by ``_decide`` and thumbnail encodes put off.

Each scene runs twice on the same frames: as shipped, and with both shortcuts switched off (every track
decided on every frame, every thumbnail encoded as soon as it is stale). The outgoing messages must be
identical, while the shipped engine did measurably less work. The scenes make every rule fire: label
flips, zone changes, parked cars with heartbeats, gate-skipped frames, a hot reconfigure, and byte budget
changes that force a put-off encode to be made after all.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.config import AgentConfig, EventsConfig, ThumbnailConfig, TrackerConfig, Zone
from agent.contract import ModelRef
from agent.events.engine import EventEngine, Outgoing
from agent.sources.base import Frame
from agent.vision.types import Detection

FPS = 15.0
T0 = 1_790_000_000.0
MODEL = ModelRef(name="demo", sha256="0" * 64)
ZONE = Zone(name="left", polygon=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)])


def run_scene(tmp_path, seed: int, eager: bool, monkeypatch) -> tuple[list[tuple], dict]:
    if eager:
        monkeypatch.setattr(EventEngine, "_wake", lambda self, st: -math.inf)
        thumb = EventEngine._thumb

        def encode_at_once(self, st):  # a put-off encode made right away, at the budget it was put off at
            out = thumb(self, st)
            self._held(st)
            return out

        monkeypatch.setattr(EventEngine, "_thumb", encode_at_once)
    cfg = AgentConfig(state_dir=tmp_path / ("eager" if eager else "lazy"), node_id="n1", camera_id="c1",
                      zones=[ZONE], events=EventsConfig(heartbeat_s=3.0, min_update_interval_s=1.0),
                      tracker=TrackerConfig(stationary_s=4.0),
                      thumbnails=ThumbnailConfig(max_bytes=30_000, max_side=160))
    eng = EventEngine(cfg, boot_id="b", model=MODEL, clock_synced=lambda: True)
    decisions = 0
    update_reasons = eng._update_reasons

    def counted(st, ts):
        nonlocal decisions
        decisions += 1
        return update_reasons(st, ts)

    eng._update_reasons = counted
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    parked = [np.array([0.05 + 0.3 * k, 0.7, 0.2 + 0.3 * k, 0.85]) for k in range(3)]
    movers: list[dict] = []
    outs: list[Outgoing] = []
    n = int(60 * FPS)
    budgets = {int(10 * FPS): 2_500, int(25 * FPS): 40_000, int(38 * FPS): 1_800, int(50 * FPS): 9_000}
    for i in range(n):
        if i in budgets:
            eng.set_thumb_budget(budgets[i])
        if i == int(30 * FPS):
            eng.reconfigure(cfg.model_copy(update={"events": EventsConfig(heartbeat_s=2.0,
                                                                          min_update_interval_s=0.5)}))
        if rng.random() < 0.04 and len(movers) < 6:
            movers.append({"pos": np.array([rng.uniform(0, 0.7), rng.uniform(0.05, 0.5)]),
                           "vel": rng.normal(0, 0.06, 2), "size": rng.uniform(0.05, 0.2, 2),
                           "label": str(rng.choice(["person", "car"])), "life": int(rng.uniform(2, 15) * FPS)})
        dets = []
        for box in parked:
            if rng.random() > 0.15:
                dets.append(Detection("car", 2, float(rng.uniform(0.5, 0.95)),
                                      tuple(float(v) for v in box + rng.normal(0, 0.001, 4))))
        for ob in movers:
            ob["pos"] = ob["pos"] + ob["vel"] / FPS
            ob["life"] -= 1
            x, y = ob["pos"]
            w, h = ob["size"]
            if rng.random() > 0.1 and min(x, y) >= 0 and max(x + w, y + h) <= 1:
                label = ob["label"] if rng.random() > 0.25 else "truck"  # label flips
                dets.append(Detection(label, 0, float(rng.uniform(0.3, 0.98)), (x, y, x + w, y + h)))
        movers = [ob for ob in movers if ob["life"] > 0]
        f = Frame(image=image, ts=T0 + i / FPS, index=i)
        outs += eng.on_skipped_frame(f) if rng.random() < 0.3 else eng.on_frame(f, dets)
    outs += eng.finish(T0 + n / FPS)
    seen = [(o.event.model_dump(exclude={"event_id"}), o.thumb) for o in outs]
    return seen, {"decisions": decisions, "encodes": eng.thumbnailer.encodes, **eng.stats}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shortcuts_change_no_event(tmp_path, monkeypatch, seed):
    lazy, lazy_stats = run_scene(tmp_path, seed, eager=False, monkeypatch=monkeypatch)
    eager, eager_stats = run_scene(tmp_path, seed, eager=True, monkeypatch=monkeypatch)
    assert lazy == eager
    kinds = {e["type"] for e, _ in lazy}
    assert kinds == {"start", "update", "end"}
    reasons = lazy_stats["update_reasons"]
    assert {"heartbeat", "label", "zones"} <= set(reasons), reasons  # the scene exercised the rules
    assert lazy_stats["decisions"] < 0.8 * eager_stats["decisions"]
    assert lazy_stats["encodes"] < eager_stats["encodes"]
