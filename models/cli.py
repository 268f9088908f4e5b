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

    from models.bench import bench_model
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
