"""Count what a node puts on the uplink: a paho subscriber on every channel the node publishes (from the
contract's channel table) sums every message by channel key (``events``, ``thumbs``, ``health``, …).

Two figures per channel: ``payload`` (exact payload bytes) and ``wire`` (the MQTT 5 PUBLISH packet the
node sends: fixed header, topic, packet id for QoS > 0, properties as the subscriber sees them, payload).
TCP/IP and TLS framing are not included (they depend on batching and cipher; roughly +5%).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.contract import NODE, publishes
from agent.transport.mqtt_url import parse_mqtt_url
from agent.transport.packet_size import publish_packet_size


@dataclass
class KindTotals:
    messages: int = 0
    payload: int = 0
    wire: int = 0
    sizes: list[int] = field(default_factory=list)


class ByteMeter:
    """Subscribe before the node connects, stop after it flushed; totals by topic kind."""

    def __init__(self, url: str, node_id: str) -> None:
        import paho.mqtt.client as mqtt

        address = parse_mqtt_url(url, "bench broker URL")
        self.host, self.port = address.host, address.port
        #: (filter, qos) of every channel this node may publish; a message is counted under its channel's key
        self.channels = publishes(NODE)
        self.subscriptions = [(ch.filter(node_id=node_id), ch.qos) for ch in self.channels]
        self.totals: dict[str, KindTotals] = {}
        #: (bbox, thumb w, thumb h, thumb bytes) of every event that carried a thumbnail
        self.thumb_refs: list[tuple[list[float], int, int, int]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.last_message_t = 0.0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-meter-{node_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a, **_k: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, _rc: Any, _props: Any = None) -> None:
        client.subscribe(self.subscriptions)

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        kind = next((ch.key for ch in self.channels if ch.match(msg.topic) is not None), "other")
        size = publish_packet_size(msg.topic, len(msg.payload), msg.qos, getattr(msg, "properties", None))
        with self._lock:
            tot = self.totals.setdefault(kind, KindTotals())
            tot.messages += 1
            tot.payload += len(msg.payload)
            tot.wire += size
            if kind == "thumbs":
                tot.sizes.append(len(msg.payload))
            elif kind == "events":
                self._note_thumb(msg.payload)
            self.last_message_t = time.monotonic()

    def _note_thumb(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
            thumb = event.get("thumb")
            if thumb:
                self.thumb_refs.append((list(event["bbox"]), int(thumb["w"]), int(thumb["h"]), int(thumb["bytes"])))
        except (ValueError, KeyError, TypeError):
            pass  # not ours to validate here: the contract tests do that

    def start(self, timeout: float = 10.0) -> ByteMeter:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"bench meter could not subscribe on {self.host}:{self.port}")
        return self

    def settle(self, quiet_s: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until no message arrived for ``quiet_s`` (the broker forwarded what the node sent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                last = self.last_message_t
            if time.monotonic() - last >= quiet_s:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def snapshot(self) -> dict[str, KindTotals]:
        with self._lock:
            return {k: KindTotals(v.messages, v.payload, v.wire, list(v.sizes)) for k, v in self.totals.items()}
