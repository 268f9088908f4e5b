"""End to end with a real agent: a running node takes a model + config release through a real Mosquitto nudge
and a local HTTPS repository that requires the node's own client certificate, restarts onto it, reports each
step on ota/status, and its retained ``state`` shows the new release; the supervisor commits it — or, when the
release is not healthy on this node, reverts it and the node runs its provisioned model and config again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.contract import Event, OtaStatus, State
from agent.identity import IdentityPaths
from provisioning.release.bundle import pack_config, pack_model
from tests.mqtt_collect import Collector
from tests.ota_helpers import DEMO_MODEL, ServedRepo, make_repo
from tests.transport_util import publish
from tests.waiting import wait_until

TRIAL_S = 5


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


def start_node(tmp_path: Path, broker, processes, node_id: str, extra_ota: str = "") -> Node:
    """A node with its identity and trusted root installed, a repository with release 1 (model + config)."""
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
                   f'[ota]\nrepo_url = "{server.url.replace("127.0.0.1", "localhost")}"\ntrial_s = {TRIAL_S}\n'
                   'device_type = "rpi5"\ncheck_interval_s = 3600\nrequire_clock_sync = false\n'
                   f'disk_reserve_bytes = 0\n{extra_ota}')
    release_cfg = tmp_path / "release.toml"
    release_cfg.write_text('camera_id = "ota-r1"\n[tracker]\nthreshold = 0.45\n')
    repo.add_release("stable", 1, {"model": pack_model(DEMO_MODEL, 1), "config": pack_config(release_cfg, 1)},
                     device_types=["rpi5"])
    col = Collector(broker.port, client_id=f"{node_id}-watch")
    processes.adopt(_Closes(col))
    log = tmp_path / "agent.log"
    with log.open("ab") as fh:
        agent = processes.popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "--source",
                                 "synthetic:?width=640&height=360", "--mqtt", broker.url], stdout=fh, stderr=fh)
    node = Node(node_id, cfg, log, col, agent)
    assert col.wait_for(lambda: node.running_release() is None, 60), log.read_text()
    publish(broker.port, f"edgecam/v1/{node_id}/ota/job", json.dumps({"channel": "stable"}).encode(), retain=True)
    assert col.wait_for(lambda: node.running_release() == 1, 120), log.read_text()
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
