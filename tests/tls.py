"""mTLS test helpers: a CA in a tmp folder, a Mosquitto running the generated config, paho clients.

The broker is the real one with exactly the config ``edgecam broker-config`` writes (plus the test
harness's log line), bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.broker_config import write_broker_config
from provisioning.ca import CaFiles, Identity, centre_name, init_ca, issue_node
from tests.broker import Broker, free_port
from tests.waiting import wait_until


@dataclass
class Pki:
    """A CA folder plus node identities issued on demand."""

    root: Path
    ca_dir: Path = field(init=False)
    _nodes: dict[str, Identity] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ca_dir = self.root / "ca"
        init_ca(self.ca_dir)

    def node(self, node_id: str) -> Identity:
        if node_id not in self._nodes:
            self._nodes[node_id] = issue_node(node_id, self.ca_dir, self.root / "nodes")
        return self._nodes[node_id]

    @property
    def centre(self) -> Identity:
        """The centre identity ``init_ca`` wrote into the CA folder."""
        files = CaFiles(self.ca_dir)
        return Identity(centre_name(self.ca_dir), files.centre_cert, files.centre_key, files.ca_cert)


def start_tls_broker(workdir: Path, pki: Pki, **kwargs: Any) -> Broker:
    """Mosquitto with the generated mTLS config on a free port (``kwargs`` go to write_broker_config)."""
    port = free_port()
    run_as = "root" if hasattr(os, "geteuid") and os.geteuid() == 0 else None  # tmp dirs are 0700
    files = write_broker_config(pki.ca_dir, port, workdir / "conf", bind="127.0.0.1", run_as=run_as, **kwargs)
    return Broker(workdir, port=port, conf=files.conf.read_text()).start()


class Client:
    """A paho MQTT 5 client that records CONNACK, SUBACK, PUBACK reason codes and messages."""

    def __init__(self, port: int, ident: Identity | None, client_id: str, *, ca: Path | None = None,
                 tls: bool = True, username: str | None = None, password: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: Any = None
        self.disconnected: Any = None
        self.subacks: dict[int, list[Any]] = {}
        self.pubacks: dict[int, Any] = {}
        self._lock = threading.Lock()
        if username is not None:  # claim credentials on the enrolment listener
            self.client.username_pw_set(username, password)
        if tls:
            cafile = ca or (ident.ca_cert if ident else None)
            self.client.tls_set(ca_certs=str(cafile), certfile=str(ident.cert) if ident else None,
                                keyfile=str(ident.key) if ident else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c = self.client
        c.on_connect = lambda _c, _u, _f, rc, _p: setattr(self, "connack", rc)
        c.on_disconnect = lambda _c, _u, _f, rc, _p: setattr(self, "disconnected", rc)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(mid, list(rcs))
        c.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc)
        c.on_message = self._on_message
        self.error: Exception | None = None
        try:
            c.connect("127.0.0.1", port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:  # a TLS handshake the broker refuses
            self.error = exc
            return
        c.loop_start()
        wait(lambda: self.connack is not None or self.disconnected is not None, 10)

    def _on_message(self, _c, _u, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure and self.disconnected is None

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        _rc, mid = self.client.subscribe(topic, qos)
        assert wait(lambda: mid in self.subacks, 10), f"no SUBACK for {topic}"
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, **kw: Any) -> Any:
        """Publish and return the PUBACK reason code (QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos, **kw)
        assert wait(lambda: info.mid in self.pubacks, 10), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def topics(self) -> list[str]:
        with self._lock:
            return [m.topic for m in self.messages]

    def close(self) -> None:
        if self.error is None:
            self.client.disconnect()
            self.client.loop_stop()


wait = wait_until  # the name the ACL tests use
