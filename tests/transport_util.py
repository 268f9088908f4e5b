"""Helpers for the transport tests: events, a reconnecting subscriber, a publisher process to SIGKILL.

``python -m tests.transport_util --url … --state-dir … --count N`` submits N events (one line
``submitted <event_id>`` on stdout after each ``submit`` returned) and then flushes; the outage tests
kill it mid-run and start it again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import AgentConfig, build_config
from agent.contract import Event, ModelRef, Versions, utc_now
from agent.events.ids import uuid7
from tests.broker import Broker


def make_cfg(url: str, state_dir: Path, node_id: str = "node-t", **sections: Any) -> AgentConfig:
    data: dict[str, Any] = {"node_id": node_id, "state_dir": str(state_dir),
                            "mqtt": {"url": url, "backoff_min_s": 0.1, "backoff_max_s": 1.0}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return build_config(data)


def make_event(seq: int, node_id: str = "node-t") -> Event:
    now = utc_now()
    return Event(event_id=uuid7(), node_id=node_id, camera_id="cam0", boot_id="boot-t", seq=seq, type="start",
                 track_id=seq, label="car", score=0.5, top_score=0.6, bbox=(0.1, 0.1, 0.2, 0.2), ts=now,
                 start_ts=now, clock_synced=True, model=ModelRef(name="demo", sha256="0" * 64))


def persistent_broker(workdir: Path, extra: str = "") -> Broker:
    """A Mosquitto that keeps sessions across ``stop()``/``start()`` (``persistence true``), not started.

    Used where a subscriber must not miss messages published while it reconnects after an outage: its
    persistent session (subscription and queued QoS 1 messages) survives the broker restart. It runs as the
    test's account (``Broker``), so it can write its database in the test's private temp folder.
    """
    b = Broker(workdir)
    db = workdir / "db"
    db.mkdir(parents=True, exist_ok=True)
    b.conf = (f"listener {b.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
              f"persistence_location {db}/\nmax_queued_messages 100000\n{extra}")
    return b


def versions() -> Versions:
    return Versions(agent="test", model="demo@0")


#: how often Subscriber.wait_for re-reads its predicate at most
PREDICATE_EVERY_S = 0.1


class Subscriber:
    """A paho client that subscribes to ``topic`` on every (re)connect and records every message.

    ``persistent=True`` uses a session (clean_start False, expiry) so a broker with persistence keeps
    its subscription and queued messages across a restart.
    """

    def __init__(self, port: int, topic: str = "edgecam/#", persistent: bool = False, client_id: str = "") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._events: list[dict[str, Any]] = []  # parsed once, on arrival (see wait_for)
        self._lock = threading.Lock()
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"sub-{uuid7()[-12:]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.subscribed = threading.Event()
        self.client.connect("127.0.0.1", port, keepalive=10, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("subscriber did not connect")

    def _on_connect(self, client, _ud, _flags, reason, _props) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)
            self.subscribed.set()

    def _on_message(self, _c, _ud, msg: mqtt.MQTTMessage) -> None:
        event = None
        if msg.topic.endswith("/events"):
            with contextlib.suppress(ValueError):  # a test's own garbage is still recorded in ``messages``
                event = json.loads(msg.payload)
        with self._lock:
            self.messages.append(msg)
            if event is not None:
                self._events.append(event)

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        """Poll ``predicate`` until true, at most every ``PREDICATE_EVERY_S``.

        The subscriber runs in the node's process: a predicate re-read on every one of thousands of
        messages would take the interpreter lock from the transport under test and slow its delivery
        to a crawl on a loaded machine (a 60 s outage's backlog then did not drain in 60 s).
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, PREDICATE_EVERY_S))
        return True

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish(port: int, topic: str, payload: bytes, retain: bool = False, props: Properties | None = None) -> None:
    """One QoS 1 message from a separate client (the 'centre'), waited for."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=retain, properties=props).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def _main(argv: list[str]) -> int:
    from agent.transport import Transport

    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--thumb-bytes", type=int, default=0)
    ap.add_argument("--flush", type=float, default=60.0)
    args = ap.parse_args(argv)
    cfg = make_cfg(args.url, args.state_dir)
    t = Transport(cfg, boot_id="boot-pub", versions=versions(), caps=["events"])
    t.start()
    for i in range(args.count):
        ev = make_event(i)
        t.submit_many([(ev, b"\xff\xd8" + bytes(args.thumb_bytes) if args.thumb_bytes else None)])
        print(f"submitted {ev.event_id}", flush=True)
        time.sleep(args.interval)
    ok = t.flush(args.flush)
    print(f"flushed {ok} {json.dumps(t.stats())}", flush=True)
    t.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
