"""``edgecam release …``: the maintainer's side of OTA (a TUF repository, docs/OTA.md).

Keys live in ``--keys`` (default ``REPO.keys`` beside REPO, never inside what is served). Commands that need
only online keys (``rollout``, ``refresh``) never read the offline folder, so they can run where the offline
keys are not.
"""

from __future__ import annotations

from pathlib import Path

import typer

release_app = typer.Typer(help="OTA releases: a signed TUF repository of agent, model and config.",
                          no_args_is_help=True)

KEYS_HELP = "Signing keys folder (default: REPO.keys beside REPO; keep its offline/ part offline)."


def open_repo(repo: Path, keys: Path | None, load: bool = True):
    from provisioning.release.keys import KeyStore, default_keys_dir
    from provisioning.release.repo import ReleaseRepo

    r = ReleaseRepo(repo, KeyStore(keys or default_keys_dir(repo)))
    return r.load() if load else r


@release_app.command("init")
def release_init(
    repo: Path = typer.Argument(..., help="Repository folder (metadata/ and targets/ are created)."),
    threshold: int = typer.Option(1, "--threshold", min=1, help="Root keys needed to sign a new root."),
    root_keys: int | None = typer.Option(None, "--root-keys", min=1, help="Root keys to make (default: threshold)."),
    keys: Path | None = typer.Option(None, "--keys", help=KEYS_HELP),
) -> None:
    """Create a TUF repository: offline root (threshold) and targets keys, online snapshot/timestamp/rollout."""
    r = open_repo(repo, keys, load=False)
    r.init(threshold=threshold, root_keys=root_keys)
    typer.echo(f"keys in {r.keys.dir} (move {r.keys.dir / 'offline'} offline)")
    typer.echo(f"trusted root for nodes: {r.meta_dir / '1.root.json'}")


@release_app.command("bundle")
def release_bundle(
    out: Path = typer.Argument(..., help="Empty folder to fill with the bundle's wheels (for `release add --agent`)."),
    source: Path | None = typer.Option(None, "--source", help="Project tree to build the wheel from (default: .)."),
    wheel: Path | None = typer.Option(None, "--wheel", help="An already built edgecam-*.whl instead of --source."),
    extra: list[str] = typer.Option([], "--extra", help="Node extra to include, e.g. systemd (repeat)."),
    platform: list[str] = typer.Option([], "--platform", help="pip platform tag of the nodes, e.g. "
                                       "manylinux_2_28_aarch64 (repeat; default: this machine's)."),
    python_version: str | None = typer.Option(None, "--python-version", help="The nodes' Python, e.g. 3.11."),
    find_links: list[Path] = typer.Option([], "--find-links", help="Folder of wheels to take from (repeat)."),
    no_index: bool = typer.Option(False, "--no-index", help="Offline: wheels from --find-links only."),
) -> None:
    """Build an agent bundle: edgecam's wheel and every dependency as a binary wheel for the nodes' platform."""
    from provisioning.release.bundle import BundleSpec, build_agent_bundle

    spec = BundleSpec(source=source if wheel else (source or Path(".")), wheel=wheel, extras=tuple(extra),
                      platforms=tuple(platform), python_version=python_version, find_links=tuple(find_links),
                      no_index=no_index)
    main = build_agent_bundle(out, spec)
    n = len(list(out.glob("*.whl")))
    typer.echo(f"{out}: {main.name} and {n - 1} dependency wheels (release add --agent {out})")


@release_app.command("add")
def release_add(
    repo: Path = typer.Argument(..., help="Repository folder."),
    channel: str = typer.Option(..., "--channel", help="Channel name (stable, beta, …)."),
    version: int = typer.Option(..., "--version", min=1, help="Release counter; higher than the channel's last."),
    agent: Path | None = typer.Option(None, "--agent", help="Agent bundle: folder (or tar) of wheels."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (manifest.json, .tflite, labels)."),
    config: Path | None = typer.Option(None, "--config", help="Node config TOML layer."),
    device_type: list[str] = typer.Option([], "--device-type", help="Device type this release is for (repeat)."),
    expires: float | None = typer.Option(None, "--expires", help="Days the targets metadata stays valid."),
    min_agent_version: str | None = typer.Option(None, "--min-agent-version", help="Agent version needed."),
    percent: int = typer.Option(100, "--percent", min=0, max=100, help="Initial rollout percent."),
    keys: Path | None = typer.Option(None, "--keys", help=KEYS_HELP),
) -> None:
    """Sign a release of a channel (offline targets key): its parts pinned together by hash."""
    from provisioning.release.bundle import pack_agent, pack_config, pack_model

    parts = {}
    if agent is not None:
        parts["agent"] = pack_agent(agent, version)
    if model is not None:
        parts["model"] = pack_model(model, version)
    if config is not None:
        parts["config"] = pack_config(config, version)
    r = open_repo(repo, keys)
    rel = r.add_release(channel, version, parts, device_types=device_type, min_agent_version=min_agent_version,
                        targets_expires_days=expires, percent=percent)
    for kind, ref in rel.parts.items():
        typer.echo(f"{channel} r{version} {kind} {ref.version} {ref.path} sha256:{ref.sha256[:16]}…")
    typer.echo(f"{channel}: release {version} at {percent:g}%")


@release_app.command("rollout")
def release_rollout(
    repo: Path = typer.Argument(..., help="Repository folder."),
    channel: str = typer.Option(..., "--channel", help="Channel name."),
    percent: int = typer.Option(..., "--percent", min=0, max=100, help="Share of nodes that take the release."),
    keys: Path | None = typer.Option(None, "--keys", help=KEYS_HELP),
) -> None:
    """Set the share of nodes taking the channel's release (online rollout key; raising never removes nodes)."""
    info = open_repo(repo, keys).rollout(channel, percent)
    typer.echo(f"{channel}: release {info.release} at {info.percent:g}%")


@release_app.command("refresh")
def release_refresh(
    repo: Path = typer.Argument(..., help="Repository folder."),
    keys: Path | None = typer.Option(None, "--keys", help=KEYS_HELP),
) -> None:
    """New snapshot and timestamp (online keys): run from a timer well inside the timestamp's expiry."""
    r = open_repo(repo, keys)
    r.refresh()
    typer.echo(f"timestamp version {r.md['timestamp'].signed.version}, expires {r.md['timestamp'].signed.expires}")


@release_app.command("rotate")
def release_rotate(
    repo: Path = typer.Argument(..., help="Repository folder."),
    role: str = typer.Option(..., "--role", help="root, targets, snapshot, timestamp or rollout."),
    keys: Path | None = typer.Option(None, "--keys", help=KEYS_HELP),
) -> None:
    """Replace a role's key; the old one is retired (metadata it signs is refused from then on)."""
    old, new = open_repo(repo, keys).rotate(role)
    typer.echo(f"{role}: key {old[:16]}… retired, {new[:16]}… in use")


@release_app.command("serve")
def release_serve(
    repo: Path = typer.Argument(..., help="Repository folder."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Listen address."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="Require client certificates signed by this CA."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Server certificate (HTTPS)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Server key."),
) -> None:
    """Serve REPO over HTTP(S) with byte ranges (tests, small sites; production: any static HTTPS server)."""
    from agent.errors import EdgecamError
    from provisioning.release.server import RepoServer

    if (tls_cert is None) != (tls_key is None) or (tls_ca is not None and tls_cert is None):
        raise EdgecamError("--tls-cert and --tls-key go together (and --tls-ca needs them)")
    if not (repo / "metadata").is_dir():
        raise EdgecamError(f"{repo}: not a release repository (no metadata/)")
    server = RepoServer(repo, host, port, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca)
    typer.echo(f"serving {repo} on {server.url}", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")
