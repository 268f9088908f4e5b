"""``synthetic:`` source: the procedural street scene, with ground truth attached to every frame."""

from __future__ import annotations

import time

from agent.sources.base import Frame, Source
from agent.sources.kinds import SyntheticSource
from agent.sources.scene import StreetScene


class SyntheticSceneSource(Source):
    """Renders ``StreetScene`` frames in order; the capture thread paces them at ``fps`` (unless ``--fast``).

    Frame times are ``open time + index / fps`` (scene time, not render time), so a run is reproducible
    for a seed whatever the machine's speed.
    """

    live = False

    def __init__(self, cfg: SyntheticSource) -> None:
        self.cfg = cfg
        self.fps = cfg.fps
        self.finite = cfg.duration_s is not None
        self._scene: StreetScene | None = None
        self._index = 0
        self._t0 = 0.0
        self._frames = None if cfg.duration_s is None else max(1, round(cfg.duration_s * cfg.fps))

    def describe(self) -> str:
        c = self.cfg
        tail = f", {c.duration_s:g}s" if c.duration_s is not None else ""
        return f"synthetic:seed={c.seed} {c.width}x{c.height}@{c.fps:g}fps{tail}"

    def open(self) -> None:
        if self._scene is None:
            c = self.cfg
            self._scene = StreetScene(c.seed, c.width, c.height, c.fps)
        self._index = 0
        self._t0 = time.time()

    def read(self) -> Frame | None:
        if self._scene is None:
            self.open()
        assert self._scene is not None
        if self._frames is not None and self._index >= self._frames:
            return None
        image, truth = self._scene.render(self._index)
        frame = Frame(image=image, ts=self._t0 + self._index / self.cfg.fps, index=self._index, truth=truth)
        self._index += 1
        return frame

    def close(self) -> None:
        self._scene = None
