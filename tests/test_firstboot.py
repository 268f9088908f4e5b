"""First boot from a provisioned card, on fixture boot partitions of both kinds and a fixture node root laid out
by ``scripts/install-device --root``, against a real Mosquitto.

Enrolment runs through a real subprocess honouring ``edgecam provision enrol``'s CLI: the stand-in in
``tests/fakes/enrol_standin.py`` (it needs the broker, burns each token once, installs the identity files), and,
once the real command exists, the real one (``test_first_boot_with_the_real_enrolment``).
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.identity import IdentityPaths
from provisioning.ca import CaFiles, init_ca
from provisioning.card_model import FIRSTBOOT_LOG, PROVISION_FILE, PROVISIONED_FILE, read_provision
from tests.broker import Broker, free_port, wait_port
from tests.card_fixtures import cloud_init_boot, firstrun_boot, snapshot
from tests.ota_helpers import make_repo

REPO = Path(__file__).resolve().parents[1]
NODE = "hue-cam-0042"
STANDIN = [sys.executable, str(REPO / "tests/fakes/enrol_standin.py")]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)


def node_root(tmp_path: Path) -> Path:
    """A node's root as ``scripts/install-device`` lays it out (units, /etc/edgecam, /var/lib/edgecam)."""
    root = tmp_path / "root"
    root.mkdir()
    res = subprocess.run([str(REPO / "scripts/install-device"), "--root", str(root), "--board", "pi",
                          "--venv", sys.prefix], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return root


@pytest.fixture
def ca(tmp_path) -> CaFiles:
    return init_ca(tmp_path / "ca")


@pytest.fixture
def tokens(tmp_path, monkeypatch) -> Path:
    """The stand-in enrolment's valid tokens (it appends used ones to ``tokens.used``)."""
    path = tmp_path / "tokens"
    path.write_text("claim-one\nclaim-two\n")
    monkeypatch.setenv("STANDIN_TOKENS", str(path))
    return path


def make_card(tmp_path: Path, kind: str, broker_url: str, ca: CaFiles, token: str = "claim-one",
              extra: tuple[str, ...] = ()) -> Path:
    boot = (cloud_init_boot if kind == "cloud-init" else firstrun_boot)(tmp_path / "bootfs")
    res = cli("provision", "card", str(boot), "--node-id", NODE, "--broker", broker_url, "--token", token,
              "--ca-cert", str(ca.ca_cert), "--wifi", "CityNet:correct horse battery", "--wifi-country", "VN",
              *extra)
    assert res.returncode == 0, res.stderr
    assert f"{kind} image" in res.stdout
    return boot


def firstboot(boot: Path, root: Path, edgecam: list[str] = STANDIN) -> subprocess.CompletedProcess:
    return cli("provision", "firstboot", "--boot", str(boot), "--root", str(root), "--edgecam", shlex.join(edgecam))


def card_text(boot: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in boot.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["cloud-init", "firstrun"])
def test_first_boot_from_a_card(tmp_path, broker, ca, tokens, kind):
    root = node_root(tmp_path)
    boot = make_card(tmp_path, kind, broker.url, ca)
    res = firstboot(boot, root)
    assert res.returncode == 0, res.stdout + res.stderr

    cfg = load_config(root / "etc/edgecam/node.toml", environ={})  # a valid agent config
    assert cfg.node_id == NODE and str(cfg.state_dir) == "/var/lib/edgecam"
    assert (root / "etc/edgecam/ca.crt").read_text() == ca.ca_cert.read_text()
    ident = IdentityPaths(root / "var/lib/edgecam")
    assert ident.installed() and ident.key.stat().st_mode & 0o777 == 0o600
    # the token is gone from the card; the rest of what the card said stays, readable
    assert not (boot / PROVISION_FILE).exists() and "claim-one" not in card_text(boot)
    done = read_provision(boot / PROVISIONED_FILE)
    assert done.token is None and done.node_id == NODE
    link = root / "etc/systemd/system/multi-user.target.wants/edgecam.service"
    assert link.is_symlink() and str(link.readlink()) == "/etc/systemd/system/edgecam.service"
    log = (boot / FIRSTBOOT_LOG).read_text()
    for said in ("installed /etc/edgecam/node.toml", "enrolled", "token removed", "enabled edgecam.service"):
        assert said in log and said in res.stdout  # on the card and on the console alike
    assert "claim-one" not in res.stdout + res.stderr

    before = snapshot(boot, root)
    again = firstboot(boot, root)
    assert again.returncode == 0 and "already provisioned; nothing to do" in again.stdout
    assert snapshot(boot, root) == before  # not one byte, link or timestamp changed


def test_first_boot_installs_the_ota_root_the_card_carries(tmp_path, broker, ca, tokens):
    """The release repository's root goes on the card (checked there) and becomes the node's trust anchor; the
    config made from the card points at the repository; a card with another root never replaces it."""
    repo = make_repo(tmp_path / "rel")
    root = node_root(tmp_path)
    url = "https://releases.example.org/edgecam"
    boot = make_card(tmp_path, "cloud-init", broker.url, ca,
                     extra=("--ota-root", str(repo.meta_dir / "1.root.json"), "--ota-url", url))
    res = firstboot(boot, root)
    assert res.returncode == 0, res.stdout + res.stderr
    installed = root / "var/lib/edgecam/ota/root.json"
    assert installed.read_bytes() == (repo.meta_dir / "1.root.json").read_bytes()
    assert "installed the OTA trusted root" in (boot / FIRSTBOOT_LOG).read_text()
    cfg = load_config(root / "etc/edgecam/node.toml", environ={})
    assert cfg.ota.repo_url == url

    other = make_repo(tmp_path / "other")  # a card written for another repository, into the same node
    (root / "etc/systemd/system/multi-user.target.wants/edgecam.service").unlink()
    boot2 = make_card(tmp_path / "card2", "cloud-init", broker.url, ca, token="claim-two",
                      extra=("--ota-root", str(other.meta_dir / "1.root.json")))
    res = firstboot(boot2, root)
    assert res.returncode == 2
    assert "OTA root: " in res.stdout and "a different trusted root is installed" in res.stdout
    assert installed.read_bytes() == (repo.meta_dir / "1.root.json").read_bytes()


def test_broker_down_keeps_the_token_and_a_retry_succeeds(tmp_path, ca, tokens, processes):
    root = node_root(tmp_path)
    broker = Broker(tmp_path / "broker", port=free_port())  # not started: the broker is down
    boot = make_card(tmp_path, "cloud-init", broker.url, ca)

    res = firstboot(boot, root)
    assert res.returncode == 1  # the unit's Restart=on-failure tries again
    assert read_provision(boot / PROVISION_FILE).token.get_secret_value() == "claim-one"
    log = (boot / FIRSTBOOT_LOG).read_text()
    for text in (log, res.stdout):
        assert "enrolment FAILED: error: cannot reach the enrolment broker" in text
        assert "the token stays on the card" in text
    assert not IdentityPaths(root / "var/lib/edgecam").installed()
    assert not (root / "etc/systemd/system/multi-user.target.wants/edgecam.service").exists()

    processes.adopt(broker.start())
    assert wait_port(broker.port)
    retry = firstboot(boot, root)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert not (boot / PROVISION_FILE).exists() and "claim-one" not in card_text(boot)
    assert (root / "etc/systemd/system/multi-user.target.wants/edgecam.service").is_symlink()
    assert (boot / FIRSTBOOT_LOG).read_text().startswith(log)  # the log keeps the failed attempt, then success


def test_power_cut_after_enrolment_finishes_without_enrolling_again(tmp_path, broker, ca, tokens):
    """The identity is in place but the token is still on the card (power lost in between): first boot must not
    spend the (already burnt) token again, only finish the remaining steps."""
    root = node_root(tmp_path)
    boot = make_card(tmp_path, "firstrun", broker.url, ca)
    (root / "etc/edgecam").mkdir(parents=True, exist_ok=True)
    (root / "etc/edgecam/ca.crt").write_text(ca.ca_cert.read_text())
    subprocess.run([*STANDIN, "provision", "enrol", "--claim", "claim-one", "--mqtt", broker.url, "--ca-cert",
                    str(ca.ca_cert), "--state-dir", str(root / "var/lib/edgecam"), "--node-id", NODE], check=True)
    res = firstboot(boot, root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already holds its identity" in res.stdout and not (boot / PROVISION_FILE).exists()


def test_a_card_without_a_usable_provision_file_says_why(tmp_path, ca):
    root = node_root(tmp_path)
    boot = cloud_init_boot(tmp_path / "bootfs")
    (boot / PROVISION_FILE).write_text('node_id = "hue-cam-0042"\n')
    res = firstboot(boot, root)
    assert res.returncode == 2
    assert f"FAILED: {boot / PROVISION_FILE}: enrol_url: Field required" in (boot / FIRSTBOOT_LOG).read_text()


def _real_enrol_available() -> bool:
    res = cli("provision", "enrol", "--help")
    return res.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _real_enrol_available(), reason="`edgecam provision enrol` not built yet (issue 13, "
                    "enrolment part); the stand-in tests cover the first-boot flow")
def test_first_boot_with_the_real_enrolment(tmp_path, processes):
    """The whole chain on DESIGN's CLI contract: CA, broker config with the enrolment listener, the centre's
    enrolment worker, a claim token, the card, and first boot calling the real ``edgecam provision enrol``."""
    ca_dir, out = tmp_path / "ca", tmp_path / "broker"
    files = init_ca(ca_dir)
    port, enrol_port = free_port(), free_port()
    args = ["broker-config", "--ca", str(ca_dir), "--port", str(port), "--enrol-port", str(enrol_port),
            "--out", str(out), "--bind", "127.0.0.1"]
    if os.getuid() == 0:
        args += ["--run-as", pwd.getpwuid(0).pw_name]
    assert cli(*args).returncode == 0
    mosq = processes.popen(["mosquitto", "-c", str(out / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    assert wait_port(port) and wait_port(enrol_port), mosq.poll()
    processes.popen([sys.executable, "-m", "agent.cli", "centre", "enrol", "--mqtt", f"mqtts://127.0.0.1:{port}",
                     "--tls-ca", str(files.ca_cert), "--tls-cert", str(files.centre_cert), "--tls-key",
                     str(files.centre_key), "--ca", str(ca_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    minted = cli("provision", "token", NODE, "--ca", str(ca_dir), "--ttl", "1h")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip().splitlines()[-1]
    root = node_root(tmp_path)
    boot = cloud_init_boot(tmp_path / "bootfs")
    res = cli("provision", "card", str(boot), "--node-id", NODE, "--broker", f"mqtts://127.0.0.1:{enrol_port}",
              "--token", token, "--ca-cert", str(files.ca_cert), "--mqtt", f"mqtts://127.0.0.1:{port}")
    assert res.returncode == 0, res.stderr
    done = firstboot(boot, root, edgecam=[sys.executable, "-m", "agent.cli"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert IdentityPaths(root / "var/lib/edgecam").installed()
    assert not (boot / PROVISION_FILE).exists() and token not in card_text(boot)
