"""Provisioning subcommands mounted on the ``edgecam`` CLI (``ca``, ``broker-config``, ``centre``, …).

Imports of cryptography, paho and sqlite happen inside the commands so ``edgecam --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

ca_app = typer.Typer(help="The node CA: broker, centre and node certificates (EC P-256).", no_args_is_help=True)
centre_app = typer.Typer(help="Reference centre: receive events and thumbnails, query the store, command nodes.",
                         no_args_is_help=True)


@ca_app.command("init")
def ca_init(
    dir: Path = typer.Option(..., "--dir", help="Folder for the CA (created; holds ca.key: keep it offline)."),
    host: list[str] = typer.Option([], "--host", help="Extra broker host name or IP for the server cert SANs."),
    centre: str = typer.Option("centre", "--centre", help="CN of the centre's client identity."),
    org: str = typer.Option("edgecam", "--org", help="Organisation name in the certificates."),
    days: int = typer.Option(3650, "--days", min=1, help="CA validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace an existing CA (every issued cert stops working)."),
) -> None:
    """Create the node CA, the broker's server certificate and the centre's client identity."""
    from provisioning.ca import init_ca

    files = init_ca(dir, host, centre=centre, org=org, days=days, force=force)
    for p in (files.ca_cert, files.ca_key, files.server_cert, files.server_key, files.centre_cert, files.centre_key):
        typer.echo(f"wrote {p}")


@ca_app.command("issue")
def ca_issue(
    node_id: str = typer.Argument(..., help="Node id: becomes the certificate CN, MQTT username and client id."),
    ca: Path = typer.Option(..., "--ca", help="CA folder made by `edgecam ca init`."),
    out: Path = typer.Option(..., "--out", help="Folder for NODE_ID.key, NODE_ID.crt and ca.crt."),
    days: int = typer.Option(825, "--days", min=1, help="Certificate validity in days."),
    centre: bool = typer.Option(False, "--centre", help="Issue an extra centre identity instead of a node."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing key in --out."),
) -> None:
    """Issue a node key and certificate (CN = node id), or with --centre another centre identity."""
    from provisioning.ca import issue_node

    ident = issue_node(node_id, ca, out, days=days, force=force, centre=centre)
    for p in (ident.key, ident.cert, ident.ca_cert):
        typer.echo(f"wrote {p}")
    if centre:
        typer.echo("regenerate the broker config (`edgecam broker-config`) so the ACL grants it the centre's rights")


@ca_app.command("revoke")
def ca_revoke(
    name: str = typer.Argument(..., help="Node id (or centre name) whose certificates to revoke."),
    ca: Path = typer.Option(..., "--ca", help="CA folder made by `edgecam ca init`."),
) -> None:
    """Revoke every certificate issued to NAME and rewrite CA/crl.pem (then redeploy it to the broker)."""
    from provisioning.ca import CaFiles, revoke

    serials = revoke(name, ca)
    for s in serials:
        typer.echo(f"revoked {name} serial {s:x}")
    if not serials:
        typer.echo(f"{name}: already revoked")
    typer.echo(f"wrote {CaFiles(ca).crl}; rerun `edgecam broker-config` (or copy it to the broker's certs/crl.pem) "
               "and send Mosquitto SIGHUP")


def broker_config(
    ca: Path = typer.Option(..., "--ca", help="CA folder made by `edgecam ca init`."),
    port: int = typer.Option(8883, "--port", help="mTLS listener port."),
    out: Path = typer.Option(..., "--out", help="Folder for mosquitto.conf, edgecam.acl and certs/."),
    bind: str | None = typer.Option(None, "--bind", help="Listen address (default: all interfaces)."),
    insecure_loopback_port: int | None = typer.Option(
        None, "--insecure-loopback-port", help="Also a plain, read-only, anonymous listener on 127.0.0.1:PORT."),
    persistence_dir: Path | None = typer.Option(None, "--persistence-dir", help="Default: OUT/data."),
    max_packet_size: int = typer.Option(256 * 1024, "--max-packet-size", min=20),
    max_queued_messages: int = typer.Option(1000, "--max-queued-messages", min=0),
    max_inflight_messages: int = typer.Option(20, "--max-inflight-messages", min=0),
    clientid_from_cert: bool = typer.Option(True, "--clientid-from-cert/--any-clientid",
                                            help="Force the MQTT client id to the certificate CN."),
    run_as: str | None = typer.Option(None, "--run-as", help="`user` line: the account Mosquitto drops to."),
) -> None:
    """Write a Mosquitto 2.0 config for mTLS on PORT with the edgecam ACL (nodes confined to their subtree)."""
    from provisioning.broker_config import BrokerLimits, write_broker_config

    files = write_broker_config(
        ca, port, out, bind=bind, insecure_loopback_port=insecure_loopback_port, persistence_dir=persistence_dir,
        limits=BrokerLimits(max_packet_size=max_packet_size, max_queued_messages=max_queued_messages,
                            max_inflight_messages=max_inflight_messages),
        clientid_from_cert=clientid_from_cert, run_as=run_as,
    )
    for p in (files.conf, files.acl, files.loopback_acl, files.cafile, files.certfile, files.keyfile):
        if p is not None:
            typer.echo(f"wrote {p}")
    typer.echo(f"run: mosquitto -c {files.conf}")


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
) -> None:
    """Receive events, thumbnails, state and replies from the fleet into a SQLite store."""
    import logging

    from provisioning.centre.mqtt import MqttOptions
    from provisioning.centre.receiver import run_listen

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from agent.errors import EdgecamError

    if session_expiry and not client_id:
        raise EdgecamError("--session-expiry: needs a stable --client-id (a random one would strand the session)")
    opts = MqttOptions.from_cli(mqtt, tls_ca, tls_cert, tls_key, client_id)
    raise typer.Exit(run_listen(opts, store, group=group, until_idle=until_idle, quiet=quiet,
                                session_expiry=session_expiry))


@centre_app.command("summary")
def centre_summary(
    store: Path = typer.Option(..., "--store", help="Folder given to `edgecam centre listen --store`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """What a centre store holds: counts per node, label and type, tracks, thumbnails."""
    from provisioning.centre.store import open_existing
    from provisioning.centre.view import print_summary

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
) -> None:
    """Send a command to a node (MQTT 5 request/response) and print its reply; non-zero exit on error."""
    from provisioning.centre.command import parse_args, send_command
    from provisioning.centre.mqtt import MqttOptions

    opts = MqttOptions.from_cli(mqtt, tls_ca, tls_cert, tls_key, client_id)
    res = send_command(opts, node_id, op, parse_args(args), timeout=timeout)
    typer.echo(res.model_dump_json(exclude_none=True))
    raise typer.Exit(0 if res.status == "ok" else 1)


def register(app: typer.Typer) -> None:
    """Mount the provisioning command groups on the root app."""
    app.add_typer(ca_app, name="ca")
    app.command("broker-config")(broker_config)
    app.add_typer(centre_app, name="centre")
