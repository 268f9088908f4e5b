"""The ``edgecam`` command line: one console script, subcommands per audience.

Node: ``run``, ``snapshot``, ``doctor``, ``bench``. Maintainers: ``model …``, ``release …``, ``contract export``.
Technicians and the centre: ``ca …``, ``broker-config``, ``provision …``, ``centre …``.
Heavy imports (numpy, LiteRT, paho) happen inside commands so ``edgecam --help`` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from agent import __version__
from agent.errors import EdgecamError
from agent.redact import redact_text

app = typer.Typer(
    name="edgecam",
    help="edgecam: the city camera node agent (detect on the node, send events and thumbnails over MQTT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


PLUGIN_GROUP = "edgecam.commands"
#: what runs on the node; these never load the tools' command groups
NODE_COMMANDS = frozenset({"run", "snapshot", "doctor", "contract", "ota"})


def wants_tools(argv: list[str]) -> bool:
    """Whether this invocation may need a tool's commands (anything but a node command, and help)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first not in NODE_COMMANDS


def mount_plugins(root: typer.Typer) -> None:
    """Mount the tool command groups that other packages register (``edgecam.commands`` entry points).

    The node runtime never imports the tools (models, provisioning, centre, bench): each names a
    ``register(app)`` function in ``pyproject.toml``, loaded here by name only when the command line asks for
    something that is not a node command. A tool that fails to load (its extra missing, or a bug) costs its own
    commands and one line on stderr, never the rest of the CLI. Mounting twice is a no-op.
    """
    from importlib.metadata import entry_points

    if getattr(root, "_edgecam_plugins", False):
        return
    root._edgecam_plugins = True  # type: ignore[attr-defined]
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            ep.load()(root)
        except Exception as exc:
            print(f"edgecam: {ep.name} commands unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgecam {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    pass


def run_overrides(
    source: str | None,
    model: Path | None,
    labels: Path | None,
    threads: int | None,
    mqtt: str | None,
    node_id: str | None,
    fast: bool,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    state_dir: Path | None = None,
    no_motion: bool = False,
) -> dict[str, Any]:
    """CLI flags as a config overlay (the last of TOML → env → CLI)."""
    from agent.sources import source_config_from_uri

    over: dict[str, Any] = {}
    if source:
        over["source"] = source_config_from_uri(source)
    model_over = {k: v for k, v in {"path": model, "labels": labels, "threads": threads}.items() if v is not None}
    if model_over:
        over["model"] = model_over
    mqtt_over = {
        k: v
        for k, v in {"url": mqtt, "tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}.items()
        if v is not None
    }
    if mqtt_over:
        over["mqtt"] = mqtt_over
    if node_id:
        over["node_id"] = node_id
    if state_dir:
        over["state_dir"] = state_dir
    if fast:
        over["capture"] = {"fast": True}
    if no_motion:
        over["motion"] = {"enabled": False}
    return over


@app.command()
def run(
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
    source: str | None = typer.Option(
        None, "--source", help="synthetic:, PATH, file:PATH, v4l2:/dev/videoN, rtsp://…, picamera2:N"
    ),
    model: Path | None = typer.Option(None, "--model", help="A .tflite, or a model folder with manifest.json."),
    labels: Path | None = typer.Option(None, "--labels", help="Label file, one name a line."),
    threads: int | None = typer.Option(None, "--threads", help="Interpreter threads."),
    mqtt: str | None = typer.Option(None, "--mqtt", help="mqtt://host:port or mqtts://host:port"),
    node_id: str | None = typer.Option(None, "--node-id", help="Node id (MQTT client id and topic root)."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate for mqtts://."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Node certificate for mTLS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Node private key for mTLS."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Where the outbox and counters live."),
    until_eof: bool = typer.Option(False, "--until-eof", help="Finish when a file source ends."),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="Stop after N frames."),
    fast: bool = typer.Option(False, "--fast", help="Play file sources as fast as possible."),
    no_motion: bool = typer.Option(False, "--no-motion", help="Infer every frame (disable the motion gate)."),
    summary_json: Path | None = typer.Option(None, "--summary-json", help="Write a run summary here at exit."),
) -> None:
    """Run the node agent: capture → detect → track → events and thumbnails on MQTT."""
    from agent.config import load_config
    from agent.runner import RunOptions, run_agent

    cfg = load_config(
        config,
        run_overrides(source, model, labels, threads, mqtt, node_id, fast, tls_ca, tls_cert, tls_key,
                      state_dir, no_motion),
    )
    code = run_agent(cfg, RunOptions(until_eof=until_eof, max_frames=max_frames, summary_json=summary_json,
                                     config_path=config))
    raise typer.Exit(code)


@app.command()
def snapshot(
    out: Path = typer.Argument(..., help="Where to write the JPEG."),
    annotate: bool = typer.Option(False, "--annotate", help="Draw detections (label, score), zones and masks."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
    source: str | None = typer.Option(None, "--source", help="When no agent runs: the source to open."),
    model: Path | None = typer.Option(None, "--model", help="When no agent runs: a .tflite or model folder."),
    labels: Path | None = typer.Option(None, "--labels", help="Label file, one name a line."),
    threads: int | None = typer.Option(None, "--threads", help="Interpreter threads."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="The agent's state dir (its control socket)."),
    warmup: float = typer.Option(1.0, "--warmup", min=0, help="When no agent runs: seconds of a live source's "
                                 "frames to let exposure settle before the one taken."),
    as_json: bool = typer.Option(False, "--json", help="Print what was taken as JSON (detections included)."),
) -> None:
    """The current frame as a JPEG on this node, to aim the camera and check zones (video never leaves it).

    Asks the agent running on the state dir (its control socket) for the newest frame the detector ran on;
    when no agent runs, opens the configured source and model itself for one frame and one detection."""
    import json

    from agent.atomic import write_atomic
    from agent.config import load_config
    from agent.snapshot import take

    cfg = load_config(config, run_overrides(source, model, labels, threads, None, None, False,
                                            state_dir=state_dir))
    result, jpeg = take(cfg, annotate, warmup)
    write_atomic(out, jpeg)
    if as_json:
        typer.echo(json.dumps({**result, "out": str(out), "bytes": len(jpeg)}))
        return
    drawn = f", {len(result['detections'])} detection(s) drawn" if annotate else ""
    typer.echo(f"wrote {out} ({result['frame_w']}x{result['frame_h']}{drawn}; via {result['via']})")


@app.command()
def doctor(
    sysroot: Path = typer.Option(Path("/"), "--sysroot", help="Read sysfs/procfs under this root (tests)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
    mqtt: str | None = typer.Option(None, "--mqtt", help="mqtt://host:port or mqtts://host:port"),
    node_id: str | None = typer.Option(None, "--node-id", help="Node id (MQTT client id and topic root)."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate for mqtts://."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Node certificate for mTLS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Node private key for mTLS."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Where the identity and the outbox live."),
    user: str | None = typer.Option(None, "--user", help="The service user the key must belong to "
                                    "(default: edgecam where it exists, else the current user)."),
    offline: bool = typer.Option(False, "--offline", help="Skip the broker connection check."),
) -> None:
    """What this node has (board, temperature, cameras, runtimes) and whether it is fit to run: identity,
    key permissions and certificate expiry, the broker over mTLS, the clock, disk for the outbox.

    Checks print ok / WARN / FAIL; the exit code is 1 when one failed."""
    import importlib.util
    import platform

    from agent.config import load_config
    from agent.doctor import exit_code, node_checks, render
    from agent.doctor.identity import default_service_user
    from agent.thread_priority import realtime_permitted
    from hardware.probes import Probes

    probes = Probes(sysroot)

    def have(mod: str) -> str:
        return "yes" if importlib.util.find_spec(mod) is not None else "no"

    rows = [
        ("python", platform.python_version()),
        ("board", probes.board_model() or "unknown"),
        ("cpu temperature", f"{t:.1f} °C" if (t := probes.cpu_temp_c()) is not None else "n/a"),
        ("throttled now", {None: "n/a", True: "YES", False: "no"}[probes.throttled()]),
        ("cameras (V4L2)", ", ".join(probes.cameras()) or "none"),
        ("ai_edge_litert", have("ai_edge_litert")),
        ("tflite_runtime", have("tflite_runtime")),
        ("picamera2", have("picamera2")),
        ("systemd (python)", have("systemd")),
        ("real-time threads", "permitted" if realtime_permitted() else
         "not permitted (model.priority = realtime falls back to normal; the unit sets LimitRTPRIO=1)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
    cfg = load_config(config, run_overrides(None, None, None, None, mqtt, node_id, False, tls_ca, tls_cert,
                                            tls_key, state_dir))
    checks = node_checks(cfg, user or default_service_user(), offline=offline)
    typer.echo("")
    for line in render(checks):
        typer.echo(line)
    raise typer.Exit(exit_code(checks))


@app.command("contract")
def contract(
    out: Path = typer.Option(Path("docs"), "--out", help="Folder for schemas/ and asyncapi.json."),
    check: bool = typer.Option(False, "--check", help="Fail if the files in --out are stale."),
) -> None:
    """Export the MQTT contract v1 (JSON Schemas and AsyncAPI 3) from the payload models."""
    from agent.contract_docs import check_docs, write_docs

    if check:
        stale = check_docs(out)
        if stale:
            raise EdgecamError(f"{out}: stale contract docs ({', '.join(stale)}); run `edgecam contract`")
        typer.echo(f"{out}: contract docs up to date")
        return
    for path in write_docs(out):
        typer.echo(f"wrote {path}")


def _mount_ota() -> None:
    """``edgecam ota …`` is a node command group (its module imports tuf only inside commands)."""
    from agent.ota.cli import register

    register(app)


_mount_ota()


def main(argv: list[str] | None = None) -> int:
    """Console entry: user errors become one line on stderr and exit 2, never a traceback.

    Usage errors are typer's own (exit 2); typer exits through SystemExit, which passes through.
    """
    if wants_tools(sys.argv[1:] if argv is None else argv):
        mount_plugins(app)
    try:
        app(args=argv, prog_name="edgecam")
    except EdgecamError as exc:
        typer.echo(f"edgecam: error: {redact_text(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
