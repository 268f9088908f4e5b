"""The systemd units as ``scripts/install-device`` installs them: ``systemd-analyze verify`` passes, the
hardening the issue asks for is there, and the install script's steps per board (dry run, fixture roots)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.card_model import PROVISION_FILE

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts/install-device"
UNITS = ("edgecam.service", "edgecam-firstboot.service")


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INSTALL), "--root", str(root), *args], capture_output=True, text=True, timeout=120)


def board_root(tmp_path: Path, model: bytes | None) -> Path:
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    if model is not None:
        (root / "proc/device-tree/model").write_bytes(model)
    return root


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (scripts/test installs it: Debian package systemd)")
    return tool


def test_installed_units_pass_systemd_analyze_verify(tmp_path):
    tool = analyze()
    root = board_root(tmp_path, b"Raspberry Pi 5 Model B Rev 1.0\x00")
    res = install(root, "--venv", sys.prefix)  # ExecStart then names this venv's real edgecam
    assert res.returncode == 0, res.stderr
    paths = [str(root / "etc/systemd/system" / name) for name in UNITS]
    check = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    # the tool does check: a mistyped setting is reported (on stderr), a missing program fails it
    bad = tmp_path / "bad" / "edgecam.service"
    bad.parent.mkdir()
    good = Path(paths[0]).read_text()
    bad.write_text(good.replace("Type=notify", "Type=notifyy"))
    assert "notifyy" in subprocess.run([tool, "verify", str(bad)], capture_output=True, text=True, timeout=120).stderr
    bad.write_text(good.replace(sys.prefix, "/nonexistent"))
    assert subprocess.run([tool, "verify", str(bad)], capture_output=True, timeout=120).returncode != 0


def test_agent_unit_runs_confined_under_a_frame_fed_watchdog():
    svc = unit(REPO / "provisioning/templates/edgecam.service")["Service"]
    expect = {"Type": "notify", "Restart": "on-failure", "User": "edgecam", "ProtectSystem": "strict",
              "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "SupplementaryGroups": "video",
              "ReadWritePaths": "/var/lib/edgecam", "NotifyAccess": "main"}
    assert {k: svc.get(k) for k in expect} == expect
    assert int(svc["WatchdogSec"]) > 0
    # the provisioned install picks the agent (the current OTA release's venv, or itself) and counts trial starts
    assert svc["ExecStart"].endswith("edgecam ota exec --config /etc/edgecam/node.toml -- run --config "
                                     "/etc/edgecam/node.toml")
    assert svc["ExecStartPre"].endswith("edgecam ota supervise start --config /etc/edgecam/node.toml")
    assert unit(REPO / "provisioning/templates/edgecam.service")["Unit"]["OnFailure"] == \
        "edgecam-ota-supervisor@failure.service"


def test_ota_supervisor_units_pass_systemd_analyze_verify(tmp_path):
    """The supervisor's template (as the instance the timer starts) and its timer, as install-device writes them."""
    tool = analyze()
    root = board_root(tmp_path, b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert install(root, "--venv", sys.prefix).returncode == 0
    system = root / "etc/systemd/system"
    tick = tmp_path / "edgecam-ota-supervisor@tick.service"
    tick.write_text((system / "edgecam-ota-supervisor@.service").read_text())
    check = subprocess.run([tool, "verify", str(tick), str(system / "edgecam-ota-supervisor.timer")],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    wants = system / "multi-user.target.wants/edgecam-ota-supervisor@boot.service"
    assert str(wants.readlink()) == "/etc/systemd/system/edgecam-ota-supervisor@.service"
    assert (system / "timers.target.wants/edgecam-ota-supervisor.timer").is_symlink()


def test_firstboot_unit_runs_once_per_card_before_the_agent():
    u = unit(REPO / "provisioning/templates/edgecam-firstboot.service")
    assert u["Unit"]["ConditionPathExists"] == f"/boot/firmware/{PROVISION_FILE}"
    assert u["Unit"]["Before"] == "edgecam.service" and "network-online.target" in u["Unit"]["After"]
    assert u["Unit"]["StartLimitIntervalSec"] == "0"  # retries for as long as enrolment fails
    svc = u["Service"]
    assert (svc["Type"], svc["Restart"]) == ("oneshot", "on-failure") and int(svc["RestartSec"]) > 0
    assert "provision firstboot --boot /boot/firmware --root /" in svc["ExecStart"]


def test_install_device_lays_out_a_pi_root(tmp_path):
    root = board_root(tmp_path, b"Raspberry Pi 4 Model B Rev 1.4\x00")
    res = install(root)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "board: pi" in out and "python3-picamera2" in out and "python3-systemd" in out
    assert "venv --system-site-packages /opt/edgecam/venv" in out and "useradd" in out and "--groups video" in out
    assert (root / "var/lib/edgecam").stat().st_mode & 0o777 == 0o700
    assert (root / "etc/edgecam").is_dir()
    for name in UNITS:
        assert "/opt/edgecam/venv/bin/edgecam" in (root / "etc/systemd/system" / name).read_text()
    link = root / "etc/systemd/system/multi-user.target.wants/edgecam-firstboot.service"
    assert str(link.readlink()) == "/etc/systemd/system/edgecam-firstboot.service"
    assert not (root / "etc/systemd/system/multi-user.target.wants/edgecam.service").exists()  # first boot's job


def test_install_device_on_a_jetson_uses_jetpacks_python(tmp_path):
    root = board_root(tmp_path, b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    res = install(root, "--dry-run", "--prefix", "/srv/edgecam")
    assert res.returncode == 0, res.stderr
    assert "board: jetson" in res.stdout and "python3-picamera2" not in res.stdout
    assert "venv --system-site-packages /srv/edgecam/venv" in res.stdout
    assert not (root / "etc").exists()  # a dry run changes nothing


def test_install_device_refuses_an_unknown_board(tmp_path):
    res = install(board_root(tmp_path, None))
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "unknown board" in res.stderr and "--board" in res.stderr


def test_install_device_is_shellcheck_clean():
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck not installed (scripts/test installs it)")
    res = subprocess.run([tool, str(INSTALL)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout
