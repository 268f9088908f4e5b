"""End to end with a real agent: a running node takes a release through a real Mosquitto nudge and a local
HTTPS repository that requires the node's own client certificate, restarts onto it, reports each step on
ota/status, and its retained ``state`` shows the new release; the supervisor commits it — or, when the release
is not healthy on this node, reverts it and the node runs its provisioned model and config again.

The full release (agent + model + config) runs the node as its systemd unit does (``tests/unit_loop.py`` reads
the real unit): the agent bundle is this project's own wheel at a new version plus its dependency wheels,
made by ``edgecam release bundle`` offline from the wheelhouse ``./scripts/test`` collects.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.contract import Event, OtaStatus, State
from agent.identity import IdentityPaths
from provisioning.release.bundle import BundleSpec, build_agent_bundle, pack_agent, pack_config, pack_model
from tests.mqtt_collect import Collector
from tests.ota_helpers import DEMO_MODEL, ServedRepo, make_repo
from tests.transport_util import publish
from tests.waiting import wait_until

TRIAL_S = 5
ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "provisioning" / "templates" / "edgecam.service"
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # ./scripts/test collects it (scripts/lib/setup.sh)
NEW_AGENT = "0.1.1+ota.e2e"


@dataclass
class _Closes:
    """Lets the processes fixture close a collector (it calls ``stop``)."""

    col: Collector

    def stop(self) -> None:
        self.col.close()


@dataclass
class Node:
    node_id: str
    cfg: Path
    log: Path
    col: Collector
    agent: subprocess.Popen

    def states(self) -> list[OtaStatus]:
        return [OtaStatus.model_validate_json(m.payload) for m in self.col.on(f"{self.node_id}/ota/status")]

    def running_release(self) -> int | str | None:
        online = [State.model_validate_json(m.payload) for m in self.col.on(f"{self.node_id}/state")]
        online = [s for s in online if s.online and s.versions]
        return online[-1].versions.release if online else "offline"

    def supervise(self, event: str = "tick") -> str:
        r = subprocess.run([sys.executable, "-m", "agent.cli", "ota", "supervise", event, "--config", str(self.cfg)],
                           capture_output=True, text=True, timeout=120)
        return r.stdout.strip()


def start_node(tmp_path: Path, broker, processes, node_id: str, extra_ota: str = "",
               agent_bundle: Path | None = None) -> Node:
    """A node with its identity and trusted root installed, a repository with release 1 (model + config, and
    the agent when ``agent_bundle`` is given, the node then run by its unit); waits until it runs release 1."""
    from provisioning.ca import init_ca, issue_node

    ca = init_ca(tmp_path / "ca")
    ident = issue_node(node_id, tmp_path / "ca", tmp_path / "issued")
    state = tmp_path / "state"
    paths = IdentityPaths(state)
    paths.dir.mkdir(parents=True)
    for src, dst in ((ident.key, paths.key), (ident.cert, paths.cert), (ident.ca_cert, paths.ca_cert)):
        shutil.copy(src, dst)
    repo = make_repo(tmp_path)
    server = processes.adopt(ServedRepo(repo.dir, tls_cert=ca.server_cert, tls_key=ca.server_key, tls_ca=ca.ca_cert))
    (state / "ota").mkdir(mode=0o700)
    shutil.copy(repo.meta_dir / "1.root.json", state / "ota" / "root.json")  # provisioning installs the root
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'node_id = "{node_id}"\nstate_dir = "{state}"\n'
                   '[source]\nkind = "synthetic"\nwidth = 640\nheight = 360\n'
                   f'[mqtt]\nurl = "{broker.url}"\n'
                   f'[ota]\nrepo_url = "{server.url.replace("127.0.0.1", "localhost")}"\ntrial_s = {TRIAL_S}\n'
                   'device_type = "rpi5"\ncheck_interval_s = 3600\nrequire_clock_sync = false\n'
                   f'disk_reserve_bytes = 0\n{extra_ota}')
    release_cfg = tmp_path / "release.toml"
    release_cfg.write_text('camera_id = "ota-r1"\n[tracker]\nthreshold = 0.45\n')
    parts = {"model": pack_model(DEMO_MODEL, 1), "config": pack_config(release_cfg, 1)}
    if agent_bundle is not None:
        parts["agent"] = pack_agent(agent_bundle, 1)
    repo.add_release("stable", 1, parts, device_types=["rpi5"])
    col = Collector(broker.port, client_id=f"{node_id}-watch")
    processes.adopt(_Closes(col))
    log = tmp_path / "agent.log"
    if agent_bundle is None:
        cmd = [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)]
    else:  # ExecStartPre=edgecam ota supervise start, ExecStart=edgecam ota exec -- run, Restart=on-failure
        cmd = [sys.executable, "-m", "tests.unit_loop", str(UNIT), "--restart-sec", "0.5",
               "--replace", f"/opt/edgecam/venv={sys.prefix}", "--replace", f"/etc/edgecam/node.toml={cfg}",
               "--replace", f"/var/lib/edgecam={state}"]
    with log.open("ab") as fh:
        agent = processes.popen(cmd, stdout=fh, stderr=fh, cwd=ROOT)
    node = Node(node_id, cfg, log, col, agent)
    assert col.wait_for(lambda: node.running_release() is None, 60), log.read_text()
    publish(broker.port, f"edgecam/v1/{node_id}/ota/job", json.dumps({"channel": "stable"}).encode(), retain=True)
    # an agent release is ~100 MB to fetch and a venv to install before the restart
    assert col.wait_for(lambda: node.running_release() == 1, 120 if agent_bundle is None else 400), log.read_text()
    return node


def test_model_and_config_release_reaches_a_running_node(tmp_path: Path, broker, processes) -> None:
    # a wide commit window: on a loaded machine the restart onto the release can take most of 3 × trial_s
    node = start_node(tmp_path, broker, processes, "ota-e2e-1", "trial_window_s = 300\n")
    assert node.col.wait_for(lambda: any(Event.model_validate_json(m.payload).camera_id == "ota-r1"
                                         for m in node.col.on(f"{node.node_id}/events")), 120)
    state = State.model_validate_json(node.col.on(f"{node.node_id}/state")[-1].payload)
    assert state.versions.config == "r1" and state.versions.model.startswith("edgecam-demo")
    assert "ota/current/model" in node.log.read_text()  # the release's model is the one loaded

    # the supervisor's timer commits the release once the agent has been healthy for trial_s
    assert wait_until(lambda: node.supervise() == "committed", 120, interval=1.0)
    assert node.col.wait_for(lambda: [s.state for s in node.states()][-1:] == ["committed"], 60), node.states()
    assert "trial" in [s.state for s in node.states()]
    assert (node.states()[-1].release, node.states()[-1].running) == (1, 1)
    node.agent.terminate()
    assert node.agent.wait(60) == 0


def test_a_release_that_is_not_healthy_here_is_reverted(tmp_path: Path, broker, processes) -> None:
    """No invoke on this node fits a 1 µs budget: the trial never passes, the supervisor reverts at the end of its
    window, and the agent restarts onto the provisioned model and config."""
    node = start_node(tmp_path, broker, processes, "ota-e2e-2", "inference_budget_ms = 0.001\n")
    health = tmp_path / "state" / "ota" / "health.json"
    assert wait_until(lambda: health.exists() and "over the 0.001 ms budget" in health.read_text(), 120)
    assert wait_until(lambda: node.supervise() == "rolled_back", 120, interval=1.0)
    assert node.col.wait_for(lambda: node.running_release() is None, 120), node.log.read_text()
    assert node.col.wait_for(lambda: [s.state for s in node.states()][-1:] == ["rolled_back"], 60), node.states()
    last = node.states()[-1]
    assert last.release == 1 and last.running is None and "over the 0.001 ms budget" in last.error
    assert node.col.wait_for(lambda: any(Event.model_validate_json(m.payload).camera_id == "cam0"
                                         for m in node.col.on(f"{node.node_id}/events")), 120)
    node.agent.terminate()
    assert node.agent.wait(60) == 0


def new_agent_bundle(tmp_path: Path) -> Path:
    """This project's wheel at version NEW_AGENT and its dependency wheels, built offline from the wheelhouse."""
    import agent

    if not (WHEELHOUSE / ".for").is_file():
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: ./scripts/test collects it (scripts/lib/setup.sh)")
    src = tmp_path / "src"
    for name in ("agent", "centre", "hardware", "models", "provisioning"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    init = src / "agent" / "__init__.py"
    old = f'__version__ = "{agent.__version__}"'
    assert old in init.read_text()
    init.write_text(init.read_text().replace(old, f'__version__ = "{NEW_AGENT}"'))
    out = tmp_path / "bundle"
    build_agent_bundle(out, BundleSpec(source=src, find_links=(WHEELHOUSE,), no_index=True))
    return out


def test_agent_model_and_config_release_reaches_a_node_run_by_its_unit(tmp_path: Path, broker, processes) -> None:
    """The whole release: the node installs the new agent into its own venv offline, the unit's next start runs
    it (``ota exec``), and the node's retained state shows the new agent, model and config versions."""
    import agent

    bundle = new_agent_bundle(tmp_path)
    assert agent.__version__ != NEW_AGENT
    node = start_node(tmp_path, broker, processes, "ota-e2e-3", "trial_window_s = 600\n", agent_bundle=bundle)
    state = State.model_validate_json(node.col.on(f"{node.node_id}/state")[-1].payload)
    assert state.versions.agent == NEW_AGENT, node.log.read_text()[-3000:]
    assert state.versions.config == "r1" and state.versions.model.startswith("edgecam-demo")
    venv = tmp_path / "state" / "ota" / "current" / "agent" / "venv"
    assert "unit_loop: exited with 75" in node.log.read_text()  # the old agent stopped for the unit to restart it
    assert (venv / "bin" / "edgecam").is_file()
    assert node.col.wait_for(lambda: any(Event.model_validate_json(m.payload).camera_id == "ota-r1"
                                         for m in node.col.on(f"{node.node_id}/events")), 120)
    assert wait_until(lambda: node.supervise() == "committed", 120, interval=1.0)
    assert node.col.wait_for(lambda: [s.state for s in node.states()][-1:] == ["committed"], 60), node.states()
    steps = [s.state for s in node.states()]
    assert {"installing", "trial"} <= set(steps), steps  # installing a venv takes seconds: seen
    node.agent.terminate()
    assert node.agent.wait(60) == 0
