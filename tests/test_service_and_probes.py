"""systemd notify protocol over a real datagram socket; board probes on a fixture sysfs tree."""

from __future__ import annotations

import socket
import subprocess
import sys

from agent.service import sd_notify, watchdog_period_s
from hardware.probes import Probes


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
