"""``edgecam run``: wire capture → motion gate → detector → event engine → transport, and run the loop.

Three threads carry a frame: capture (decode, resize, quantise), the main loop (motion gate, invoke, outputs
copied out) and post-processing (output decoding, tracking, events, thumbnails, outbox writes), which
works on frame N while the interpreter runs frame N+1. With ``model.interpreters`` > 1 the main loop hands
each frame to a free interpreter's own thread instead (``InferenceLanes``) and post-processing takes the
results in frame order. MQTT has its own thread. Everything the centre can
change at run time (config/desired, commands) reaches the loop through a queue, and what the event
engine owns is changed on its own thread, so each pipeline object is only ever touched by one thread.

The config comes from ``agent.config_owner.ConfigOwner``: the runner starts on ``start_config()``, hands
hot changes to the consumers that declared the changed sections, restarts for the others, and during a
trial proves the node healthy (``healthy()``) or gives up (``revert``): at start-up in-process, later by
restarting onto the last-known-good config.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent import __version__
from agent.atomic import write_atomic
from agent.config import AgentConfig
from agent.config_owner import Change, ConfigOwner, Consumers
from agent.contract import CommandRequest, Dropped, Health, OutboxRecovered, SnapshotArgs, Topics, Versions, utc_now
from agent.control import ControlServer
from agent.errors import EdgecamError
from agent.memory import peak_rss_mb
from agent.serial_worker import WorkerFailed
from agent.service import sd_notify, setup_logging, watchdog_period_s
from agent.snapshot import Seen
from agent.state_dir import StateDirWatch
from agent.thread_priority import CAPTURE_NICENESS, idle_thread_priority, normal_priority
from agent.vision.inference_lanes import resolved

log = logging.getLogger("edgecam")

FLUSH_TIMEOUT_S = 30.0
RESTART_EXIT = 75  # EX_TEMPFAIL: a supervisor restarts us; `edgecam run` re-executes itself instead
#: frames between the invoke and post-processing: enough to ride out a slow outbox write, little memory
POST_QUEUE_DEPTH = 4


@dataclass
class RunOptions:
    until_eof: bool = False
    max_frames: int | None = None
    summary_json: Path | None = None
    config_path: Path | None = None


@dataclass
class Counters:
    frames: int = 0
    inferences: int = 0
    events: int = 0
    thumbnails: int = 0
    events_by_type: dict[str, int] = field(default_factory=lambda: {"start": 0, "update": 0, "end": 0})
    motion_ms: float = 0.0
    engine_ms: float = 0.0
    submit_ms: float = 0.0
    first_frame_s: float | None = None
    first_frame_t: float | None = None  # monotonic, when the first frame's processing began
    last_frame_t: float | None = None  # monotonic, when the newest frame's processing ended
    first_done_t: float | None = None  # monotonic, when the first frame's processing ended
    done: int = 0  # frames whose post-processing ended (what feeds systemd's watchdog)


class Agent:
    """One running node agent on ``cfg`` (its owner's start config). ``run()`` returns the process exit code."""

    def __init__(self, cfg: AgentConfig, opts: RunOptions, owner: ConfigOwner | None = None) -> None:
        import cv2

        from agent.events.ids import new_boot_id
        from agent.sources import open_source
        from agent.vision.detector import Detector

        # OpenCV would split every resize and conversion over all cores and spin between jobs, fighting the
        # interpreter's threads for them (bench, 2 cores, frames arriving decoded: 0.83 → 0.94 of the bare
        # rate from this line alone)
        cv2.setNumThreads(1)
        self.cfg = cfg
        self.opts = opts
        self.owner = owner or ConfigOwner(cfg)
        self.t_start = time.monotonic()
        self.state_dir = StateDirWatch(cfg.state_dir)  # 0700: the outbox holds pictures of the street
        self.source = open_source(cfg.source, cfg.capture.decode_threads)
        if self.source.finite:
            self.source.open()  # a bad file is a one-line error now, not a retry loop later
        try:
            self.detector = Detector(cfg.model, cfg.detect)
        except BaseException:  # a trial may revert and start again in this process: give the source back
            self.source.close()
            raise
        self.boot_id = new_boot_id()
        self.counters = Counters()
        self.stop = threading.Event()
        self.restart = False
        self.flush_on_exit = True
        self._built = False
        self.failed = False
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.last_frame = None
        #: the newest frame the detector ran on, with its detections (post-processing thread writes it)
        self.last_seen = None
        self.control = None
        self._recent_invoke: deque[float] = deque(maxlen=512)
        self._health_frames = 0
        self._health_t = time.monotonic()

    # ------------------------------------------------------------ wiring

    def build(self) -> None:
        """Everything but the threads' start; raises the user errors a config can cause (TLS files, outbox)."""
        if not self._built:
            self._build()
            self._built = True

    def discard(self) -> None:
        """Release what a start that failed has built (nothing was started): threads, outbox, source.

        The reverted trial's agent holds reference cycles (its callbacks), so without this its outbox
        connections and interpreter would live on beside the next agent's until the garbage collector ran."""
        for name in ("lanes", "post"):
            worker = getattr(self, name, None)
            if worker is not None:
                worker.stop()
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.outbox.close()
        self.source.close()

    def _build(self) -> None:
        from agent.events.engine import EventEngine
        from agent.serial_worker import SerialWorker
        from agent.sources.capture import Capture
        from agent.transport import Transport
        from agent.vision.inference_lanes import InferenceLanes
        from agent.vision.motion import MotionGate

        cfg = self.cfg
        self.engine = EventEngine(cfg, boot_id=self.boot_id, model=self.detector.model_ref)
        self.gate = MotionGate(cfg.motion)
        from agent.ota.runtime import OtaRuntime

        self.ota = OtaRuntime(cfg, self.opts.config_path)
        versions = Versions(agent=__version__, model=f"{self.detector.model_ref.name}@{self.detector.sha256[:12]}",
                            **self.ota.versions())
        caps = ["events", "thumbs", "snapshot", "snapshot:annotate", "config", f"model:{self.detector.layout.kind}",
                f"source:{cfg.source.kind}"]
        self.transport = Transport(cfg, boot_id=self.boot_id, versions=versions, caps=caps,
                                   on_command=self._on_command, config=self.owner, on_ota_nudge=self.ota.nudge)
        # one multi-threaded interpreter leaves short idle gaps on every core and stalls whenever one of its
        # threads loses its core: capture and post-processing stay out of its way (a nicer capture thread,
        # an idle-class post thread). Single-thread interpreters side by side leave no gaps and do not
        # stall, so there every thread has the same priority and the work just has to fit (bench, 2 cores:
        # 108 → 118 inferences a second from the priorities alone).
        lanes = len(self.detector.lanes) > 1
        if not lanes:  # this thread invokes; threads started from here on start at normal priority
            self.detector.claim_cores(0)
        self.capture = Capture(self.source, cfg.capture, self.opts.max_frames, opened=self.source.finite,
                               prepare=self.detector.prepare, niceness=0 if lanes else CAPTURE_NICENESS)
        self.post = SerialWorker("post", POST_QUEUE_DEPTH, on_start=None if lanes else idle_thread_priority)
        self.lanes = InferenceLanes(self.detector) if lanes else None
        #: the engine's count of moving tracks, taken on its thread after each frame (the gate reads it here)
        self._moving_tracks = 0
        self._budget_seen: int | None = None
        # who reads which config section after start: a hot change reaches exactly these (main thread)
        self.consumers = Consumers()
        self.consumers.add("detector", self.detector.CONFIG_SECTIONS, lambda c: self.detector.configure(c.detect))
        self.consumers.add("motion gate", self.gate.CONFIG_SECTIONS, lambda c: self.gate.reconfigure(c.motion))
        self.consumers.add("event engine", self.engine.CONFIG_SECTIONS,
                           lambda c: self.post.submit(self.engine.reconfigure, c))  # between frames, its thread
        self.consumers.add("transport", self.transport.CONFIG_SECTIONS, self.transport.reconfigure)
        self.consumers.add("logging", {"log_level"}, lambda c: logging.getLogger().setLevel(c.log_level))
        # what lives in the state dir, and how each owner puts its file back if the dir is deleted under us
        outbox = self.transport.outbox
        self.state_dir.keep("outbox", lambda: f"{outbox.rehome()} unsent row(s) moved to a fresh file",
                            lost=outbox.lost)
        self.state_dir.keep("seq", self.engine.save_seq)
        self.state_dir.keep("config state", self.owner.save_again)
        self.state_dir.keep("command ids", self.transport.commands.recent.save_again)
        self.control = ControlServer(cfg.state_dir, self._on_control)
        self.state_dir.keep("control socket", self.control.rebind, lost=self.control.lost)

    # ------------------------------------------------------------ called from the MQTT thread

    def _on_command(self, req: CommandRequest) -> Any:
        if req.op == "get_config":
            return json.loads(self.cfg.model_dump_json())
        if req.op == "set_log_level":
            level = str(req.args.get("level", "")).upper()
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                raise ValueError("args.level must be one of DEBUG, INFO, WARNING, ERROR")
            logging.getLogger().setLevel(level)
            return {"level": level}
        if req.op == "snapshot":
            return self._snapshot(SnapshotArgs.model_validate(req.args).annotate)
        if req.op == "restart":
            self.inbox.put(("restart", None))
            return {"restarting": True}
        raise ValueError(f"op {req.op} is not handled by this node")

    def _seen(self, annotate: bool):
        """What a snapshot shows: annotated, the newest frame the detector ran on with its detections (boxes
        and picture belong together); plain, the newest frame."""
        from agent.snapshot import Seen

        if annotate:
            seen = self.last_seen
            if seen is None:
                raise ValueError("the detector has not run on a frame yet")
            return seen
        frame = self.last_frame
        if frame is None:
            raise ValueError("no frame captured yet")
        return Seen(frame, [])

    def _snapshot(self, annotate: bool = False) -> dict[str, Any]:
        """A full-scene JPEG (with detections, zones and masks drawn when ``annotate``) under the thumbnail
        budget, published on thumbs/{id}."""
        from agent.events.ids import uuid7
        from agent.events.thumbnails import Thumbnailer
        from agent.snapshot import describe, picture

        seen = self._seen(annotate)
        encoder = Thumbnailer(self.cfg.thumbnails)
        encoder.set_budget(self.transport.max_payload)
        thumb = encoder.encode(picture(seen, self.cfg, annotate, self.cfg.thumbnails.max_side))
        if thumb is None:
            raise ValueError("snapshot does not fit the thumbnail byte budget")
        snap_id = uuid7()
        self.transport.publish_snapshot(thumb.jpeg, snap_id)
        return {"topic": Topics(self.cfg.node_id).thumbs(snap_id), **describe(seen, annotate),
                **thumb.ref.model_dump()}

    def _on_control(self, req) -> tuple[dict[str, Any], bytes]:
        """Control socket thread (``agent.control``): a full-resolution snapshot for a tool on this node, or
        the link's state for ``edgecam doctor`` (which must not connect as this node while it runs: the
        broker allows one connection per identity and would drop ours)."""
        from agent.snapshot import describe, encode_local, picture

        if req.op == "status":
            link = self.transport.link
            return {"node_id": self.cfg.node_id, "boot_id": self.boot_id, "mqtt_url": str(self.cfg.mqtt.url),
                    "connected": link.connected, "last_error": link.last_error, "frames": self.counters.frames}, b""
        annotate = SnapshotArgs.model_validate(req.args).annotate
        seen = self._seen(annotate)
        return describe(seen, annotate), encode_local(picture(seen, self.cfg, annotate))

    def _on_config_change(self, change: Change) -> None:
        self.inbox.put(("restart" if change.restart else "config", change))

    # ------------------------------------------------------------ loop

    def _apply(self, change: Change) -> None:
        self.cfg = change.cfg
        reached = self.consumers.deliver(change)
        log.info("config v%d applied hot (%s) to %s", change.version, ", ".join(sorted(change.sections)),
                 ", ".join(reached) or "no consumer")

    def _watch_trial(self) -> None:
        """On a trial config: commit it once healthy; past its deadline, revert and restart onto last-known-good."""
        if not self.owner.running_trial or self.stop.is_set():
            return
        missing = self._not_yet_healthy()
        if missing is None:
            self.owner.healthy()
        elif self.owner.trial_expired():
            self.owner.revert(f"not healthy within its trial window ({self.cfg.trial.window_s:g} s): {missing}")
            # unsent events stay in the outbox for the next start: no waiting for a broker this config never reached
            self.flush_on_exit = False
            self._restart()

    def _watch_ota(self) -> None:
        """OTA duties (agent.ota.runtime); a switch of the ``current`` release restarts the agent onto it."""
        if self.stop.is_set():
            return
        try:
            switched = self.ota.poll(self._not_yet_healthy_for_ota(), self.transport.publish_ota_status)
        except Exception as exc:  # OTA bookkeeping must not stop the pipeline
            log.warning("ota: %s", exc)
            return
        if switched:
            log.info("ota: release changed from %s; restarting onto it", self.ota.release)
            self._restart()

    def _not_yet_healthy_for_ota(self) -> str | None:
        """A release on trial must also have run its model on frames, within ``ota.inference_budget_ms``."""
        missing = self._not_yet_healthy()
        if missing is not None:
            return missing
        if self.counters.inferences == 0:
            return "the model has not run on a frame yet"
        budget = self.cfg.ota.inference_budget_ms
        recent = list(self._recent_invoke)  # appended on the post thread; a copy to read
        if budget is not None and recent:
            p95 = float(np.percentile(np.asarray(recent, dtype=np.float64), 95))
            if p95 > budget:
                return f"model invoke p95 {p95:.1f} ms over the {budget:g} ms budget"
        return None

    def _not_yet_healthy(self) -> str | None:
        """What keeps the node from being healthy (source open, model loaded, broker connected, frames flowing)."""
        link = self.transport.link
        if not link.connected:
            return f"broker {self.cfg.mqtt.url} not connected ({link.last_error or 'no answer yet'})"
        if self.counters.first_done_t is None:
            why = self.capture.stats.last_error
            return f"no frames from {self.source.describe()}" + (f" ({why})" if why else "")
        return None

    def _restart(self) -> None:
        log.info("restart requested")
        self.restart = True
        self.stop.set()

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, payload = self.inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "config":
                self._apply(payload)
            elif kind == "restart":
                self._restart()

    def _submit(self, out: list) -> None:
        if not out:
            return
        t = time.thread_time()
        self.transport.submit_many([(o.event, o.thumb) for o in out])
        self.counters.submit_ms += (time.thread_time() - t) * 1e3
        for o in out:
            self.counters.events += 1
            self.counters.events_by_type[o.event.type] += 1
            self.counters.thumbnails += o.thumb is not None

    def _process(self, frame) -> None:
        """Main thread: gate and invoke, then hand the frame to post-processing."""
        c = self.counters
        c.frames += 1
        if c.first_frame_s is None:
            c.first_frame_t = time.monotonic()
            c.first_frame_s = c.first_frame_t - self.t_start
        self.last_frame = frame
        t0 = time.perf_counter()
        # source time, as the tracker uses: a --fast replay holds and refreshes like the real-time stream
        infer = self.gate.check(frame, frame.ts, self._moving_tracks > 0)
        c.motion_ms += (time.perf_counter() - t0) * 1e3
        raw = None
        if infer:
            # one interpreter: invoke here; several: the first free one's thread invokes, a future comes back
            raw = self.lanes.submit(frame) if self.lanes is not None else self.detector.infer(frame)
            c.inferences += 1
        self.post.submit(self._post_process, frame, raw)

    def _post_process(self, frame, raw) -> None:
        """Post-processing thread: detections → tracks → events and thumbnails → outbox.

        Its stages are timed in thread CPU time: the thread shares the cores with the interpreter's, and
        wall time would count the moments it was preempted as its own work."""
        c = self.counters
        raw = resolved(raw)  # waits for this frame's interpreter when several run side by side
        if raw is not None:
            self._recent_invoke.append(raw.invoke_ms)
            dets = self.detector.decode(raw)
            self.last_seen = Seen(frame, dets)
            t1 = time.thread_time()
            out = self.engine.on_frame(frame, dets)
        else:
            t1 = time.thread_time()
            out = self.engine.on_skipped_frame(frame)
        self._moving_tracks = self.engine.moving_tracks
        c.engine_ms += (time.thread_time() - t1) * 1e3
        self._submit(out)
        c.last_frame_t = time.monotonic()
        c.done += 1
        if c.first_done_t is None:
            c.first_done_t = c.last_frame_t

    def _finish_tracks(self) -> None:
        """End every open track (post-processing thread, after the frames before it)."""
        self._submit(self.engine.finish(time.time()))

    def _health(self) -> Health:
        from agent.events.clock import clock_synced
        from hardware.probes import Probes

        now = time.monotonic()
        stats = self.transport.stats()
        samples = np.asarray(list(self._recent_invoke), dtype=np.float64)  # appended on the post thread
        probes = Probes()
        fps = (self.counters.frames - self._health_frames) / max(now - self._health_t, 1e-6)
        self._health_frames, self._health_t = self.counters.frames, now
        return Health(
            ts=utc_now(), uptime_s=now - self.t_start, fps=round(fps, 2),
            inference_ms_p50=float(np.percentile(samples, 50)) if samples.size else None,
            inference_ms_p95=float(np.percentile(samples, 95)) if samples.size else None,
            frames=self.counters.frames, frames_skipped=self.capture.stats.skipped,
            inferences=self.counters.inferences, outbox_depth=stats.get("outbox_depth", 0),
            outbox_bytes=stats.get("outbox_bytes", 0), outbox_oldest_age_s=stats.get("outbox_oldest_age_s"),
            dropped=Dropped(events=stats.get("dropped_events", 0), thumbnails=stats.get("dropped_thumbs", 0)),
            outbox_limit_bytes=stats.get("outbox_limit_bytes"), outbox_dropping=stats.get("outbox_dropping", []),
            outbox_recovered=OutboxRecovered.model_validate(stats["outbox_recovery"])
            if stats.get("outbox_recovery") else None,
            source_reconnects=self.capture.stats.reopens, cpu_temp_c=probes.cpu_temp_c(),
            throttled=probes.throttled(), disk_free_bytes=probes.disk_free_bytes(self.cfg.state_dir),
            clock_synced=clock_synced(),
        )

    def _housekeeping(self, now: float) -> None:
        budget = self.transport.max_payload
        if budget and budget != self._budget_seen:
            self._budget_seen = budget
            self.post.submit(self.engine.set_thumb_budget, min(self.cfg.thumbnails.max_bytes, budget))
        self._watch_trial()
        self._watch_ota()
        if self.transport.health_due(now):
            self._check_state_dir()
            try:
                self.transport.publish_health(self._health())
            except Exception as exc:  # health is best effort; the pipeline must not stop for it
                log.warning("health not published: %s", exc)
        self._feed_watchdog(now)

    def _feed_watchdog(self, now: float) -> None:
        """``WATCHDOG=1`` only when frames got through the whole pipeline since the last ping.

        Fed by frame progress, never by a timer: a camera that stops delivering, a source that ended, a hung
        interpreter or post-processing thread all stop the pings, and systemd restarts the agent after
        ``WatchdogSec`` (a restart reopens the camera, which is the recovery a stalled CSI/RTSP stream needs)."""
        if not self._watchdog or now < self._next_watchdog or self.counters.done == self._watchdog_done:
            return
        self._watchdog_done = self.counters.done
        self._next_watchdog = now + self._watchdog
        sd_notify("WATCHDOG=1")

    def _check_state_dir(self) -> None:
        try:
            self.state_dir.check()
        except Exception as exc:  # the pipeline must not stop for it; the next check tries again
            log.warning("state_dir %s: check failed: %s", self.cfg.state_dir, exc)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            normal_priority()  # this thread may have invoked real-time; the bench runs agents in its main thread

    def _run(self) -> int:
        self.build()
        self.owner.watch(on_change=self._on_config_change)
        self.transport.start()
        self.control.start()
        self.capture.start()
        self._watchdog = watchdog_period_s()
        self._next_watchdog = 0.0
        self._watchdog_done = 0
        sd_notify("READY=1", f"STATUS=running {self.source.describe()}")
        log.info("edgecam %s node %s: %s → %s (%s) → %s", __version__, self.cfg.node_id, self.source.describe(),
                 self.detector.resolved.file, self.detector.layout.describe(), self.cfg.mqtt.url)
        source_done = False
        try:
            while not self.stop.is_set():
                frame = self.capture.get(timeout=0.2)
                if frame is not None:
                    self._process(frame)
                elif self.capture.ended and not source_done:
                    source_done = True
                    self.post.submit(self._finish_tracks)
                    self.post.drain()
                    if self.opts.until_eof or self.opts.max_frames:
                        break
                    log.info("source ended; staying connected (use --until-eof to exit)")
                self._drain_inbox()
                self._housekeeping(time.monotonic())
        except WorkerFailed as exc:  # a bug below the pipeline: stop cleanly, flush, write the summary, exit 1
            log.error("post-processing failed: %s", exc.__cause__ or exc)
            self.failed = True
        return self._shutdown(source_done)

    def _shutdown(self, source_done: bool) -> int:
        sd_notify("STOPPING=1")
        self.control.close()
        normal_priority()  # no longer invoking: draining and flushing need no real-time thread
        self.capture.stop()
        if not self.failed:
            if not source_done:
                self.post.submit(self._finish_tracks)
            self.post.drain()
        self.post.stop()
        if self.lanes is not None:
            self.lanes.stop()
        self._check_state_dir()  # the last events and the seq go where the next start finds them
        flushed = self.transport.flush(FLUSH_TIMEOUT_S if self.flush_on_exit else 0.0)
        if not flushed:
            log.warning("outbox not empty at exit; %s item(s) stay queued for the next start",
                        self.transport.stats().get("outbox_depth"))
        self._check_state_dir()  # deleted during the flush: what is unsent must not go with it
        self.transport.close()
        self.ota.close()
        if self.opts.summary_json:
            write_summary(self.opts.summary_json, self)
        if self.failed:
            return 1
        return RESTART_EXIT if self.restart else 0

    def summary(self) -> dict[str, Any]:
        c, stats, t = self.counters, self.transport.stats(), self.detector.times
        elapsed = time.monotonic() - self.t_start
        cap = self.capture.stats
        n_frames = max(c.frames, 1)
        loop_s = (c.last_frame_t - c.first_frame_t) if c.first_frame_t and c.last_frame_t else None
        return {
            "frames": c.frames,
            "inferences": c.inferences,
            "events": c.events,
            "events_by_type": c.events_by_type,
            "thumbnails": c.thumbnails,
            "published": stats.get("published", 0),
            "published_thumbs": stats.get("published_thumbs", 0),
            "dropped": {"events": stats.get("dropped_events", 0), "thumbnails": stats.get("dropped_thumbs", 0),
                        "frames_skipped": cap.skipped},
            "outbox_depth": stats.get("outbox_depth", 0),
            "tracks": self.engine.stats.get("tracks_started", 0),
            "elapsed_s": round(elapsed, 3),
            "first_frame_s": c.first_frame_s,
            "process_first_frame_s": _since_process_start(c.first_done_t),
            "loop_s": loop_s,
            "inference_hz": c.inferences / loop_s if loop_s else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "fps": round(c.frames / elapsed, 2) if elapsed else 0.0,
            "source_reconnects": cap.reopens,
            "model": {"name": self.detector.model_ref.name, "sha256": self.detector.sha256,
                      "format": self.detector.layout.kind, "threads": self.detector.runtime.threads,
                      "interpreters": len(self.detector.lanes),
                      "priority": "realtime" if self.detector.realtime_lanes else "normal"},
            "timings_ms": {
                "capture_decode": cap.decode_ms / max(cap.captured, 1),
                "capture_prepare": cap.prepare_ms / max(cap.captured, 1),
                "motion": c.motion_ms / n_frames,
                **{k.removesuffix("_ms"): v for k, v in t.as_dict().items()},
                "events_and_thumbnails": c.engine_ms / n_frames,
                "outbox_submit": c.submit_ms / n_frames,
            },
            "timings_basis": "capture_* per captured frame, preprocess/invoke/take/decode per inference, "
                             "others per processed frame",
            "inference_ms_p50": float(np.percentile(t.invoke_samples, 50)) if t.invoke_samples else None,
            "inference_ms_p95": float(np.percentile(t.invoke_samples, 95)) if t.invoke_samples else None,
            "gate_ratio": c.inferences / n_frames,
        }


def _since_process_start(t_mono: float | None) -> float | None:
    """Seconds from this process's start (exec, before any import) to ``t_mono``; Linux only, 10 ms ticks."""
    if t_mono is None or not hasattr(time, "CLOCK_BOOTTIME"):
        return None
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, field 22: ticks after boot
    except (OSError, ValueError, IndexError):
        return None
    age_now = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    return round(age_now - (time.monotonic() - t_mono), 3)


def write_summary(path: Path, agent: Agent) -> None:
    write_atomic(path, json.dumps(agent.summary(), indent=2))


def _reexec() -> None:
    """Restart in place (``restart`` command or a cold config change) when no supervisor does it for us."""
    if os.environ.get("INVOCATION_ID"):  # under systemd: exit and let Restart= bring us back
        sys.exit(RESTART_EXIT)
    os.execv(sys.executable, [sys.executable, "-m", "agent.cli", *sys.argv[1:]])


def start_agent(owner: ConfigOwner, opts: RunOptions) -> Agent:
    """The agent built on the owner's start config. A trial config that cannot even start (unreadable
    source, missing model, bad TLS files) is reverted here, in-process, and the agent built again on
    last-known-good; without a trial the error goes up (one line, exit 2)."""
    while True:
        cfg = owner.start_config()
        logging.getLogger().setLevel(cfg.log_level)
        agent = None
        try:
            agent = Agent(cfg, opts, owner)
            agent.build()
            return agent
        except Exception as exc:  # on trial, whatever stops the start is the trial config's failure
            if agent is not None:
                agent.discard()
            if not owner.running_trial:
                raise
            why = exc if isinstance(exc, EdgecamError) else f"{type(exc).__name__}: {exc}"
            owner.revert(f"the node could not start on it: {why}")
            del agent
            gc.collect()  # the failed agent's interpreter goes before the next one loads (small boards)


def run_agent(cfg: AgentConfig, opts: RunOptions) -> int:
    """Run the node on ``cfg`` (the local layers) ⊕ the centre's persisted document; the exit code."""
    setup_logging(cfg.log_level)
    os.umask(0o077)  # every state file this process writes (outbox, seq, cmd ids, config) is private
    from agent.ota.runtime import apply_release

    agent = start_agent(ConfigOwner(apply_release(cfg)), opts)

    def _stop(signum, _frame) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        agent.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = agent.run()
    if code == RESTART_EXIT:
        _reexec()
    return code
