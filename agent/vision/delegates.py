"""Interpreter delegates (where a model runs): each one's config section and how it is loaded.

Adding a delegate is a config class, a loader and one ``DELEGATES.register``; ``agent.config``'s
``model.delegate`` union reads this registry. The loader gets the section and the runtime's
``load_delegate`` and returns the delegate objects for the interpreter (none: plain CPU); it may raise
``ValueError``/``OSError``, and the model then runs on the CPU with a warning.

Traits: ``exclusive`` (the device serves one interpreter, so ``model.interpreters`` must be 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from agent.registry import Registry
from agent.section import Section

DELEGATES: Registry[Section] = Registry("delegate")


class CpuDelegate(Section):
    kind: Literal["cpu"] = "cpu"


class EdgeTpuDelegate(Section):
    """Coral EdgeTPU through ``libedgetpu``; falls back to CPU (with a warning) when it does not load."""

    kind: Literal["edgetpu"] = "edgetpu"
    library: str = "libedgetpu.so.1"
    device: str | None = None


def cpu_delegates(cfg: CpuDelegate, load_delegate: Callable[..., Any]) -> list[Any]:
    return []


def edgetpu_delegates(cfg: EdgeTpuDelegate, load_delegate: Callable[..., Any]) -> list[Any]:
    return [load_delegate(cfg.library, {"device": cfg.device} if cfg.device else {})]


DELEGATES.register(CpuDelegate, "agent.vision.delegates:cpu_delegates")
DELEGATES.register(EdgeTpuDelegate, "agent.vision.delegates:edgetpu_delegates", exclusive=True)
