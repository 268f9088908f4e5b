"""Figures derived from one scenario's raw results: ratios to the bare interpreter, per-stage time, bytes.

Every figure is computed from counters and timers of the same run; nothing is assumed. Stage times are
totals divided by inferred frames (what one detection costs on top of ``invoke``) and by frames.
"""

from __future__ import annotations

import os
from typing import Any

from models.bench.scenario import CAMERA_STREAM_BPS, ScenarioResult

#: stage key → (label, thread it runs on)
STAGES: dict[str, tuple[str, str]] = {
    "capture_decode": ("capture + decode", "capture"),
    "capture_prepare": ("resize + quantise", "capture"),
    "motion": ("motion gate", "main"),
    "preprocess": ("input into the tensor", "inference"),  # the main thread, or each interpreter's own
    "invoke": ("invoke", "inference"),
    "take": ("outputs copied out", "inference"),
    "loop_other": ("main loop overhead + waiting", "main"),
    "decode": ("output decoding", "post"),
    "tracking_events": ("tracking + events", "post"),
    "thumbnail_encode": ("thumbnail encode", "post"),
    "outbox_write": ("outbox write", "post"),
    "publish": ("publish (MQTT thread CPU)", "mqtt"),
}
#: with one interpreter its stages run on the main loop's thread too
ON_MAIN_THREAD = ("main", "inference")
#: the stages that are the agent's own work per frame, beside invoke (the must-show "host work")
HOST_STAGES = ("capture_prepare", "motion", "preprocess", "take", "loop_other", "decode", "tracking_events",
               "thumbnail_encode", "outbox_write")


def stage_totals_ms(r: ScenarioResult) -> dict[str, float | None]:
    """Total milliseconds spent in each stage over the whole pipeline run."""
    s, t = r.summary, r.summary.get("timings_ms", {})
    frames, infs = s.get("frames", 0), s.get("inferences", 0)
    thumb_ms = float(r.engine.get("thumb_encode_ms", 0.0))
    captured = frames + s.get("dropped", {}).get("frames_skipped", 0)
    totals: dict[str, float | None] = {
        "capture_decode": t.get("capture_decode", 0.0) * captured,
        "capture_prepare": t.get("capture_prepare", 0.0) * captured,
        "motion": t.get("motion", 0.0) * frames,
        "preprocess": t.get("preprocess", 0.0) * infs,
        "invoke": t.get("invoke", 0.0) * infs,
        "take": t.get("take", 0.0) * infs,
        "decode": t.get("decode", 0.0) * infs,
        "tracking_events": max(0.0, t.get("events_and_thumbnails", 0.0) * frames - thumb_ms),
        "thumbnail_encode": thumb_ms,
        "outbox_write": t.get("outbox_submit", 0.0) * frames,
    }
    if lanes(r) == 1:
        # the main loop's time not in its own stages: Python overhead, and waiting for a frame or for room in
        # the post-processing queue (post-processing itself overlaps the next invoke, on its own thread)
        loop_ms = (s.get("loop_s") or 0.0) * 1e3
        main = sum(v for k, v in totals.items() if v is not None and STAGES[k][1] in ON_MAIN_THREAD)
        totals["loop_other"] = max(0.0, loop_ms - main)
    else:
        # interpreters invoke on threads of their own; the main loop only gates and hands frames out, and
        # is no longer the critical path: its CPU time, not its wall time, is what it takes from them
        totals["loop_other"] = max(0.0, (r.main_cpu_ms or 0.0) - (totals["motion"] or 0.0))
    publish = r.transport.get("publish_ms")
    totals["publish"] = float(publish) if publish is not None else None
    return totals


def lanes(r: ScenarioResult) -> int:
    """How many interpreters the pipeline ran side by side."""
    return int(r.summary.get("model", {}).get("interpreters", 1))


def _share(n: float, d: float) -> float | None:
    return n / d if d else None


def uplink(r: ScenarioResult) -> dict[str, Any]:
    """Bytes per hour of *source* time. Events and thumbnails scale with the footage; health and state
    are per wall-clock period, so they are counted at their configured rate, not at replay speed."""
    frames = r.summary.get("frames", 0)
    fps = r.source_fps or 0.0
    source_h = frames / fps / 3600 if fps else 0.0
    up = r.uplink
    content = sum(up.get(k, {}).get("wire_bytes", 0) for k in ("events", "thumbs"))
    health = up.get("health", {})
    period = float(r.command_config.get("health", {}).get("period_s", 30.0))
    health_per_h = (health["wire_bytes"] / health["messages"]) * 3600 / period if health.get("messages") else 0.0
    per_h = content / source_h + health_per_h if source_h else None
    thumbs = up.get("thumbs", {})
    return {
        "source_s": round(source_h * 3600, 1),
        "events": up.get("events", {}).get("messages", 0),
        "thumbnails": thumbs.get("messages", 0),
        "event_bytes": up.get("events", {}).get("wire_bytes", 0),
        "thumb_bytes": thumbs.get("wire_bytes", 0),
        "mean_thumb_bytes": round(thumbs["payload_bytes"] / thumbs["messages"]) if thumbs.get("messages") else None,
        "health_bytes_per_hour": round(health_per_h),
        "bytes_per_hour": round(per_h) if per_h is not None else None,
        "share_of_2mbit": (per_h * 8 / (CAMERA_STREAM_BPS * 3600)) if per_h is not None else None,
        "basis": "MQTT 5 PUBLISH wire bytes (header, topic, properties, payload); TCP/IP and TLS not included",
    }


def thumbnails_native(r: ScenarioResult) -> dict[str, Any]:
    """Were thumbnails sent at the crop's own size (the object's native pixels, long side ≤ max_side)?"""
    shrunk = [e for e in r.encodes if e[2] and (e[2], e[3]) != (e[0], e[1])]
    failed = [e for e in r.encodes if not e[2]]
    long_sides = [max(w, h) for _, w, h, _ in r.thumbs]
    return {"encodes": len(r.encodes), "shrunk_for_budget": len(shrunk), "over_budget": len(failed),
            "all_native": not shrunk and not failed,
            "long_side_max": max(long_sides, default=None), "long_side_min": min(long_sides, default=None)}


#: the figures kept from every run of a repeated scenario (the report shows their range)
RUN_FIGURES = ("inference_ratio", "ratio_to_reference", "host_share_of_invoke", "inference_hz", "bare_hz",
               "bare_drift")


def derive_runs(runs: list[ScenarioResult]) -> tuple[ScenarioResult, dict[str, Any]]:
    """Several runs of one scenario: the run with the median inference ratio (the lower middle for an even
    count, so repeating never flatters), its derived figures, and every run's headline figures as ``runs``.

    The median run is reported whole (its stages, bytes and rates belong together); only the cold start,
    measured once with the first run, is carried over to it."""
    figures = [derive(r) for r in runs]
    order = sorted(range(len(runs)), key=lambda i: figures[i]["inference_ratio"] or 0.0)
    mid = order[(len(order) - 1) // 2]
    chosen = runs[mid]
    if chosen.cold_start is None and runs[0].cold_start is not None:
        chosen = chosen.model_copy(update={"cold_start": runs[0].cold_start})
    derived = derive(chosen)
    derived["runs"] = [{k: f[k] for k in RUN_FIGURES} for f in figures]
    return chosen, derived


def derive(r: ScenarioResult) -> dict[str, Any]:
    s = r.summary
    frames, infs = s.get("frames", 0), s.get("inferences", 0)
    bare_hz = (r.bare_before.rate_hz + r.bare_after.rate_hz) / 2
    inf_hz = s.get("inference_hz") or 0.0
    loop_s = s.get("loop_s") or 0.0
    totals = stage_totals_ms(r)
    invoke_ms = totals["invoke"] or 0.0
    host = sum(totals[k] or 0.0 for k in HOST_STAGES)
    host_all = host + (totals["capture_decode"] or 0.0)
    per_inf = {k: (v / infs if v is not None and infs else None) for k, v in totals.items()}
    per_frame = {k: (v / frames if v is not None and frames else None) for k, v in totals.items()}
    cold = r.cold_start
    # CPU budget: the bare invoke keeps cpu_cores busy for ms_mean; whatever else the pipeline needs per
    # inference must fit in the rest of the machine, so even perfect overlap cannot beat this ratio
    cores = os.cpu_count() or 1
    bare_ms = 1e3 / bare_hz  # time per invoke at the bare rate (several interpreters overlap theirs)
    invoke_core_ms = bare_ms * (r.bare_before.cpu_cores + r.bare_after.cpu_cores) / 2
    other_cpu = sum(r.thread_cpu_ms.values())
    cpu_per_inf = r.process_cpu_ms_per_frame * frames / infs if r.process_cpu_ms_per_frame and infs else None
    bound = bare_ms / max(bare_ms, cpu_per_inf / cores) if cpu_per_inf else None
    source_h = frames / r.source_fps / 3600 if r.source_fps else 0.0
    truth = {label: {"per_hour": round(t["objects"] / source_h) if source_h else None,
                     "mean_in_view": round(t["object_frames"] / frames, 2) if frames else None}
             for label, t in sorted(r.truth.items())}
    ref = r.bare_reference
    return {
        "interpreters": lanes(r),
        "threads": int(r.summary.get("model", {}).get("threads", 0)),
        "reference_hz": ref.rate_hz if ref else None,
        "reference_setup": r.reference_model,
        "ratio_to_reference": _share(inf_hz, ref.rate_hz) if ref else None,
        "bare_hz": bare_hz,
        "bare_drift": _share(abs(r.bare_before.rate_hz - r.bare_after.rate_hz), bare_hz),
        "inference_hz": inf_hz,
        "inference_ratio": _share(inf_hz, bare_hz),
        "fps": _share(frames, loop_s),
        "gate_ratio": _share(infs, frames),
        "frames": frames,
        "inferences": infs,
        "invoke_ms_pipeline": _share(invoke_ms, infs),
        "invoke_ms_bare": (r.bare_before.ms_mean + r.bare_after.ms_mean) / 2,
        "host_ms_per_inference": _share(host, infs),
        "host_share_of_invoke": _share(host, invoke_ms),
        "host_ms_per_inference_incl_capture": _share(host_all, infs),
        "host_share_of_invoke_incl_capture": _share(host_all, invoke_ms),
        "stage_ms_per_inference": per_inf,
        "stage_ms_per_frame": per_frame,
        "uplink": uplink(r),
        "thumbnails": thumbnails_native(r),
        "truth": truth,
        "bare_cpu_cores": (r.bare_before.cpu_cores + r.bare_after.cpu_cores) / 2,
        "other_threads_cpu_ms_per_inference": _share(other_cpu, infs),
        "bare_core_ms_per_invoke": invoke_core_ms,
        "process_cpu_ms_per_inference": cpu_per_inf,
        "cpu_bound_ratio": bound,
        "tracks": s.get("tracks", 0),
        "events": s.get("events", 0),
        "peak_rss_mb_in_bench": r.peak_rss_mb,
        "cold_start_first_frame_s": cold.first_frame_s if cold else None,
        "cold_start_peak_rss_mb": cold.peak_rss_mb if cold else None,
        "in_process_first_frame_s": s.get("first_frame_s"),
    }
