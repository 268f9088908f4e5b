"""Enrolment (online and offline), renewal and revocation against a real Mosquitto with the generated config.

One broker for the module, made by ``broker-config`` with ``--enrol-port``: the mTLS listener with the
generated ACL, and the enrolment listener (server certificate, claim credentials from ``enrol.passwd``,
``enrol.acl``). One enrolment worker (``edgecam centre enrol`` as a subprocess, main centre identity, no
``--broker-dir``: it finds the folder broker-config registered in the CA) keeps that password file current
and answers. Nodes enrol with the real ``edgecam provision …`` commands.
Observers use a second centre identity (the broker allows one connection per CN).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from agent.contract import EnrolReply, EnrolRequest
from agent.identity import IdentityPaths
from provisioning.broker_config import write_broker_config
from provisioning.ca import CaFiles, Identity, common_name, issue_node, load_cert
from provisioning.claims import ClaimStore
from tests.broker import Broker, free_port, wait_port
from tests.processes import Processes
from tests.tls import Client, Pki, wait

NOT_AUTHORIZED = 0x87


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *map(str, args)]


def edgecam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout)


def last_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


@dataclass
class Env:
    root: Path
    pki: Pki
    broker: Broker
    enrol_port: int
    conf_dir: Path
    worker_log: Path
    observer: Identity

    @property
    def ca(self) -> Path:
        return self.pki.ca_dir

    @property
    def ca_cert(self) -> Path:
        return CaFiles(self.ca).ca_cert

    @property
    def mqtts(self) -> str:
        return f"mqtts://127.0.0.1:{self.broker.port}"

    @property
    def enrol_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.enrol_port}"

    def token(self, node_id: str, ttl: str = "1h") -> str:
        return last_line(edgecam("provision", "token", node_id, "--ca", self.ca, "--ttl", ttl))

    def enrol_cmd(self, token: str, node_id: str, state: Path, timeout: float = 30) -> list[str]:
        return cli("provision", "enrol", "--claim", token, "--mqtt", self.enrol_url, "--ca-cert", self.ca_cert,
                   "--state-dir", state, "--node-id", node_id, "--timeout", timeout)

    def enrol(self, token: str, node_id: str, state: Path) -> subprocess.CompletedProcess:
        return subprocess.run(self.enrol_cmd(token, node_id, state), capture_output=True, text=True, timeout=120)

    def worker_said(self, text: str) -> bool:
        return text in self.worker_log.read_text()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("enrol")
    pki = Pki(root)
    observer = issue_node("watcher", pki.ca_dir, root / "watcher", centre=True)  # before the ACL is generated
    started = Processes()
    try:
        port, enrol_port = free_port(), free_port()
        run_as = "root" if os.geteuid() == 0 else None  # tmp dirs are 0700: keep the broker on our account
        files = write_broker_config(pki.ca_dir, port, root / "broker" / "conf", bind="127.0.0.1", run_as=run_as,
                                    enrol_port=enrol_port)
        broker = started.adopt(Broker(root / "broker", port=port, conf=files.conf.read_text()).start())
        assert wait_port(enrol_port), broker.log()[-2000:]
        centre = pki.centre
        log = root / "worker.log"
        with open(log, "w") as out:
            worker = started.popen(cli("centre", "enrol", "--mqtt", f"mqtts://127.0.0.1:{port}", "--ca", pki.ca_dir,
                                       "--tls-ca", centre.ca_cert, "--tls-cert", centre.cert, "--tls-key", centre.key),
                                   stdout=out, stderr=subprocess.STDOUT)
        assert wait(lambda: "enrolment worker ready" in log.read_text() or worker.poll() is not None, 30), \
            log.read_text()
        assert worker.poll() is None, log.read_text()
        yield Env(root, pki, broker, enrol_port, files.conf.parent, log, observer)
    finally:
        started.stop_all()


def node_identity(state: Path, node_id: str) -> Identity:
    p = IdentityPaths(state)
    return Identity(node_id, p.cert, p.key, p.ca_cert)


def claim_client(env: Env, token: str, client_id: str | None = None) -> Client:
    """A raw client logged in with the claim; retried while the broker has not yet reloaded the password file.

    ``wait_for_login`` sees the claim in ``enrol.passwd``, but Mosquitto reads it only on the SIGHUP that follows,
    so a first login can still be refused "not authorised" (as a node's first ``provision enrol`` login is, which
    it retries the same way). A client kept from such a try would stay marked disconnected after paho's own
    reconnect succeeded.
    """
    claim_id, secret = token.split(".")
    deadline = time.monotonic() + 15
    while True:
        c = Client(env.enrol_port, None, client_id or claim_id, ca=env.ca_cert, username=claim_id, password=secret)
        if c.connected or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.2)
    assert c.connected, (c.connack, c.disconnected, c.error)
    return c


def csr_pem(cn: str, extra: list[x509.NameAttribute] | None = None, key=None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), *(extra or [])])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM).decode()


def ask(c: Client, claim_id: str, req: EnrolRequest) -> EnrolReply:
    """Publish a raw enrolment request as a claim and return the worker's reply."""
    reply_topic = f"edgecam/v1/enrol/{claim_id}/cert"
    c.subscribe(reply_topic)
    seen = len(c.messages)
    c.publish(f"edgecam/v1/enrol/{claim_id}/csr", req.model_dump_json(exclude_none=True))
    assert wait(lambda: len([m for m in c.messages[seen:] if m.topic == reply_topic]) > 0, 30), "no reply"
    return EnrolReply.model_validate_json(next(m for m in c.messages[seen:] if m.topic == reply_topic).payload)


def live_topics(c: Client) -> list[str]:
    """Topics of messages published while ``c`` listened (other tests' retained ones left out)."""
    return [m.topic for m in list(c.messages) if not m.retain]


def wait_for_login(env: Env, token: str) -> None:
    """The worker has put the claim in the broker's password file (it syncs every second, then SIGHUPs)."""
    claim_id = token.split(".")[0]
    assert wait(lambda: claim_id in (env.conf_dir / "enrol.passwd").read_text(), 15)


# ------------------------------------------------------------------------------------------------ online


def test_online_enrolment_end_to_end_then_run_uses_the_installed_identity(env: Env, tmp_path: Path) -> None:
    token = env.token("cam-on")
    res = env.enrol(token, "cam-on", tmp_path / "state")
    assert res.returncode == 0, res.stderr
    paths = IdentityPaths(tmp_path / "state")
    assert paths.installed() and (paths.key.stat().st_mode & 0o777) == 0o600
    assert common_name(load_cert(paths.cert)) == "cam-on"
    assert paths.ca_cert.read_bytes() == env.ca_cert.read_bytes()
    assert not (paths.dir / "pending.key").exists()
    assert env.worker_said("issued node cam-on certificate")
    claim_id = token.split(".")[0]
    assert (env.ca / "claims" / f"{claim_id}.used").exists()  # burnt
    assert token.split(".")[1] not in "".join(p.read_text() for p in (env.ca / "claims").iterdir())  # hash only

    # the agent connects with the installed identity, no --tls-* option
    watcher = Client(env.broker.port, env.observer, "watcher")
    try:
        watcher.subscribe("edgecam/v1/cam-on/#")  # a subscriber for every row, so the agent's outbox drains
        # a whole finite scene (not a frame count: on a loaded machine the first few frames may make no event)
        summary = tmp_path / "summary.json"
        run = subprocess.run(cli("run", "--state-dir", tmp_path / "state", "--node-id", "cam-on", "--mqtt", env.mqtts,
                                 "--source", "synthetic:?seed=5&duration_s=4&width=320&height=240", "--until-eof",
                                 "--summary-json", summary),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        made = json.loads(summary.read_text())
        assert made["events"] > 0 and made["published"] == made["events"], made  # --until-eof flushed them all
        assert wait(lambda: "edgecam/v1/cam-on/state" in watcher.topics()
                    and watcher.topics().count("edgecam/v1/cam-on/events") >= made["events"]), watcher.topics()
    finally:
        watcher.close()


def test_enrolled_certificate_publishes_its_events_and_nothing_else(env: Env, tmp_path: Path) -> None:
    assert env.enrol(env.token("cam-ev"), "cam-ev", tmp_path / "s").returncode == 0
    watcher = Client(env.broker.port, env.observer, "watcher")
    node = Client(env.broker.port, node_identity(tmp_path / "s", "cam-ev"), "cam-ev")
    try:
        assert node.connected, (node.connack, node.error)
        watcher.subscribe("edgecam/v1/#")
        for topic in ("edgecam/v1/other/events", "edgecam/v1/cam-ev/cmd/req", "edgecam/v1/cam-ev/config/desired",
                      "edgecam/v1/centre/state", "edgecam/v1/enrol/0123456789abcdef/csr",
                      "edgecam/v1/enrol/0123456789abcdef/cert", "edgecam/v1/other/cert/csr",
                      "edgecam/v1/cam-ev/cert/res"):
            assert node.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
        assert node.publish("edgecam/v1/cam-ev/events", b"{}").value < 0x80
        assert wait(lambda: "edgecam/v1/cam-ev/events" in watcher.topics())
        assert live_topics(watcher) == ["edgecam/v1/cam-ev/events"]  # nothing denied got through
    finally:
        node.close()
        watcher.close()


def test_token_reuse_is_refused(env: Env, tmp_path: Path) -> None:
    token = env.token("cam-re")
    assert env.enrol(token, "cam-re", tmp_path / "a").returncode == 0
    again = env.enrol(token, "cam-re", tmp_path / "b")
    assert again.returncode != 0
    assert "refused by the centre: token already used" in again.stderr, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert not IdentityPaths(tmp_path / "b").installed()
    assert env.worker_said("refused: token already used")


def test_token_the_broker_does_not_know_fails_with_one_line(env: Env, tmp_path: Path) -> None:
    """A made-up token (right shape) never gets past the enrolment listener's login; the node says so."""
    forged = "0123456789abcdef." + "A" * 43
    (tmp_path / "claim").write_text(forged + "\n")
    res = subprocess.run([*env.enrol_cmd("@" + str(tmp_path / "claim"), "cam-fake", tmp_path / "s", timeout=3)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "broker refused the login" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not IdentityPaths(tmp_path / "s").installed()


def test_expired_token_is_refused(env: Env, tmp_path: Path) -> None:
    token = env.token("cam-ex", ttl="1s")
    rec = ClaimStore(env.ca).load(token.split(".")[0])
    assert rec is not None
    import datetime as dt

    assert wait(lambda: dt.datetime.now(dt.timezone.utc) > rec.expires, 10)
    res = env.enrol(token, "cam-ex", tmp_path / "s")
    assert res.returncode != 0 and "refused by the centre: token expired at" in res.stderr, res.stderr
    assert env.worker_said("refused: token expired")


def test_wrong_node_id_is_refused_and_the_token_stays_usable(env: Env, tmp_path: Path) -> None:
    token = env.token("cam-right")
    res = env.enrol(token, "cam-wrong", tmp_path / "w")
    assert res.returncode != 0
    assert "refused by the centre: token is for node 'cam-right', not 'cam-wrong'" in res.stderr, res.stderr
    assert env.enrol(token, "cam-right", tmp_path / "r").returncode == 0


@contextlib.contextmanager
def claim_session(env: Env, node_id: str) -> Iterator[tuple[str, str, Client]]:
    """A fresh token for ``node_id`` and a raw client logged in with it: (token, claim id, client)."""
    token = env.token(node_id)
    wait_for_login(env, token)
    c = claim_client(env, token)
    try:
        yield token, token.split(".")[0], c
    finally:
        c.close()


def test_csr_asking_for_another_cn_or_more_is_refused(env: Env) -> None:
    with claim_session(env, "cam-cn") as (token, claim_id, c):
        for csr, reason in (
            (csr_pem("cam-other"), "CSR subject asks for CN 'cam-other'; it must be exactly CN=cam-cn"),
            (csr_pem("cam-cn", [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]), "more than the node id"),
            (csr_pem("cam-cn", key=rsa.generate_private_key(65537, 1024)), "weak key: RSA 1024 bits"),
            ("garbage", "not a PEM certificate request"),
        ):
            reply = ask(c, claim_id, EnrolRequest(request_id="r1", node_id="cam-cn", token=token, csr=csr))
            assert reply.status == "refused" and reason in (reply.reason or ""), reply
            assert env.worker_said(reason)
        assert not (env.ca / "claims" / f"{claim_id}.used").exists()  # refusals do not burn the token


def test_claim_identity_is_confined_to_its_own_enrolment_topics(env: Env, tmp_path: Path) -> None:
    ta, tb = env.token("cam-ca"), env.token("cam-cb")
    wait_for_login(env, ta)
    wait_for_login(env, tb)
    a_id, b_id = ta.split(".")[0], tb.split(".")[0]
    watcher = Client(env.broker.port, env.observer, "watcher")
    a = claim_client(env, ta)
    try:
        watcher.subscribe("edgecam/v1/#")
        for topic in ("edgecam/v1/cam-ca/events", "edgecam/v1/cam-ca/state", f"edgecam/v1/enrol/{b_id}/csr",
                      f"edgecam/v1/enrol/{a_id}/cert", "edgecam/v1/cam-ca/cert/csr"):
            assert a.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
        for f in ("#", "edgecam/v1/#", "edgecam/v1/enrol/+/cert", f"edgecam/v1/enrol/{b_id}/cert",
                  "$share/g/edgecam/v1/enrol/+/cert", "edgecam/v1/enrol/+/csr"):
            a.subscribe(f)
        # B enrols for real; its reply must reach B's topic and never A
        assert env.enrol(tb, "cam-cb", tmp_path / "b").returncode == 0
        # positive control, last: A's own reply (a refusal) reaches A
        reply = ask(a, a_id, EnrolRequest(request_id="x", node_id="cam-ca", token=ta, csr=csr_pem("nope")))
        assert reply.status == "refused"
        assert {m.topic for m in a.messages} == {f"edgecam/v1/enrol/{a_id}/cert"}
        assert not [t for t in live_topics(watcher) if not t.startswith("edgecam/v1/enrol/")]  # no forged events
    finally:
        a.close()
        watcher.close()


def test_claim_login_needs_the_tokens_secret(env: Env) -> None:
    token = env.token("cam-pw")
    wait_for_login(env, token)
    claim_id = token.split(".")[0]
    bad = Client(env.enrol_port, None, claim_id, ca=env.ca_cert, username=claim_id, password="x" * 43)
    try:
        assert not bad.connected
    finally:
        bad.close()
    anon = Client(env.enrol_port, None, "anon", ca=env.ca_cert)
    try:
        assert not anon.connected
    finally:
        anon.close()


def test_a_flood_from_one_claim_is_rate_limited(env: Env) -> None:
    with claim_session(env, "cam-fl") as (token, claim_id, c):
        replies = [ask(c, claim_id, EnrolRequest(request_id=f"r{i}", node_id="cam-fl", token=token, csr="junk"))
                   for i in range(6)]
        assert [r.status for r in replies] == ["refused"] * 6
        assert "rate limited" not in (replies[4].reason or "") and "rate limited" in (replies[5].reason or "")
        assert env.worker_said(f"claim {claim_id}: refused: rate limited")


def test_two_nodes_enrolling_at_once_both_succeed(env: Env, tmp_path: Path) -> None:
    t1, t2 = env.token("cam-p1"), env.token("cam-p2")
    procs = Processes()
    try:
        p1 = procs.popen(env.enrol_cmd(t1, "cam-p1", tmp_path / "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p2 = procs.popen(env.enrol_cmd(t2, "cam-p2", tmp_path / "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out1, out2 = p1.communicate(timeout=120), p2.communicate(timeout=120)
    finally:
        procs.stop_all()
    assert p1.returncode == 0 and p2.returncode == 0, (out1, out2)
    assert common_name(load_cert(IdentityPaths(tmp_path / "1").cert)) == "cam-p1"
    assert common_name(load_cert(IdentityPaths(tmp_path / "2").cert)) == "cam-p2"


# ------------------------------------------------------------------------------------------------ offline


def test_offline_enrolment(env: Env, tmp_path: Path) -> None:
    state = tmp_path / "s"
    csr = Path(last_line(edgecam("provision", "csr", "--node-id", "cam-off", "--state-dir", state)))
    assert csr.exists() and b"PRIVATE" not in csr.read_bytes()
    # a CSR asking for another node is refused by `ca sign`
    bad = edgecam("ca", "sign", csr, "--ca", env.ca, "--node-id", "cam-x", "--out", tmp_path / "x.crt")
    assert bad.returncode != 0 and "must be exactly CN=cam-x" in bad.stderr, bad.stderr
    cert = Path(last_line(edgecam("ca", "sign", csr, "--ca", env.ca, "--node-id", "cam-off", "--out",
                                  tmp_path / "cam-off.crt")))
    # a certificate for another key (another node's CSR) is not installed
    other = tmp_path / "other"
    ocsr = last_line(edgecam("provision", "csr", "--node-id", "cam-off", "--state-dir", other))
    ocert = last_line(edgecam("ca", "sign", ocsr, "--ca", env.ca, "--node-id", "cam-off", "--out", tmp_path / "o.crt"))
    wrong = edgecam("provision", "install-cert", ocert, "--ca-cert", env.ca_cert, "--state-dir", state)
    assert wrong.returncode != 0 and "does not match this node's pending key" in wrong.stderr, wrong.stderr
    # a certificate from another CA is not installed
    foreign = Pki(tmp_path / "foreign")
    fcert = last_line(edgecam("ca", "sign", csr, "--ca", foreign.ca_dir, "--node-id", "cam-off", "--out",
                              tmp_path / "f.crt"))
    alien = edgecam("provision", "install-cert", fcert, "--ca-cert", env.ca_cert, "--state-dir", state)
    assert alien.returncode != 0 and "not issued by the pinned CA" in alien.stderr, alien.stderr
    assert not IdentityPaths(state).installed()

    res = edgecam("provision", "install-cert", cert, "--ca-cert", env.ca_cert, "--state-dir", state)
    assert res.returncode == 0, res.stderr
    node = Client(env.broker.port, node_identity(state, "cam-off"), "cam-off")
    try:
        assert node.connected
        assert node.publish("edgecam/v1/cam-off/events", b"{}").value < 0x80
        assert node.publish("edgecam/v1/cam-on/events", b"{}").value == NOT_AUTHORIZED
    finally:
        node.close()


# ------------------------------------------------------------------------------------------------ renewal


def test_renewal_over_the_nodes_own_identity(env: Env, tmp_path: Path) -> None:
    state = tmp_path / "s"
    assert env.enrol(env.token("cam-rn"), "cam-rn", state).returncode == 0
    paths = IdentityPaths(state)
    old_cert, old_key = load_cert(paths.cert), paths.key.read_bytes()
    res = edgecam("provision", "renew", "--state-dir", state, "--mqtt", env.mqtts, "--timeout", "30")
    assert res.returncode == 0, res.stderr
    new_cert = load_cert(paths.cert)
    assert new_cert.serial_number != old_cert.serial_number and common_name(new_cert) == "cam-rn"
    assert paths.key.read_bytes() != old_key and (paths.key.stat().st_mode & 0o777) == 0o600
    assert env.worker_said("renewal cam-rn: issued node cam-rn certificate")
    node = Client(env.broker.port, node_identity(state, "cam-rn"), "cam-rn")
    try:
        assert node.connected
        assert node.publish("edgecam/v1/cam-rn/events", b"{}").value < 0x80
        # a node renews only itself: another node's cert/csr topic is denied by the broker
        assert node.publish("edgecam/v1/cam-on/cert/csr", b"{}").value == NOT_AUTHORIZED
        # and a CSR for another CN on its own topic is refused by the worker
        node.subscribe("edgecam/v1/cam-rn/cert/res")
        req = EnrolRequest(request_id="q", node_id="cam-rn", csr=csr_pem("cam-on"))
        node.publish("edgecam/v1/cam-rn/cert/csr", req.model_dump_json())
        assert wait(lambda: node.messages)
        reply = EnrolReply.model_validate_json(node.messages[0].payload)
        assert reply.status == "refused" and "must be exactly CN=cam-rn" in (reply.reason or ""), reply
    finally:
        node.close()


# ------------------------------------------------------------------------------------------------ revocation


def test_revoked_node_is_refused_by_the_broker(env: Env, tmp_path: Path) -> None:
    state = tmp_path / "s"
    assert env.enrol(env.token("cam-rv"), "cam-rv", state).returncode == 0
    before = Client(env.broker.port, node_identity(state, "cam-rv"), "cam-rv")
    assert before.connected
    before.close()
    res = edgecam("ca", "revoke", "cam-rv", "--ca", env.ca)
    assert res.returncode == 0, res.stderr
    (env.conf_dir / "certs" / "crl.pem").write_bytes(CaFiles(env.ca).crl.read_bytes())  # deploy the CRL
    assert env.broker.proc is not None
    reloads = env.broker.log().count("Reloading config")
    os.kill(env.broker.proc.pid, signal.SIGHUP)
    assert wait(lambda: env.broker.log().count("Reloading config") > reloads), env.broker.log()[-1000:]
    after = Client(env.broker.port, node_identity(state, "cam-rv"), "cam-rv")
    try:
        assert not after.connected
        assert after.error is not None or after.disconnected is not None
    finally:
        after.close()
    # renewal cannot resurrect it either (a broker whose CRL is stale would still let it ask)
    renew = edgecam("provision", "renew", "--state-dir", state, "--mqtt", env.mqtts, "--timeout", "5")
    assert renew.returncode != 0 and len(renew.stderr.strip().splitlines()) == 1, renew.stderr
    assert "client certificate refused" in renew.stderr or "TLS failed" in renew.stderr, renew.stderr


def test_agent_renews_its_installed_certificate_by_itself(env: Env, tmp_path: Path) -> None:
    """``mqtt.renew_before_days`` above the certificate's lifetime makes it due at once: the running agent asks
    on its own cert/csr, installs the answer, and its next start connects with the new pair."""
    state = tmp_path / "s"
    assert env.enrol(env.token("cam-auto"), "cam-auto", state).returncode == 0
    paths = IdentityPaths(state)
    old_serial = load_cert(paths.cert).serial_number
    watcher = Client(env.broker.port, env.observer, "watcher")
    procs = Processes()
    try:
        watcher.subscribe("edgecam/v1/cam-auto/#")
        log = tmp_path / "agent.log"
        with open(log, "w") as out:
            procs.popen(cli("run", "--state-dir", state, "--node-id", "cam-auto", "--mqtt", env.mqtts,
                            "--source", "synthetic:?width=320&height=240"),
                        stdout=out, stderr=subprocess.STDOUT,
                        env={**os.environ, "EDGECAM_MQTT__RENEW_BEFORE_DAYS": "1000"})
        assert wait(lambda: "certificate renewal: installed" in log.read_text(), 60), log.read_text()[-3000:]
        procs.stop_all()
        assert load_cert(paths.cert).serial_number != old_serial
        assert env.worker_said("renewal cam-auto: issued node cam-auto certificate")
        assert not (paths.dir / "pending.key").exists() and (paths.key.stat().st_mode & 0o777) == 0o600
        seen = len(live_topics(watcher))
        run = subprocess.run(cli("run", "--state-dir", state, "--node-id", "cam-auto", "--mqtt", env.mqtts,
                                 "--source", "synthetic:?width=320&height=240", "--max-frames", "3"),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert wait(lambda: "edgecam/v1/cam-auto/state" in live_topics(watcher)[seen:])
    finally:
        procs.stop_all()
        watcher.close()


def test_config_uses_the_installed_identity_only_when_no_tls_file_is_given(tmp_path: Path) -> None:
    from agent.config import AgentConfig

    paths = IdentityPaths(tmp_path)
    url = {"url": "mqtts://broker:8883"}
    assert AgentConfig(state_dir=tmp_path, mqtt=url).mqtt.tls_cert is None  # nothing installed: unchanged
    paths.dir.mkdir()
    for p in (paths.key, paths.cert, paths.ca_cert):
        p.write_text("x")
    cfg = AgentConfig(state_dir=tmp_path, mqtt=url).mqtt
    assert (cfg.tls_ca, cfg.tls_cert, cfg.tls_key) == (paths.ca_cert, paths.cert, paths.key)
    own = AgentConfig(state_dir=tmp_path, mqtt={**url, "tls_ca": tmp_path / "mine.crt"}).mqtt
    assert (own.tls_ca, own.tls_cert) == (tmp_path / "mine.crt", None)  # an operator's choice wins
    assert AgentConfig(state_dir=tmp_path, mqtt={"url": "mqtt://broker"}).mqtt.tls_cert is None  # plain MQTT
