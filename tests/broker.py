"""A real Mosquitto broker for tests, on a free loopback port, with the config the test asks for."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"broker did not listen on 127.0.0.1:{port} within {timeout}s")


@dataclass
class Broker:
    """One Mosquitto process. ``conf`` is the listener/security part; persistence is off by default.

    ``stop()``/``start()`` simulate an outage on the same port (the outage tests use them).
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    conf: str = ""
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        body = self.conf or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        return f"persistence false\nlog_dest file {self.workdir / 'mosquitto.log'}\nlog_type all\n{body}"

    def start(self) -> Broker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf_path = self.workdir / "mosquitto.conf"
        conf_path.write_text(self.config_text())
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            log = (self.workdir / "mosquitto.log")
            raise RuntimeError(f"mosquitto failed: {log.read_text() if log.exists() else ''}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text() if p.exists() else ""
