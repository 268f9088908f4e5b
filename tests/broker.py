"""A real Mosquitto broker for tests, on a free loopback port, with the config the test asks for.

It is the bench's ``LocalBroker`` with a configurable listener/security part and ``stop()``/``start()``
on the same port, which the outage tests use to simulate a broker going away.
"""

from __future__ import annotations

from pathlib import Path

from provisioning.local_broker import LocalBroker, find_mosquitto, free_port, run_as_me, wait_port

__all__ = ["MOSQUITTO", "Broker", "free_port", "wait_port"]

try:
    MOSQUITTO = find_mosquitto()
except Exception:  # reported by the broker fixture, with how to install it
    MOSQUITTO = "/usr/sbin/mosquitto"


class Broker(LocalBroker):
    """One Mosquitto process. ``conf`` is the listener/security part; persistence is off unless it says so.

    It runs as the account that started it (``run_as_me``) unless ``conf`` names a ``user``.
    """

    def __init__(self, workdir: Path, port: int | None = None, conf: str = "") -> None:
        super().__init__(workdir)
        if port is not None:
            self.port = port
        self.conf = conf

    def config_text(self) -> str:
        body = self.conf or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        user = "" if any(line.startswith("user ") for line in body.splitlines()) else run_as_me()  # tls.py sets one
        return f"{user}persistence false\nlog_dest file {self.workdir / 'mosquitto.log'}\nlog_type all\n{body}"

    def start(self, timeout: float = 10.0) -> Broker:  # type: ignore[override]
        super().start(timeout)
        return self

    def log(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text() if p.exists() else ""

    def subacks_to(self, client_id: str) -> int:
        """How many SUBACKs the broker sent ``client_id``: after one, its subscriptions are in place."""
        return self.log().count(f"Sending SUBACK to {client_id}\n")
