"""Can this node reach its broker with its own identity? One MQTT CONNECT, read the CONNACK, disconnect.

When an agent runs on the state dir, it is asked instead (its control socket, ``status``): the broker
config makes the client id the certificate CN (``use_username_as_clientid``), so one identity has one
connection, and a doctor connecting as the node would take the session over and drop the running agent.

Otherwise the probe connects by hand (socket, TLS, a CONNECT packet, the CONNACK) rather than through
paho, so each way it can fail gets its own one-line reason:

- **refused / unreachable**: nothing listens at host:port, no route, no answer within the timeout;
- **TLS error**: our side refused the handshake (the broker's certificate does not verify against the
  node's CA, or not for this host name), or our identity files cannot be loaded;
- **certificate rejected**: the broker ended the connection with a TLS alert (unknown CA, expired,
  revoked) or closed it right after the handshake, which is how Mosquitto refuses a client certificate
  under TLS 1.3;
- **CONNACK refused**: the broker speaks MQTT but says no (reason code and name).

It connects the way the agent does so nothing of the agent's broker state changes: client id and
username the node id, clean start off and the agent's session expiry (a clean start, or expiry 0 on
disconnect, would throw away the session the broker keeps for the node, with its queued commands), no
Will, and a normal DISCONNECT. Messages the broker hands over from the session are not acknowledged, so
they are delivered again when the agent reconnects.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

from agent.config import AgentConfig
from agent.doctor.identity import IdentityFiles
from agent.doctor.report import Check, fail, ok, warn
from agent.transport.mqtt_url import BrokerAddress, MqttOptionError, parse_mqtt_url, tls_context

NAME = "broker"
TIMEOUT_S = 10.0
#: MQTT 5 CONNACK reason codes (3.1.1 return codes 1-5 map onto the same words)
REASONS = {
    0x80: "Unspecified error", 0x81: "Malformed Packet", 0x82: "Protocol Error",
    0x83: "Implementation specific error", 0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid", 0x86: "Bad User Name or Password", 0x87: "Not authorized",
    0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned", 0x8C: "Bad authentication method",
    0x90: "Topic Name invalid", 0x95: "Packet too large", 0x97: "Quota exceeded",
    0x99: "Payload format invalid", 0x9A: "Retain not supported", 0x9B: "QoS not supported",
    0x9C: "Use another server", 0x9D: "Server moved", 0x9F: "Connection rate exceeded",
}
V311_REASONS = {1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
                4: "bad user name or password", 5: "not authorized"}


class ProbeFailed(Exception):
    """One line: why the connection did not come up."""


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, username: str, password: str | None, v5: bool, session_expiry_s: int,
                   keepalive_s: int = 30) -> bytes:
    """An MQTT CONNECT with clean start off (v5: with the session expiry property)."""
    flags = 0x80 | (0x40 if password is not None else 0)  # user name, password; clean start 0; no will
    var = _utf8("MQTT") + bytes([5 if v5 else 4, flags]) + struct.pack("!H", keepalive_s)
    if v5:
        props = b"\x11" + struct.pack("!I", session_expiry_s)  # Session Expiry Interval
        var += _varint(len(props)) + props
    body = var + _utf8(client_id) + _utf8(username) + (_utf8(password) if password is not None else b"")
    return b"\x10" + _varint(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("closed by the broker")
        buf += chunk
    return bytes(buf)


def read_connack(sock: socket.socket, v5: bool) -> int:
    """The CONNACK's reason (v5) or return code (3.1.1)."""
    head = _recv_exact(sock, 1)
    if head[0] >> 4 != 2:
        raise ProbeFailed(f"the broker answered CONNECT with packet type {head[0] >> 4}, not CONNACK")
    length, shift = 0, 0
    while True:
        byte = _recv_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = _recv_exact(sock, length)
    if len(body) < 2:
        raise ProbeFailed("malformed CONNACK")
    return body[1]


@dataclass(frozen=True)
class Outcome:
    address: BrokerAddress
    detail: str


def _tls_context(files: IdentityFiles) -> ssl.SSLContext:
    try:
        return tls_context(files.ca, files.cert if files.client else None, files.key if files.client else None)
    except MqttOptionError as exc:
        raise ProbeFailed(f"TLS error: {exc.problem} (identity {files.origin})") from None


def _alert(exc: ssl.SSLError) -> str | None:
    """The TLS alert the broker sent (``certificate unknown``), or None when the error is ours."""
    reason = (exc.reason or "").upper()
    if "ALERT" not in reason:
        return None
    words = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
    return words


def probe(cfg: AgentConfig, files: IdentityFiles, timeout: float = TIMEOUT_S) -> Outcome:
    """Connect as the node; the outcome, or ``ProbeFailed`` with the reason."""
    address = parse_mqtt_url(cfg.mqtt.url.reveal())
    where = f"{address.host}:{address.port}"
    v5 = cfg.mqtt.protocol == "5"
    try:
        raw = socket.create_connection((address.host, address.port), timeout=timeout)
    except ConnectionRefusedError:
        raise ProbeFailed(f"refused: nothing listens at {where}") from None
    except socket.gaierror as exc:
        raise ProbeFailed(f"unreachable: cannot resolve {address.host} ({exc.strerror})") from None
    except TimeoutError:
        raise ProbeFailed(f"unreachable: no answer from {where} within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeFailed(f"unreachable: {where}: {exc.strerror or exc}") from None
    sock: socket.socket = raw
    try:
        if address.tls:
            ctx = _tls_context(files)
            try:
                sock = ctx.wrap_socket(raw, server_hostname=address.host)
            except ssl.SSLCertVerificationError as exc:
                raise ProbeFailed(f"TLS error: the broker's certificate is not trusted ({exc.verify_message}; "
                                  f"CA {files.ca})") from None
            except ssl.SSLError as exc:
                alert = _alert(exc)
                if alert:
                    raise ProbeFailed(f"certificate rejected: the broker refused this node's certificate "
                                      f"(TLS alert: {alert})") from None
                raise ProbeFailed(f"TLS error: handshake with {where} failed ({exc.reason or exc})") from None
        user = address.username or cfg.node_id
        try:
            sock.sendall(connect_packet(cfg.node_id, user, address.password, v5, cfg.mqtt.session_expiry_s))
            code = read_connack(sock, v5)
        except ssl.SSLError as exc:  # under TLS 1.3 the broker judges our certificate after the handshake
            alert = _alert(exc)
            why = f"TLS alert: {alert}" if alert else f"it closed the TLS connection: {exc.reason or exc}"
            raise ProbeFailed(f"certificate rejected: the broker refused this node's certificate ({why})") from None
        except (ConnectionResetError, BrokenPipeError):
            if address.tls:
                raise ProbeFailed("certificate rejected: the broker closed the connection after the TLS "
                                  "handshake (it did not accept this node's certificate)") from None
            raise ProbeFailed(f"the broker at {where} closed the connection without a CONNACK") from None
        except TimeoutError:
            raise ProbeFailed(f"no CONNACK from {where} within {timeout:g} s") from None
        if code != 0:
            name = REASONS.get(code) if v5 else V311_REASONS.get(code)
            raise ProbeFailed(f"the broker refused the connection: CONNACK 0x{code:02x} {name or ''}".rstrip())
        sock.sendall(b"\xe0\x00")  # DISCONNECT, normal: no Will, the session stays
        how = "mTLS with this node's identity" if address.tls and files.client else \
            "TLS, no client certificate" if address.tls else "plain MQTT, no TLS"
        return Outcome(address, f"{address.url}: connected as {cfg.node_id} ({how}), CONNACK success")
    finally:
        sock.close()


def broker_check(cfg: AgentConfig, files: IdentityFiles, timeout: float = TIMEOUT_S) -> Check:
    """The running agent's link state when one runs on the state dir, else a probe of our own."""
    from agent.control import NoAgent, ask
    from agent.errors import EdgecamError

    try:
        status, _ = ask(cfg.state_dir, "status", timeout=timeout)
    except NoAgent:
        status = None
    except EdgecamError as exc:  # an agent is there but did not answer usefully: do not connect over it
        return warn(NAME, f"the running agent did not say ({exc}); not connecting beside it")
    if status is not None:
        url = status.get("mqtt_url", "")
        if status.get("connected"):
            return ok(NAME, f"{url}: the running agent is connected")
        return fail(NAME, f"{url}: the running agent is not connected ({status.get('last_error') or 'no answer yet'})")
    try:
        outcome = probe(cfg, files, timeout)
    except ProbeFailed as exc:
        return fail(NAME, f"{parse_mqtt_url(cfg.mqtt.url.reveal()).url}: {exc}")
    if not (outcome.address.tls and files.client):
        return warn(NAME, outcome.detail)
    return ok(NAME, outcome.detail)
