"""systemd glue: ``sd_notify`` over the ``NOTIFY_SOCKET`` datagram protocol and a journal-aware, redacting log setup.

Speaking the protocol directly (a few lines) keeps systemd-python optional; when it is installed the logs go
to the journal with structured fields.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from agent.redact import redact_text

try:  # systemd-python: optional (a C extension built against libsystemd)
    from systemd.daemon import notify as _systemd_notify
except ImportError:
    _systemd_notify = None


def sd_notify(*states: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=…`` to systemd; False when not under systemd.

    The one way the agent talks to systemd: through ``systemd.daemon.notify`` when systemd-python is installed
    (the ``[systemd]`` extra, ``python3-systemd`` on Raspberry Pi OS), else the datagram protocol spoken here.
    Both read ``NOTIFY_SOCKET``; an explicit ``environ`` always takes the socket path (tests)."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if environ is None and _systemd_notify is not None:
        return bool(_systemd_notify("\n".join(states)))
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(states).encode(), addr)
        return True
    except OSError:
        return False


def watchdog_period_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of systemd's ``WATCHDOG_USEC`` (ping twice per period), or None when no watchdog is set."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


def setup_logging(level: str) -> None:
    """Journal when running under systemd with systemd-python, stderr otherwise."""
    root = logging.getLogger()
    root.handlers.clear()
    handler: logging.Handler | None = None
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="edgecam")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact_record)
    root.addHandler(handler)
    root.setLevel(level)


def redact_record(record: logging.LogRecord) -> bool:
    """Every log line and traceback through ``agent.redact.redact_text``: a library's message or an
    exception may quote a URL with credentials that no ``SecretUrl`` guarded."""
    record.msg, record.args = redact_text(record.getMessage()), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    return True
