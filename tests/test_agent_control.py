"""The running agent under the centre's control: commands, hot and cold config/desired, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from agent.contract import ConfigReported, State
from tests.mqtt_collect import Collector
from tests.transport_util import publish


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def command(url: str, node: str, op: str, args: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli("centre", "command", node, op, "--args", json.dumps(args or {}), "--mqtt", url,
                              "--timeout", "20"), capture_output=True, text=True, timeout=60)


def test_commands_config_and_graceful_stop(tmp_path, broker):
    col = Collector(broker.port)
    node = subprocess.Popen(cli("run", "--source", "synthetic:?width=640&height=360", "--mqtt", broker.url,
                                "--node-id", "n-ctl", "--state-dir", str(tmp_path / "state"),
                                "--summary-json", str(tmp_path / "summary.json")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert col.wait_for(lambda: any(State.model_validate_json(m.payload).online for m in col.on("/state")), 60)
        res = command(broker.url, "n-ctl", "ping")
        assert res.returncode == 0, res.stdout + res.stderr

        res = command(broker.url, "n-ctl", "snapshot")
        assert res.returncode == 0, res.stdout + res.stderr
        assert col.wait_for(lambda: any(m.payload[:2] == b"\xff\xd8" for m in col.prefixed("/thumbs/")), 20)

        res = command(broker.url, "n-ctl", "set_log_level", {"level": "LOUD"})
        assert res.returncode == 1 and "level" in (res.stdout + res.stderr)

        res = command(broker.url, "n-ctl", "get_config")
        assert res.returncode == 0 and '"node_id": "n-ctl"' in res.stdout.replace('":"', '": "')

        # hot: a threshold; rejected: an invalid field (reason names it); both answered on config/reported
        publish(broker.port, "edgecam/v1/n-ctl/config/desired",
                json.dumps({"version": 2, "config": {"tracker": {"threshold": 0.6}}}).encode(), retain=True)
        assert col.wait_for(lambda: any(ConfigReported.model_validate_json(m.payload).version == 2
                                        for m in col.on("/config/reported")), 20)
        publish(broker.port, "edgecam/v1/n-ctl/config/desired",
                json.dumps({"version": 3, "config": {"tracker": {"threshold": 7}}}).encode(), retain=True)
        assert col.wait_for(lambda: any(ConfigReported.model_validate_json(m.payload).version == 3
                                        for m in col.on("/config/reported")), 20)
        reports = {r.version: r for r in (ConfigReported.model_validate_json(m.payload)
                                          for m in col.on("/config/reported"))}
        assert reports[2].status == "applied" and not reports[2].restart
        assert reports[3].status == "rejected" and "tracker.threshold" in reports[3].error
        assert node.poll() is None, "the agent keeps running after a bad config"

        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
        assert col.wait_for(lambda: not State.model_validate_json(col.on("/state")[-1].payload).online, 10)
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["frames"] > 0
    finally:
        node.kill()
        col.close()


def test_cold_config_change_restarts_into_the_new_config(tmp_path, broker):
    col = Collector(broker.port)
    node = subprocess.Popen(cli("run", "--source", "synthetic:?width=640&height=360", "--mqtt", broker.url,
                                "--node-id", "n-cold", "--state-dir", str(tmp_path / "state")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert col.wait_for(lambda: col.on("/state"), 60)
        publish(broker.port, "edgecam/v1/n-cold/config/desired",
                json.dumps({"version": 5, "config": {"camera_id": "north-gate"}}).encode(), retain=True)
        # the agent restarts itself (same pid: re-exec) and comes back online with the new camera id
        assert col.wait_for(lambda: len([m for m in col.on("/state")
                                         if State.model_validate_json(m.payload).online]) >= 2, 90)
        res = command(broker.url, "n-cold", "get_config")
        assert res.returncode == 0 and "north-gate" in res.stdout
        assert node.poll() is None
        # tried first, committed once the restarted node runs healthily (source, model, broker, frames)
        reported = lambda: [ConfigReported.model_validate_json(m.payload) for m in col.on("/config/reported")]  # noqa: E731
        assert col.wait_for(lambda: any(r.status == "applied" for r in reported()), 60)
        statuses = [r.status for r in reported()]
        assert statuses[0] == "trial" and statuses[-1] == "applied" and set(statuses) == {"trial", "applied"}
        assert reported()[-1] == ConfigReported(version=5, status="applied", applied_version=5, restart=True)
        res = command(broker.url, "n-cold", "ping")  # a round trip after the commit: no second restart by then
        assert res.returncode == 0
        assert len([m for m in col.on("/state") if State.model_validate_json(m.payload).online]) == 2, \
            "a committed config must not restart the node again"
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            node.kill()
        col.close()
