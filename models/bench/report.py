"""Present bench results: a terminal table, a PNG of the per-stage breakdown, and docs/PERFORMANCE.md."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from models.bench.metrics import ON_MAIN_THREAD, STAGES


def machine() -> dict[str, Any]:
    """CPU model and core count as the figures' context (ratios travel, absolute numbers do not)."""
    cpu = platform.processor() or platform.machine()
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        cpu = fields.get("model name") or fields.get("hardware") or fields.get("model") or cpu
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "kernel": platform.release()}


def _f(v: Any, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v * 100:.2f}%"


def summary_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    up, th = d["uplink"], d["thumbnails"]
    ref = d.get("reference_setup") or {}
    return [
        ("interpreters x threads", f"{d.get('interpreters', 1)} x {d.get('threads')}"),
        ("bare invoke rate (Hz), same setup", _f(d["bare_hz"], ".1f")),
        ("bare rate drift before/after", _pct(d["bare_drift"])),
        ("pipeline inference rate (Hz)", _f(d["inference_hz"], ".1f")),
        ("inference rate ÷ bare rate", _f(d["inference_ratio"], ".3f")),
        *_spread_rows(d),
        *([(f"bare rate, {ref.get('interpreters', 1)} x {ref.get('threads')} threads (Hz)",
            _f(d["reference_hz"], ".1f")),
           (f"inference rate ÷ bare {ref.get('interpreters', 1)} x {ref.get('threads')} rate",
            _f(d["ratio_to_reference"], ".3f"))] if d.get("reference_hz") else []),
        ("frames/s", _f(d["fps"], ".1f")),
        ("inferences ÷ frames (gate ratio)", _f(d["gate_ratio"], ".3f")),
        ("frames / inferences", f"{d['frames']} / {d['inferences']}"),
        ("invoke ms in pipeline / bare", f"{_f(d['invoke_ms_pipeline'])} / {_f(d['invoke_ms_bare'])}"),
        ("the gap per inference: invoke slowed by / host work (ms)",
         f"{_f(_minus(d['invoke_ms_pipeline'], d['invoke_ms_bare']))} / {_f(d['host_ms_per_inference'])}"),
        ("host work ms per inference (every thread; video decoding aside)",
         f"{_f(d['host_ms_per_inference'], '.3f')} ({_pct(d['host_share_of_invoke'])} of invoke)"),
        ("… including video decoding", f"{_f(d['host_ms_per_inference_incl_capture'], '.3f')} "
                                       f"({_pct(d['host_share_of_invoke_incl_capture'])} of invoke)"),
        ("bare invoke keeps busy (cores)", _f(d.get("bare_cpu_cores"))),
        ("CPU ms per invoke, bare / per inference, whole pipeline",
         f"{_f(d.get('bare_core_ms_per_invoke'))} / {_f(d.get('process_cpu_ms_per_inference'))}"),
        ("ratio bound by the CPU budget (perfect overlap)", _f(d.get("cpu_bound_ratio"), ".3f")),
        ("tracks / events", f"{d['tracks']} / {d['events']}"),
        *[(f"scene truth: {label}", f"{t['per_hour']}/h, {t['mean_in_view']} in view on average")
          for label, t in d.get("truth", {}).items()],
        ("source time (s)", _f(up["source_s"], ".0f")),
        ("events / thumbnails published", f"{up['events']} / {up['thumbnails']}"),
        ("mean thumbnail (bytes)", _f(up["mean_thumb_bytes"], ".0f")),
        ("thumbnails at native size", f"{'yes' if th['all_native'] else 'no'} ({th['encodes']} encodes, "
                                      f"{th['shrunk_for_budget']} shrunk, long side {th['long_side_min']}"
                                      f"–{th['long_side_max']} px)"),
        ("bytes published per hour of source", _f(up["bytes_per_hour"], ",.0f")),
        ("… share of a 2 Mbit/s stream", _pct(up["share_of_2mbit"])),
        ("peak RSS in bench pipeline (MB)", _f(d["peak_rss_mb_in_bench"], ".0f")),
        ("cold `edgecam run`: peak RSS (MB)", _f(d["cold_start_peak_rss_mb"], ".0f")),
        ("cold `edgecam run`: start → first frame (s)", _f(d["cold_start_first_frame_s"])),
    ]


def _spread_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """A repeated scenario: every run's ratio (and bare rate), so the reader sees how far the median can move."""
    runs = d.get("runs") or []
    if len(runs) < 2:
        return []

    def each(key: str, fmt: str) -> str:
        return ", ".join(_f(r[key], fmt) for r in runs)

    rows = [(f"… in each of {len(runs)} runs (this table: the median run)",
             f"{each('inference_ratio', '.3f')} (bare {each('bare_hz', '.0f')} Hz)")]
    if all(r.get("ratio_to_reference") is not None for r in runs):
        rows.append(("… ÷ the other bare setup, each run", each("ratio_to_reference", ".3f")))
    return rows


def stage_rows(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    per_inf, per_frame = d["stage_ms_per_inference"], d["stage_ms_per_frame"]
    return [(label, thread, _f(per_inf.get(k), ".3f"), _f(per_frame.get(k), ".3f"))
            for k, (label, thread) in STAGES.items()]


def print_tables(results: dict[str, dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name, d in results.items():
        t = Table(title=f"{name}", show_header=False)
        for k, v in summary_rows(d):
            t.add_row(k, v)
        console.print(t)
        s = Table(title=f"{name}: per-stage ms")
        for col in ("stage", "thread", "per inference", "per frame"):
            s.add_column(col, justify="left" if col in ("stage", "thread") else "right")
        for row in stage_rows(d):
            s.add_row(*row)
        console.print(s)
    if checks:
        c = Table(title="checks")
        for col in ("scenario", "check", "value", "pass"):
            c.add_column(col)
        for ch in checks:
            c.add_row(ch["scenario"], ch["check"], ch["value"], "PASS" if ch["pass"] else "FAIL")
        console.print(c)


def write_chart(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Stacked horizontal bars: milliseconds per inferred frame by stage, one bar per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    keys = [k for k in STAGES if any(results[n]["stage_ms_per_inference"].get(k) for n in names)]
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.9 * len(names)), dpi=80)
    rows = [f"{n}\n{thread}" for n in names for thread in ("inference thread", "other threads")]
    left = [0.0] * len(rows)
    cmap = plt.get_cmap("tab20")
    # the ten dark shades first, then light ones: no two of the stages share a colour
    shades = [*range(0, 20, 2), *range(1, 20, 2)]
    for i, k in enumerate(keys):
        main = STAGES[k][1] in ON_MAIN_THREAD
        vals = [0.0] * len(rows)
        for j, n in enumerate(names):
            vals[2 * j + (0 if main else 1)] = results[n]["stage_ms_per_inference"].get(k) or 0.0
        ax.barh(rows, vals, left=left, color=cmap(shades[i % 20]), label=STAGES[k][0])
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for j, n in enumerate(names):  # the bare interpreter's invoke, for scale
        ax.plot([results[n]["invoke_ms_bare"]] * 2, [2 * j - 0.4, 2 * j + 0.4], color="black", lw=2)
    ax.set_xlabel("ms per inferred frame (black tick: bare invoke; other threads run in parallel)")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(1, len(names)) - 0.15))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown(report: dict[str, Any], chart: str | None) -> str:
    m, results = report["machine"], report["derived"]
    lines = [
        "# Performance",
        "",
        "Generated by `edgecam bench` (do not edit by hand; rerun the command below). Figures are ratios",
        "against the bare interpreter measured in the same run on the same machine, not absolute claims.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}, Linux {m['kernel']}, Python {m['python']})",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}",
        "",
    ]
    if report.get("checks"):
        lines += ["## Must-show checks", "", "| scenario | check | value | result |", "|---|---|---|---|"]
        lines += [f"| {c['scenario']} | {c['check']} | {c['value']} | {'PASS' if c['pass'] else 'FAIL'} |"
                  for c in report["checks"]]
        lines.append("")
    if chart:
        lines += ["## Stage breakdown", "", f"![ms per inferred frame by stage]({chart})", ""]
    for name, d in results.items():
        sc = report["scenarios"][name]
        lines += [f"## {name}: {sc['title']}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in summary_rows(d)]
        lines += ["", "| stage | thread | ms per inference | ms per frame |", "|---|---|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in stage_rows(d)]
        lines.append("")
    lines += report.get("notes", [])
    return "\n".join(lines).rstrip() + "\n"
