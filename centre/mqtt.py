"""MQTT connection settings and a connected paho client for the centre tools (MQTT 5, optional mTLS)."""

from __future__ import annotations

import secrets
import ssl
import time
from pathlib import Path

from pydantic import BaseModel

from agent.errors import EdgecamError
from agent.transport.mqtt_url import MqttOptionError, check_tls_files, parse_mqtt_url, tls_context

#: the TLS file options as the centre's commands spell them
CLI_TLS_OPTIONS = ("--tls-ca", "--tls-cert", "--tls-key")


class MqttOptions(BaseModel):
    host: str
    port: int
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_id: str = ""

    @classmethod
    def from_cli(cls, url: str, tls_ca: Path | None = None, tls_cert: Path | None = None,
                 tls_key: Path | None = None, client_id: str | None = None) -> MqttOptions:
        try:
            address = parse_mqtt_url(url, "--mqtt")
            check_tls_files(address.tls, tls_ca, tls_cert, tls_key, CLI_TLS_OPTIONS, must_exist=True)
        except MqttOptionError as exc:
            raise EdgecamError(str(exc)) from None
        return cls(host=address.host, port=address.port, tls=address.tls, tls_ca=tls_ca, tls_cert=tls_cert,
                   tls_key=tls_key, client_id=client_id or f"edgecam-centre-{secrets.token_hex(4)}")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def make_client(opts: MqttOptions):
    """A paho client (VERSION2 callbacks, MQTT 5) with TLS configured, not yet connected."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=opts.client_id, protocol=mqtt.MQTTv5)
    if opts.tls:
        try:
            client.tls_set_context(tls_context(opts.tls_ca, opts.tls_cert, opts.tls_key, CLI_TLS_OPTIONS))
        except MqttOptionError as exc:
            raise EdgecamError(str(exc)) from None
    return client


def connect_blocking(client, opts: MqttOptions, timeout: float = 10.0, session_expiry: int = 0) -> bool:
    """Connect and run the loop until CONNACK; any failure is one EdgecamError line naming the broker.

    ``session_expiry > 0`` asks for a persistent session (clean start off): the broker keeps our
    subscriptions and queues QoS 1 messages while we are away. Returns the CONNACK's session-present flag.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    result: dict[str, object] = {}

    def on_connect(_c, _u, flags, reason, _props):
        result["rc"] = reason
        result["present"] = bool(getattr(flags, "session_present", False))

    def on_disconnect(_c, _u, _flags, reason, _props):
        result.setdefault("rc", reason)

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        props = None
        if session_expiry > 0:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        client.connect(opts.host, opts.port, keepalive=30, clean_start=session_expiry <= 0, properties=props)
    except (OSError, ssl.SSLError) as exc:
        raise EdgecamError(f"{opts.url}: cannot connect ({exc})") from None
    deadline = time.monotonic() + timeout
    while "rc" not in result and time.monotonic() < deadline:
        client.loop(0.1)
    rc = result.get("rc")
    if rc is None:
        raise EdgecamError(f"{opts.url}: no CONNACK within {timeout:g}s")
    if getattr(rc, "is_failure", False):
        raise EdgecamError(f"{opts.url}: connection refused or closed ({rc})")
    return bool(result.get("present"))
