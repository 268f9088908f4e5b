"""A paho MQTT 5 subscriber that records everything under a topic filter (the test's 'centre')."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.waiting import wait_until


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    props: dict = field(default_factory=dict)

    def json(self) -> dict:
        return json.loads(self.payload)


class Collector:
    def __init__(self, port: int, topic: str = "edgecam/v1/#", client_id: str = "test-centre") -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector did not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        props = {}
        if msg.properties is not None:
            for name in ("ContentType", "MessageExpiryInterval", "ResponseTopic", "CorrelationData"):
                if hasattr(msg.properties, name):
                    props[name] = getattr(msg.properties, name)
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), props))

    def on(self, suffix: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def prefixed(self, part: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if part in m.topic]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        return wait_until(predicate, timeout, interval=0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
