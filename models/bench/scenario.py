"""One bench scenario: bare interpreter, then the full agent pipeline on a real broker, then bare again.

The pipeline is the real ``Agent`` (capture thread, motion gate, detector, tracker, events, thumbnails,
outbox, MQTT) run in this process right after the bare measurement, so both see the same machine state.
A second, cold-start run of ``edgecam run`` in a fresh process gives the figures a single process must
show on its own: time from process start to the first processed frame, and peak RSS.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.config import AgentConfig, build_config
from agent.errors import EdgecamError
from agent.memory import peak_rss_mb, reset_peak_rss, rss_mb
from models.bench.bare import BareResult, measure_bare
from models.bench.meter import ByteMeter, KindTotals

#: a camera's own H.264 stream, the yardstick for "bytes on the city's shared uplink"
CAMERA_STREAM_BPS = 2_000_000


class Scenario(BaseModel):
    """What to run: a config overlay (source, model, motion, ...) and how many frames."""

    name: str = Field(pattern=r"^[a-z0-9-]+$")
    title: str
    config: dict[str, Any]
    frames: int = Field(ge=1)
    cold_start_frames: int = Field(30, ge=1)
    #: decode the (short, finite) source once and replay it from memory: frames arrive decoded, as from an ISP
    predecoded: bool = False
    #: a second bare reference in another model setup (e.g. one interpreter with all the threads), reported
    #: beside the like-for-like ratio
    reference_model: dict[str, Any] | None = None

    @property
    def infers_every_frame(self) -> bool:
        """Gate off: the rate ratio is this scenario's point, and the figure most moved by other jobs on the
        machine (``--repeat`` runs these several times)."""
        return (self.config.get("motion") or {}).get("enabled") is False


class ColdStart(BaseModel):
    first_frame_s: float | None  # process start (exec) → first frame processed
    peak_rss_mb: float  # of the whole `edgecam run` process (its own VmHWM, from its summary)
    frames: int
    exit_code: int


class ScenarioResult(BaseModel):
    name: str
    title: str
    command_config: dict[str, Any]
    frame_size: tuple[int, int] | None
    source_fps: float | None
    bare_before: BareResult
    bare_after: BareResult
    bare_reference: BareResult | None = None
    reference_model: dict[str, Any] | None = None
    summary: dict[str, Any]
    engine: dict[str, Any]
    gate: dict[str, Any]
    transport: dict[str, Any]
    uplink: dict[str, dict[str, Any]]
    thumbs: list[tuple[list[float], int, int, int]]  # per event with a thumbnail: bbox, w, h, bytes
    encodes: list[tuple[int, int, int, int]]  # per thumbnail encode: crop w, h → JPEG w, h
    thread_cpu_ms: dict[str, float]  # CPU time of the capture and MQTT threads' own code over the run
    main_cpu_ms: float | None = None  # the main loop thread's CPU time from its first to its last frame
    process_cpu_ms_per_frame: float | None  # CPU of all threads (decoders', OpenCV's too) per captured frame
    truth: dict[str, dict[str, int]]  # synthetic sources: per label, distinct objects and object-frames
    peak_rss_mb: float
    rss_before_mb: float | None
    cold_start: ColdStart | None


def _overlay(sc: Scenario, url: str, state_dir: Path, node_id: str) -> dict[str, Any]:
    data = json.loads(json.dumps(sc.config, default=str))
    data.setdefault("capture", {})
    data["mqtt"] = {**data.get("mqtt", {}), "url": url}
    data["node_id"] = node_id
    data["state_dir"] = str(state_dir)
    data.setdefault("log_level", "WARNING")
    return data


def first_frame(cfg: AgentConfig):
    """One real frame of the source, for the bare interpreter's input."""
    from agent.sources import open_source

    src = open_source(cfg.source, cfg.capture.decode_threads)
    src.open()
    try:
        return src.read()
    finally:
        src.close()


def _totals(t: KindTotals) -> dict[str, Any]:
    return {"messages": t.messages, "payload_bytes": t.payload, "wire_bytes": t.wire}


def _first_and_latest(marks: list[float], value: float) -> None:
    """Keep ``marks`` as [first value, latest value] (a span measured over a run, one value per frame)."""
    if marks:
        marks[1:] = [value]
    else:
        marks.append(value)


def _bench_agent(cfg: AgentConfig, frames: int, predecoded: bool = False) -> Any:
    """The real ``Agent``, with each thumbnail encode noted (crop size in, JPEG size out)."""
    from agent.events.thumbnails import Cut
    from agent.runner import Agent, RunOptions

    class BenchAgent(Agent):
        encodes: list[tuple[int, int, int, int]]  # crop w, h → thumb w, h

        def _build(self) -> None:
            if predecoded:
                from agent.sources import open_source
                from models.bench.replay import ReplaySource

                once = cfg.source.model_copy(update={"loop": False})
                self.source = ReplaySource(open_source(once, cfg.capture.decode_threads))
            super()._build()
            self.encodes = []
            thumbnailer = self.engine.thumbnailer
            encode = thumbnailer.encode

            def noted(crop: Any) -> Any:
                thumb = encode(crop)
                # the size the thumbnail must have: the object's own pixels, long side at most max_side
                h, w = (crop.scaled() if isinstance(crop, Cut) else crop).shape[:2]
                self.encodes.append((w, h, thumb.w if thumb else 0, thumb.h if thumb else 0))
                return thumb

            thumbnailer.encode = noted
            self.mqtt_cpu_ms = 0.0
            transport = self.transport
            tick = transport.on_tick

            def timed_tick() -> None:
                tick()
                self.mqtt_cpu_ms = time.thread_time() * 1e3  # the link thread's CPU time so far

            transport.on_tick = timed_tick
            self.truth_ids: dict[str, set[int]] = {}
            self.truth_in_view: dict[str, int] = {}
            prepare = self.capture.prepare

            self.capture_cpu_ms = 0.0
            self.process_cpu: list[float] = []  # process CPU seconds at the first and the latest capture
            self.captures = 0

            def noting_truth(frame: Any) -> None:
                if prepare is not None:
                    prepare(frame)
                self.capture_cpu_ms = time.thread_time() * 1e3  # the capture thread's own CPU time so far
                cpu = time.process_time()  # every thread of the process: interpreter, decoder, OpenCV, MQTT
                _first_and_latest(self.process_cpu, cpu)
                self.captures += 1
                for box in frame.truth or ():  # synthetic frames know what is in them
                    self.truth_ids.setdefault(box.label, set()).add(box.object_id)
                    self.truth_in_view[box.label] = self.truth_in_view.get(box.label, 0) + 1

            self.capture.prepare = noting_truth
            self.main_cpu: list[float] = []  # the main thread's CPU ms at its first and latest frame

        def _process(self, frame: Any) -> None:
            super()._process(frame)
            _first_and_latest(self.main_cpu, time.thread_time() * 1e3)

    return BenchAgent(cfg, RunOptions(until_eof=True, max_frames=frames))


def run_pipeline(cfg: AgentConfig, frames: int, predecoded: bool = False,
                 ) -> tuple[Any, dict[str, Any], float, float | None, ByteMeter]:
    """Run the real agent until ``frames`` frames were processed and the outbox is flushed."""
    meter = ByteMeter(cfg.mqtt.url.reveal(), cfg.node_id).start()
    try:
        before = rss_mb()
        reset_peak_rss()
        agent = _bench_agent(cfg, frames, predecoded)
        code = agent.run()
        peak = peak_rss_mb()
        meter.settle()
    finally:
        meter.stop()
    if code != 0:
        raise EdgecamError(f"bench: the agent exited with code {code}")
    return agent, agent.summary(), peak, before, meter


def _env_items(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _env_items(f"{prefix}__{k.upper()}", v)]
    if isinstance(value, bool):
        return [(prefix, "true" if value else "false")]
    if isinstance(value, (list, tuple)):
        return [(prefix, json.dumps(value))]
    return [(prefix, str(value))]


def cold_start(overlay: dict[str, Any], frames: int, workdir: Path) -> ColdStart:
    """``python -m agent.cli run`` in a fresh process (config through ``EDGECAM_…`` env, as systemd would)."""
    summary_path = workdir / "cold-summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGECAM_")}
    for key, value in overlay.items():
        env.update(_env_items(f"EDGECAM_{key.upper()}", value))
    cmd = [sys.executable, "-m", "agent.cli", "run", "--until-eof", "--max-frames", str(frames),
           "--summary-json", str(summary_path)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or not summary_path.exists():
        raise EdgecamError(f"bench: cold-start `edgecam run` failed ({proc.returncode}): {err.splitlines()[-1:]}")
    data = json.loads(summary_path.read_text())
    # the agent's own VmHWM, not wait4's ru_maxrss: after (v)fork + exec that holds this bench process's
    # peak (measured: a `python -c pass` child of a 300 MB parent reported 311 MB)
    return ColdStart(first_frame_s=data.get("process_first_frame_s"), peak_rss_mb=data["peak_rss_mb"],
                     frames=data.get("frames", 0), exit_code=proc.returncode)


def run_scenario(sc: Scenario, broker_url: str, bare_s: float = 6.0, with_cold_start: bool = True,
                 log: Any = None) -> ScenarioResult:
    say = log or (lambda _msg: None)
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix=f"edgecam-bench-{sc.name}-") as tmp:
        work = Path(tmp)
        overlay = _overlay(sc, broker_url, work / "state", f"bench-{sc.name}")
        cfg = build_config(overlay, f"bench scenario {sc.name}")
        frame = first_frame(cfg)
        say(f"{sc.name}: bare interpreter ({cfg.model.interpreters} x {cfg.model.threads} threads, {bare_s:g} s)")
        bare_before = measure_bare(cfg.model, frame, bare_s)
        say(f"{sc.name}: pipeline, {sc.frames} frames")
        agent, summary, peak, before, meter = run_pipeline(cfg, sc.frames, sc.predecoded)
        say(f"{sc.name}: bare interpreter again")
        bare_after = measure_bare(cfg.model, frame, bare_s)
        bare_reference = None
        if sc.reference_model:
            ref = cfg.model.model_copy(update=sc.reference_model)
            say(f"{sc.name}: bare reference ({ref.interpreters} x {ref.threads} threads)")
            bare_reference = measure_bare(ref, frame, bare_s)
        cold = None
        if with_cold_start:
            say(f"{sc.name}: cold start of `edgecam run` ({sc.cold_start_frames} frames)")
            cold_overlay = _overlay(sc, broker_url, work / "cold-state", f"bench-{sc.name}-cold")
            cold = cold_start(cold_overlay, sc.cold_start_frames, work)
        totals = meter.snapshot()
        transport = {}
        try:
            transport = dict(agent.transport.stats())
            transport["publish_ms"] = agent.mqtt_cpu_ms
        except Exception:  # stats after close are a bonus, not a requirement of the facade
            transport = {}
        return ScenarioResult(
            name=sc.name, title=sc.title, command_config=sc.config,
            frame_size=(frame.size if frame is not None else None),
            source_fps=getattr(agent.source, "fps", None),
            bare_before=bare_before, bare_after=bare_after, bare_reference=bare_reference,
            reference_model=sc.reference_model, summary=summary,
            engine=_jsonable(agent.engine.stats), gate=_jsonable(agent.gate.stats), transport=_jsonable(transport),
            uplink={k: _totals(v) for k, v in totals.items()}, thumbs=list(meter.thumb_refs),
            encodes=list(getattr(agent, "encodes", [])),
            thread_cpu_ms={"capture": agent.capture_cpu_ms, "mqtt": agent.mqtt_cpu_ms},
            main_cpu_ms=(agent.main_cpu[-1] - agent.main_cpu[0]) if len(agent.main_cpu) == 2 else None,
            process_cpu_ms_per_frame=((agent.process_cpu[-1] - agent.process_cpu[0]) * 1e3 / (agent.captures - 1)
                                      if len(agent.process_cpu) == 2 and agent.captures > 1 else None),
            truth={label: {"objects": len(ids), "object_frames": agent.truth_in_view.get(label, 0)}
                   for label, ids in agent.truth_ids.items()},
            peak_rss_mb=round(peak, 1), rss_before_mb=before, cold_start=cold,
        )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))
