"""The agent's own renewal logic (``agent.transport.cert_renewal``) with a real CA and worker, no broker: when it
asks, what it ignores, what it installs (the MQTT round trip through a real broker is in test_enrol.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.config import MqttConfig
from agent.contract import EnrolReply, Topics
from agent.errors import ConfigError
from agent.identity import IdentityPaths
from agent.node_identity import install, load_pinned_ca, make_csr
from agent.transport.cert_renewal import CertRenewal, finish_install
from agent.transport.mqtt_client import tls_context
from centre.enrol import EnrolWorker
from provisioning.ca import CaFiles, CertificateAuthority, init_ca, load_cert


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(tmp_path: Path):
    """A CA, and node cam-1 enrolled offline into tmp/state (a 10-day certificate)."""
    init_ca(tmp_path / "ca")
    paths = IdentityPaths(tmp_path / "state")
    cert = CertificateAuthority.load(tmp_path / "ca").sign_csr(make_csr(paths, "cam-1"), "cam-1", days=10)
    install(paths, cert.public_bytes(Encoding.PEM), load_pinned_ca(CaFiles(tmp_path / "ca").ca_cert), "cam-1")
    return tmp_path / "ca", paths


def renewal(paths: IdentityPaths, days: int, sent: list, clock: Clock, **tls) -> CertRenewal:
    files = tls or {"tls_ca": paths.ca_cert, "tls_cert": paths.cert, "tls_key": paths.key}
    cfg = MqttConfig(url="mqtts://broker:8883", renew_before_days=days, **files)
    return CertRenewal(cfg, paths, Topics("cam-1"), lambda t, p: sent.append((t, p)), clock)


def test_asks_only_when_due_and_at_most_once_per_retry_period(node) -> None:
    _ca, paths = node
    sent: list = []
    clock = Clock()
    renewal(paths, 5, sent, clock).check()
    assert sent == []  # 10 days left, renew at 5
    r = renewal(paths, 30, sent, clock)
    r.check()
    r.check()
    assert [t for t, _ in sent] == ["edgecam/v1/cam-1/cert/csr"]
    clock.now += 3600
    r.check()
    assert len(sent) == 2


def test_never_renews_files_an_operator_named_or_when_off(node, tmp_path: Path) -> None:
    _ca, paths = node
    sent: list = []
    renewal(paths, 0, sent, Clock()).check()
    renewal(paths, 30, sent, Clock(), tls_ca=paths.ca_cert, tls_cert=tmp_path / "mine.crt",
            tls_key=tmp_path / "mine.key").check()
    assert sent == []


def test_installs_the_answer_to_its_own_request_only(node, caplog) -> None:
    ca_dir, paths = node
    sent: list = []
    r = renewal(paths, 30, sent, Clock())
    r.check()
    old = load_cert(paths.cert).serial_number
    topic, payload = sent[0]
    r.handle(EnrolReply(request_id="someone-else", status="ok", cert="x").model_dump_json().encode())
    r.handle(b"not json")
    assert load_cert(paths.cert).serial_number == old and r.renewed == 0
    _reply_topic, reply = EnrolWorker(ca_dir).handle(topic, payload)
    assert reply.status == "ok"
    with caplog.at_level(logging.INFO):
        r.handle(reply.model_dump_json().encode())
    assert r.renewed == 1 and load_cert(paths.cert).serial_number != old
    assert "certificate renewal: installed" in caplog.text
    r.handle(reply.model_dump_json().encode())  # a duplicate delivery (QoS 1) changes nothing
    assert r.renewed == 1


def test_a_refusal_is_logged_and_nothing_changes(node, caplog) -> None:
    _ca, paths = node
    sent: list = []
    r = renewal(paths, 30, sent, Clock())
    r.check()
    req_id = sent[0][1].decode().split('"request_id":"')[1].split('"')[0]
    old = paths.cert.read_bytes()
    with caplog.at_level(logging.WARNING):
        r.handle(EnrolReply(request_id=req_id, status="refused", reason="node 'cam-1' is revoked").model_dump_json()
                 .encode())
    assert "certificate renewal refused by the centre: node 'cam-1' is revoked" in caplog.text
    assert paths.cert.read_bytes() == old and r.renewed == 0


def test_an_install_cut_off_before_the_key_rename_is_finished_before_connecting(node) -> None:
    """Power lost after node.crt was replaced but before pending.key became node.key: the next start repairs it
    (else the handshake fails on a certificate that does not match the key)."""
    ca_dir, paths = node
    csr = make_csr(paths, "cam-1")
    cert = CertificateAuthority.load(ca_dir).sign_csr(csr, "cam-1")
    paths.cert.write_bytes(cert.public_bytes(Encoding.PEM))  # the crash: the key was not renamed yet
    cfg = MqttConfig(url="mqtts://broker:8883", tls_ca=paths.ca_cert, tls_cert=paths.cert, tls_key=paths.key)
    with pytest.raises(ConfigError):
        tls_context(cfg)
    finish_install(cfg, paths)
    assert tls_context(cfg) is not None and not (paths.dir / "pending.key").exists()
    finish_install(cfg, paths)  # nothing left to do: no change
