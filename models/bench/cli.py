"""The body of ``edgecam bench`` (kept here so ``agent.cli`` stays a thin, fast-importing shell)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from agent.errors import EdgecamError
from models.bench.runner import BenchOutputs, run_bench
from models.bench.scenario import Scenario
from models.bench.suite import acceptance_scenarios


def custom_scenario(source: str, model: Path | None, threads: int, frames: int, loop: bool, fps: float | None,
                    no_motion: bool, interpreters: int = 1, priority: str = "normal") -> Scenario:
    from agent.sources import source_config_from_uri

    src: dict[str, Any] = source_config_from_uri(source)
    if loop:
        if src["kind"] != "file":
            raise EdgecamError(f"--loop: only file sources loop (got --source {source})")
        src["loop"] = True
    if fps is not None:
        src["fps"] = fps
    config: dict[str, Any] = {"source": src, "capture": {"fast": True},
                              "model": {"threads": threads, "interpreters": interpreters, "priority": priority,
                                        **({"path": str(model)} if model else {})}}
    if no_motion:
        config["motion"] = {"enabled": False}
    title = (f"{source}{' (looped)' if loop else ''}, --fast, gate {'off' if no_motion else 'on'}, "
             f"{interpreters} x {threads} threads, {priority} priority")
    # several interpreters are also shown against one interpreter with all their threads
    reference = ({"interpreters": 1, "threads": threads * interpreters, "priority": priority}
                 if interpreters > 1 else None)
    return Scenario(name="custom", title=title, config=config, frames=frames, reference_model=reference)


def bench_command(*, source: str | None, model: Path | None, threads: int, frames: int, loop: bool,
                  fps: float | None, no_motion: bool, scenarios: list[str], scale: float, bare_seconds: float,
                  cold_start: bool, json_out: Path | None, chart: Path | None, doc: Path | None,
                  interpreters: int = 1, repeat: int = 1, priority: str = "normal") -> dict[str, Any]:
    if source:
        chosen = [custom_scenario(source, model, threads, frames, loop, fps, no_motion, interpreters, priority)]
    else:
        suite = acceptance_scenarios(threads=threads, scale=scale, model=model)
        unknown = set(scenarios) - {s.name for s in suite}
        if unknown:
            raise EdgecamError(f"--scenario {sorted(unknown)[0]}: unknown (use {', '.join(s.name for s in suite)})")
        chosen = [s for s in suite if not scenarios or s.name in scenarios]
    command = "edgecam " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "edgecam bench"
    return run_bench(chosen, BenchOutputs(json_out, chart, doc), bare_s=bare_seconds, cold_start=cold_start,
                     repeat=repeat, command=command, say=lambda m: print(f"==> {m}", file=sys.stderr, flush=True))
