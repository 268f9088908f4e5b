"""``edgecam centre …``: the reference centre's receiver, store summary and command client.

Mounted on the ``edgecam`` CLI through the ``edgecam.commands`` entry point; paho and sqlite are imported
inside the commands so ``edgecam --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from centre.limits import ThumbLimits

centre_app = typer.Typer(help="Reference centre: receive events and thumbnails, query the store, command nodes.",
                         no_args_is_help=True)


@centre_app.command("listen")
def centre_listen(
    mqtt: str = typer.Option(..., "--mqtt", help="mqtt://host:port or mqtts://host:port"),
    store: Path = typer.Option(..., "--store", help="Folder for centre.sqlite3 and thumbs/."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate for mqtts://."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Centre client certificate."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Centre client key."),
    group: str = typer.Option("centre", "--group", help="Shared-subscription group: receivers in it split the load. "
                               "'' for one receiver whose persistent session the broker queues while it is down."),
    until_idle: float | None = typer.Option(None, "--until-idle", min=0.1,
                                            help="Exit after this many seconds without a message."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-event lines, only the summary."),
    client_id: str | None = typer.Option(None, "--client-id", help="MQTT client id (default: random)."),
    session_expiry: int = typer.Option(
        0, "--session-expiry", min=0,
        help="Keep a persistent session this many seconds (the broker queues events while the receiver is "
             "down); needs --client-id."),
    thumb_max_bytes: int = typer.Option(ThumbLimits.max_bytes, "--thumb-max-bytes", min=1,
                                        help="Refuse a thumbnail larger than this (≥ nodes' thumbnails.max_bytes)."),
    pending_window: float = typer.Option(ThumbLimits.pending_window_s, "--pending-window", min=0.1,
                                         help="Seconds a thumbnail waits for its event before it is dropped."),
    pending_node_bytes: int = typer.Option(ThumbLimits.pending_node_bytes, "--pending-node-bytes", min=0,
                                           help="Bytes of thumbnails without their event one node may park."),
    pending_total_bytes: int = typer.Option(ThumbLimits.pending_total_bytes, "--pending-total-bytes", min=0,
                                            help="Bytes of thumbnails without their event all nodes may park."),
) -> None:
    """Receive events, thumbnails, state and replies from the fleet into a SQLite store.

    Thumbnails over the limits are refused and counted per node (``edgecam centre summary``)."""
    import logging

    from centre.mqtt import MqttOptions
    from centre.receiver import run_listen

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from agent.errors import EdgecamError

    if session_expiry and not client_id:
        raise EdgecamError("--session-expiry: needs a stable --client-id (a random one would strand the session)")
    opts = MqttOptions.from_cli(mqtt, tls_ca, tls_cert, tls_key, client_id)
    limits = ThumbLimits(max_bytes=thumb_max_bytes, pending_window_s=pending_window,
                         pending_node_bytes=pending_node_bytes, pending_total_bytes=pending_total_bytes)
    raise typer.Exit(run_listen(opts, store, group=group, until_idle=until_idle, quiet=quiet,
                                session_expiry=session_expiry, limits=limits))


@centre_app.command("summary")
def centre_summary(
    store: Path = typer.Option(..., "--store", help="Folder given to `edgecam centre listen --store`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """What a centre store holds: counts per node, label and type, tracks, thumbnails."""
    from centre.store import open_existing
    from centre.view import print_summary

    with open_existing(store) as st:
        summary = st.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)


@centre_app.command("command")
def centre_command(
    node_id: str = typer.Argument(..., help="Target node id."),
    op: str = typer.Argument(..., help="ping, snapshot, get_config, set_log_level, restart"),
    args: str = typer.Option("{}", "--args", help="JSON object of arguments."),
    mqtt: str = typer.Option(..., "--mqtt", help="mqtt://host:port or mqtts://host:port"),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate for mqtts://."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Centre client certificate."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Centre client key."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to wait for the reply."),
    client_id: str | None = typer.Option(None, "--client-id", help="MQTT client id (default: random)."),
    annotate: bool = typer.Option(False, "--annotate", help="snapshot: detections, zones and masks drawn "
                                  "(args.annotate = true); saves the picture (see --out)."),
    out: Path | None = typer.Option(None, "--out", help="snapshot: save the picture here "
                                    "(default with --annotate: NODE-snapshot-ID.jpg in this folder)."),
) -> None:
    """Send a command to a node (MQTT 5 request/response) and print its reply; non-zero exit on error."""
    from agent.atomic import write_atomic
    from agent.errors import EdgecamError
    from centre.command import exchange, parse_args
    from centre.mqtt import MqttOptions

    opts = MqttOptions.from_cli(mqtt, tls_ca, tls_cert, tls_key, client_id)
    parsed = parse_args(args)
    if (annotate or out) and op != "snapshot":
        raise EdgecamError(f"--annotate and --out go with the snapshot op, not {op}")
    if annotate:
        parsed["annotate"] = True
    got = exchange(opts, node_id, op, parsed, timeout=timeout, picture=bool(annotate or out))
    res = got.reply
    typer.echo(res.model_dump_json(exclude_none=True))
    if annotate and res.status == "ok" and not (isinstance(res.result, dict) and res.result.get("annotated")):
        # an agent from before annotated snapshots ignores the argument and sends the plain picture
        typer.echo(f"{node_id}: the node did not annotate the picture (its agent predates snapshot:annotate)",
                   err=True)
    if got.picture is not None:
        path = out or Path(f"{node_id}-snapshot-{str(res.result['topic']).rsplit('/', 1)[-1]}.jpg")
        write_atomic(path, got.picture)
        typer.echo(f"saved {path} ({len(got.picture)} bytes)", err=True)
    raise typer.Exit(0 if res.status == "ok" else 1)


@centre_app.command("enrol")
def centre_enrol(
    mqtt: str = typer.Option(..., "--mqtt", help="mqtts://host:port of the mTLS listener."),
    ca: Path = typer.Option(..., "--ca", help="CA folder: signs the certificates, holds the claim store."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate for mqtts://."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Centre client certificate (its own identity: "
                                         "the broker allows one connection per CN)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Centre client key."),
    broker_dir: Path | None = typer.Option(
        None, "--broker-dir", help="The `broker-config --out` folder on this host: keep its enrol.passwd in step "
                                   "with the claim store and SIGHUP Mosquitto (via mosquitto.pid) on changes. "
                                   "Default: every folder `broker-config --enrol-port` wrote from --ca."),
    rate: int = typer.Option(5, "--rate", min=1, help="Requests allowed per claim (or node) per --rate-window."),
    rate_window: float = typer.Option(60.0, "--rate-window", min=0.1, help="Seconds."),
    days: int | None = typer.Option(None, "--days", min=1, help="Validity of issued certificates (default 825)."),
) -> None:
    """Run the enrolment worker: claim CSRs and renewals in, certificates (or refusals with reasons) out."""
    import logging

    from centre.enrol import RateLimit, run_worker
    from centre.mqtt import MqttOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = MqttOptions.from_cli(mqtt, tls_ca, tls_cert, tls_key)
    raise typer.Exit(run_worker(opts, ca, broker_dir, RateLimit(rate, rate_window), days=days))


# ---------------------------------------------------------------- release announce / status (the centre's side)


def release_announce(
    repo: Path = typer.Argument(..., help="Repository folder."),
    channel: str = typer.Option(..., "--channel", help="Channel name."),
    mqtt: str = typer.Option(..., "--mqtt", help="mqtt://host:port or mqtts://host:port (the centre's broker)."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate for mqtts://."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="The centre's certificate."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="The centre's key."),
) -> None:
    """Publish the channel's newest release on retained edgecam/v1/fleet/releases/CHANNEL (a nudge, not trust)."""
    from centre.mqtt import MqttOptions
    from centre.releases import announce
    from provisioning.release_cli import open_repo

    opts = MqttOptions.from_cli(mqtt, tls_ca, tls_cert, tls_key)
    msg = announce(open_repo(repo, None), channel, opts)  # reads metadata only, signs nothing
    typer.echo(f"announced {channel}: release {msg.release} at {msg.percent}% (timestamp v{msg.timestamp_version})")


def release_status(
    store: Path = typer.Option(..., "--store", help="The centre store (edgecam centre listen --store)."),
) -> None:
    """What each node reports on ota/status, with the versions in its state (JSON)."""
    import json

    from centre.releases import fleet_status

    typer.echo(json.dumps(fleet_status(store), indent=1))


def register(app: typer.Typer) -> None:
    """Mount ``edgecam centre`` on the root app, and the centre's commands of ``edgecam release``."""
    from provisioning.release_cli import release_app

    app.add_typer(centre_app, name="centre")
    release_app.command("announce")(release_announce)
    release_app.command("status")(release_status)
