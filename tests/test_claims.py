"""Claim tokens, the CSR policy and the worker's decisions, without a broker (the broker side: test_enrol.py)."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from agent.contract import EnrolReply, EnrolRequest
from centre.enrol import EnrolWorker, RateLimit
from provisioning.ca import CaError, init_ca
from provisioning.claims import LOGIN_GRACE, ClaimRefused, ClaimStore, mosquitto_hash, parse_ttl, split_token
from provisioning.csr_policy import CsrRefused, check_csr


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca")
    return tmp_path / "ca"


def csr(cn: str | None = "cam-1", key=None, extra=(), extensions=()) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = ([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []) + list(extra)
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    for ext in extensions:
        b = b.add_extension(ext, critical=False)
    return b.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM)


def test_ttl_forms() -> None:
    assert parse_ttl("1h") == dt.timedelta(hours=1) and parse_ttl("72h") == dt.timedelta(days=3)
    assert parse_ttl("90s").total_seconds() == 90 and parse_ttl("7d").days == 7
    for bad in ("", "1", "h", "0h", "1w", "-1h", "1.5h"):
        with pytest.raises(CaError, match="--ttl"):
            parse_ttl(bad)


def test_store_keeps_hashes_only_and_the_token_is_single_use(ca: Path) -> None:
    store = ClaimStore(ca)
    token = store.mint("cam-1", dt.timedelta(hours=1))
    claim_id, secret = split_token(token)
    stored = "".join(p.read_text() for p in store.dir.iterdir())
    assert secret not in stored and token not in stored
    assert (store.dir.stat().st_mode & 0o777) == 0o700
    assert store.check(token, "cam-1", claim_id).node_id == "cam-1"
    store.burn(claim_id)
    with pytest.raises(ClaimRefused, match="already used"):
        store.check(token, "cam-1")
    with pytest.raises(ClaimRefused, match="already used"):
        store.burn(claim_id)  # O_EXCL: a second burn never succeeds


def test_store_refusals_name_the_reason(ca: Path) -> None:
    store = ClaimStore(ca)
    token = store.mint("cam-1", dt.timedelta(hours=1))
    claim_id, _secret = split_token(token)
    with pytest.raises(ClaimRefused, match="not a claim token"):
        store.check("hello", "cam-1")
    with pytest.raises(ClaimRefused, match="unknown claim token"):
        store.check(f"{claim_id}.{'A' * 43}", "cam-1")  # right claim, wrong secret
    with pytest.raises(ClaimRefused, match="belongs to claim"):
        store.check(token, "cam-1", "0" * 16)
    with pytest.raises(ClaimRefused, match="token is for node 'cam-1', not 'cam-2'"):
        store.check(token, "cam-2")
    with pytest.raises(CaError, match="reserved"):
        store.mint("enrol", dt.timedelta(hours=1))


def test_password_file_lists_claims_until_the_grace_after_expiry(ca: Path) -> None:
    store = ClaimStore(ca)
    claim_id, _ = split_token(store.mint("cam-1", dt.timedelta(hours=1)))
    rec = store.load(claim_id)
    assert rec is not None
    assert store.password_file().startswith(f"{claim_id}:$7$")
    assert claim_id in store.password_file(rec.expires + LOGIN_GRACE - dt.timedelta(seconds=1))
    assert store.password_file(rec.expires + LOGIN_GRACE) == ""


def test_mosquitto_hash_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    """Same salt and iterations give the same line as mosquitto_passwd (so the broker accepts our file)."""
    pw = tmp_path / "pw"
    res = subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "u", "s3cret"], capture_output=True)
    if res.returncode != 0:
        pytest.skip("mosquitto_passwd not available")
    _, _v, iterations, salt, _digest = pw.read_text().strip().split(":", 1)[1].split("$")
    ours = mosquitto_hash("s3cret", base64.b64decode(salt), int(iterations))
    assert f"u:{ours}" == pw.read_text().strip()


def test_csr_policy() -> None:
    assert check_csr(csr(), "cam-1")
    assert check_csr(csr(key=ec.generate_private_key(ec.SECP384R1())), "cam-1")
    assert check_csr(csr(key=rsa.generate_private_key(65537, 2048)), "cam-1")
    cases = [
        (csr(key=rsa.generate_private_key(65537, 1024)), "weak key: RSA 1024 bits"),
        (csr(key=ed25519.Ed25519PrivateKey.generate()), "keys are not accepted"),
        (csr("cam-2"), "asks for CN 'cam-2'"),
        (csr(None), "no CN"),
        (csr(extra=[x509.NameAttribute(NameOID.COMMON_NAME, "cam-2")]), "asks for CN 'cam-1, cam-2'"),
        (csr(extra=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]), "more than the node id"),
        (csr(extensions=[x509.SubjectAlternativeName([x509.DNSName("centre")])]), "requests extensions"),
        (b"x" * 20000, "at most"),
        (b"nonsense", "not a PEM certificate request"),
    ]
    for pem, reason in cases:
        with pytest.raises(CsrRefused, match=reason):
            check_csr(pem, "cam-1")


def test_csr_whose_signature_does_not_verify_is_refused() -> None:
    good = x509.load_pem_x509_csr(csr())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRefused, match="signature does not verify"):
        check_csr(tampered, "cam-1")


def test_worker_decisions(ca: Path) -> None:
    worker = EnrolWorker(ca, RateLimit(max_requests=2, window_s=3600))
    token = ClaimStore(ca).mint("cam-1", dt.timedelta(hours=1))
    claim_id, _ = split_token(token)
    topic = f"edgecam/v1/enrol/{claim_id}/csr"

    def ask(req: EnrolRequest | bytes, on: str = topic) -> tuple[str, EnrolReply] | None:
        return worker.handle(on, req if isinstance(req, bytes) else req.model_dump_json().encode())

    assert ask(b"{}", "edgecam/v1/cam-1/events") is None  # not a request topic
    reply_topic, reply = ask(b"not json")
    assert reply_topic == f"edgecam/v1/enrol/{claim_id}/cert" and "invalid request" in (reply.reason or "")
    _, reply = ask(EnrolRequest(request_id="a", node_id="cam-1", token=token, csr=csr().decode()))
    assert reply.status == "ok" and reply.request_id == "a" and "BEGIN CERTIFICATE" in (reply.chain or "")
    _, reply = ask(EnrolRequest(request_id="b", node_id="cam-1", token=token, csr=csr().decode()))
    assert reply.status == "refused" and reply.request_id == "b" and "rate limited" in (reply.reason or "")
    assert ask(EnrolRequest(request_id="c", node_id="cam-1", token=token, csr=csr().decode())) is None  # dropped


def test_renewal_needs_a_live_certificate_and_its_own_id(ca: Path) -> None:
    worker = EnrolWorker(ca)
    req = EnrolRequest(request_id="r", node_id="cam-9", csr=csr("cam-9").decode())
    _, reply = worker.handle("edgecam/v1/cam-9/cert/csr", req.model_dump_json().encode())
    assert reply.status == "refused" and "holds no live certificate" in (reply.reason or "")
    _, reply = worker.handle("edgecam/v1/cam-8/cert/csr", req.model_dump_json().encode())
    assert reply.status == "refused" and "renews only itself" in (reply.reason or "")


def test_broker_folders_are_registered_once_and_listed_while_they_exist(ca: Path, tmp_path: Path) -> None:
    store = ClaimStore(ca)
    assert store.broker_dirs() == []
    for d in (tmp_path / "b1", tmp_path / "b2", tmp_path / "b1"):
        d.mkdir(exist_ok=True)
        (d / "mosquitto.conf").write_text("")
        store.register_broker(d)
    assert store.broker_dirs() == [(tmp_path / "b1").resolve(), (tmp_path / "b2").resolve()]
    (tmp_path / "b2" / "mosquitto.conf").unlink()
    assert store.broker_dirs() == [(tmp_path / "b1").resolve()]
