"""The running agent's node-local control socket: ``STATE_DIR/control.sock``.

Why a Unix socket in the state dir, not the loopback MQTT listener or the broker: a technician on the pole
aims the camera before the node is enrolled or while the uplink is down, so ``edgecam snapshot`` and
``edgecam doctor`` must reach the agent with no broker at all; and the loopback listener is read-only by
design. The socket lives in the 0700 state dir, so only the service user (and root) can use it: the
pictures it hands out never leave the node, and nothing else on the node can ask for them.

Protocol, one request per connection: the client sends one JSON line ``ControlRequest``; the agent answers
one JSON line ``ControlReply`` and then exactly ``reply.bytes`` bytes of payload (a JPEG for ``snapshot``,
nothing otherwise). The server runs on its own daemon thread and calls ``handler`` there; a handler error
becomes an error reply (one line), never the end of the thread.

Unix socket paths are limited to 107 bytes; a longer state dir path is reached through the directory's
``/proc/self/fd`` entry (Linux), so any state dir works.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from agent.errors import EdgecamError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024
MAX_PAYLOAD = 64 * 1024 * 1024
SUN_PATH_MAX = 107


class ControlRequest(BaseModel):
    """What a local tool asks the agent: ``snapshot`` (args: ``SnapshotArgs``) or ``status``."""

    op: Literal["snapshot", "status"]
    args: dict[str, Any] = Field(default_factory=dict)


class ControlReply(BaseModel):
    status: Literal["ok", "error"]
    result: dict[str, Any] | None = None
    error: str | None = None
    bytes: int = Field(0, ge=0, le=MAX_PAYLOAD)


#: a handler returns the reply's result and its payload bytes (b"" for none)
Handler = Callable[[ControlRequest], tuple[dict[str, Any], bytes]]


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """``path`` as something ``bind``/``connect`` accept: itself, or via its folder's fd when too long."""
    text = os.fsencode(path)
    if len(text) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """Serves ``handler`` on ``STATE_DIR/control.sock`` until ``close``; see the module doc."""

    def __init__(self, state_dir: Path, handler: Handler) -> None:
        self.path = socket_path(state_dir)
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket file left by an agent that died) and serve on a daemon thread."""
        self._bind()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with _short_path(self.path) as where:
            sock.bind(where)
        os.chmod(self.path, 0o600)
        sock.listen(4)
        st = self.path.stat()
        self._identity = (st.st_dev, st.st_ino)
        old, self._sock = self._sock, sock
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()

    def lost(self) -> bool:
        """The socket file is gone or replaced (the state dir was deleted): ``rebind`` puts it back. Never
        after ``close`` (which removes it on purpose, before the runner's last state-dir checks)."""
        if self._closed.is_set():
            return False
        try:
            st = self.path.stat()
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def rebind(self) -> str:
        """For ``StateDirWatch.keep``: a fresh socket at the path; what was done."""
        self._bind()
        return "bound again"

    def close(self) -> None:
        mine = not self.lost()  # do not remove a socket file another agent bound since
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if mine and self._identity is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _serve(self) -> None:
        while not self._closed.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                sock.settimeout(0.5)  # a rebind swaps the socket: look again now and then
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                continue
            with conn:
                try:
                    self._one(conn)
                except OSError as exc:  # the client went away: its problem
                    log.debug("control: %s", exc)

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        payload = b""
        try:
            req = ControlRequest.model_validate_json(_read_line(conn))
            result, payload = self.handler(req)
            reply = ControlReply(status="ok", result=result, bytes=len(payload))
        except ValidationError as exc:
            reply = ControlReply(status="error", error=f"bad request: {exc.errors()[0]['msg']}")
        except (EdgecamError, ValueError, TypeError, KeyError) as exc:
            reply = ControlReply(status="error", error=" ".join(str(exc).split()))
        except Exception as exc:  # a handler bug: still an answer
            log.exception("control: request failed")
            reply = ControlReply(status="error", error=f"internal error: {type(exc).__name__}: {exc}")
        conn.sendall(reply.model_dump_json().encode() + b"\n")
        if reply.status == "ok" and payload:
            conn.sendall(payload)


def _read_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too long")
    return bytes(buf.split(b"\n", 1)[0])


class NoAgent(EdgecamError):
    """No agent answers on this state dir's control socket."""


def ask(state_dir: Path, op: str, args: dict[str, Any] | None = None,
        timeout: float = 30.0) -> tuple[dict[str, Any], bytes]:
    """One request to the agent running on ``state_dir``: its result and payload.

    Raises ``NoAgent`` when nothing listens there (no socket file, or a stale one), and ``EdgecamError``
    with the agent's one-line reason when it answers with an error."""
    path = socket_path(state_dir)
    req = ControlRequest(op=op, args=args or {})  # type: ignore[arg-type]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    with sock:
        try:
            with _short_path(path) as where:
                sock.connect(where)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NoAgent(f"{path}: no agent is running on this state dir") from None
        except PermissionError:
            raise EdgecamError(f"{path}: permission denied (run as the service user or root)") from None
        sock.sendall(req.model_dump_json().encode() + b"\n")
        head, rest = _read_reply_head(sock)
        try:
            reply = ControlReply.model_validate_json(head)
        except ValidationError:
            raise EdgecamError(f"{path}: the agent sent an unreadable reply") from None
        if reply.status != "ok":
            raise EdgecamError(f"the running agent: {reply.error}")
        data = bytearray(rest)
        while len(data) < reply.bytes:
            chunk = sock.recv(min(1 << 20, reply.bytes - len(data)))
            if not chunk:
                raise EdgecamError(f"{path}: the agent closed the connection after {len(data)} of "
                                   f"{reply.bytes} bytes")
            data += chunk
        return reply.result or {}, bytes(data[:reply.bytes])


def _read_reply_head(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EdgecamError("the agent closed the control connection without a reply")
        buf += chunk
    head, rest = bytes(buf).split(b"\n", 1)
    return head, rest

