"""Happy path end to end: a running node takes a model + config release through a real Mosquitto nudge and a
local HTTPS repository that requires the node's own client certificate, restarts onto it, reports each step
on ota/status, and its retained ``state`` shows the new release and model; the supervisor commits it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from agent.contract import Event, OtaStatus, State
from agent.identity import IdentityPaths
from provisioning.release.bundle import pack_config, pack_model
from tests.mqtt_collect import Collector
from tests.ota_helpers import DEMO_MODEL, ServedRepo, make_repo
from tests.transport_util import publish
from tests.waiting import wait_until

NODE = "ota-e2e-1"


def test_model_and_config_release_reaches_a_running_node(tmp_path: Path, broker, processes) -> None:
    from provisioning.ca import init_ca, issue_node

    ca = init_ca(tmp_path / "ca")
    ident = issue_node(NODE, tmp_path / "ca", tmp_path / "issued")
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
    cfg.write_text(f'node_id = "{NODE}"\nstate_dir = "{state}"\n'
                   f'[ota]\nrepo_url = "{server.url.replace("127.0.0.1", "localhost")}"\ntrial_s = 5\n'
                   'device_type = "rpi5"\ncheck_interval_s = 3600\nrequire_clock_sync = false\n'
                   'disk_reserve_bytes = 0\n')
    release_cfg = tmp_path / "release.toml"
    release_cfg.write_text('camera_id = "ota-r1"\n[tracker]\nthreshold = 0.45\n')
    rel = repo.add_release("stable", 1, {"model": pack_model(DEMO_MODEL, 1), "config": pack_config(release_cfg, 1)},
                           device_types=["rpi5"])

    col = Collector(broker.port, client_id="ota-e2e-watch")
    try:
        log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - closed with the process below
        agent = processes.popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "--source",
                                 "synthetic:?width=640&height=360", "--mqtt", broker.url], stdout=log, stderr=log)
        assert col.wait_for(lambda: any(State.model_validate_json(m.payload).online
                                        for m in col.on(f"{NODE}/state")), 60), (tmp_path / "agent.log").read_text()
        first = State.model_validate_json(col.on(f"{NODE}/state")[-1].payload)
        assert first.versions.release is None

        publish(broker.port, f"edgecam/v1/{NODE}/ota/job", json.dumps({"channel": "stable"}).encode(), retain=True)

        def states() -> list[OtaStatus]:
            return [OtaStatus.model_validate_json(m.payload) for m in col.on(f"{NODE}/ota/status")]

        def running_release() -> int | None:
            online = [State.model_validate_json(m.payload) for m in col.on(f"{NODE}/state")]
            online = [s for s in online if s.online and s.versions]
            return online[-1].versions.release if online else None

        assert col.wait_for(lambda: running_release() == 1, 120), (tmp_path / "agent.log").read_text()
        assert col.wait_for(lambda: any(Event.model_validate_json(m.payload).camera_id == "ota-r1"
                                        for m in col.on(f"{NODE}/events")), 120)
        new_state = State.model_validate_json(col.on(f"{NODE}/state")[-1].payload)
        assert new_state.versions.config == "r1" and new_state.versions.model.startswith("edgecam-demo")
        assert "ota/current/model" in (tmp_path / "agent.log").read_text()  # the release's model is the one loaded

        # the supervisor's timer commits the release once the agent has been healthy for trial_s
        def tick() -> bool:
            r = subprocess.run([sys.executable, "-m", "agent.cli", "ota", "supervise", "tick", "--config", str(cfg)],
                               capture_output=True, text=True, timeout=120)
            return r.stdout.strip() == "committed"

        assert wait_until(tick, 120, interval=1.0)
        assert col.wait_for(lambda: [s.state for s in states()][-1:] == ["committed"], 60), states()
        seen = [s.state for s in states()]
        assert "trial" in seen or "committed" in seen
        assert states()[-1].release == rel.release and states()[-1].running == 1
        agent.terminate()
        assert agent.wait(60) == 0
    finally:
        col.close()
