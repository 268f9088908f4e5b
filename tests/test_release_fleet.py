"""``release announce`` and ``release status`` against a real Mosquitto and the real centre receiver, and a
real node transport taking the announcement (or an ``ota/job``) as a nudge for its own channel only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.contract import ReleaseAnnouncement
from tests.mqtt_collect import Collector
from tests.ota_helpers import add_full_release, make_repo
from tests.transport_util import publish
from tests.waiting import wait_until


def edgecam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120)


def test_announce_is_retained_on_the_channel_topic(tmp_path: Path, broker) -> None:
    repo = make_repo(tmp_path)
    add_full_release(repo, tmp_path, 3, channel="beta", percent=20)
    r = edgecam("release", "announce", str(repo.dir), "--channel", "beta", "--mqtt", broker.url)
    assert r.returncode == 0, r.stderr
    col = Collector(broker.port, topic="edgecam/v1/fleet/releases/#", client_id="fleet-watch")  # after: retained
    try:
        assert col.wait_for(lambda: col.on("fleet/releases/beta"), 15)
        msg = col.on("fleet/releases/beta")[-1]
        ann = ReleaseAnnouncement.model_validate_json(msg.payload)
        assert (ann.channel, ann.release, ann.percent) == ("beta", 3, 20) and ann.timestamp_version >= 2
    finally:
        col.close()
    r = edgecam("release", "announce", str(repo.dir), "--channel", "nope", "--mqtt", broker.url)
    assert r.returncode == 2 and "no release" in r.stderr


def test_status_lists_what_nodes_report(tmp_path: Path, broker, processes) -> None:
    store = tmp_path / "store"
    centre = processes.popen([sys.executable, "-m", "agent.cli", "centre", "listen", "--mqtt", broker.url, "--store",
                              str(store), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reports = {
        "n1": {"release": 2, "state": "committed", "running": 2},
        "n2": {"release": 2, "state": "rolled_back", "running": 1, "error": "crash loop: 3 starts"},
        "n3": {"release": 2, "state": "waiting", "error": "not in the 20% rollout (bucket 57)"},
    }
    for node, status in reports.items():
        publish(broker.port, f"edgecam/v1/{node}/state",
                json.dumps({"online": True, "bd_seq": 1, "versions": {"agent": "0.1.0",
                                                                      "release": status.get("running")}}).encode(),
                retain=True)
        publish(broker.port, f"edgecam/v1/{node}/ota/status", json.dumps(status).encode(), retain=True)

    def listed() -> dict | None:
        r = edgecam("release", "status", "--store", str(store))
        if r.returncode != 0:
            return None
        doc = json.loads(r.stdout)
        return doc if len([n for n in doc["nodes"].values() if n["ota"]]) == 3 else None

    assert wait_until(lambda: listed() is not None, 60), centre.stderr
    doc = listed()
    assert doc["by_state"] == {"committed": 1, "rolled_back": 1, "waiting": 1}
    assert doc["nodes"]["n2"]["ota"]["error"] == "crash loop: 3 starts"
    assert doc["by_running_release"] == {"2": 1, "1": 1, "None": 1}
    for node in reports:  # clear the retained messages for other tests on this broker
        publish(broker.port, f"edgecam/v1/{node}/ota/status", b"", retain=True)
        publish(broker.port, f"edgecam/v1/{node}/state", b"", retain=True)


def test_node_transport_takes_a_nudge_for_its_channel(tmp_path: Path, broker) -> None:
    from agent.config import AgentConfig
    from agent.contract import Versions
    from agent.transport import Transport

    cfg = AgentConfig.model_validate({"node_id": "nudged", "state_dir": str(tmp_path / "s"),
                                      "mqtt": {"url": broker.url}})
    got: list[str] = []
    t = Transport(cfg, boot_id="b", versions=Versions(agent="t"), caps=[], on_ota_nudge=got.append)
    t.start()
    try:
        assert wait_until(lambda: t.link.connected, 15)
        col = Collector(broker.port, topic="edgecam/v1/nudged/state", client_id="nudge-watch")
        assert col.wait_for(lambda: col.on("nudged/state"), 15)  # subscribed before its birth
        col.close()
        publish(broker.port, "edgecam/v1/fleet/releases/stable",
                ReleaseAnnouncement(channel="stable", release=4, timestamp_version=9, percent=100)
                .model_dump_json().encode())
        publish(broker.port, "edgecam/v1/nudged/ota/job", b'{"channel": "beta"}')
        publish(broker.port, "edgecam/v1/nudged/ota/job", b'{"not": "a job"}')
        assert wait_until(lambda: got == ["stable", "beta"], 15), got
    finally:
        t.close()
