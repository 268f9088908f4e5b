"""The MQTT link: paho-mqtt 2.x (VERSION2 callbacks, MQTT 5) driven by our own connect loop.

Why our own loop instead of ``loop_start()``: reconnects use full-jitter exponential backoff
(``agent.backoff``: ``mqtt.backoff_min_s`` doubling up to ``backoff_max_s``), every connection gets a fresh
``Will`` (its ``bd_seq``), and a fresh paho ``Client`` per connection means no hidden resend queue: what is
unacknowledged is decided by the outbox alone. The link thread also calls the owner's ``on_tick`` between
network rounds, which is where the outbox is pumped, so all publishing of outbox rows happens on one thread.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import Backoff
from agent.config import MqttConfig
from agent.errors import ConfigError
from agent.transport.mqtt_url import MqttOptionError, parse_mqtt_url
from agent.transport.mqtt_url import tls_context as client_tls_context

log = logging.getLogger(__name__)

LOOP_TIMEOUT_S = 0.05
CONNACK_TIMEOUT_S = 15.0
STABLE_AFTER_S = 10.0  # a connection that lived this long resets the backoff


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """The TLS context of ``cfg``'s files (``agent.transport.mqtt_url.tls_context``); ``ConfigError`` if one fails."""
    try:
        return client_tls_context(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
    except MqttOptionError as exc:
        raise ConfigError(str(exc)) from None


class LinkOwner(Protocol):
    """What the link calls back (all on the link thread)."""

    def will(self) -> tuple[str, bytes] | None: ...
    def on_link_up(self, session_present: bool) -> None: ...
    def on_link_down(self) -> None: ...
    def on_message(self, msg: mqtt.MQTTMessage) -> None: ...
    def on_ack(self, mid: int, reason: ReasonCode | None) -> None: ...
    def on_tick(self) -> None: ...


class MqttLink:
    """One logical connection to the broker, kept up by a background thread until ``close``."""

    def __init__(self, cfg: MqttConfig, client_id: str, owner: LinkOwner, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.owner = owner
        self.address = parse_mqtt_url(cfg.url.reveal())  # validated with the config: TLS files only with mqtts://
        self.v5 = cfg.protocol == "5"
        self._ssl = tls_context(cfg) if self.address.tls else None
        self._delays = Backoff(cfg.backoff_min_s, cfg.backoff_max_s, rng)
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closing: Callable[[], int | None] | None = None
        self._thread: threading.Thread | None = None
        self.connected = False
        self.ever_connected = False
        self.failed_attempts = 0
        self.reconnects = 0
        self.max_packet_size: int | None = None
        self.receive_maximum: int = 65535
        self.last_error: str | None = None

    # ------------------------------------------------------------ public

    @property
    def in_outage(self) -> bool:
        """Down after having been up, or still unable to connect: items submitted now wait."""
        return not self.connected and (self.ever_connected or self.failed_attempts > 0)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="edgecam-mqtt", daemon=True)
        self._thread.start()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                properties: Properties | None = None) -> int | None:
        """Queue one PUBLISH on the current connection; the message id, or None when not connected."""
        with self._lock:
            client = self._client if self.connected else None
        if client is None:
            return None
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties if self.v5 else None)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        with self._lock:
            client = self._client if self.connected else None
        if client is not None:
            client.subscribe(topics)

    def close(self, timeout: float, last_words: Callable[[], int | None] | None = None) -> None:
        """Stop the thread; when connected, ``last_words`` publishes (mid) and is waited for, then DISCONNECT."""
        self._closing = last_words or (lambda: None)
        self._close_deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            self._thread = None

    # ------------------------------------------------------------ thread

    def _new_client(self) -> mqtt.Client:
        if self.v5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                                 protocol=mqtt.MQTTv311)
        client.username_pw_set(self.address.username or self.client_id, self.address.password)
        if self._ssl is not None:
            client.tls_set_context(self._fresh_ssl())
        client.connect_timeout = CONNACK_TIMEOUT_S
        client.max_inflight_messages_set(0)  # the owner enforces the window (and the broker's Receive Maximum)
        client.max_queued_messages_set(0)
        client.suppress_exceptions = True
        will = self.owner.will()
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _fresh_ssl(self) -> ssl.SSLContext:
        """The TLS files as they are now (a renewed certificate is used from the next connection); the last
        context that loaded if they cannot be read at this moment."""
        try:
            self._ssl = tls_context(self.cfg)
        except ConfigError as exc:
            log.warning("mqtt: %s; connecting with the certificate loaded before", exc)
        assert self._ssl is not None
        return self._ssl

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                up_at = self._connection()
            except Exception as exc:  # e.g. the state store failing: keep the link thread alive, retry later
                if self._stop.is_set():
                    break
                log.exception("mqtt: connection attempt failed")
                self._failed(f"connection attempt failed: {exc}")
                up_at = None
            if up_at is not None and time.monotonic() - up_at >= STABLE_AFTER_S:
                self._delays.reset()
            if self._stop.is_set():
                break
            delay = self._delays.next()
            log.debug("mqtt: reconnecting in %.2fs", delay)
            self._stop.wait(delay)

    def _connection(self) -> float | None:
        """One connection attempt and its lifetime; returns when it went up (monotonic) or None."""
        try:
            client = self._new_client()
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                client.connect(self.address.host, self.address.port, self.cfg.keepalive_s, clean_start=False,
                               properties=props)
            else:
                client.connect(self.address.host, self.address.port, self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake or hostname mismatch
            self._failed(f"connect to {self.address.host}:{self.address.port}: {exc}")
            return None
        with self._lock:
            self._client = client
        started, up_at = time.monotonic(), None
        try:
            while True:
                if self._stop.is_set():
                    self._finish(client)
                    break
                rc = client.loop(LOOP_TIMEOUT_S)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    if up_at is None:
                        self._failed(f"connection to {self.address.host}:{self.address.port} failed: "
                                     f"{self.last_error or mqtt.error_string(rc)}")
                    break
                if self.connected and up_at is None:
                    up_at = time.monotonic()
                if not self.connected and up_at is None and time.monotonic() - started > CONNACK_TIMEOUT_S:
                    self._failed("no CONNACK from the broker")
                    break
                if self.connected:
                    self.owner.on_tick()
        except Exception:  # a bug in a callback must not end the link thread
            log.exception("mqtt: link loop error")
        finally:
            was_up = self.connected
            with self._lock:
                self.connected = False
                self._client = None
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
            if was_up or up_at is not None:
                self.owner.on_link_down()
        return up_at

    def _failed(self, why: str) -> None:
        self.failed_attempts += 1
        if why != self.last_error or self.failed_attempts % 20 == 1:
            log.warning("mqtt: %s", why)
        self.last_error = why

    def _finish(self, client: mqtt.Client) -> None:
        """Graceful stop: publish the owner's last words, wait for their PUBACK, then a normal DISCONNECT."""
        if not self.connected:
            return
        closing = self._closing or (lambda: None)
        self._final_mid = None
        self._final_acked = False
        try:
            self._final_mid = closing()
        except Exception:
            log.exception("mqtt: last words failed")
        deadline = self._close_deadline
        while self._final_mid is not None and not self._final_acked and time.monotonic() < deadline:
            if client.loop(LOOP_TIMEOUT_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
        with self._lock:
            self.connected = False  # our own DISCONNECT: not an outage
        client.disconnect()
        end = time.monotonic() + 1.0
        while client.socket() is not None and time.monotonic() < end:
            if client.loop(LOOP_TIMEOUT_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break

    # ------------------------------------------------------------ paho callbacks (link thread)

    def _on_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: ReasonCode, props: Properties) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            return
        self.max_packet_size = getattr(props, "MaximumPacketSize", None) if self.v5 else None
        self.receive_maximum = getattr(props, "ReceiveMaximum", 65535) if self.v5 else 65535
        if self.ever_connected:
            self.reconnects += 1
        self.ever_connected = True
        self.failed_attempts = 0
        self.last_error = None
        with self._lock:
            self.connected = True
        log.info("mqtt: connected to %s:%s (session present: %s, max packet: %s, receive max: %s)",
                 self.address.host, self.address.port, flags.session_present, self.max_packet_size,
                 self.receive_maximum)
        self.owner.on_link_up(bool(flags.session_present))

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if self.connected:
            log.warning("mqtt: disconnected (%s)", reason)
        with self._lock:
            self.connected = False

    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, reason: ReasonCode, _props: Any) -> None:
        if mid == getattr(self, "_final_mid", None):
            self._final_acked = True
            return
        self.owner.on_ack(mid, reason if self.v5 else None)

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.owner.on_message(msg)
        except Exception:  # never let a handler bug break the connection
            log.exception("mqtt: handler failed for %s", msg.topic)
