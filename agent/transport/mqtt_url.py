"""The broker URL and TLS file options, checked by one set of rules for the node, the centre and the bench.

``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883), optional ``user:pass@``. TLS files
(CA, client certificate, client key) belong to ``mqtts://`` only, and a client certificate needs its key
and the other way round. Errors are one line naming the option as the caller spells it (``mqtt.url``,
``--mqtt``, ``mqtt.tls_key``, ``--tls-key``). Messages show the URL redacted (``agent.redact``): they reach
logs and the centre. ``tls_context`` builds the client side of the TLS connection from those files, one policy
for the node, its doctor, the enrolment client and the centre tools.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.redact import redact_url

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttOptionError(ValueError):
    """One bad option; ``str()`` is the one-line message, ``option`` the name the caller gave it."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option
        self.problem = problem


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # for paho only, never printed

    @property
    def url(self) -> str:
        """Without credentials: safe to log."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_mqtt_url(url: str, option: str = "mqtt.url") -> BrokerAddress:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MqttOptionError(option, f"{redact_url(url)!r}: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise MqttOptionError(option, f"{redact_url(url)!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    if not parts.hostname:
        raise MqttOptionError(option, f"{redact_url(url)!r}: no host")
    return BrokerAddress(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def check_tls_files(tls: bool, ca: Path | None, cert: Path | None, key: Path | None,
                    names: tuple[str, str, str] = ("mqtt.tls_ca", "mqtt.tls_cert", "mqtt.tls_key"),
                    must_exist: bool = False) -> None:
    """The TLS file options (``names`` as the caller spells them: CA, certificate, key) fit together.

    ``must_exist`` also checks that each given file is there (tools check before connecting; the node's
    config may be written before its certificates are provisioned, so it checks when it connects)."""
    _, cert_name, key_name = names
    if (cert is None) != (key is None):
        given, missing = (cert_name, key_name) if key is None else (key_name, cert_name)
        raise MqttOptionError(given, f"given without {missing} (a client certificate and its key go together)")
    if not tls:
        for name, path in zip(names, (ca, cert, key), strict=True):
            if path is not None:
                raise MqttOptionError(name, "given, but the broker URL is mqtt:// (use mqtts:// for TLS)")
    if must_exist:
        for name, path in zip(names, (ca, cert, key), strict=True):
            if path is not None and not Path(path).is_file():
                raise MqttOptionError(name, f"{path}: file not found")


def tls_context(ca: Path | None, cert: Path | None, key: Path | None,
                names: tuple[str, str, str] = ("mqtt.tls_ca", "mqtt.tls_cert", "mqtt.tls_key")) -> ssl.SSLContext:
    """The client's TLS context: the broker verified against ``ca`` (else the system store) with hostname
    checks, and the client certificate and key for mTLS when given. A file that does not load raises
    ``MqttOptionError`` naming its option (``names`` as in ``check_tls_files``)."""
    ca_name, cert_name, _ = names
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise MqttOptionError(ca_name, f"cannot load {ca}: {exc}") from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert:
        try:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as exc:
            raise MqttOptionError(cert_name, f"cannot load {cert} / {key}: {exc}") from None
    return ctx
