"""``edgecam provision card`` on boot partitions as rpi-imager leaves them (cloud-init and firstrun.sh kinds)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from provisioning.ca import init_ca
from provisioning.card import provision_card
from provisioning.card_image import Wifi, detect_kind
from provisioning.card_model import PROVISION_FILE, CardError, read_provision
from tests.card_fixtures import FIRSTRUN, USER_DATA, cloud_init_boot, firstrun_boot, snapshot

NODE, ENROL, TOKEN = "hue-cam-0042", "mqtts://broker.example:8884", "claim-7f3a9c"
WIFI = Wifi("CityNet", "correct horse battery", "vn")


@pytest.fixture(scope="module")
def ca_cert(tmp_path_factory):
    return init_ca(tmp_path_factory.mktemp("ca") / "ca").ca_cert


def card_files_text(boot) -> str:
    return "".join(p.read_text(errors="replace") for p in boot.rglob("*") if p.is_file())


def test_cloud_init_card_keeps_what_the_technician_set(tmp_path, ca_cert):
    boot = cloud_init_boot(tmp_path / "bootfs")
    kind, _ = provision_card(boot, NODE, ENROL, TOKEN, ca_cert, wifi=WIFI)
    assert kind == "cloud-init"
    user_data = (boot / "user-data").read_text()
    assert user_data.startswith(USER_DATA)  # their file, comments included, untouched; ours appended
    doc = yaml.safe_load(user_data)
    assert doc["users"][0]["name"] == "tech" and doc["hostname"] == NODE
    assert any("edgecam-firstboot.service" in " ".join(cmd) for cmd in doc["runcmd"])
    net = yaml.safe_load((boot / "network-config").read_text())["network"]
    ap = net["wifis"]["wlan0"]["access-points"]["CityNet"]
    assert net["version"] == 2 and net["wifis"]["wlan0"]["regulatory-domain"] == "VN"
    assert len(ap["password"]) == 64  # the PBKDF2 PSK, as rpi-imager writes it
    assert WIFI.psk not in card_files_text(boot)  # the passphrase itself is nowhere on the card
    assert (boot / "meta-data").read_text() == "instance_id: rpios-image\n"  # the image's instance id kept
    prov = read_provision(boot / PROVISION_FILE)
    assert (prov.node_id, prov.enrol_url, prov.mqtt_url) == (NODE, ENROL, "mqtts://broker.example:8883")
    assert prov.token.get_secret_value() == TOKEN and prov.ca_cert == ca_cert.read_text()
    for secret in ("network-config", PROVISION_FILE):  # a FAT card ignores this; a test folder keeps it
        assert (boot / secret).stat().st_mode & 0o777 == 0o600
    before = snapshot(boot)
    provision_card(boot, NODE, ENROL, TOKEN, ca_cert, wifi=WIFI)  # writing the card again adds nothing twice
    assert (boot / "user-data").read_text() == user_data
    assert {k: v[:2] for k, v in snapshot(boot).items()} == {k: v[:2] for k, v in before.items()}


def test_cloud_init_card_appends_to_the_technicians_runcmd(tmp_path, ca_cert):
    boot = cloud_init_boot(tmp_path / "bootfs", user_data="#cloud-config\nruncmd:\n- [touch, /etc/tech-was-here]\n")
    provision_card(boot, NODE, ENROL, TOKEN, ca_cert)
    runcmd = yaml.safe_load((boot / "user-data").read_text())["runcmd"]
    assert runcmd[0] == ["touch", "/etc/tech-was-here"] and "edgecam-firstboot" in " ".join(runcmd[1])
    provision_card(boot, NODE, ENROL, TOKEN, ca_cert)
    assert len(yaml.safe_load((boot / "user-data").read_text())["runcmd"]) == 2
    assert (boot / "network-config").read_text().startswith("# This file contains")  # no --wifi: untouched


def test_firstrun_card_runs_our_block_before_the_scripts_own_clean_up(tmp_path, ca_cert):
    boot = firstrun_boot(tmp_path / "bootfs")
    cmdline = (boot / "cmdline.txt").read_text()
    kind, _ = provision_card(boot, NODE, ENROL, TOKEN, ca_cert, wifi=WIFI)
    assert kind == "firstrun"
    script = (boot / "firstrun.sh").read_text()
    assert script.startswith(FIRSTRUN.split("rm -f /boot/firstrun.sh")[0])  # rpi-imager's part first
    ours, cleanup = script.index("# >>> edgecam"), script.index("rm -f /boot/firstrun.sh")
    assert ours < cleanup and script.rstrip().endswith("exit 0")
    assert "set_wlan CityNet" in script and "systemctl enable edgecam-firstboot.service" in script
    assert WIFI.psk not in card_files_text(boot) and TOKEN not in script
    assert (boot / "cmdline.txt").read_text() == cmdline  # rpi-imager's hook already runs firstrun.sh
    subprocess.run(["bash", "-n", str(boot / "firstrun.sh")], check=True)
    provision_card(boot, NODE, ENROL, TOKEN, ca_cert, wifi=WIFI)
    assert (boot / "firstrun.sh").read_text() == script  # our block replaced, not added twice


def test_stock_bookworm_card_gets_a_firstrun_hook(tmp_path, ca_cert):
    boot = firstrun_boot(tmp_path / "bootfs", customised=False)
    provision_card(boot, NODE, ENROL, TOKEN, ca_cert)
    line = (boot / "cmdline.txt").read_text()
    assert line.count("\n") == 1 and line.count("systemd.run=/boot/firmware/firstrun.sh") == 1
    assert "systemd.unit=kernel-command-line.target" in line
    script = (boot / "firstrun.sh").read_text()
    assert script.startswith("#!/bin/bash") and "rm -f /boot/firmware/firstrun.sh" in script
    subprocess.run(["bash", "-n", str(boot / "firstrun.sh")], check=True)
    provision_card(boot, NODE, ENROL, TOKEN, ca_cert)
    assert (boot / "cmdline.txt").read_text() == line


def test_card_refuses_a_folder_that_is_neither_kind(tmp_path, ca_cert):
    boot = tmp_path / "usb-stick"
    boot.mkdir()
    (boot / "photo.jpg").write_bytes(b"\xff\xd8")
    res = subprocess.run([sys.executable, "-m", "agent.cli", "provision", "card", str(boot), "--node-id", NODE,
                          "--broker", ENROL, "--token", TOKEN, "--ca-cert", str(ca_cert)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "not a Raspberry Pi OS boot partition" in res.stderr
    assert sorted(p.name for p in boot.iterdir()) == ["photo.jpg"]  # nothing written
    with pytest.raises(CardError, match="not a folder"):
        detect_kind(tmp_path / "missing")


@pytest.mark.parametrize(("args", "message"), [
    (["--wifi", "CityNet"], "--wifi: expected SSID:PASSPHRASE"),
    (["--wifi", "CityNet:short"], "8 to 63 characters"),
    (["--wifi-ssid", "CityNet"], "go together"),
    (["--node-id", "centre"], "reserved"),
    (["--broker", "http://x"], "mqtt"),
    (["--ota-root", __file__], f"--ota-root {__file__}: not TUF metadata"),
    (["--ota-root", "/nonexistent/1.root.json"], "--ota-root /nonexistent/1.root.json: No such file"),
    (["--ota-url", "ftp://x"], "ota_url"),
])
def test_card_refusals_are_one_line(tmp_path, ca_cert, args, message):
    boot = cloud_init_boot(tmp_path / "bootfs")
    base = {"--node-id": NODE, "--broker": ENROL, "--token": TOKEN, "--ca-cert": str(ca_cert)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    cmd = [sys.executable, "-m", "agent.cli", "provision", "card", str(boot)]
    for flag, value in base.items():
        cmd += [flag, value]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (boot / PROVISION_FILE).exists()


def test_plain_folder_for_a_jetson_gets_the_provision_file_only(tmp_path, ca_cert):
    stick = tmp_path / "stick"
    stick.mkdir()
    kind, written = provision_card(stick, NODE, ENROL, TOKEN, ca_cert, plain=True)
    assert kind is None and written == [stick / PROVISION_FILE]
    assert read_provision(stick / PROVISION_FILE).token.get_secret_value() == TOKEN
    with pytest.raises(CardError, match="--wifi needs a Raspberry Pi OS boot partition"):
        provision_card(stick, NODE, ENROL, TOKEN, ca_cert, plain=True, wifi=WIFI)


def test_a_cloud_init_card_without_pyyaml_says_which_extra(tmp_path, ca_cert, monkeypatch):
    """PyYAML is the ``card`` extra (a node does not need it): without it the technician is told what to install."""
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml → ImportError, as when it is not installed
    boot = cloud_init_boot(tmp_path / "bootfs")
    with pytest.raises(CardError, match=r'pip install "edgecam\[card\]"'):
        provision_card(boot, NODE, ENROL, TOKEN, ca_cert)
    assert not (boot / PROVISION_FILE).exists()
