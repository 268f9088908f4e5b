"""``edgecam provision …``: claim tokens (centre side), and the node's enrolment, offline CSR, install and renewal.

Every command ends in one line: the token, the CSR path, or what was installed; failures are one
``edgecam: error:`` line and a non-zero exit (``EdgecamError``).
"""

from __future__ import annotations

from pathlib import Path

import typer

provision_app = typer.Typer(help="Node provisioning: flashed cards, first boot, enrolment (claim tokens, "
                                 "online/offline), renewal.", no_args_is_help=True)

STATE_DIR_HELP = "The node's state dir; the identity goes to STATE_DIR/identity/."


@provision_app.command("token")
def provision_token(
    node_id: str = typer.Argument(..., help="The node the token may enrol (its certificate CN)."),
    ca: Path = typer.Option(..., "--ca", help="CA folder; the token's hash is kept in CA/claims/."),
    ttl: str = typer.Option("72h", "--ttl", help="Lifetime: 90s, 30m, 1h, 72h, 7d."),
) -> None:
    """Mint a single-use claim token for NODE_ID (printed on the last line; only its hash is kept)."""
    from provisioning.ca import CertificateAuthority, check_namespace
    from provisioning.claims import ClaimStore, parse_ttl

    CertificateAuthority.load(ca)
    check_namespace(ca, node_id, centre=False)
    life = parse_ttl(ttl)
    token = ClaimStore(ca).mint(node_id, life)
    typer.echo(f"claim token for {node_id}, single use, valid {ttl} (shown once, keep it secret):")
    typer.echo(token)


def _print_installed(paths, cert) -> None:
    from agent.node_identity import common_name

    typer.echo(f"installed {paths.cert} (CN {common_name(cert)}, serial {cert.serial_number:x}, "
               f"valid until {cert.not_valid_after_utc:%Y-%m-%d}), key {paths.key}, CA {paths.ca_cert}")


@provision_app.command("enrol")
def provision_enrol(
    claim: str = typer.Option(..., "--claim", help="Claim token from `edgecam provision token`, or @FILE to read it "
                              "from a file (keeps it out of `ps`)."),
    mqtt: str = typer.Option(..., "--mqtt", help="mqtts://host:ENROL_PORT (the broker's enrolment listener)."),
    ca_cert: Path = typer.Option(..., "--ca-cert", help="The pinned CA certificate (broker and node certificate)."),
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
    node_id: str = typer.Option(..., "--node-id", help="This node's id (must be the token's)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds to wait for the certificate."),
) -> None:
    """Enrol online: key made here, CSR sent with the claim token, certificate verified and installed."""
    from agent.identity import IdentityPaths
    from agent.node_identity import install, load_pinned_ca, make_csr
    from provisioning.claims import read_claim, split_token
    from provisioning.enrol_client import Login, enrol_topics, exchange, new_request

    pinned = load_pinned_ca(ca_cert)
    claim = read_claim(claim)
    claim_id, secret = split_token(claim)
    paths = IdentityPaths(state_dir)
    csr = make_csr(paths, node_id)
    login = Login(mqtt, ca_cert, username=claim_id, password=secret)
    reply = exchange(login, *enrol_topics(claim_id), new_request(node_id, csr, claim.strip()), timeout)
    _print_installed(paths, install(paths, (reply.cert or "").encode(), pinned, node_id))


@provision_app.command("csr")
def provision_csr(
    node_id: str = typer.Option(..., "--node-id", help="This node's id (the certificate CN to ask for)."),
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
) -> None:
    """Offline enrolment, step 1: make the key here and write a CSR (its path on the last line)."""
    from agent.identity import IdentityPaths
    from agent.node_identity import csr_path, make_csr, pending_key_path

    paths = IdentityPaths(state_dir)
    make_csr(paths, node_id)
    typer.echo(f"key {pending_key_path(paths)} (0600, stays here); sign the CSR with "
               f"`edgecam ca sign CSR --ca CA --node-id {node_id} --out CERT`, then `edgecam provision install-cert`")
    typer.echo(str(csr_path(paths)))


@provision_app.command("install-cert")
def provision_install_cert(
    cert: Path = typer.Argument(..., help="The certificate `edgecam ca sign` wrote."),
    ca_cert: Path = typer.Option(..., "--ca-cert", help="The pinned CA certificate."),
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
) -> None:
    """Offline enrolment, step 3: verify the certificate (CA, CN, key) and install it atomically."""
    from agent.identity import IdentityPaths
    from agent.node_identity import IdentityError, install, load_pinned_ca

    pinned = load_pinned_ca(ca_cert)
    try:
        pem = cert.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{cert}: cannot read ({exc.strerror})") from None
    paths = IdentityPaths(state_dir)
    _print_installed(paths, install(paths, pem, pinned))


@provision_app.command("renew")
def provision_renew(
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
    mqtt: str = typer.Option(..., "--mqtt", help="mqtts://host:PORT (the normal mTLS listener)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds to wait for the certificate."),
) -> None:
    """Renew this node's certificate over its own mTLS identity: new key here, old one replaced on success.

    Stop the agent first: the broker allows one connection per identity."""
    from agent.identity import IdentityPaths
    from agent.node_identity import (
        finish_interrupted_install,
        install,
        installed_node_id,
        load_pinned_ca,
        make_csr,
    )
    from provisioning.enrol_client import Login, exchange, new_request, renew_topics

    paths = IdentityPaths(state_dir)
    finish_interrupted_install(paths)
    node_id = installed_node_id(paths)
    pinned = load_pinned_ca(paths.ca_cert)
    csr = make_csr(paths, node_id)
    login = Login(mqtt, paths.ca_cert, cert=paths.cert, key=paths.key, client_id=node_id)
    reply = exchange(login, *renew_topics(node_id), new_request(node_id, csr), timeout)
    _print_installed(paths, install(paths, (reply.cert or "").encode(), pinned, node_id))
