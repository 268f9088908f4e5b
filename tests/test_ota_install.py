"""Install, trial, commit and rollback of OTA releases (issue 14, step 3), without systemd.

The agent releases are real wheels installed offline into their own venvs; the "agent" they run is a small
stand-in that crashes, or reports health like the real one does. The supervisor's decisions are driven the
way the units drive them (``edgecam ota supervise start|failure|tick``), as subprocesses of the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.ota.install import Installer, link_release
from agent.ota.node import NodeOta
from agent.ota.paths import OtaPaths
from agent.ota.state import OtaState, StatusFile
from agent.ota.supervisor import Health, Supervisor, write_health
from provisioning.release.bundle import pack_agent, pack_config, pack_model
from provisioning.release.repo import ReleaseRepo
from tests.ota_helpers import DEMO_MODEL, ServedRepo, config_toml, fake_agent_wheel, make_repo

TRIAL_S = 5.0


def node_config(state_dir: Path, url: str, **ota) -> Path:
    """A node config TOML (what provisioning writes) and the trusted root where it puts it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir.parent / f"{state_dir.name}.toml"
    extra = "".join(f"{k} = {v!r}\n" if isinstance(v, str) else f"{k} = {v}\n" for k, v in ota.items())
    path.write_text(f'node_id = "n1"\nstate_dir = "{state_dir}"\n[ota]\nrepo_url = "{url}"\n'
                    f"trial_s = {TRIAL_S}\ndevice_type = \"rpi4\"\ndisk_reserve_bytes = 0\n"
                    f"require_clock_sync = false\n{extra}"
                    f"[trial]\nmax_starts = 3\n")
    return path


def load(cfg: Path) -> NodeOta:
    from agent.config import load_config

    return NodeOta(load_config(cfg))


def edgecam(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def setup(tmp_path: Path, processes):
    repo = make_repo(tmp_path)
    server = processes.adopt(ServedRepo(repo.dir))
    state = tmp_path / "node"
    cfg = node_config(state, server.url)
    OtaPaths(state).make()
    shutil.copy(repo.meta_dir / "1.root.json", OtaPaths(state).bootstrap_root)
    return repo, cfg, state


def release(repo: ReleaseRepo, tmp: Path, n: int, mode: str = "healthy", agent: bool = True, model: bool = True,
            config: bool = True):
    parts = {}
    if agent:
        parts["agent"] = pack_agent(fake_agent_wheel(tmp / f"wheels{n}", f"0.{n}.0", mode), n)
    if model:
        parts["model"] = pack_model(DEMO_MODEL, n)
    if config:
        parts["config"] = pack_config(config_toml(tmp / f"cfg{n}.toml", 0.4 + n / 100), n)
    return ReleaseRepo(repo.dir, repo.keys).load().add_release("stable", n, parts)


def run_agent(state: Path) -> subprocess.CompletedProcess:
    """What the agent unit's ExecStart runs: the current release's own edgecam."""
    exe = state / "ota" / "current" / "agent" / "venv" / "bin" / "edgecam"
    return subprocess.run([str(exe), "run"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OTA_FAKE_AGENT_STATE_DIR": str(state)})


def test_install_trial_commit_then_a_model_and_config_release_reuses_the_agent(tmp_path: Path, setup) -> None:
    repo, cfg, state = setup
    release(repo, tmp_path, 1)
    r = edgecam("ota", "check", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout.strip() == "trial", r.stderr
    paths = OtaPaths(state)
    assert link_release(paths.current) == 1
    assert (paths.current / "model" / "model.tflite").is_file() and (paths.current / "config" / "config.toml").is_file()
    assert run_agent(state).returncode == 0  # the release's own venv runs, and reports healthy
    assert edgecam("ota", "supervise", "tick", "--config", str(cfg)).stdout.strip() == "trial"  # not yet T s
    health = Health.model_validate_json((paths.dir / "health.json").read_text())
    write_health(paths.dir, health.model_copy(update={"healthy_since": time.time() - TRIAL_S}))
    assert edgecam("ota", "supervise", "tick", "--config", str(cfg)).stdout.strip() == "committed"
    state1 = OtaState.load(paths.state)
    assert state1.running == 1 and state1.trial is None and state1.parts["agent"].version == "0.1.0"
    agent_dir = paths.part_dir("agent", state1.parts["agent"].sha256)
    venv_inode = (agent_dir / "venv").stat().st_ino

    release(repo, tmp_path, 2, agent=False)  # model + config only: carries the agent of release 1
    assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    assert (agent_dir / "venv").stat().st_ino == venv_inode, "the agent must not be reinstalled"
    assert os.path.realpath(paths.current / "agent") == str(agent_dir)
    status = StatusFile.read(paths.status)
    assert (status.state, status.release, status.running) == ("trial", 2, 1)
    shown = json.loads(edgecam("ota", "status", "--config", str(cfg)).stdout)
    assert (shown["running"], shown["current"], shown["trial"]["release"]) == (1, 2, 2)
    assert shown["versions"]["agent"] == "0.1.0" and shown["status"]["state"] == "trial"


def test_health_fails_then_rollback_and_the_release_is_not_taken_again(tmp_path: Path, setup) -> None:
    repo, cfg, state = setup
    release(repo, tmp_path, 1, mode="unhealthy")
    assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    assert run_agent(state).returncode == 0
    node = load(cfg)
    sup = node.supervisor()
    sup.clock = lambda: time.time() + 10 * TRIAL_S  # the trial window has passed (the decision, not a wait)
    assert sup.tick() == "rolled_back"
    paths = OtaPaths(state)
    assert link_release(paths.current) is None  # back on the provisioned install
    status = StatusFile.read(paths.status)
    assert status.state == "rolled_back" and "broker mqtt://127.0.0.1:1 not connected" in status.error
    assert edgecam("ota", "check", "--config", str(cfg)).returncode == 1
    assert "failed here before" in StatusFile.read(paths.status).error


def test_crash_loop_at_start_rolls_back_to_the_committed_release(tmp_path: Path, setup) -> None:
    repo, cfg, state = setup
    release(repo, tmp_path, 1)
    assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    Installer(OtaPaths(state)).commit()
    release(repo, tmp_path, 2, mode="crash")
    assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    # systemd's loop: ExecStartPre=edgecam ota supervise start, ExecStart=the current agent, Restart=on-failure
    outcomes = []
    for _ in range(10):
        pre = edgecam("ota", "supervise", "start", "--config", str(cfg)).stdout.strip()
        outcomes.append(pre)
        if pre != "trial":
            break
        assert run_agent(state).returncode == 3
    assert outcomes == ["trial", "trial", "trial", "rolled_back"]
    paths = OtaPaths(state)
    assert link_release(paths.current) == 1
    assert run_agent(state).returncode == 0  # the old release runs again
    status = StatusFile.read(paths.status)
    assert status.state == "rolled_back" and status.release == 2 and status.running == 1
    assert "crash loop" in status.error


def test_unit_failure_during_trial_rolls_back(tmp_path: Path, setup) -> None:
    repo, cfg, state = setup
    release(repo, tmp_path, 1, mode="crash")
    assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    assert edgecam("ota", "supervise", "failure", "--config", str(cfg)).stdout.strip() == "rolled_back"
    assert link_release(OtaPaths(state).current) is None


def test_manual_rollback_after_commit(tmp_path: Path, setup) -> None:
    repo, cfg, state = setup
    for n in (1, 2):
        release(repo, tmp_path, n)
        assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
        Installer(OtaPaths(state)).commit()
    r = edgecam("ota", "rollback", "--config", str(cfg))
    assert r.returncode == 0 and "running release 1" in r.stdout
    assert link_release(OtaPaths(state).current) == 1
    assert OtaState.load(OtaPaths(state).state).failed[2].startswith("rolled back by hand")


KILL_SCRIPT = """
import os, signal, sys
from agent.config import load_config
from agent.ota.install import Installer
from agent.ota.node import NodeOta
at = sys.argv[2]
node = NodeOta(load_config(__import__("pathlib").Path(sys.argv[1])))
orig = Installer.__init__
def init(self, paths, step=None):
    orig(self, paths, lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == at else None)
Installer.__init__ = init
if at.startswith("state:committed"):
    node.installer().commit()
elif at.startswith("state:rolled_back"):
    node.installer().rollback("test")
else:
    node.check()
"""

STEPS = ["part:agent", "part:model", "part:config", "release", "state:trial", "switched"]


@pytest.mark.parametrize("step", [*STEPS, "state:committed", "state:rolled_back"])
def test_sigkill_at_each_install_step_leaves_a_consistent_node(tmp_path: Path, setup, step: str) -> None:
    repo, cfg, state = setup
    release(repo, tmp_path, 1)
    paths = OtaPaths(state)
    if step in ("state:committed", "state:rolled_back"):
        assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cfg), step], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -9, r.stderr
    # the next boot: the supervisor reconciles the link with the state
    assert edgecam("ota", "supervise", "boot", "--config", str(cfg)).returncode == 0
    st = OtaState.load(paths.state)
    want = st.trial.release if st.trial else st.running
    assert link_release(paths.current) == want
    if want is not None:  # whatever runs is complete
        assert run_agent(state).returncode == 0
    if step in STEPS[:4]:
        assert want is None  # killed before the switch was decided: the old install runs
        assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"  # and the next check works
        assert link_release(paths.current) == 1 and run_agent(state).returncode == 0
    elif step in ("state:trial", "switched"):
        assert st.trial is not None and st.trial.release == 1
    elif step == "state:committed":
        assert st.running == 1 and st.trial is None
    else:
        assert st.trial is None and st.failed == {1: "test"} and want is None
    if want is not None:
        assert all((Path(os.path.realpath(link)) / ".ok").is_file() for link in paths.current.iterdir()
                   if link.is_symlink())


def test_supervisor_logic_without_processes(tmp_path: Path) -> None:
    """The decisions alone: no trial → running; health too young → trial; deadline passed → rolled back."""
    paths = OtaPaths(tmp_path).make()
    inst = Installer(paths)
    sup = Supervisor(inst, StatusFile(paths.status), trial_s=10, max_starts=2)
    assert sup.tick() == "running" and sup.on_start() == "running" and sup.on_failure() == "running"
    cfg = AgentConfig(state_dir=tmp_path)
    assert NodeOta(cfg).paths.dir == paths.dir


def test_exec_runs_the_current_release_or_the_provisioned_install(tmp_path: Path, setup) -> None:
    repo, cfg, state = setup
    r = edgecam("ota", "exec", "--config", str(cfg), "--", "--version")
    assert r.returncode == 0 and r.stdout.startswith("edgecam ")  # no release: this install
    release(repo, tmp_path, 1)
    assert edgecam("ota", "check", "--config", str(cfg)).stdout.strip() == "trial"
    r = edgecam("ota", "exec", "--config", str(cfg), "--", "run", env={"OTA_FAKE_AGENT_STATE_DIR": str(state)})
    assert r.returncode == 0 and "fake agent 0.1.0 healthy release 1" in r.stdout


def test_one_ota_actor_at_a_time(tmp_path: Path, setup) -> None:
    """A check while another holds the lock does nothing; a supervisor decision waits for it."""
    from agent.ota.lock import Busy, ota_lock

    repo, cfg, _state = setup
    release(repo, tmp_path, 1)
    node = load(cfg)
    with ota_lock(node.paths.dir):
        busy = node.check()
        assert busy.state == "checking" and "another OTA check" in busy.error
        assert link_release(node.paths.current) is None and StatusFile.read(node.paths.status) is None
        with pytest.raises(Busy), ota_lock(node.paths.dir, wait_s=0.2):
            pass
    assert node.check().state == "trial"


def test_a_bundle_missing_a_dependency_wheel_is_refused_at_install(tmp_path: Path, setup) -> None:
    """Offline means offline: a dependency the bundle lacks is not fetched from anywhere; nothing is switched."""
    repo, cfg, state = setup
    wheels = fake_agent_wheel(tmp_path / "wheels", "0.9.0", "healthy", requires="edgecam-missing-dep>=1")
    ReleaseRepo(repo.dir, repo.keys).load().add_release("stable", 1, {"agent": pack_agent(wheels, 1)})
    r = edgecam("ota", "check", "--config", str(cfg))
    assert r.returncode == 1 and "install: agent bundle: offline install failed" in r.stderr
    paths = OtaPaths(state)
    assert link_release(paths.current) is None and OtaState.load(paths.state).trial is None
    assert not any(paths.parts.rglob(".ok"))
    status = StatusFile.read(paths.status)
    assert status.state == "refused" and "edgecam-missing-dep" in status.error
    again = edgecam("ota", "check", "--config", str(cfg))  # not tried again on every check
    assert again.returncode == 1 and "failed here before (install: agent bundle" in again.stderr


def test_install_root_checks_what_it_trusts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "a")
    other = make_repo(tmp_path / "b")
    state = tmp_path / "fresh"
    cfg = tmp_path / "fresh.toml"
    cfg.write_text(f'state_dir = "{state}"\n')
    r = edgecam("ota", "install-root", str(repo.meta_dir / "1.root.json"), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert OtaPaths(state).bootstrap_root.read_bytes() == (repo.meta_dir / "1.root.json").read_bytes()
    r = edgecam("ota", "install-root", str(other.meta_dir / "1.root.json"), "--config", str(cfg))
    assert r.returncode == 2 and "--force replaces the trust anchor" in r.stderr
    r = edgecam("ota", "install-root", str(repo.meta_dir / "timestamp.json"), "--config", str(cfg))
    assert r.returncode == 2 and "not root metadata" in r.stderr
    doc = json.loads((repo.meta_dir / "1.root.json").read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    r = edgecam("ota", "install-root", str(forged), "--config", str(cfg), "--force")
    assert r.returncode == 2 and "not signed by its own root threshold" in r.stderr


def test_the_agent_side_of_ota_loads_no_tuf() -> None:
    """``edgecam run`` stays light: the agent's OTA duties import neither tuf nor its HTTP stack."""
    code = ("import sys, agent.runner, agent.ota.runtime, agent.ota.install, agent.ota.supervisor, agent.ota.cli;"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tuf', 'urllib3', 'securesystemslib'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
