"""The generated mTLS config and ACL against a real Mosquitto: what each identity can and cannot do.

Mosquitto 2.0.11 answers a denied QoS 1 publish with PUBACK 0x87 "Not authorized" and drops it; it
grants every SUBSCRIBE and filters each delivery through the read ACL. So every "cannot" below is
asserted twice where it matters: the reason code the sender gets, and that the other side received
nothing while a positive control in the same test did arrive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.contract import BY_KEY, CENTRE, CHANNELS, NODE
from tests.tls import Client, Pki, start_tls_broker, wait

NOT_AUTHORIZED = 0x87


def accepted(reason) -> bool:
    """PUBACK success codes are below 0x80 (0x10 "No matching subscribers" is a success)."""
    return reason.value < 0x80


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki: Pki):
    b = start_tls_broker(tmp_path_factory.mktemp("tls-broker"), pki)
    yield b
    b.stop()


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(*args, **kw) -> Client:
        c = Client(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _node(clients, broker, pki: Pki, node_id: str, client_id: str | None = None) -> Client:
    c = clients(broker.port, pki.node(node_id), client_id or node_id)
    assert c.connected, (node_id, c.connack, c.disconnected, broker.log()[-2000:])
    return c


def _centre(clients, broker, pki: Pki, client_id: str = "centre") -> Client:
    c = clients(broker.port, pki.centre, client_id)
    assert c.connected, (c.connack, c.disconnected)
    return c


def test_node_cannot_publish_under_another_nodes_topics(tls_broker, pki, clients) -> None:
    centre = _centre(clients, tls_broker, pki)
    centre.subscribe("edgecam/v1/#")
    a = _node(clients, tls_broker, pki, "node-a")
    for sub in ("events", "state", "thumbs/e1", "cmd/res", "health"):
        assert a.publish(f"edgecam/v1/node-b/{sub}", b"forged").value == NOT_AUTHORIZED, sub
    assert accepted(a.publish("edgecam/v1/node-a/events", b"{}"))  # positive control, sent last
    assert wait(lambda: "edgecam/v1/node-a/events" in centre.topics())
    assert not [t for t in centre.topics() if t.startswith("edgecam/v1/node-b/")]


def test_node_cannot_read_another_nodes_commands(tls_broker, pki, clients) -> None:
    a = _node(clients, tls_broker, pki, "node-a")
    b = _node(clients, tls_broker, pki, "node-b")
    a.subscribe("edgecam/v1/node-b/cmd/req")
    a.subscribe("edgecam/v1/+/config/desired")
    a.subscribe("edgecam/v1/#")
    b.subscribe("edgecam/v1/node-b/cmd/req")
    b.subscribe("edgecam/v1/node-b/config/desired")
    centre = _centre(clients, tls_broker, pki)
    assert accepted(centre.publish("edgecam/v1/node-b/cmd/req", json.dumps({"cmd_id": "1", "op": "ping"})))
    assert accepted(centre.publish("edgecam/v1/node-b/config/desired", b'{"version":1,"config":{}}'))
    assert wait(lambda: len(b.topics()) == 2), b.topics()  # B got both: delivery happened
    assert not [t for t in a.topics() if "node-b" in t]


def test_node_cannot_publish_control_topics(tls_broker, pki, clients) -> None:
    a = _node(clients, tls_broker, pki, "node-a")
    a.subscribe("edgecam/v1/node-a/cmd/req")
    for topic in ("edgecam/v1/node-a/cmd/req", "edgecam/v1/node-b/cmd/req", "edgecam/v1/node-a/config/desired",
                  "edgecam/v1/centre/state"):
        assert a.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
    assert accepted(a.publish("edgecam/v1/node-a/cmd/res", b"{}"))
    assert not a.topics()  # its own cmd/req publish never came back to it


def test_node_reads_centre_state_only_the_centre_writes(tls_broker, pki, clients) -> None:
    centre = _centre(clients, tls_broker, pki)
    assert accepted(centre.publish("edgecam/v1/centre/state", b'{"online":true}', retain=True))
    a = _node(clients, tls_broker, pki, "node-a")
    a.subscribe("edgecam/v1/centre/state")
    assert wait(lambda: a.topics() == ["edgecam/v1/centre/state"]), a.topics()
    assert accepted(centre.publish("edgecam/v1/centre/state", b"", retain=True))  # clear retained for other tests


def test_channels_nothing_implements_are_denied(tls_broker, pki, clients) -> None:
    """Channels outside an identity's rows are denied: a node cannot write OTA jobs, announcements or claim
    topics; the centre cannot write a node's ota/status (enrolment topics belong to claims: tests/test_enrol.py)."""
    centre = _centre(clients, tls_broker, pki)
    centre.subscribe("edgecam/v1/#")
    a = _node(clients, tls_broker, pki, "node-a")
    a.subscribe("edgecam/v1/#")
    by_node = ("edgecam/v1/enrol/node-a/csr", "edgecam/v1/fleet/releases/stable", "edgecam/v1/node-a/ota/job")
    by_centre = ("edgecam/v1/node-a/ota/status",)
    for topic in by_node:
        assert a.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
    for topic in by_centre:
        assert centre.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
    assert accepted(a.publish("edgecam/v1/node-a/events", b"{}"))  # positive controls, sent last
    assert accepted(centre.publish("edgecam/v1/node-a/cmd/req", b"{}"))
    assert wait(lambda: "edgecam/v1/node-a/events" in centre.topics() and "edgecam/v1/node-a/cmd/req" in a.topics())
    # the broker delivers in order per publisher, so a denied message sent before its control would be here by
    # now; other tests' retained messages on the shared broker may be too, so only the denied ones are checked
    assert not {*by_node, *by_centre} & {*centre.topics(), *a.topics()}


#: a channel each identity reads, published last: once it arrived, everything sent before it has too
SENTINEL = {"node-a": ("cmd_req", "centre"), "node-b": ("cmd_req", "centre"), "centre": ("events", "node-a")}


@pytest.mark.parametrize("ch", CHANNELS, ids=lambda ch: ch.key)
def test_each_channel_is_granted_to_exactly_the_identities_the_table_names(tls_broker, pki, clients, ch) -> None:
    """Node node-a, another node node-b and the centre each publish on node-a's instance of the channel and
    subscribe to it: the broker's PUBACKs and deliveries follow the table (node-b only has node rights on
    channels that are not per node, such as centre/state)."""
    conns = {"node-a": _node(clients, tls_broker, pki, "node-a"), "node-b": _node(clients, tls_broker, pki, "node-b"),
             "centre": _centre(clients, tls_broker, pki)}
    per_node = "node_id" in ch.params
    publish_ok = {"node-a": NODE in ch.publishers, "node-b": NODE in ch.publishers and not per_node,
                  "centre": CENTRE in ch.publishers}
    read_ok = {"node-a": NODE in ch.subscribers, "node-b": NODE in ch.subscribers and not per_node,
               "centre": CENTRE in ch.subscribers}
    topic = ch.topic(**{p: v for p, v in {"node_id": "node-a", "event_id": "e1", "claim_id": "node-a",
                                          "channel": "stable"}.items() if p in ch.params})
    sentinels = {name: BY_KEY[key].topic(node_id=name if name != "centre" else "node-a")
                 for name, (key, _by) in SENTINEL.items()}
    for name, c in conns.items():
        c.subscribe(topic)
        c.subscribe(sentinels[name])
    for name, c in conns.items():
        assert accepted(c.publish(topic, b"{}")) == publish_ok[name], (name, topic)
    for name, (_key, by) in SENTINEL.items():
        assert accepted(conns[by].publish(sentinels[name], b"{}")), (by, sentinels[name])
    for name, c in conns.items():
        assert wait(lambda c=c, name=name: sentinels[name] in c.topics()), (name, c.topics())
        # a channel only claims publish (enrol_csr) has no publisher here: reading it is tested in test_enrol.py
        assert (topic in c.topics()) == (read_ok[name] and any(publish_ok.values())), (name, topic, c.topics())


def test_centre_reads_everything_with_shared_subscriptions(tls_broker, pki, clients) -> None:
    c1 = _centre(clients, tls_broker, pki, "centre-1")
    assert [rc.value for rc in c1.subscribe("$share/g/edgecam/v1/+/events")] == [1]
    a = _node(clients, tls_broker, pki, "node-a")
    for i in range(3):
        assert accepted(a.publish("edgecam/v1/node-a/events", f'{{"i":{i}}}'))
    assert wait(lambda: len(c1.topics()) == 3)


def test_client_without_certificate_cannot_connect(tls_broker, pki, clients) -> None:
    c = clients(tls_broker.port, None, "anon", ca=pki.centre.ca_cert)
    assert not c.connected
    assert c.error is not None or c.disconnected is not None  # refused, not merely slow


def test_client_with_certificate_from_another_ca_cannot_connect(tls_broker, pki, clients, tmp_path) -> None:
    other = Pki(tmp_path / "other")
    impostor = other.node("node-a")  # same CN as a real node, wrong CA
    c = clients(tls_broker.port, impostor, "node-a", ca=pki.centre.ca_cert)
    assert not c.connected
    assert c.error is not None or c.disconnected is not None  # refused, not merely slow


def test_plain_mqtt_on_the_tls_port_is_refused(tls_broker, clients) -> None:
    c = clients(tls_broker.port, None, "plain", tls=False)
    assert not c.connected
    assert c.error is not None or c.disconnected is not None


def test_client_id_is_the_certificate_cn(tls_broker, pki, clients) -> None:
    """A node reusing another node's client id gets its own CN as id: the victim stays connected."""
    b = _node(clients, tls_broker, pki, "node-b")
    as_a, as_b = tls_broker.log().count(" as node-a ("), tls_broker.log().count(" as node-b (")
    spoof = _node(clients, tls_broker, pki, "node-a", client_id="node-b")
    assert accepted(spoof.publish("edgecam/v1/node-a/health", b"{}"))
    assert not wait(lambda: b.disconnected is not None, 1.0)
    assert b.connected
    log = tls_broker.log()
    assert log.count(" as node-a (") == as_a + 1 and log.count(" as node-b (") == as_b


def test_insecure_loopback_listener_is_read_only(tmp_path: Path, pki, clients) -> None:
    from tests.broker import free_port, wait_port

    plain_port = free_port()
    b = start_tls_broker(tmp_path / "b", pki, insecure_loopback_port=plain_port)
    try:
        assert wait_port(plain_port)  # the harness waited for the TLS port; listeners open one after the other
        watcher = clients(plain_port, None, "watcher", tls=False)
        assert watcher.connected, (watcher.error, watcher.connack, watcher.disconnected, b.log()[-1500:])
        watcher.subscribe("edgecam/v1/#")
        assert watcher.publish("edgecam/v1/node-a/cmd/req", b"{}").value == NOT_AUTHORIZED
        assert watcher.publish("edgecam/v1/node-a/events", b"{}").value == NOT_AUTHORIZED
        centre = _centre(clients, b, pki)  # a config document may carry a password: not for anonymous eyes
        assert accepted(centre.publish("edgecam/v1/node-a/config/desired", b'{"version":1,"config":{}}'))
        a = _node(clients, b, pki, "node-a")
        assert accepted(a.publish("edgecam/v1/node-a/events", b"{}"))  # the config was routed before this
        assert wait(lambda: "edgecam/v1/node-a/events" in watcher.topics()), watcher.topics()
        assert watcher.topics() == ["edgecam/v1/node-a/events"], watcher.topics()
    finally:
        b.stop()


def _transport(tmp_path: Path, broker, ident, node_id: str):
    from agent.config import AgentConfig
    from agent.contract import Versions
    from agent.transport import Transport

    cfg = AgentConfig.model_validate({
        "node_id": node_id, "state_dir": str(tmp_path / node_id),
        "mqtt": {"url": f"mqtts://localhost:{broker.port}", "tls_ca": str(ident.ca_cert),
                 "tls_cert": str(ident.cert), "tls_key": str(ident.key)},
    })
    return Transport(cfg, boot_id="boot-1", versions=Versions(agent="test"), caps=["ping"])


def test_centre_commands_a_real_node_transport_over_mtls(tls_broker, pki, clients, tmp_path) -> None:
    from centre.command import send_command
    from centre.mqtt import MqttOptions

    watch = _centre(clients, tls_broker, pki, "watch")
    watch.subscribe("edgecam/v1/node-c/state")
    node = _transport(tmp_path, tls_broker, pki.node("node-c"), "node-c")
    node.start()
    try:
        assert wait(lambda: any(m.payload and json.loads(m.payload).get("online") for m in watch.messages), 15)
        centre = pki.centre
        opts = MqttOptions.from_cli(f"mqtts://localhost:{tls_broker.port}", centre.ca_cert, centre.cert, centre.key)
        res = send_command(opts, "node-c", "ping", {}, timeout=30)
        assert res.status == "ok", res
        cli = _run_cli("centre", "command", "node-c", "ping", "--timeout", "30", "--mqtt", opts.url,
                       "--tls-ca", str(centre.ca_cert), "--tls-cert", str(centre.cert), "--tls-key", str(centre.key))
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["status"] == "ok"

        # a node identity may not command another node: the broker refuses the request
        from agent.errors import EdgecamError

        other = pki.node("node-d")
        opts_d = MqttOptions.from_cli(opts.url, other.ca_cert, other.cert, other.key)
        with pytest.raises(EdgecamError, match="refused"):
            send_command(opts_d, "node-c", "ping", {}, timeout=5)
    finally:
        node.close()


def test_node_transport_subscribes_to_and_handles_every_channel_it_may_read(tls_broker, pki, clients,
                                                                           tmp_path) -> None:
    """The real node subscribes to exactly the channels the table lets a node read, and answers each:
    cmd/req → cmd/res, config/desired → config/reported, a live centre/state → state again."""
    watch = _centre(clients, tls_broker, pki, "watch")
    for ch in (BY_KEY["state"], BY_KEY["cmd_res"], BY_KEY["config_reported"]):
        watch.subscribe(ch.topic(node_id="node-e"))
    node = _transport(tmp_path, tls_broker, pki.node("node-e"), "node-e")
    subscribed: list[tuple[str, int]] = []
    real_subscribe = node.link.subscribe

    def spy(topics: list[tuple[str, int]]) -> None:
        subscribed.extend(topics)
        real_subscribe(topics)

    node.link.subscribe = spy
    node.start()
    try:
        assert wait(lambda: watch.topics().count("edgecam/v1/node-e/state") == 1, 15), watch.topics()
        expected = {(ch.filter(node_id="node-e"), ch.qos) for ch in CHANNELS
                    if NODE in ch.subscribers and CENTRE in ch.publishers}
        assert set(subscribed) == expected and len(subscribed) == len(expected)
        assert accepted(watch.publish("edgecam/v1/node-e/cmd/req", json.dumps({"cmd_id": "c1", "op": "ping"})))
        assert accepted(watch.publish("edgecam/v1/node-e/config/desired", b'{"version": 1, "config": {}}'))
        assert accepted(watch.publish("edgecam/v1/centre/state", b'{"online": true}'))
        assert wait(lambda: {"edgecam/v1/node-e/cmd/res", "edgecam/v1/node-e/config/reported"} <= set(watch.topics())
                    and watch.topics().count("edgecam/v1/node-e/state") == 2, 15), watch.topics()
    finally:
        node.close()


def _run_cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120)


def test_centre_command_cli_reports_timeout(tls_broker, pki) -> None:
    c = pki.centre
    res = _run_cli("centre", "command", "nobody-home", "ping", "--timeout", "1",
                   "--mqtt", f"mqtts://127.0.0.1:{tls_broker.port}", "--tls-ca", str(c.ca_cert),
                   "--tls-cert", str(c.cert), "--tls-key", str(c.key))
    assert res.returncode == 2, res
    assert res.stderr.strip().count("\n") == 0 and "no reply to ping" in res.stderr


def test_revoked_node_is_refused_after_the_crl_reaches_the_broker(tmp_path: Path, clients) -> None:
    import shutil
    import signal

    pki = Pki(tmp_path / "pki")
    b = start_tls_broker(tmp_path / "b", pki)
    try:
        assert _node(clients, b, pki, "node-x").connected
        res = _run_cli("ca", "revoke", "node-x", "--ca", str(pki.ca_dir))
        assert res.returncode == 0 and "revoked node-x" in res.stdout, res.stderr
        shutil.copyfile(pki.ca_dir / "crl.pem", tmp_path / "b" / "conf" / "certs" / "crl.pem")
        b.proc.send_signal(signal.SIGHUP)
        assert wait(lambda: "Reloading config" in b.log() or "reload" in b.log().lower(), 5)
        again = clients(b.port, pki.node("node-x"), "node-x-again")
        assert not wait(lambda: again.connected, 1)
        assert again.error is not None or again.disconnected is not None
        assert _node(clients, b, pki, "node-y").connected  # other identities unaffected
    finally:
        b.stop()


def test_no_ordering_of_issues_gives_a_node_certificate_centre_rights(tmp_path: Path, clients) -> None:
    """``ca issue NAME`` and ``ca issue NAME --centre`` in each order (and after revoking the node, on a broker
    whose CRL is still the old one): whatever node certificate exists has node rights only on the real broker,
    because the CA refuses the second identity."""
    from provisioning.broker_config import write_broker_config
    from provisioning.ca import CaError, issue_node, revoke
    from tests.broker import Broker, free_port

    pki = Pki(tmp_path / "pki")
    stale_crl = (pki.ca_dir / "crl.pem").read_bytes()
    orders = {"n-then-c": ("node", "centre"), "c-then-n": ("centre", "node"),
              "n-revoked-then-c": ("node", "revoke", "centre")}
    nodes, refused = {}, []
    for name, steps in orders.items():
        for step in steps:
            try:
                if step == "revoke":
                    revoke(name, pki.ca_dir)
                else:
                    ident = issue_node(name, pki.ca_dir, tmp_path / step, centre=step == "centre")
                    if step == "node":
                        nodes[name] = ident
            except CaError:
                refused.append((name, step))
    port = free_port()
    conf = write_broker_config(pki.ca_dir, port, tmp_path / "b" / "conf", bind="127.0.0.1",
                               run_as="root" if os.geteuid() == 0 else None)
    (conf.crlfile).write_bytes(stale_crl)  # the revocation has not reached this broker yet
    broker = Broker(tmp_path / "b", port=port, conf=conf.conf.read_text()).start()
    try:
        centre = _centre(clients, broker, pki)
        centre.subscribe("edgecam/v1/+/events")
        victim = _node(clients, broker, pki, "victim")
        victim.subscribe("edgecam/v1/victim/cmd/req")
        assert set(nodes) == {"n-then-c", "n-revoked-then-c"}
        for name, ident in nodes.items():
            n = clients(broker.port, ident, name)
            assert n.connected, (name, n.connack, broker.log()[-1500:])
            n.subscribe("edgecam/v1/+/events")
            n.subscribe("$share/g/edgecam/v1/+/events")
            n.subscribe(f"edgecam/v1/{name}/cmd/req")  # the sentinel it may read
            assert n.publish("edgecam/v1/victim/cmd/req", b"{}").value == NOT_AUTHORIZED, name
            assert n.publish("edgecam/v1/centre/state", b"{}").value == NOT_AUTHORIZED, name
            before = centre.topics().count("edgecam/v1/victim/events")
            assert accepted(victim.publish("edgecam/v1/victim/events", b"{}"))  # positive control
            assert wait(lambda before=before: centre.topics().count("edgecam/v1/victim/events") == before + 1)
            assert accepted(centre.publish(f"edgecam/v1/{name}/cmd/req", b"{}"))  # sent after the event arrived
            assert wait(lambda n=n: n.topics()), name
            assert n.topics() == [f"edgecam/v1/{name}/cmd/req"], (name, n.topics())
        assert not victim.topics()
    finally:
        broker.stop()
    assert refused == [("n-then-c", "centre"), ("c-then-n", "node"), ("n-revoked-then-c", "centre")]
