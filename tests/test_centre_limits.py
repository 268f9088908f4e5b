"""What a node can make the centre keep: per-thumbnail size, the pending buffer's window and byte caps.

In-process against a real store first, then a flooding node against a real receiver on Mosquitto with mTLS
and the generated ACL.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent.config import ThumbnailConfig
from centre.limits import ThumbLimits
from centre.receiver import Receiver
from centre.store import Store
from provisioning.broker_config import BrokerLimits
from tests.test_centre import ev_topic, jpeg, listen_cmd, make_event, start_receivers, stop, thumb_topic

SMALL = ThumbLimits(max_bytes=10_000, pending_node_bytes=25_000, pending_total_bytes=30_000)


def refusals(store: Store) -> dict[str, dict[str, int]]:
    return {n: r.get("thumbs_refused", {}) for n, r in store.summary()["per_node"].items()}


def test_sizes_line_up_from_node_to_broker() -> None:
    """The node's default thumbnail fits the centre's cap, which fits the broker's default packet."""
    assert ThumbnailConfig().max_bytes <= ThumbLimits().max_bytes < BrokerLimits().max_packet_size
    assert ThumbLimits().pending_node_bytes <= ThumbLimits().pending_total_bytes


def test_an_oversized_thumbnail_is_refused_even_for_a_known_event(tmp_path: Path) -> None:
    big = b"\xff\xd8" + bytes(SMALL.max_bytes)
    ev = make_event("n1", 1, 1, thumb=big)
    with Store(tmp_path, limits=SMALL) as store:
        rx = Receiver(store)
        rx.handle(ev_topic("n1"), ev.model_dump_json().encode())
        rx.handle(thumb_topic("n1", ev.event_id), big)
        rx.handle(thumb_topic("n1", uuid.uuid4().hex), big)
        assert rx.stats.thumbs_refused == 2 and rx.stats.thumbnails == 0
        assert refusals(store) == {"n1": {"too_big": 2}}
        assert not store.thumb_path("n1", ev.event_id).exists()
        assert store.summary()["thumbnails"]["pending_bytes"] == 0


def test_pending_caps_per_node_and_in_total_refuse_new_thumbnails_not_parked_ones(tmp_path: Path) -> None:
    data = {i: b"\xff\xd8" + bytes(9_000 + i) for i in range(10)}  # each ~9 kB, all different
    with Store(tmp_path, limits=SMALL) as store:
        rx = Receiver(store)
        events = {i: make_event(f"n{i // 5}", i, i, thumb=data[i]) for i in range(10)}  # n0: 0-4, n1: 5-9
        for i in range(10):  # every thumbnail first, as a node does; no event yet
            rx.handle(thumb_topic(events[i].node_id, events[i].event_id), data[i])
        # n0 parks two (a third would pass its 25 kB); n1 parks one (a second would pass the 30 kB total)
        assert refusals(store) == {"n0": {"node_pending_full": 3}, "n1": {"total_pending_full": 4}}
        assert store.summary()["thumbnails"]["pending_bytes"] <= SMALL.pending_total_bytes
        redelivered = events[0]
        rx.handle(thumb_topic("n0", redelivered.event_id), data[0])  # replaces its own row: not refused
        assert sum(refusals(store)["n0"].values()) == 3
        for i in range(10):  # the events arrive: the parked thumbnails join, the refused ones stay missing
            rx.handle(ev_topic(events[i].node_id), events[i].model_dump_json().encode())
        ok = {r[0] for r in store.db.execute("SELECT seq FROM events WHERE thumb_status = 'ok'")}
        assert ok == {0, 1, 5}
        assert store.summary()["thumbnails"]["pending_bytes"] == 0
        rx.handle(thumb_topic("n0", events[2].event_id), data[2])  # a refused one, resent later, now joins
        assert store.thumb_path("n0", events[2].event_id).read_bytes() == data[2]


def test_a_thumbnail_older_than_the_window_is_dropped_and_counted(tmp_path: Path) -> None:
    t_late, t_kept = jpeg(1), jpeg(2)
    late, kept = make_event("n1", 1, 1, thumb=t_late), make_event("n1", 2, 1, thumb=t_kept)
    with Store(tmp_path, limits=SMALL) as store:
        rx = Receiver(store)
        rx.handle(thumb_topic("n1", late.event_id), t_late)
        store.db.execute("UPDATE pending_thumbs SET received_at = '2000-01-01T00:00:00.000Z'")  # aged out
        rx.handle(thumb_topic("n1", kept.event_id), t_kept)  # parking the next one sweeps the old one
        for ev in (late, kept):
            rx.handle(ev_topic("n1"), ev.model_dump_json().encode())
        status = dict(store.db.execute("SELECT event_id, thumb_status FROM events").fetchall())
        assert status == {late.event_id: "pending", kept.event_id: "ok"}
        assert refusals(store) == {"n1": {"expired": 1}}
        assert store.summary()["thumbnails"]["refused"] == {"expired": 1}


def test_one_log_line_when_refusals_start_and_one_when_they_end(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edgecam.centre")
    big = b"\xff\xd8" + bytes(SMALL.max_bytes)
    with Store(tmp_path, limits=SMALL) as store:
        rx = Receiver(store)
        for _ in range(5):
            rx.handle(thumb_topic("n1", uuid.uuid4().hex), big)
        rx.handle(thumb_topic("n1", uuid.uuid4().hex), jpeg(1))
        rx.handle(thumb_topic("n1", uuid.uuid4().hex), big)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "thumbnails of n1 refused (too_big" in lines[0] and "10000 per thumbnail" in lines[0]
    assert "n1 accepted again after 5 refused" in lines[1]
    assert "thumbnails of n1 refused (too_big" in lines[2]


# ---------------------------------------------------------------- a flooding node on the real broker

FLOOD = 200
FLOOD_BYTES = 250_000
NEAR_CAP = 60_000  # under the default 64 KiB per thumbnail: only the pending caps stop these


def test_a_flooding_node_cannot_fill_the_centres_disk_and_honest_thumbnails_all_arrive(tmp_path: Path) -> None:
    """A node certificate floods its own ``thumbs/<uuid>`` (200 × 250 kB, then 100 × 60 kB) through the real
    mTLS broker into a receiver with the default limits, while an honest node publishes thumbnail then event,
    some events only after the flood. The store grows by at most the per-node pending cap (plus the honest
    data), every refusal is counted for the flooder, and every honest thumbnail is stored."""
    from tests.tls import Client, Pki, start_tls_broker

    pki = Pki(tmp_path / "pki")
    ids = {n: pki.node(n) for n in ("flooder", "honest")}
    broker = start_tls_broker(tmp_path / "broker", pki)
    c, store = pki.centre, tmp_path / "store"
    limits = ThumbLimits()
    procs, conns = [], []
    try:
        procs = start_receivers([listen_cmd(f"mqtts://localhost:{broker.port}", store, "--until-idle", "3",
                                            "--quiet", "--tls-ca", str(c.ca_cert), "--tls-cert", str(c.cert),
                                            "--tls-key", str(c.key))])
        flooder, honest = (Client(broker.port, ident, n) for n, ident in ids.items())
        conns = [flooder, honest]
        sent = [make_event("honest", i, i, thumb=jpeg(i)) for i in range(20)]
        late = sent[10:]
        for ev in late:  # thumbnails whose events come only after the flood
            assert honest.publish(thumb_topic("honest", ev.event_id), jpeg(ev.seq)).value < 0x80
        for i in range(FLOOD):
            blob = i.to_bytes(4, "big") + bytes(FLOOD_BYTES - 4)
            assert flooder.publish(thumb_topic("flooder", uuid.uuid4().hex), blob).value < 0x80
            if i % 20 == 0:  # the honest node keeps working during the flood
                ev = sent[i // 20]
                assert honest.publish(thumb_topic("honest", ev.event_id), jpeg(ev.seq)).value < 0x80
                assert honest.publish(ev_topic("honest"), ev.model_dump_json()).value < 0x80
        for i in range(100):
            blob = i.to_bytes(4, "big") + bytes(NEAR_CAP - 4)
            assert flooder.publish(thumb_topic("flooder", uuid.uuid4().hex), blob).value < 0x80
        for ev in late:
            assert honest.publish(ev_topic("honest"), ev.model_dump_json()).value < 0x80
        _out, err = procs[0].communicate(timeout=120)
    finally:
        for conn in conns:
            conn.close()
        stop(procs)
        broker.stop()
    assert procs[0].returncode == 0, err
    on_disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    honest_bytes = sum(len(jpeg(ev.seq)) + 2 * len(ev.model_dump_json()) for ev in sent)
    assert on_disk <= limits.pending_node_bytes + honest_bytes + 512 * 1024, on_disk

    res = subprocess.run([sys.executable, "-m", "agent.cli", "centre", "summary", "--store", str(store), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    parked = limits.pending_node_bytes // NEAR_CAP
    assert s["per_node"]["flooder"]["thumbs_refused"] == {"too_big": FLOOD, "node_pending_full": 100 - parked}
    assert s["thumbnails"]["pending_bytes"] == parked * NEAR_CAP <= limits.pending_node_bytes
    assert s["per_node"]["honest"] == {"events": 20, "tracks": 20}  # nothing refused
    assert s["thumbnails"]["ok"] == 20 and s["thumbnails"]["refused"] == s["per_node"]["flooder"]["thumbs_refused"]
    for ev in sent:
        assert (store / "thumbs" / "honest" / f"{ev.event_id}.jpg").read_bytes() == jpeg(ev.seq)

    # a log line per episode, not per thumbnail: the oversized run, then the over-cap run after 17 were parked
    assert err.count("thumbnails of flooder refused") == 2, err
    assert "flooder accepted again after 200 refused" in err and "flooder: 83 refused in the episode" in err
    assert "thumbnails of honest" not in err


@pytest.mark.parametrize(("option", "value"), [("--thumb-max-bytes", "0"), ("--pending-window", "0"),
                                               ("--pending-node-bytes", "-1"), ("--pending-total-bytes", "x")])
def test_limit_options_are_checked(tmp_path: Path, option: str, value: str) -> None:
    res = subprocess.run(listen_cmd("mqtt://127.0.0.1:1", tmp_path / "s", option, value), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and f"Invalid value for '{option}'" in res.stderr, res.stderr
    assert not (tmp_path / "s").exists()  # refused before anything was opened
