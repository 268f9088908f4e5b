"""The node CA: what `edgecam ca init/issue` and `broker-config` write, checked with cryptography."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.cli import main
from provisioning.ca import CaError, CertificateAuthority, common_name, init_ca, issue_node, load_cert, new_key


def cli(*args: str) -> int:
    """The real CLI entry in-process (this typer exits through SystemExit even with standalone_mode off)."""
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def test_init_makes_ca_server_and_centre(tmp_path: Path) -> None:
    files = init_ca(tmp_path / "ca", hosts=["broker.city.example", "10.0.0.5"], centre="ops-centre")
    ca = load_cert(files.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    for key in (files.ca_key, files.server_key, files.centre_key):
        assert _mode(key) == 0o600, key

    server = load_cert(files.server_cert)
    assert _issued_by(server, ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "broker.city.example"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                              ipaddress.ip_address("10.0.0.5")}
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku

    centre = load_cert(files.centre_cert)
    assert common_name(centre) == "ops-centre" and _issued_by(centre, ca)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in centre.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert files.centres.read_text().split() == ["ops-centre"]


def test_init_refuses_to_overwrite_a_ca(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    first = (tmp_path / "ca" / "ca.crt").read_bytes()
    with pytest.raises(CaError, match="already exists"):
        init_ca(tmp_path / "ca")
    init_ca(tmp_path / "ca", force=True)
    assert (tmp_path / "ca" / "ca.crt").read_bytes() != first


def test_issue_node_cert(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    ident = issue_node("cam-0042", tmp_path / "ca", tmp_path / "out")
    cert, ca = load_cert(ident.cert), load_cert(tmp_path / "ca" / "ca.crt")
    assert common_name(cert) == "cam-0042"
    assert _issued_by(cert, ca)
    assert load_cert(ident.ca_cert) == ca
    assert _mode(ident.key) == 0o600
    life = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=365) < life < dt.timedelta(days=3 * 365)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(CaError, match="exists"):
        issue_node("cam-0042", tmp_path / "ca", tmp_path / "out")


BAD_NODE_IDS = ["a/b", "cam+1", "+", "cam#", "#", "", "centre", "fleet", "enrol", "centre\n", "cam-1\n", "-x",
                "x" * 65]


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    return init_ca(tmp_path_factory.mktemp("ids") / "ca").dir


@pytest.mark.parametrize("bad", BAD_NODE_IDS)
def test_ids_that_would_escape_their_subtree_are_refused(ca_dir: Path, tmp_path: Path, bad: str, capsys) -> None:
    with pytest.raises(CaError, match="node id: "):
        issue_node(bad, ca_dir, tmp_path / "out")
    assert cli("ca", "issue", "--ca", str(ca_dir), "--out", str(tmp_path / "out"), "--", bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "node id: " in err[0] and repr(bad) in err[0], err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("good", ["cam-0042", "n1", "A.b_c-9", "x" * 64, "Centre", "centre-2", "fleet1"])
def test_normal_node_ids_are_issued(ca_dir: Path, tmp_path: Path, good: str) -> None:
    assert cli("ca", "issue", good, "--ca", str(ca_dir), "--out", str(tmp_path)) == 0
    assert common_name(load_cert(tmp_path / f"{good}.crt")) == good


def test_another_ca_does_not_verify(tmp_path: Path) -> None:
    init_ca(tmp_path / "a")
    init_ca(tmp_path / "b")
    ident = issue_node("n1", tmp_path / "b", tmp_path / "out")
    assert not _issued_by(load_cert(ident.cert), load_cert(tmp_path / "a" / "ca.crt"))


def test_sign_csr_imposes_the_cn(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    ca = CertificateAuthority.load(tmp_path / "ca")
    key = new_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "centre")]))
           .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = ca.sign_csr(csr.public_bytes(Encoding.PEM), "cam-7")
    assert common_name(cert) == "cam-7"
    assert cert.public_key() == key.public_key()
    with pytest.raises(CaError):
        ca.sign_csr(b"not a csr", "cam-7")


def test_cli_ca_and_broker_config(tmp_path: Path, capsys) -> None:
    ca, out, broker = tmp_path / "ca", tmp_path / "node", tmp_path / "broker"
    assert cli("ca", "init", "--dir", str(ca), "--host", "mqtt.local") == 0
    assert cli("ca", "issue", "cam-1", "--ca", str(ca), "--out", str(out)) == 0
    assert cli("ca", "issue", "centre-2", "--centre", "--ca", str(ca), "--out", str(tmp_path / "c2")) == 0
    assert cli("broker-config", "--ca", str(ca), "--port", "18883", "--out", str(broker),
                 "--max-packet-size", "100000") == 0
    conf = (broker / "mosquitto.conf").read_text().splitlines()
    for line in ("listener 18883", "require_certificate true", "use_identity_as_username true",
                 "use_username_as_clientid true", "persistence true", "max_packet_size 100000",
                 "max_queued_messages 1000", "max_inflight_messages 20", "allow_anonymous false"):
        assert line in conf, line
    assert not any(line.startswith("listener") and "127.0.0.1" in line for line in conf)  # no loopback listener
    assert not (broker / "certs" / "ca.key").exists()
    assert _mode(broker / "certs" / "server.key") == 0o600
    acl = (broker / "edgecam.acl").read_text().splitlines()
    assert "pattern write edgecam/v1/%u/events" in acl
    assert "user centre" in acl and "user centre-2" in acl
    assert not any("%c" in line for line in acl)


def test_cli_user_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert cli("ca", "issue", "n1", "--ca", str(tmp_path / "nope"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ca init" in err[0]
    cli("ca", "init", "--dir", str(tmp_path / "ca"))
    capsys.readouterr()
    assert cli("ca", "issue", "a/b", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'a/b'" in err[0]


def test_revoke_lists_every_cert_of_that_cn_in_the_crl(tmp_path: Path) -> None:
    from provisioning.ca import revoke

    files = init_ca(tmp_path / "ca")
    empty = x509.load_pem_x509_crl(files.crl.read_bytes())
    assert len(empty) == 0 and empty.is_signature_valid(load_cert(files.ca_cert).public_key())
    first = load_cert(issue_node("n1", files.dir, tmp_path / "a").cert)
    second = load_cert(issue_node("n1", files.dir, tmp_path / "b").cert)
    keep = load_cert(issue_node("n2", files.dir, tmp_path / "a").cert)
    assert sorted(revoke("n1", files.dir)) == sorted([first.serial_number, second.serial_number])
    assert revoke("n1", files.dir) == []  # idempotent
    crl = x509.load_pem_x509_crl(files.crl.read_bytes())
    assert {r.serial_number for r in crl} == {first.serial_number, second.serial_number}
    assert crl.get_revoked_certificate_by_serial_number(keep.serial_number) is None
    with pytest.raises(CaError, match="no certificate"):
        revoke("never-issued", files.dir)


def test_a_node_cert_never_outlives_its_ca(tmp_path: Path) -> None:
    files = init_ca(tmp_path / "ca", days=100)
    cert = load_cert(issue_node("n1", files.dir, tmp_path / "o").cert)
    assert cert.not_valid_after_utc <= load_cert(files.ca_cert).not_valid_after_utc


def _csr(cn: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(new_key(), hashes.SHA256())
    return csr.public_bytes(Encoding.PEM)


def test_nodes_and_centres_share_one_namespace(tmp_path: Path, capsys) -> None:
    """A centre named like an issued node (revoked too) would give that node's certificate centre rights
    (the ACL grants them by username); a node named like a centre the same. Both are refused, both ways."""
    from provisioning.ca import CaFiles, revoke

    ca = init_ca(tmp_path / "ca", centre="hq").dir
    issue_node("cam-1", ca, tmp_path / "n")
    issue_node("cam-2", ca, tmp_path / "n")
    revoke("cam-2", ca)
    issue_node("hq-2", ca, tmp_path / "c", centre=True)
    with pytest.raises(CaError, match="centre name 'cam-1': a node certificate"):
        issue_node("cam-1", ca, tmp_path / "x", centre=True)
    with pytest.raises(CaError, match="node id 'hq-2': is a centre identity"):
        issue_node("hq-2", ca, tmp_path / "x")
    with pytest.raises(CaError, match="node id 'hq': is a centre identity"):
        CertificateAuthority.load(ca).sign_csr(_csr("x"), "hq")  # enrolment too
    capsys.readouterr()
    cases = [(("cam-1", "--centre"), "centre name 'cam-1': a node certificate"),
             (("cam-2", "--centre"), "centre name 'cam-2': a node certificate"),  # revoked, still a node's
             (("hq",), "node id 'hq': is a centre identity"),                      # the main centre
             (("hq-2",), "node id 'hq-2': is a centre identity"),                  # an extra centre
             (("centre",), "node id: 'centre' is reserved")]                       # the default centre name
    for args, needle in cases:
        assert cli("ca", "issue", *args, "--ca", str(ca), "--out", str(tmp_path / "x")) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
    assert not (tmp_path / "x").exists()
    assert CaFiles(ca).centres.read_text().split() == ["hq", "hq-2"]
    # re-issuing an identity under its own name and role still works
    assert cli("ca", "issue", "hq-2", "--centre", "--force", "--ca", str(ca), "--out", str(tmp_path / "c")) == 0
    assert cli("ca", "issue", "cam-1", "--force", "--ca", str(ca), "--out", str(tmp_path / "n")) == 0
    assert cli("ca", "issue", "centre", "--centre", "--ca", str(ca), "--out", str(tmp_path / "c")) == 0
    assert CaFiles(ca).centres.read_text().split() == ["hq", "hq-2", "centre"]
