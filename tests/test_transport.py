"""Transport against a real Mosquitto: delivery, state/Will, health, packet-size limit, refusals, TLS."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.contract import Health, Topics, utc_now
from agent.errors import ConfigError
from agent.transport import Transport
from tests.broker import Broker
from tests.transport_util import Subscriber, make_cfg, make_event, persistent_broker, publish, versions
from tests.waiting import wait_until

NODE = "node-t"
T = Topics(NODE)


def make_transport(url: str, state_dir: Path, **sections) -> Transport:
    return Transport(make_cfg(url, state_dir, **sections), boot_id="boot-1", versions=versions(), caps=["events"])


def test_events_and_thumbs_delivered_in_order_with_state(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)
    t = make_transport(broker.url, tmp_path / "state")
    t.start()
    items = [(make_event(i), b"\xff\xd8" + bytes([i]) * 500 if i % 2 == 0 else None) for i in range(40)]
    t.submit_many(items[:20])
    for item in items[20:]:
        t.submit_many([item])
    assert t.flush(20)
    assert sub.wait_for(lambda: len(sub.on("/events")) >= 40)
    evs = sub.events()
    assert [e["event_id"] for e in evs] == [e.event_id for e, _ in items]  # order per node kept
    assert not any(e["historical"] for e in evs)
    order = [("thumb", m.topic.rsplit("/", 1)[-1]) if "/thumbs/" in m.topic
             else ("event", json.loads(m.payload)["event_id"])
             for m in sub.messages if "/thumbs/" in m.topic or m.topic.endswith("/events")]
    thumbs = [m for m in sub.messages if "/thumbs/" in m.topic]
    assert len(thumbs) == 20
    for m in thumbs:
        eid = m.topic.rsplit("/", 1)[-1]
        assert m.properties.ContentType == "image/jpeg" and m.payload.startswith(b"\xff\xd8")
        assert order.index(("thumb", eid)) < order.index(("event", eid))  # the thumb goes first
    st = t.stats()
    assert st["published"] == 40 and st["published_thumbs"] == 20 and st["outbox_depth"] == 0
    states = [json.loads(m.payload) for m in sub.on("/state")]
    assert states[0]["online"] is True and states[0]["bd_seq"] == st["bd_seq"] >= 1
    assert states[0]["boot_id"] == "boot-1" and states[0]["versions"]["agent"] == "test"
    t.close()
    assert t.stats()["published"] == 40 and not t.stats()["connected"]  # still readable for the run summary
    assert sub.wait_for(lambda: len(sub.on("/state")) >= 2)
    last = json.loads(sub.on("/state")[-1].payload)
    assert last["online"] is False and last["bd_seq"] == states[0]["bd_seq"]
    sub.close()
    # the offline state is retained, and bd_seq grows with every connection (persisted)
    late = Subscriber(broker.port, topic=T.state)
    assert late.wait_for(lambda: late.on("/state"))
    assert json.loads(late.on("/state")[0].payload)["online"] is False
    t2 = make_transport(broker.url, tmp_path / "state")
    t2.start()
    assert late.wait_for(lambda: any(json.loads(m.payload)["online"] for m in late.on("/state")))
    assert t2.stats()["bd_seq"] > states[0]["bd_seq"]
    t2.close()
    late.close()


def test_health_is_qos0_with_expiry(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker.port, topic=T.health)
    t = make_transport(broker.url, tmp_path / "s", health={"period_s": 7.0})
    t.start()
    assert wait_until(lambda: t.stats()["connected"], 15.0)
    health = Health(ts=utc_now(), uptime_s=1.0, fps=2.0, clock_synced=True, outbox_depth=3)
    assert t.publish_health(health)
    assert sub.wait_for(lambda: sub.on("/health"))
    m = sub.on("/health")[0]
    assert m.qos == 0 and not m.retain
    assert 13 <= m.properties.MessageExpiryInterval <= 14
    assert json.loads(m.payload)["outbox_depth"] == 3
    t.close()
    sub.close()


def test_centre_coming_online_gets_state_again(broker: Broker, tmp_path: Path) -> None:
    publish(broker.port, Topics.centre_state, b'{"online": true}', retain=True)  # retained: no extra birth
    sub = Subscriber(broker.port, topic=T.state)
    t = make_transport(broker.url, tmp_path / "s", outbox={"hold_unmatched": []})  # nobody reads events here
    t.start()
    assert sub.wait_for(lambda: len(sub.on("/state")) >= 1)
    time.sleep(0.5)
    assert len(sub.on("/state")) == 1
    publish(broker.port, Topics.centre_state, b'{"online": true, "ts": "2026-01-01T00:00:00Z"}')
    assert sub.wait_for(lambda: len(sub.on("/state")) >= 2)
    assert json.loads(sub.on("/state")[-1].payload)["online"] is True
    publish(broker.port, Topics.centre_state, b"not json")  # ignored, transport keeps going
    t.submit_many([(make_event(1), None)])
    assert t.flush(10)
    t.close()
    sub.close()


def test_max_packet_size_drops_oversized_thumbnail_not_the_queue(tmp_path: Path) -> None:
    b = Broker(tmp_path / "b")
    b.conf = f"listener {b.port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 8000\n"
    b.start()
    try:
        sub = Subscriber(b.port)
        t = make_transport(b.url, tmp_path / "s")
        t.start()
        assert wait_until(lambda: t.max_payload is not None, 15.0)
        budget = t.max_payload
        assert 7000 < budget < 8000
        fits, too_big = make_event(1), make_event(2)
        t.submit_many([(fits, b"\xff\xd8" + bytes(budget - 2)), (too_big, b"\xff\xd8" + bytes(budget + 200)),
                       (make_event(3), None)])
        assert t.flush(15)
        assert sub.wait_for(lambda: len(sub.on("/events")) >= 3)
        assert [e["seq"] for e in sub.events()] == [1, 2, 3]
        assert sub.on(f"/thumbs/{fits.event_id}") and not sub.on(f"/thumbs/{too_big.event_id}")
        st = t.stats()
        assert st["dropped_thumbs"] == 1 and st["dropped_events"] == 0 and st["connected"]
        t.close()
        sub.close()
    finally:
        b.stop()


def test_publish_refused_by_acl_is_dropped_and_counted(tmp_path: Path) -> None:
    b = Broker(tmp_path / "b")
    acl = tmp_path / "b" / "acl"
    acl.parent.mkdir(parents=True, exist_ok=True)
    acl.write_text("pattern write edgecam/v1/%u/events\npattern write edgecam/v1/%u/state\n"
                   "pattern read edgecam/v1/#\ntopic read #\n")
    os.chmod(acl, 0o644)
    b.conf = f"listener {b.port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
    b.start()
    try:
        sub = Subscriber(b.port)
        t = make_transport(b.url, tmp_path / "s")
        t.start()
        t.submit_many([(make_event(i), b"\xff\xd8thumb") for i in range(5)])
        assert t.flush(15)  # thumbs refused (PUBACK 0x87) must not block the events behind them
        assert sub.wait_for(lambda: len(sub.on("/events")) >= 5)
        assert not [m for m in sub.messages if "/thumbs/" in m.topic]
        st = t.stats()
        assert st["dropped_thumbs"] == 5 and st["published"] == 5
        t.close()
        sub.close()
    finally:
        b.stop()


def test_outbox_full_while_offline_drops_thumbs_first(tmp_path: Path) -> None:
    b = persistent_broker(tmp_path / "b").start()
    sub = Subscriber(b.port, persistent=True)  # its session keeps the subscription while the broker is down
    b.stop()
    t = make_transport(b.url, tmp_path / "s", outbox={"max_bytes": 64 * 1024})
    t.start()
    assert wait_until(lambda: t.link.failed_attempts >= 1, 15.0)  # the node knows it is offline
    items = [(make_event(i), b"\xff\xd8" + bytes(4000)) for i in range(40)]  # ~160 kB of thumbs
    for it in items:
        t.submit_many([it])
    st = t.stats()
    assert st["dropped_events"] == 0 and st["dropped_thumbs"] > 0
    assert st["outbox_bytes"] <= 64 * 1024 and not st["connected"]
    b.start()
    try:
        assert t.flush(30)
        assert sub.wait_for(lambda: len(sub.on("/events")) >= 40)
        evs = sub.events()
        assert sorted(e["seq"] for e in evs) == list(range(40))
        assert all(e["historical"] for e in evs)  # they waited for the broker
        thumbs = [m.topic.rsplit("/", 1)[-1] for m in sub.messages if "/thumbs/" in m.topic]
        assert len(thumbs) == 40 - t.stats()["dropped_thumbs"]
        assert thumbs == [e.event_id for e, _ in items[-len(thumbs):]]  # the newest survived
        t.close()
        sub.close()
    finally:
        b.stop()


def test_rows_from_a_previous_run_are_historical(broker: Broker, tmp_path: Path) -> None:
    dead = Broker(tmp_path / "nobroker")  # never started
    t = make_transport(dead.url, tmp_path / "s")
    t.submit_many([(make_event(i), None) for i in range(3)])
    t.close(timeout=0.5)
    sub = Subscriber(broker.port)
    t2 = make_transport(broker.url, tmp_path / "s")
    t2.start()
    t2.submit_many([(make_event(3), None)])
    assert t2.flush(15)
    assert sub.wait_for(lambda: len(sub.on("/events")) >= 4)
    assert [(e["seq"], e["historical"]) for e in sub.events()] == [(0, True), (1, True), (2, True), (3, False)]
    t2.close()
    sub.close()


# ---------------------------------------------------------------- TLS


def _cert(subject: str, issuer_key, issuer: str, key, *, ca: bool = False, sans: list[x509.GeneralName] = ()):
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pki(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    ca_key, srv_key, node_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    srv = _cert("broker", ca_key, "test-ca", srv_key,
                sans=[x509.DNSName("localhost")])
    node = _cert(NODE, ca_key, "test-ca", node_key)
    out = {}
    for name, obj in (("ca", ca), ("server", srv), ("node", node)):
        out[name] = d / f"{name}.crt"
        out[name].write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    for name, key in (("server_key", srv_key), ("node_key", node_key)):
        out[name] = d / f"{name}.pem"
        out[name].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    for p in out.values():
        os.chmod(p, 0o644)
    return out


@pytest.fixture
def tls_broker(tmp_path: Path):
    pki = _pki(tmp_path / "pki")
    b = Broker(tmp_path / "tlsb")
    b.conf = (f"listener {b.port} 127.0.0.1\ncafile {pki['ca']}\ncertfile {pki['server']}\n"
              f"keyfile {pki['server_key']}\nrequire_certificate true\nuse_identity_as_username true\n"
              "allow_anonymous true\n")
    b.start()
    yield b, pki
    b.stop()


def test_mtls_connects_and_checks_the_hostname(tls_broker, tmp_path: Path) -> None:
    b, pki = tls_broker
    tls = {"tls_ca": str(pki["ca"]), "tls_cert": str(pki["node"]), "tls_key": str(pki["node_key"])}
    t = make_transport(f"mqtts://localhost:{b.port}", tmp_path / "s", mqtt=tls, outbox={"hold_unmatched": []})
    t.start()
    t.submit_many([(make_event(1), b"\xff\xd8x")])  # no subscriber: the broker having it is what this test checks
    assert t.flush(15) and t.stats()["published"] == 1
    t.close()
    # the server certificate names only localhost: the same broker reached as 127.0.0.1 must be refused
    bad = make_transport(f"mqtts://127.0.0.1:{b.port}", tmp_path / "s2", mqtt=tls)
    bad.start()
    assert wait_until(lambda: bad.link.failed_attempts >= 1 or bad.stats()["connected"], 30)  # its first attempt
    assert not bad.stats()["connected"] and bad.link.failed_attempts >= 1
    assert "certificate" in (bad.link.last_error or "").lower() or "hostname" in (bad.link.last_error or "").lower()
    bad.close(0.5)
    # no client certificate: the broker refuses the handshake
    anon = make_transport(f"mqtts://localhost:{b.port}", tmp_path / "s3", mqtt={"tls_ca": str(pki["ca"])})
    anon.start()
    assert wait_until(lambda: anon.link.failed_attempts >= 1 or anon.stats()["connected"], 30)
    assert not anon.stats()["connected"]
    anon.close(0.5)


def test_tls_files_missing_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.tls_ca"):
        make_transport("mqtts://localhost:8883", tmp_path / "s", mqtt={"tls_ca": str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match=r"mqtt\.tls_cert"):
        make_transport("mqtts://localhost:8883", tmp_path / "s", mqtt={"tls_cert": str(tmp_path / "nope.pem")})


def test_mqtt_311_fallback_when_asked(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker.port)
    t = make_transport(broker.url, tmp_path / "s", mqtt={"protocol": "3.1.1"})
    t.start()
    t.submit_many([(make_event(1), b"\xff\xd8x")])
    assert t.flush(15)
    assert sub.wait_for(lambda: sub.on("/events") and sub.on("/state"))
    assert t.max_payload is None  # MQTT 3.1.1 has no Maximum Packet Size
    publish(broker.port, T.cmd_req, b'{"cmd_id": "p1", "op": "ping"}')
    assert sub.wait_for(lambda: sub.on("/cmd/res"))
    assert json.loads(sub.on("/cmd/res")[0].payload)["status"] == "ok"
    t.close()
    assert sub.wait_for(lambda: not json.loads(sub.on("/state")[-1].payload)["online"])
    sub.close()
