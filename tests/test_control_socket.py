"""The agent's node-local control socket (``agent.control``): real Unix sockets in a real state dir."""

from __future__ import annotations

import socket
import stat

import pytest

from agent.control import ControlServer, NoAgent, ask, socket_path
from agent.errors import EdgecamError


def handler(req):
    if req.op == "status":
        return {"connected": True}, b""
    if req.args.get("boom"):
        raise ValueError("no frame\ncaptured yet")
    return {"n": 3}, b"\xff\xd8" + b"x" * 3_000_000  # bigger than any socket buffer


def test_request_reply_and_payload_on_a_long_state_dir_path(tmp_path):
    state = tmp_path / ("d" * 60) / ("e" * 60)  # beyond the 107 bytes a socket path may have
    state.mkdir(parents=True)
    server = ControlServer(state, handler)
    server.start()
    try:
        assert stat.S_IMODE(socket_path(state).stat().st_mode) == 0o600
        result, data = ask(state, "snapshot", {"annotate": True})
        assert result == {"n": 3} and len(data) == 3_000_002 and data[:2] == b"\xff\xd8"
        assert ask(state, "status") == ({"connected": True}, b"")
        with pytest.raises(EdgecamError, match="no frame captured yet"):  # one line, the agent's reason
            ask(state, "snapshot", {"boom": True})
    finally:
        server.close()
    assert not socket_path(state).exists()
    with pytest.raises(NoAgent):
        ask(state, "status")


def test_a_stale_socket_is_no_agent_and_is_replaced(tmp_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(tmp_path)))  # an agent that died left its socket file
    stale.close()
    with pytest.raises(NoAgent):
        ask(tmp_path, "status")
    server = ControlServer(tmp_path, handler)
    server.start()
    try:
        assert ask(tmp_path, "status")[0] == {"connected": True}
        socket_path(tmp_path).unlink()  # the state dir lost it: the runner's state-dir watch rebinds
        assert server.lost()
        server.rebind()
        assert not server.lost() and ask(tmp_path, "status")[0] == {"connected": True}
    finally:
        server.close()


def test_bad_requests_are_answered(tmp_path):
    server = ControlServer(tmp_path, handler)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(socket_path(tmp_path)))
            s.sendall(b'{"op": "explode"}\n')
            reply = s.makefile("rb").readline()
        assert b'"status":"error"' in reply and b"bad request" in reply
    finally:
        server.close()


def test_closed_means_not_lost(tmp_path):
    """The runner closes the socket before its last state-dir checks: a removed socket is then no loss."""
    server = ControlServer(tmp_path, handler)
    server.start()
    server.close()
    assert not socket_path(tmp_path).exists() and not server.lost()
