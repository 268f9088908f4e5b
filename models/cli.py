"""``edgecam model inspect | bench | verify`` (maintainers' model tooling).

Heavy imports (numpy, LiteRT, OpenCV) happen inside the commands so ``edgecam --help`` stays fast. Bad
models raise ``ModelError``; the ``edgecam`` entry point prints its one line and exits 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="A .tflite, or a model folder (manifest.json, or .tflite + labels.txt)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Tensors, dtypes, quantisation, ops, detected format and the label count check."""
    from models.inspect import inspect_model, report_lines

    ins = inspect_model(path)
    if as_json:
        assert ins.layout is not None
        tensor = lambda t: {"name": t.name, "index": t.index, "dtype": t.dtype.name,  # noqa: E731
                            "shape": list(t.shape), "scale": t.scale, "zero_point": t.zero_point}
        typer.echo(json.dumps({
            "model": str(ins.files.model), "bytes": ins.size, "sha256": ins.sha256, "runtime": ins.runtime,
            "inputs": [tensor(t) for t in ins.inputs], "outputs": [tensor(t) for t in ins.outputs],
            "ops": dict(ins.ops), "format": ins.layout.kind, "format_detail": ins.layout.describe(),
            "num_classes": ins.layout.num_classes, "labels": len(ins.labels) if ins.labels is not None else None,
            "label_check": ins.label_check, "stateful": bool(ins.layout.state),
        }, indent=2))
        return
    for line in report_lines(ins):
        typer.echo(line)


@app.command("bench")
def bench_cmd(
    path: Path = typer.Argument(..., help="A .tflite or a model folder."),
    threads: list[int] = typer.Option(None, "--threads", "-t", min=1, max=64,
                                      help="Thread count; repeat for several (default: 1 and 2..cores)."),
    runs: int = typer.Option(100, "--runs", min=1, help="Timed invokes per thread count."),
    warmup: int = typer.Option(10, "--warmup", min=0),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
) -> None:
    """Invoke latency p50/p95 per thread count on this machine."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from models.bench.invoke import bench_model
    from models.inspect import resolve

    resolve(path)  # fail early with a one-line error before drawing anything
    counts = threads or sorted({1, min(2, os.cpu_count() or 1), os.cpu_count() or 1})
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=as_json) as bar:
        tasks = {n: bar.add_task(f"{n} thread(s)", total=runs) for n in counts}
        results = bench_model(path, counts, runs, warmup, progress=lambda n, done: bar.update(tasks[n], completed=done))
    if as_json:
        typer.echo(json.dumps({"model": str(path), "results": [r.as_dict() for r in results]}, indent=2))
        return
    table = Table(title=f"invoke latency: {path}")
    for col in ("threads", "p50 ms", "p95 ms", "mean ms", "min ms", "runs"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(str(r.threads), f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.mean_ms:.2f}", f"{r.min_ms:.2f}",
                      str(r.runs))
    Console().print(table)


@app.command("verify")
def verify_cmd(
    folder: Path = typer.Argument(..., help="A model folder (manifest.json + model + labels)."),
) -> None:
    """sha256, manifest against the tensors, labels against the classes; exit 2 on the first mismatch."""
    from models.verify import first_failure, verify_folder

    checks = verify_folder(folder)
    for c in checks:
        typer.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    failure = first_failure(folder, checks)
    if failure:
        raise failure
    typer.echo(f"{folder}: verified")


def bench(
    source: str | None = typer.Option(None, "--source", help="Bench this source instead of the acceptance suite."),
    model: Path | None = typer.Option(None, "--model", help="A .tflite or model folder (default: suite's/demo)."),
    threads: int = typer.Option(2, "--threads", help="Interpreter threads (bare and pipeline alike)."),
    interpreters: int = typer.Option(1, "--interpreters", min=1, max=8,
                                     help="Interpreters side by side for a --source run (model.interpreters)."),
    frames: int = typer.Option(600, "--frames", min=1, help="Frames for a --source run."),
    loop: bool = typer.Option(False, "--loop", help="Loop a file --source (short clips)."),
    fps: float | None = typer.Option(None, "--fps", help="Source frame rate for images/folders."),
    no_motion: bool = typer.Option(False, "--no-motion", help="Gate off: infer every frame."),
    scenario: list[str] = typer.Option([], "--scenario", help="Suite scenarios to run (default: all)."),
    scale: float = typer.Option(1.0, "--scale", min=0.001, help="Shorten the suite's scenarios (0.1 = quick look)."),
    bare_seconds: float = typer.Option(6.0, "--bare-seconds", min=0.1, help="Bare interpreter time, each side."),
    no_cold_start: bool = typer.Option(False, "--no-cold-start", help="Skip the cold `edgecam run` process."),
    priority: str = typer.Option("normal", "--priority", help="model.priority for a --source run: normal or "
                                 "realtime (bare and pipeline alike)."),
    repeat: int = typer.Option(1, "--repeat", min=1, max=20,
                               help="Run gate-off scenarios N times; report the median run and the range."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the JSON report here."),
    chart: Path | None = typer.Option(None, "--chart", help="Write the stage-breakdown PNG here."),
    doc: Path | None = typer.Option(None, "--doc", help="Write the Markdown report (docs/PERFORMANCE.md) here."),
) -> None:
    """Bare interpreter vs the full pipeline, side by side: ratios, per-stage ms, bytes/hour, RSS, start-up."""
    from models.bench.cli import bench_command

    bench_command(source=source, model=model, threads=threads, frames=frames, loop=loop, fps=fps,
                  no_motion=no_motion, scenarios=scenario, scale=scale, bare_seconds=bare_seconds,
                  cold_start=not no_cold_start, json_out=json_out, chart=chart, doc=doc, interpreters=interpreters,
                  repeat=repeat, priority=priority)


def register(root: typer.Typer) -> None:
    """Mount ``edgecam model …`` and ``edgecam bench`` on the root app (``edgecam.commands`` entry point)."""
    root.add_typer(app, name="model", help="Inspect, benchmark and verify detection models.")
    root.command("bench")(bench)
