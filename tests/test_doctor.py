"""``edgecam doctor`` node checks: identity, key permissions, certificate expiry, broker over mTLS, clock,
disk for the outbox. Real certificates from a real CA, a real Mosquitto with the generated mTLS config, a
real small tmpfs for the disk (skipped with the reason where it cannot be mounted)."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from agent.config import build_config
from agent.doctor import exit_code, node_checks
from agent.doctor.broker import broker_check
from agent.doctor.identity import identity_checks, identity_files
from agent.doctor.system import clock_check, disk_check
from agent.events.clock import kernel_clock_synced
from agent.identity import IdentityPaths
from provisioning.ca import CaFiles, CertificateAuthority, _name, new_key, write_cert, write_key
from tests.broker import free_port
from tests.tls import Pki, start_tls_broker
from tests.waiting import wait_until

ME = pwd.getpwuid(os.geteuid()).pw_name
NODE = "pole-7"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki, tmp_path_factory):
    broker = start_tls_broker(tmp_path_factory.mktemp("broker"), pki)
    try:
        yield broker
    finally:
        broker.stop()


def install(state: Path, key: Path, cert: Path, ca: Path) -> IdentityPaths:
    """What provisioning leaves on the node: STATE/identity/{node.key 0600, node.crt, ca.crt}."""
    paths = IdentityPaths(state)
    paths.dir.mkdir(parents=True, exist_ok=True)
    for src, dst in ((key, paths.key), (cert, paths.cert), (ca, paths.ca_cert)):
        shutil.copyfile(src, dst)
    paths.key.chmod(0o600)
    return paths


def cfg_for(state: Path, port: int, **extra):
    return build_config({"node_id": NODE, "state_dir": str(state), "mqtt": {"url": f"mqtts://127.0.0.1:{port}"},
                         **extra})


def named(checks, name):
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, checks
    return found[0]


def signed(pki: Pki, out: Path, cn: str, start: dt.datetime, end: dt.datetime) -> tuple[Path, Path]:
    """A key and a certificate for ``cn`` from the test CA with the given validity (past ones included)."""
    ca = CertificateAuthority.load(pki.ca_dir)
    key = new_key()
    builder = (x509.CertificateBuilder().subject_name(_name(cn, ca.org)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end))
    out.mkdir(parents=True, exist_ok=True)
    write_key(out / "k.pem", key)
    write_cert(out / "c.pem", ca._sign(builder))
    return out / "k.pem", out / "c.pem"


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=120)


def test_a_good_identity_passes_against_the_mtls_broker(tmp_path, pki, tls_broker):
    ident = pki.node(NODE)
    install(tmp_path / "state", ident.key, ident.cert, ident.ca_cert)
    res = doctor("--state-dir", str(tmp_path / "state"), "--node-id", NODE, "--mqtt",
                 f"mqtts://127.0.0.1:{tls_broker.port}", "--user", ME)
    assert res.returncode == 0, res.stdout + res.stderr  # warnings (an unsynchronised clock) do not fail it
    lines = {ln.split("  ", 1)[0]: ln for ln in res.stdout.splitlines() if "  " in ln}
    assert "ok: " in lines["broker"] and "CONNACK success" in lines["broker"] and "mTLS" in lines["broker"]
    for name in ("identity", "key permissions", "certificate", "certificate subject", "CA certificate"):
        assert "ok: " in lines[name], lines[name]
    assert "FAIL" not in res.stdout
    # the broker saw this node's identity, with its session kept (clean start off) and a normal disconnect
    assert wait_until(lambda: f"as {NODE} (" in tls_broker.log() or f"u'{NODE}'" in tls_broker.log(), 10), \
        tls_broker.log()[-2000:]
    assert "c0, k30" in tls_broker.log()


def test_a_key_others_can_read_or_another_owns_fails(tmp_path, pki):
    ident = pki.node(NODE)
    paths = install(tmp_path / "state", ident.key, ident.cert, ident.ca_cert)
    cfg = cfg_for(tmp_path / "state", free_port())
    paths.key.chmod(0o644)
    res = doctor("--state-dir", str(tmp_path / "state"), "--node-id", NODE, "--mqtt", str(cfg.mqtt.url.reveal()),
                 "--user", ME, "--offline")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "key permissions" in res.stdout and "FAIL: " in res.stdout and "0644" in res.stdout
    assert "Traceback" not in res.stderr
    paths.key.chmod(0o600)
    assert named(identity_checks(cfg, ME), "key permissions").status == "ok"
    check = named(identity_checks(cfg, "nobody" if ME != "nobody" else "root"), "key permissions")
    assert check.status == "fail" and f"owned by {ME}" in check.detail


def test_certificate_expiry_warns_30_days_before_and_fails_after(tmp_path, pki, tls_broker):
    now = dt.datetime.now(dt.timezone.utc)
    # 10 days left: a warning, and the broker still takes it
    key, cert = signed(pki, tmp_path / "soon", NODE, now - dt.timedelta(days=300), now + dt.timedelta(days=10))
    install(tmp_path / "s1", key, cert, CaFiles(pki.ca_dir).ca_cert)
    cfg = cfg_for(tmp_path / "s1", tls_broker.port)
    checks = identity_checks(cfg, ME)
    soon = named(checks, "certificate")
    assert soon.status == "warn" and "in 10 day(s)" in soon.detail and exit_code(checks) == 0
    assert broker_check(cfg, identity_files(cfg)).status == "ok"
    # expired yesterday: a failure here, and the broker refuses it with a reason
    key, cert = signed(pki, tmp_path / "old", NODE, now - dt.timedelta(days=400), now - dt.timedelta(days=1))
    install(tmp_path / "s2", key, cert, CaFiles(pki.ca_dir).ca_cert)
    cfg = cfg_for(tmp_path / "s2", tls_broker.port)
    checks = identity_checks(cfg, ME)
    old = named(checks, "certificate")
    assert old.status == "fail" and "expired" in old.detail and exit_code(checks) == 1
    broker = broker_check(cfg, identity_files(cfg))
    assert broker.status == "fail" and "certificate rejected" in broker.detail, broker
    # not yet valid (a clock far behind looks like this): a failure that says to look at the clock
    key, cert = signed(pki, tmp_path / "new", NODE, now + dt.timedelta(days=2), now + dt.timedelta(days=400))
    install(tmp_path / "s3", key, cert, CaFiles(pki.ca_dir).ca_cert)
    young = named(identity_checks(cfg_for(tmp_path / "s3", tls_broker.port), ME), "certificate")
    assert young.status == "fail" and "clock" in young.detail


def test_the_broker_refusing_the_certificate_fails_with_the_reason(tmp_path, pki, tls_broker):
    stranger = Pki(tmp_path / "other-ca").node(NODE)  # signed by a CA the broker does not know
    install(tmp_path / "state", stranger.key, stranger.cert, CaFiles(pki.ca_dir).ca_cert)
    cfg = cfg_for(tmp_path / "state", tls_broker.port)
    check = broker_check(cfg, identity_files(cfg))
    assert check.status == "fail" and "certificate rejected" in check.detail, check
    assert f"127.0.0.1:{tls_broker.port}" in check.detail


def test_unreachable_broker_and_untrusted_broker_fail_with_their_reasons(tmp_path, pki, tls_broker):
    ident = pki.node(NODE)
    install(tmp_path / "state", ident.key, ident.cert, ident.ca_cert)
    cfg = cfg_for(tmp_path / "state", free_port())  # nothing listens there
    check = broker_check(cfg, identity_files(cfg))
    assert check.status == "fail" and "refused" in check.detail
    # the node's CA is not the one that signed the broker: our side refuses the handshake
    other = Pki(tmp_path / "other-ca").node("x")
    shutil.copyfile(other.ca_cert, IdentityPaths(tmp_path / "state").ca_cert)
    cfg = cfg_for(tmp_path / "state", tls_broker.port)
    check = broker_check(cfg, identity_files(cfg))
    assert check.status == "fail" and "TLS error" in check.detail and "not trusted" in check.detail, check


def test_no_identity_on_an_mqtts_node_fails_and_names_enrolment(tmp_path):
    checks = node_checks(cfg_for(tmp_path / "state", free_port()), ME, offline=True)
    ident = named(checks, "identity")
    assert ident.status == "fail" and "provision enrol" in ident.detail


def test_clock_check_reads_the_same_state_as_clock_synced(tmp_path):
    assert clock_check(lambda: True).status == "ok"
    assert clock_check(lambda: False).status == "warn"
    flag_dir = tmp_path / "timesync"
    flag_dir.mkdir()
    assert clock_check(lambda: None, flag_dir / "synchronized").status == "warn"
    (flag_dir / "synchronized").touch()
    assert clock_check(lambda: None, flag_dir / "synchronized").status == "ok"
    assert clock_check(lambda: None, tmp_path / "absent" / "synchronized").status == "warn"  # cannot tell
    # on this machine: the doctor says what health would say
    state = kernel_clock_synced()
    if state is not None:
        assert clock_check().status == ("ok" if state else "warn")


FS_BYTES = 2 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path):
    where = tmp_path / "fs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {where} ({done.stderr.strip() or 'not root'})")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_disk_for_the_outbox(small_fs, tmp_path):
    state = small_fs / "state"
    # 2 MiB in all: below the default 16 MiB reserve, so no room for the outbox at all
    check = disk_check(build_config({"state_dir": str(state)}))
    assert check.status == "fail" and "no room" in check.detail
    # a small reserve: room, but less than max_bytes
    check = disk_check(build_config({"state_dir": str(state), "outbox": {"disk_reserve_bytes": 0}}))
    assert check.status == "warn" and "can hold" in check.detail
    # enough for max_bytes and the reserve
    check = disk_check(build_config({"state_dir": str(state),
                                     "outbox": {"disk_reserve_bytes": 0, "max_bytes": 1024 * 1024}}))
    assert check.status == "ok"
    # a big disk elsewhere with the defaults
    assert disk_check(build_config({"state_dir": str(tmp_path / "state")})).status in ("ok", "warn")


def test_the_probe_keeps_the_nodes_session_and_its_queued_commands(tmp_path, broker):
    """Connecting as the node must not cost the node anything: the broker's session (subscriptions, a command
    queued while the agent was away) is there for the agent afterwards, the command not consumed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tests.transport_util import publish

    topic = f"edgecam/v1/{NODE}/cmd/req"
    got: list[bytes] = []
    present: list[bool] = []

    def node_session() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=NODE, protocol=mqtt.MQTTv5)
        c.on_connect = lambda _c, _u, flags, _rc, _p: present.append(flags.session_present)
        c.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        c.loop_start()
        assert wait_until(lambda: present, 10)
        return c

    agent = node_session()
    agent.subscribe(topic, qos=1)
    assert wait_until(lambda: broker.subacks_to(NODE) >= 1, 10)
    agent.disconnect()
    agent.loop_stop()
    publish(broker.port, topic, b'{"cmd_id": "queued", "op": "ping"}')  # the agent is away: the broker queues it

    cfg = build_config({"node_id": NODE, "state_dir": str(tmp_path / "state"),
                        "mqtt": {"url": broker.url, "session_expiry_s": 3600}})
    check = broker_check(cfg, identity_files(cfg))
    assert "CONNACK success" in check.detail and check.status == "warn"  # plain MQTT: reachable, not mTLS

    present.clear()
    agent = node_session()
    try:
        assert present == [True], "the session survived the doctor's connection"
        assert wait_until(lambda: got == [b'{"cmd_id": "queued", "op": "ping"}'], 10), got
    finally:
        agent.disconnect()
        agent.loop_stop()
