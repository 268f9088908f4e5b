"""systemd notify protocol over a real datagram socket; board probes on a fixture sysfs tree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.service import sd_notify, watchdog_period_s
from hardware.probes import Probes
from tests.waiting import wait_until


def test_sd_notify_speaks_the_datagram_protocol(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert sd_notify("READY=1", "STATUS=running", environ={"NOTIFY_SOCKET": str(path)})
        assert server.recv(4096) == b"READY=1\nSTATUS=running"
    assert not sd_notify("READY=1", environ={})


def test_watchdog_period_is_half_of_watchdog_usec():
    assert watchdog_period_s({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_period_s({}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None


def make_pi_tree(root):
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    for i, milli in enumerate(("51234", "62500")):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(milli + "\n")
    fw = root / "sys/devices/platform/soc/soc:firmware"
    fw.mkdir(parents=True)
    (fw / "get_throttled").write_text("0x50005\n")
    cam = root / "sys/class/video4linux/video0"
    cam.mkdir(parents=True)
    (cam / "name").write_text("USB Camera\n")


def test_probes_on_a_fixture_pi(tmp_path):
    make_pi_tree(tmp_path)
    p = Probes(tmp_path)
    assert p.board_model() == "Raspberry Pi 4 Model B Rev 1.4"
    assert p.cpu_temp_c() == 62.5
    assert p.throttled() is True
    assert p.cameras() == ["/dev/video0: USB Camera"]
    (tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("0x50000\n")
    assert p.throttled() is False  # only past events, nothing now


def test_probes_on_a_bare_machine(tmp_path):
    p = Probes(tmp_path)
    assert (p.board_model(), p.cpu_temp_c(), p.throttled(), p.cameras()) == (None, None, None, [])


def test_doctor_reports_the_fixture_board(tmp_path):
    make_pi_tree(tmp_path)
    # --offline: no broker here (the broker check has its own tests, tests/test_doctor.py)
    res = subprocess.run([sys.executable, "-m", "agent.cli", "doctor", "--sysroot", str(tmp_path), "--offline",
                          "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Raspberry Pi 4 Model B" in res.stdout and "62.5 °C" in res.stdout and "YES" in res.stdout
    from agent.thread_priority import realtime_permitted

    assert ("real-time threads  permitted" in res.stdout) is realtime_permitted()


def test_sd_notify_prefers_systemd_python_when_present(tmp_path):
    """With systemd-python importable, the same datagrams arrive through ``systemd.daemon.notify``."""
    pytest.importorskip("systemd.daemon", reason="systemd-python not installed (the [systemd] extra)")
    path = tmp_path / "notify.sock"
    code = "from agent.service import sd_notify, _systemd_notify; assert _systemd_notify; print(sd_notify('READY=1'))"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NOTIFY_SOCKET": str(path)},
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr
        assert server.recv(4096) == b"READY=1"


def _datagrams(sock: socket.socket, quiet_s: float, until: float) -> list[bytes]:
    """Datagrams received until none has come for ``quiet_s`` (or the ``until`` monotonic deadline)."""
    got: list[bytes] = []
    while time.monotonic() < until:
        sock.settimeout(quiet_s)
        try:
            got.append(sock.recv(4096))
        except TimeoutError:
            return got
    raise AssertionError(f"still receiving after the deadline: {got[-5:]}")


def test_watchdog_is_fed_by_frames_and_stops_when_the_camera_stalls(tmp_path, processes):
    """A real ``edgecam run`` under a real NOTIFY_SOCKET: READY=1, then WATCHDOG=1 while frames flow; when the
    camera (scripted picamera2, blocking in ``capture_request`` like a dead sensor) stops delivering, the pings
    stop while the process stays up, so systemd's ``WatchdogSec`` restarts it."""
    shim = tmp_path / "shim"
    shim.mkdir()
    # the agent imports ``picamera2``: this one is the scripted fake that speaks its API
    (shim / "picamera2.py").write_text("import sys\nfrom tests.fakes import picamera2 as _fake\n"
                                       "sys.modules[__name__] = _fake\n")
    stalled = tmp_path / "stalled"
    sock_path = tmp_path / "notify.sock"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "500000",  # ping every 0.25 s
           "FAKE_PICAMERA2_STALL_AFTER": "40", "FAKE_PICAMERA2_STALLED": str(stalled),
           "PYTHONPATH": os.pathsep.join([str(shim), str(repo)])}
    env.pop("WATCHDOG_PID", None)
    log = tmp_path / "agent.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server, open(log, "wb") as err:
        server.bind(str(sock_path))
        proc = processes.popen(
            [sys.executable, "-m", "agent.cli", "run", "--source", "picamera2:0", "--mqtt", "mqtt://127.0.0.1:9",
             "--node-id", "wd-test", "--state-dir", str(tmp_path / "state"), "--no-motion"],
            env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=err)
        server.settimeout(120)
        try:
            first = server.recv(4096)
        except TimeoutError:
            raise AssertionError(f"no READY=1 (exit {proc.poll()}): {log.read_text()[-2000:]}") from None
        assert first.split(b"\n")[0] == b"READY=1", first
        server.settimeout(60)
        assert server.recv(4096) == b"WATCHDOG=1"  # frames went through the pipeline
        assert wait_until(stalled.exists, timeout=120), "the scripted camera never stalled"
        # after the frames in flight drain, silence: no timer keeps pinging (a timer thread would never go quiet)
        tail = _datagrams(server, quiet_s=3.0, until=time.monotonic() + 60)
        assert set(tail) <= {b"WATCHDOG=1"}, tail
        assert proc.poll() is None, "the agent exited instead of hanging: systemd's restart is what we test for"
