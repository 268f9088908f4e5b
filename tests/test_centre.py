"""The reference centre: store semantics in-process, then real receivers on a real Mosquitto."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import simplejpeg
from paho.mqtt.enums import CallbackAPIVersion

from agent.contract import Event, ModelRef, ThumbRef
from centre.receiver import Receiver
from centre.store import Store
from tests.waiting import wait_until

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=timezone.utc)


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return simplejpeg.encode_jpeg(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), quality=80)


def make_event(node: str, seq: int, track: int, typ: str = "start", thumb: bytes | None = None,
               label: str = "car") -> Event:
    ref = ThumbRef(sha256=hashlib.sha256(thumb).hexdigest(), bytes=len(thumb), w=32, h=24) if thumb else None
    return Event(event_id=uuid.uuid4().hex, node_id=node, camera_id="cam0", boot_id="boot-1", seq=seq, type=typ,
                 track_id=track, label=label, score=0.8, top_score=0.9, bbox=(0.1, 0.1, 0.3, 0.4),
                 ts=T0 + timedelta(seconds=seq), start_ts=T0, clock_synced=True, thumb=ref,
                 model=ModelRef(name="demo", sha256="0" * 64))


def ev_topic(node: str) -> str:
    return f"edgecam/v1/{node}/events"


def thumb_topic(node: str, event_id: str) -> str:
    return f"edgecam/v1/{node}/thumbs/{event_id}"


# ---------------------------------------------------------------- in-process: store and routing


def test_upsert_dedups_and_joins_thumbnails_in_either_order(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        rx = Receiver(store)
        t1, t2 = jpeg(1), jpeg(2)
        e1 = make_event("n1", 1, 5, "start", t1)
        e2 = make_event("n1", 2, 5, "end", t2)
        rx.handle(ev_topic("n1"), e1.model_dump_json().encode())          # event first
        rx.handle(ev_topic("n1"), e1.model_dump_json().encode())          # redelivery
        rx.handle(thumb_topic("n1", e1.event_id), t1)
        rx.handle(thumb_topic("n1", e1.event_id), t1)                      # redelivered thumbnail
        rx.handle(thumb_topic("n1", e2.event_id), t2)                      # thumbnail first
        rx.handle(ev_topic("n1"), e2.model_dump_json().encode())

        assert rx.stats.events == 3 and rx.stats.duplicates == 1 and len(rx.stats.event_ids) == 2
        assert rx.stats.thumbnails == 2 and rx.stats.invalid == 0
        rows = store.db.execute("SELECT event_id, deliveries, thumb_status FROM events ORDER BY seq").fetchall()
        assert rows == [(e1.event_id, 2, "ok"), (e2.event_id, 1, "ok")]
        for ev, data in ((e1, t1), (e2, t2)):
            assert store.thumb_path("n1", ev.event_id).read_bytes() == data
        track = store.db.execute("SELECT latest_type, events, thumbnails FROM tracks").fetchall()
        assert track == [("end", 2, 2)]
        assert store.db.execute("SELECT COUNT(*) FROM pending_thumbs").fetchone()[0] == 0


def test_bad_payloads_are_counted_and_logged_with_their_topic(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.centre")
    with Store(tmp_path) as store:
        rx = Receiver(store)
        good_thumb = jpeg(3)
        ev = make_event("n1", 1, 1, thumb=good_thumb)
        unsafe = make_event("n1", 2, 1).model_copy(update={"event_id": "../../etc/x"})
        cases = [
            (ev_topic("n1"), b"{not json"),
            (ev_topic("n1"), json.dumps({"event_id": "x", "node_id": "n1"}).encode()),  # fields missing
            (ev_topic("n2"), ev.model_dump_json().encode()),                             # node_id differs
            (ev_topic("n1"), unsafe.model_dump_json().encode()),                         # path traversal id
            ("edgecam/v1/n1/health", b'{"fps": "fast"}'),
            ("edgecam/v1/n1/weird", b"{}"),
        ]
        for topic, payload in cases:
            rx.handle(topic, payload)
        rx.handle(ev_topic("n1"), ev.model_dump_json().encode())
        rx.handle(thumb_topic("n1", ev.event_id), jpeg(4))  # sha256 does not match the event's
        assert rx.stats.invalid == len(cases) + 1
        assert store.db.execute("SELECT COUNT(*) FROM invalid").fetchone()[0] == len(cases) + 1
        assert store.db.execute("SELECT thumb_status FROM events").fetchone()[0] == "mismatch"
        assert not store.thumb_path("n1", ev.event_id).exists()
        rx.handle(thumb_topic("n1", ev.event_id), good_thumb)  # the right bytes, redelivered, still join
        assert store.db.execute("SELECT thumb_status FROM events").fetchone()[0] == "ok"
    logged = [r.getMessage() for r in caplog.records]
    assert any("edgecam/v1/n2/events" in m and "node_id" in m for m in logged)
    assert any("edgecam/v1/n1/weird" in m for m in logged)
    assert not list(tmp_path.rglob("x.jpg")) and not (tmp_path.parent / "etc").exists()


# ---------------------------------------------------------------- real receivers on a real broker


def listen_cmd(url: str, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", "centre", "listen", "--mqtt", url, "--store", str(store), *extra]


def start_receivers(cmds: list[list[str]]) -> list[subprocess.Popen]:
    """Start receivers and return once each said (on stderr) that its subscriptions were granted."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    try:
        for p in procs:
            line = p.stderr.readline()
            assert line.startswith("listening on"), line + p.stderr.read()
    except BaseException:
        stop(procs)
        raise
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def store_query(store: Path, sql: str) -> int:
    """One number from the receivers' store (0 before it exists), read while they write it."""
    if not (store / "centre.sqlite3").exists():
        return 0
    with sqlite3.connect(store / "centre.sqlite3", timeout=30) as con:
        return con.execute(sql).fetchone()[0] or 0


def stop_when(procs: list[subprocess.Popen], done, timeout: float = 60.0) -> list[tuple[str, str]]:
    """Once ``done()`` (what was sent is in the store), SIGTERM the receivers: each prints its summary and exits.

    Ending on the store's state, not on ``--until-idle``, which a loaded machine can outrun mid-test.
    """
    assert wait_until(done, timeout), "the receivers did not store what was sent"
    for p in procs:
        p.terminate()
    return [p.communicate(timeout=60) for p in procs]


def publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-fleet", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def summary_counts(stdout: str) -> dict[str, int]:
    m = re.search(r"summary: (.*)", stdout)
    assert m, stdout
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def test_two_receivers_split_a_share_group_and_the_store_has_the_union(broker, tmp_path: Path) -> None:
    store = tmp_path / "centre"
    procs = start_receivers([listen_cmd(broker.url, store, "--group", "g", "--quiet", "--client-id", f"rx{i}")
                             for i in range(2)])
    try:
        pub = publisher(broker.port)
        sent: list[tuple[Event, bytes]] = []
        infos = []
        for i in range(40):
            node = f"node-{i % 3}"
            data = jpeg(i)
            ev = make_event(node, i, i // 4, "start" if i % 4 == 0 else "update", data, label=("car", "person")[i % 2])
            sent.append((ev, data))
            body = ev.model_dump_json()
            if i % 2:  # thumbnail before its event for every other one
                infos.append(pub.publish(thumb_topic(node, ev.event_id), data, qos=1))
                infos.append(pub.publish(ev_topic(node), body, qos=1))
            else:
                infos.append(pub.publish(ev_topic(node), body, qos=1))
                infos.append(pub.publish(thumb_topic(node, ev.event_id), data, qos=1))
            if i % 5 == 0:  # at-least-once redelivery of the same event
                infos.append(pub.publish(ev_topic(node), body, qos=1))
        infos.append(pub.publish(ev_topic("node-0"), b'{"v": 1}', qos=1))  # invalid
        for info in infos:
            info.wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        outs = stop_when(procs, lambda: store_query(store, "SELECT SUM(deliveries) FROM events") == len(sent) + 8
                         and store_query(store, "SELECT COUNT(*) FROM invalid") == 1
                         and len(list((store / "thumbs").rglob("*.jpg"))) == len(sent))
    finally:
        stop(procs)
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    counts = [summary_counts(out) for out, _ in outs]
    print("per receiver:", counts)
    duplicates = 8
    assert all(c["events"] > 0 for c in counts), counts                      # the load was split
    assert sum(c["events"] for c in counts) == len(sent) + duplicates         # each delivery went to one receiver
    assert sum(c["invalid"] for c in counts) == 1
    assert sum(c["thumbnails"] for c in counts) == len(sent)                  # each joined exactly once

    db = sqlite3.connect(store / "centre.sqlite3")
    ids = {r[0] for r in db.execute("SELECT event_id FROM events")}
    assert ids == {ev.event_id for ev, _ in sent}                              # union has all, one row each
    assert db.execute("SELECT SUM(deliveries) FROM events").fetchone()[0] == len(sent) + duplicates
    assert {r[0] for r in db.execute("SELECT receiver FROM events")} == {"rx0", "rx1"}
    for ev, data in sent:
        path = store / "thumbs" / ev.node_id / f"{ev.event_id}.jpg"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ev.thumb.sha256 == hashlib.sha256(data).hexdigest()
    assert db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0] == len({(e.node_id, e.track_id) for e, _ in sent})

    res = subprocess.run([sys.executable, "-m", "agent.cli", "centre", "summary", "--store", str(store), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["events"] == len(sent) and s["thumbnails"]["ok"] == len(sent) and s["invalid"] == 1
    assert sum(n["events"] for n in s["per_node"].values()) == len(sent)
    assert s["per_label"] == {"car": 20, "person": 20}
    human = subprocess.run([sys.executable, "-m", "agent.cli", "centre", "summary", "--store", str(store)],
                           capture_output=True, text=True, timeout=60)
    assert human.returncode == 0 and "node-2" in human.stdout and ".jpg" in human.stdout


def test_receiver_over_mtls_with_the_centre_identity(tmp_path: Path) -> None:
    from tests.tls import Client, Pki, start_tls_broker

    pki = Pki(tmp_path / "pki")
    broker = start_tls_broker(tmp_path / "broker", pki)
    c = pki.centre
    node, procs = None, []
    try:
        procs = start_receivers([listen_cmd(f"mqtts://localhost:{broker.port}", tmp_path / "store", "--group", "g",
                                             "--tls-ca", str(c.ca_cert), "--tls-cert", str(c.cert), "--tls-key",
                                             str(c.key))])
        proc = procs[0]
        node = Client(broker.port, pki.node("cam-1"), "cam-1")
        data = jpeg(9)
        ev = make_event("cam-1", 0, 1, thumb=data)
        assert node.publish(ev_topic("cam-1"), ev.model_dump_json()).value < 0x80
        assert node.publish(thumb_topic("cam-1", ev.event_id), data).value < 0x80
        assert node.publish("edgecam/v1/cam-1/state", b'{"online": true, "bd_seq": 0}', retain=True).value < 0x80
        thumb = tmp_path / "store" / "thumbs" / "cam-1" / f"{ev.event_id}.jpg"
        [(out, err)] = stop_when(procs, lambda: thumb.exists()
                                 and store_query(tmp_path / "store", "SELECT COUNT(*) FROM node_status") == 1)
    finally:
        if node:
            node.close()
        stop(procs)
        broker.stop()
    assert proc.returncode == 0, err
    assert summary_counts(out) == {"events": 1, "unique_event_ids": 1, "tracks": 1, "thumbnails": 1, "invalid": 0}
    assert "cam-1" in out and "car" in out  # the live line
    assert (tmp_path / "store" / "thumbs" / "cam-1" / f"{ev.event_id}.jpg").read_bytes() == data


def test_listen_user_errors_are_one_line(tmp_path: Path) -> None:
    res = subprocess.run(listen_cmd("mqtts://127.0.0.1:1", tmp_path / "s", "--tls-ca", str(tmp_path / "nope.crt")),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "nope.crt" in res.stderr
    res = subprocess.run([sys.executable, "-m", "agent.cli", "centre", "summary", "--store", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no centre store" in res.stderr and "Traceback" not in res.stderr


def test_receiver_resubscribes_after_a_broker_restart(broker, tmp_path: Path) -> None:
    procs = start_receivers([listen_cmd(broker.url, tmp_path / "s", "--group", "g")])
    try:
        broker.stop()
        broker.start()  # same port; the receiver reconnects with backoff and subscribes again
        pub = publisher(broker.port)
        ev = make_event("n9", 0, 1)

        def stored() -> bool:  # QoS 1 to a share group with no member is just dropped: publish until it is back
            pub.publish(ev_topic("n9"), ev.model_dump_json(), qos=1).wait_for_publish(5)
            return store_query(tmp_path / "s", "SELECT COUNT(*) FROM events") > 0

        assert wait_until(stored, 60, interval=0.3), "the receiver did not come back after the broker restart"
        pub.disconnect()
        pub.loop_stop()
        [(out, err)] = stop_when(procs, lambda: store_query(tmp_path / "s", "SELECT COUNT(*) FROM events") > 0)
    finally:
        stop(procs)
    assert procs[0].returncode == 0, err
    assert "connection lost" in err
    counts = summary_counts(out)
    assert counts["unique_event_ids"] == 1 and counts["events"] >= 1


def test_persistent_session_gets_what_was_published_while_the_receiver_was_down(broker, tmp_path: Path) -> None:
    cmd = listen_cmd(broker.url, tmp_path / "s", "--group", "g", "--client-id", "rx-p", "--session-expiry", "60",
                     "--quiet")
    first = start_receivers([[*cmd, "--until-idle", "0.5"]])
    assert first[0].wait(30) == 0
    pub = publisher(broker.port)
    sent = [make_event("n5", i, 1) for i in range(3)]
    for ev in sent:
        pub.publish(ev_topic("n5"), ev.model_dump_json(), qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    procs = start_receivers([[*cmd, "--until-idle", "1.5"]])
    try:
        out, err = procs[0].communicate(timeout=60)
    finally:
        stop(procs)
    assert procs[0].returncode == 0, err
    assert summary_counts(out)["unique_event_ids"] == 3
    res = subprocess.run(listen_cmd(broker.url, tmp_path / "x", "--session-expiry", "5"), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "--client-id" in res.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["centre", "command", "n1", "ping", "--args", "{bad", "--mqtt", "mqtt://127.0.0.1:1"], "--args"),
    (["centre", "command", "n1", "explode", "--mqtt", "mqtt://127.0.0.1:1"], "op"),
    (["centre", "command", "n1", "ping", "--mqtt", "http://x"], "--mqtt: 'http://x': expected mqtt://"),
    (["centre", "command", "n1", "ping", "--mqtt", "mqtt://127.0.0.1:1"], "cannot connect"),
    (["centre", "command", "fleet", "ping", "--mqtt", "mqtt://127.0.0.1:1"], "node id: 'fleet' is reserved"),
    (["centre", "command", "a/b", "ping", "--mqtt", "mqtt://127.0.0.1:1"], "node id: 'a/b' is not"),
    (["centre", "listen", "--mqtt", "mqtt://127.0.0.1:1", "--store", "{tmp}/s", "--group", "a/b"], "--group"),
    (["broker-config", "--ca", "{tmp}/none", "--out", "{tmp}/b"], "ca init"),
])
def test_centre_and_broker_cli_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = subprocess.run([sys.executable, "-m", "agent.cli", *argv], capture_output=True, text=True, timeout=60)
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, err)
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_centre_command_names_a_lost_connection(tmp_path: Path, processes) -> None:
    """The broker goes away while the command waits for a reply: the error says so, at once, instead of a wait
    that runs out and blames the node (or the SUBACK)."""
    import threading

    from agent.errors import EdgecamError
    from centre.command import send_command
    from centre.mqtt import MqttOptions
    from tests.broker import Broker, free_port

    broker = processes.adopt(Broker(tmp_path / "b", port=free_port()).start())
    opts = MqttOptions.from_cli(broker.url, client_id="centre-lost")
    errors: list[Exception] = []

    def run() -> None:
        try:
            send_command(opts, "nobody-home", "ping", {}, timeout=600)
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert wait_until(lambda: broker.subacks_to("centre-lost") >= 1, 60)
    broker.stop()
    worker.join(120)
    assert not worker.is_alive(), "the command kept waiting on a closed connection"
    assert len(errors) == 1 and isinstance(errors[0], EdgecamError)
    assert str(errors[0]).startswith(f"{broker.url}: connection lost"), errors[0]
