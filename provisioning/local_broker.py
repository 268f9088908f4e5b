"""A throw-away Mosquitto on a free loopback port, so the bench publishes through a real broker."""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from agent.errors import EdgecamError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)
    if found is None:
        raise EdgecamError("mosquitto: not installed (scripts/bench installs it; or apt-get install mosquitto)")
    return found


#: where Linux picks source ports for outgoing connections (``ip_local_port_range``)
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def _ephemeral_low() -> int | None:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


#: ``LO-HI``: draw free ports from this range instead (e.g. one slice per parallel test worker)
PORTS_ENV = "EDGECAM_FREE_PORTS"


def port_range() -> tuple[int, int] | None:
    """Where ``free_port`` draws from: ``$EDGECAM_FREE_PORTS``, else below the ephemeral range, else None."""
    spec = os.environ.get(PORTS_ENV)
    if spec:
        try:
            lo, hi = (int(part) for part in spec.split("-"))
        except ValueError:
            raise EdgecamError(f"{PORTS_ENV}={spec!r}: want LO-HI, e.g. 10000-20999") from None
        if not 0 < lo < hi < 65536:
            raise EdgecamError(f"{PORTS_ENV}={spec!r}: want 0 < LO < HI < 65536")
        return lo, hi
    low = _ephemeral_low()
    return (_LOWEST, low) if low is not None and low > _LOWEST else None


def free_port() -> int:
    """A free loopback port below the ephemeral range where possible.

    A broker that is stopped and started again (outage tests) must get its port back. An ephemeral port can
    meanwhile be taken as the source port of any outgoing connection, even a client's own reconnect to it
    (TCP self-connect): seen once as "Address already in use" on restart. Parallel test workers each draw
    from their own slice (``EDGECAM_FREE_PORTS``), so one cannot take the port of another's stopped broker.
    """
    span = port_range()
    if span is not None:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(*span)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, alive=lambda: True) -> bool:
    """True once 127.0.0.1:``port`` accepts connections; False on timeout or when ``alive()`` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run_as_me() -> str:
    """The ``user`` line that keeps a throw-away broker running as the account that started it.

    Mosquitto started as root otherwise drops to the ``mosquitto`` account, which cannot enter a checkout or
    temp folder that is 0700 (``/root``, ``mktemp -d``): "Unable to open acl_file" / log file. A local
    broker on loopback for a demo, bench or test needs no privilege drop. Not root: Mosquitto ignores it.
    """
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # an account without a passwd entry (containers): nothing to switch to
        return ""
    return f"user {name}\n"


class LocalBroker:
    """``with LocalBroker(workdir) as url:`` runs ``mosquitto -c workdir/mosquitto.conf`` for the block."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        """The whole mosquitto.conf; the test suite's broker overrides it for TLS, ACL and persistence."""
        return (f"{run_as_me()}persistence false\nlog_dest file {self.workdir / 'mosquitto.log'}\n"
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")

    def start(self, timeout: float = 10.0) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        with open(self.workdir / "mosquitto.stderr", "wb") as err:  # what it says before its log file is open
            self.proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        proc = self.proc
        if wait_port(self.port, timeout, alive=lambda: proc.poll() is None):
            return self.url
        self.stop()
        raise EdgecamError(f"mosquitto: did not listen on 127.0.0.1:{self.port}: {self._last_error()}")

    def _last_error(self) -> str:
        """Mosquitto's last log line (e.g. a config file it cannot open), for the one-line error."""
        for name in ("mosquitto.stderr", "mosquitto.log"):
            path = self.workdir / name
            lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
            if lines:
                return f"{lines[-1]} ({path})"
        return f"it wrote nothing to {self.workdir}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
