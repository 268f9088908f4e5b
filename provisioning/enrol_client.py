"""The node's enrolment and renewal round trip over MQTT: CSR out, certificate (or a refusal) back.

Enrolment logs in on the broker's enrolment listener as the claim (username = claim id, password = the
token's secret) with the broker verified against the pinned CA; renewal uses the node's own mTLS identity
on the normal listener. Both subscribe to their reply topic first, then publish one :class:`EnrolRequest`
and wait for the :class:`EnrolReply` carrying its ``request_id``. Every failure is one line
(:class:`EnrolFailed`): refused (with the worker's reason), timed out, or the broker refused the login.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agent.backoff import Backoff
from agent.contract import BY_KEY, EnrolReply, EnrolRequest
from agent.transport.mqtt_url import MqttOptionError, parse_mqtt_url, tls_context
from provisioning.ca import CaError

#: CONNACK reasons that mean "these credentials are not (yet) known": the worker may not have synced the
#: broker's password file with a token minted a moment ago, so enrolment retries them until its deadline
_LOGIN_REFUSED = {0x86, 0x87, 0x04, 0x05}
#: the retries of a refused login back off with full jitter (``agent.backoff``): base and cap in seconds
LOGIN_RETRY_MIN_S, LOGIN_RETRY_MAX_S = 0.5, 5.0
#: what a TLS file that does not load is called in the one-line error (the message names its path too)
LOGIN_TLS_FILES = ("CA certificate", "client certificate", "client key")


class EnrolFailed(CaError):
    """Enrolment or renewal did not produce a certificate; ``str()`` says why in one line."""


@dataclass(frozen=True)
class Login:
    """How to reach the broker: URL, pinned CA, and either claim credentials or a client certificate."""

    url: str
    ca_cert: Path
    username: str | None = None
    password: str | None = None
    cert: Path | None = None
    key: Path | None = None
    client_id: str = ""


def _client(login: Login):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=login.client_id or login.username or "",
                         protocol=mqtt.MQTTv5)
    try:
        client.tls_set_context(tls_context(login.ca_cert, login.cert, login.key, LOGIN_TLS_FILES))
    except MqttOptionError as exc:
        raise EnrolFailed(str(exc)) from None
    if login.username is not None:
        client.username_pw_set(login.username, login.password)
    return client


class _Exchange:
    """One connection, one request, one awaited reply (paho's network loop in its own thread)."""

    def __init__(self, login: Login, reply_topic: str, request_id: str) -> None:
        self.login, self.reply_topic, self.request_id = login, reply_topic, request_id
        self.done = threading.Event()
        self.connack = None
        self.suback = threading.Event()
        self.reply: EnrolReply | None = None
        self.client = _client(login)
        c = self.client
        c.on_connect = self._on_connect
        self.closed = False
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = lambda *_a: self.suback.set()
        c.on_message = self._on_message

    def _on_connect(self, _c, _u, _flags, reason, _props) -> None:
        self.connack = reason
        if reason.is_failure:
            self.done.set()
        else:
            self.client.subscribe(self.reply_topic, qos=1)

    def _on_disconnect(self, *_args) -> None:
        self.closed = True
        self.done.set()

    def _on_message(self, _c, _u, msg) -> None:
        try:
            reply = EnrolReply.model_validate_json(msg.payload)
        except ValidationError:
            return
        if reply.request_id == self.request_id:
            self.reply = reply
            self.done.set()

    def connect(self, host: str, port: int, deadline: float) -> None:
        try:
            self.client.connect(host, port, keepalive=30)
        except ssl.SSLError as exc:
            raise EnrolFailed(f"{host}:{port}: TLS failed ({exc.reason or exc}); is the pinned CA the broker's?"
                              ) from None
        except OSError as exc:
            raise EnrolFailed(f"{host}:{port}: cannot connect ({exc})") from None
        self.client.loop_start()
        while not (self.suback.is_set() or self.done.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def exchange(login: Login, request_topic: str, reply_topic: str, request: EnrolRequest,
             timeout: float) -> EnrolReply:
    """Publish ``request`` and wait for its reply; retry a refused login (a token not yet synced) until
    ``timeout``. Raises EnrolFailed on a refusal, a login refused to the end, or no reply."""
    try:
        addr = parse_mqtt_url(login.url, "--mqtt")
    except MqttOptionError as exc:
        raise EnrolFailed(str(exc)) from None
    if not addr.tls:
        raise EnrolFailed(f"--mqtt {addr.url}: enrolment needs mqtts:// (the CSR and token travel over it)")
    deadline = time.monotonic() + timeout
    delays = Backoff(LOGIN_RETRY_MIN_S, LOGIN_RETRY_MAX_S)  # jittered: nodes of one batch do not retry in step
    refused = ""  # the last login refusal: what to report if the deadline passes during a retry
    while True:
        ex = _Exchange(login, reply_topic, request.request_id)
        ex.connect(addr.host, addr.port, deadline)
        try:
            if ex.suback.is_set():
                ex.client.publish(request_topic, request.model_dump_json(exclude_none=True), qos=1)
                ex.done.wait(max(0.0, deadline - time.monotonic()))
                if ex.reply is not None:
                    return _result(ex.reply)
                raise EnrolFailed(f"{addr.url}: no reply within {timeout:g}s (is `edgecam centre enrol` running?)")
            rc = ex.connack
            if rc is None and ex.closed:  # TLS 1.3: the broker refuses a client certificate after the handshake
                raise EnrolFailed(refused or f"{addr.url}: the broker closed the connection before accepting it "
                                  "(client certificate refused: revoked, expired or from another CA?)")
            if rc is None or not rc.is_failure:
                raise EnrolFailed(refused or f"{addr.url}: no connection within {timeout:g}s")
            refused = f"{addr.url}: broker refused the login ({rc}); " + (
                "token unknown to the broker, or used/expired long ago" if login.username
                else "certificate not accepted")
            delay = delays.next()
            if rc.value not in _LOGIN_REFUSED or time.monotonic() + delay >= deadline:
                raise EnrolFailed(refused)
        finally:
            ex.close()
        time.sleep(delay)


def _result(reply: EnrolReply) -> EnrolReply:
    if reply.status != "ok" or not reply.cert:
        raise EnrolFailed(f"refused by the centre: {reply.reason or 'no reason given'}")
    return reply


def new_request(node_id: str, csr_pem: bytes, token: str | None = None) -> EnrolRequest:
    return EnrolRequest(request_id=secrets.token_hex(8), node_id=node_id, token=token, csr=csr_pem.decode())


def enrol_topics(claim_id: str) -> tuple[str, str]:
    return BY_KEY["enrol_csr"].topic(claim_id=claim_id), BY_KEY["enrol_cert"].topic(claim_id=claim_id)


def renew_topics(node_id: str) -> tuple[str, str]:
    return BY_KEY["cert_csr"].topic(node_id=node_id), BY_KEY["cert_res"].topic(node_id=node_id)
