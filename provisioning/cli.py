"""Provisioning subcommands mounted on the ``edgecam`` CLI (``ca``, ``broker-config``, ``provision``).

Imports of cryptography, paho and sqlite happen inside the commands so ``edgecam --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

ca_app = typer.Typer(help="The node CA: broker, centre and node certificates (EC P-256).", no_args_is_help=True)


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


@ca_app.command("sign")
def ca_sign(
    csr: Path = typer.Argument(..., help="The CSR `edgecam provision csr` wrote on the node."),
    ca: Path = typer.Option(..., "--ca", help="CA folder made by `edgecam ca init`."),
    node_id: str = typer.Option(..., "--node-id", help="The node id the certificate is for (the CSR must ask for it)."),
    out: Path = typer.Option(..., "--out", help="Where to write the certificate (PEM)."),
    days: int = typer.Option(825, "--days", min=1, help="Certificate validity in days."),
) -> None:
    """Offline enrolment, step 2: check a node's CSR (key, CN = NODE_ID only) and sign it."""
    from provisioning.ca import CaError, CertificateAuthority, write_cert
    from provisioning.csr_policy import check_csr

    try:
        pem = csr.read_bytes()
    except OSError as exc:
        raise CaError(f"{csr}: cannot read ({exc.strerror})") from None
    check_csr(pem, node_id)
    cert = CertificateAuthority.load(ca).sign_csr(pem, node_id, days)
    write_cert(out, cert)
    typer.echo(f"signed {node_id} serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    typer.echo(str(out))


def broker_config(
    ca: Path = typer.Option(..., "--ca", help="CA folder made by `edgecam ca init`."),
    port: int = typer.Option(8883, "--port", help="mTLS listener port."),
    enrol_port: int | None = typer.Option(
        None, "--enrol-port", help="Also a TLS enrolment listener (no client certificate, claim credentials, "
                                   "enrolment topics only); `edgecam centre enrol --broker-dir OUT` keeps it current."),
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
        clientid_from_cert=clientid_from_cert, run_as=run_as, enrol_port=enrol_port,
    )
    written = (files.conf, files.acl, files.enrol_acl, files.enrol_passwd, files.loopback_acl)
    for p in (*written, files.cafile, files.certfile, files.keyfile):
        if p is not None:
            typer.echo(f"wrote {p}")
    typer.echo(f"run: mosquitto -c {files.conf}")


def register(app: typer.Typer) -> None:
    """Mount the provisioning command groups on the root app."""
    from provisioning.card_cli import add_card_commands
    from provisioning.provision_cli import provision_app

    add_card_commands(provision_app)
    app.add_typer(ca_app, name="ca")
    app.add_typer(provision_app, name="provision")
    app.command("broker-config")(broker_config)
