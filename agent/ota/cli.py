"""``edgecam ota …`` on the node: status, check, rollback, and the supervisor's entry points for the units."""

from __future__ import annotations

import json
from pathlib import Path

import typer

ota_app = typer.Typer(help="Over-the-air updates of this node (TUF; docs/OTA.md).", no_args_is_help=True)

STATE_HELP = "The node's state dir (overrides the config's state_dir)."


def _node(config: Path | None, state_dir: Path | None):
    from agent.config import load_config
    from agent.ota.node import NodeOta

    return NodeOta(load_config(config, {"state_dir": state_dir} if state_dir else {}))


@ota_app.command("status")
def ota_status(
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
) -> None:
    """The running and trial releases, failed ones, and the last status (JSON)."""
    from agent.ota.install import link_release
    from agent.ota.state import OtaState, StatusFile

    node = _node(config, state_dir)
    state = OtaState.load(node.paths.state)
    last = StatusFile.read(node.paths.status)
    typer.echo(json.dumps({
        "running": state.running, "current": link_release(node.paths.current),
        "trial": state.trial.model_dump() if state.trial else None,
        "failed": state.failed, "versions": {k: v.version for k, v in state.parts.items()},
        "status": last.model_dump(mode="json", exclude_none=True) if last else None,
    }, indent=1))


@ota_app.command("install-root")
def ota_install_root(
    root: Path = typer.Argument(..., help="The repository's REPO/metadata/1.root.json (from the maintainer)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
    force: bool = typer.Option(False, "--force", help="Replace a different installed root (a new trust anchor)."),
) -> None:
    """Install the node's trusted root (provisioning): checked to be a root signed by its own threshold."""
    from agent.ota.trust import install_root

    path = install_root(root, _node(config, state_dir).paths, force=force)
    typer.echo(f"trusted root installed: {path}")


@ota_app.command("check")
def ota_check(
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
    download_only: bool = typer.Option(False, "--download-only", help="Verify and download, install nothing."),
) -> None:
    """Check the channel now; a due release is downloaded, verified, installed and switched to for a trial."""
    status = _node(config, state_dir).check(install=not download_only)
    typer.echo(status.state)
    if status.error:
        typer.echo(f"edgecam: ota: {status.state}: {status.error}", err=True)
    if status.state == "refused":
        raise typer.Exit(1)


@ota_app.command("rollback")
def ota_rollback(
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
) -> None:
    """Go back to the release before (a trial is ended; a committed release is marked failed)."""
    running = _node(config, state_dir).rollback()
    typer.echo(f"running release {running}" if running is not None else "running the provisioned install")


@ota_app.command("supervise")
def ota_supervise(
    event: str = typer.Argument("tick", help="start (ExecStartPre), failure (OnFailure=), tick (timer), boot."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
) -> None:
    """The supervisor's decision for one event (run by the units; reverts a failed trial, commits a good one)."""
    typer.echo(_node(config, state_dir).supervise(event))


@ota_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ota_exec(
    ctx: typer.Context,
    state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_HELP),
    config: Path | None = typer.Option(None, "--config", help="TOML config file.", envvar="EDGECAM_CONFIG"),
) -> None:
    """Run ``edgecam ARGS…`` of the current release (its own venv), or of this install when there is none.

    The agent unit's ExecStart: the provisioned install picks the binary, so a release that cannot even start
    never decides how the next start happens."""
    import os
    import sys

    node = _node(config, state_dir)
    exe = node.paths.current / "agent" / "venv" / "bin" / "edgecam"
    argv = [str(exe), *ctx.args] if exe.is_file() else [sys.executable, "-m", "agent.cli", *ctx.args]
    os.execv(argv[0], argv)


def register(app: typer.Typer) -> None:
    app.add_typer(ota_app, name="ota")
