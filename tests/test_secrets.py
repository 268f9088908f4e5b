"""No secret in any output: passwords planted everywhere a node takes them, a real agent run, every output grepped.

The agent runs as a subprocess on two real RTSP cameras that check passwords (tests/fakes/rtsp_server.py)
and a real Mosquitto whose node listener checks a password file, so the real values provably reach FFmpeg
and paho; the test's centre (collector, receiver, command client) uses a second, anonymous listener.
Passwords go in through ``--mqtt``, ``--source`` (percent-encoded ``%40``), a TOML config (a raw ``@``),
a ``config/desired`` document that switches cameras (a trial and a restart) and a rejected document whose
error quotes its URL. Only ``config_state.json`` (the centre's document, needed to start on it again) may
hold one, and it is private (0600).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.contract import Topics
from tests.broker import Broker, free_port
from tests.conftest import shared
from tests.fakes.rtsp_server import H264Clip, RtspServer
from tests.mqtt_collect import Collector
from tests.test_centre import listen_cmd, start_receivers, stop
from tests.waiting import wait_until

NODE = "secret-node"
MQTT_PW = "mqttPw-C9"
CAM_A_PW = "enc@Pw-A7"  # given percent-encoded: enc%40Pw-A7
CAM_B_PW = "raw@Pw-B8"  # given as operators type it, unencoded
REJECTED_PW = "rejPw-D0"
#: distinctive tails: they show in a raw, an encoded or a half-redacted rendering alike
PLANTED = (MQTT_PW, "Pw-A7", "Pw-B8", "rejPw")


@pytest.fixture
def node_broker(tmp_path: Path):
    """Node listener: password file, no anonymous; centre listener: anonymous."""
    work = tmp_path / "broker"
    work.mkdir()
    passwd = work / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), NODE, MQTT_PW], check=True, capture_output=True)
    passwd.chmod(0o600)
    b = Broker(work)
    b.centre_port = free_port()
    b.conf = (f"user root\nper_listener_settings true\nlistener {b.port} 127.0.0.1\nallow_anonymous false\n"
              f"password_file {passwd}\nlistener {b.centre_port} 127.0.0.1\nallow_anonymous true\n")
    yield b.start()
    b.stop()


@pytest.fixture
def cameras():
    clip = H264Clip.load(shared("clips/traffic_frames.mp4"))
    with RtspServer(clip, credentials=("operator", CAM_A_PW)) as a, \
            RtspServer(clip, credentials=("operator", CAM_B_PW), auth="digest") as b:
        yield a, b


def encoded_url(cam: RtspServer) -> str:
    return f"rtsp://operator:{CAM_A_PW.replace('@', '%40')}@127.0.0.1:{cam.port}/clip"


def publish(port: int, topic: str, doc: dict) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, json.dumps(doc), qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def get_config(port: int) -> str:
    res = subprocess.run([sys.executable, "-m", "agent.cli", "centre", "command", NODE, "get_config",
                          "--mqtt", f"mqtt://127.0.0.1:{port}", "--timeout", "30"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def stored_reply(store: Path) -> str:
    """The ``cmd/res`` the centre's receiver stored last for the node ('' before there is one)."""
    try:
        with sqlite3.connect(store / "centre.sqlite3") as db:
            row = db.execute("SELECT payload FROM node_status WHERE kind = 'cmd/res'").fetchone()
    except sqlite3.Error:
        return ""
    return row[0] if row else ""


def reported(col: Collector, version: int) -> dict | None:
    docs = [m.json() for m in col.on("/config/reported") if m.payload]
    return next((d for d in docs if d["version"] == version and d["status"] != "trial"), None)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("given", ["flags", "toml"])
def test_no_planted_secret_in_any_output(tmp_path, node_broker, cameras, given):
    cam_a, cam_b = cameras
    mqtt_url = f"mqtt://{NODE}:{MQTT_PW}@127.0.0.1:{node_broker.port}"
    raw_url = cam_b.url_with("operator", CAM_B_PW)
    # flags: camera A from --source, the document switches to B; toml: B from the TOML, the document to A
    first, second = (cam_a, cam_b) if given == "flags" else (cam_b, cam_a)
    toml = tmp_path / "node.toml"
    toml.write_text(f'node_id = "{NODE}"\ncamera_id = "gate-1"\n'
                    + ("" if given == "flags" else f'[mqtt]\nurl = "{mqtt_url}"\n[source]\nkind = "rtsp"\n'
                                                   f'url = "{raw_url}"\n'))
    toml.chmod(0o600)
    state, store, summary = tmp_path / "state", tmp_path / "centre", tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "agent.cli", "run", "--config", str(toml), "--state-dir", str(state),
           "--summary-json", str(summary)]
    if given == "flags":
        cmd += ["--mqtt", mqtt_url, "--source", encoded_url(cam_a)]
    col = Collector(node_broker.centre_port)
    receivers = start_receivers([listen_cmd(f"mqtt://127.0.0.1:{node_broker.centre_port}", store, "--quiet")])
    topics = Topics(NODE)
    with open(tmp_path / "agent.out", "w") as out, open(tmp_path / "agent.err", "w") as err:
        agent = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert col.wait_for(lambda: any(m.json().get("online") for m in col.on("/state") if m.payload), 90), \
            (tmp_path / "agent.err").read_text()[-3000:]  # connected: paho sent the real password
        replies = [get_config(node_broker.centre_port)]
        # rejected: the error quotes the document's URL
        publish(node_broker.centre_port, topics.config_desired,
                {"version": 1, "config": {"mqtt": {"url": f"mqtt://{NODE}:{REJECTED_PW}@127.0.0.1:notaport"}}})
        assert col.wait_for(lambda: reported(col, 1) is not None, 30)
        assert reported(col, 1)["status"] == "rejected" and "mqtt.url" in reported(col, 1)["error"]
        # the other camera: a restart-section change, tried (the agent re-executes itself) and committed
        other = raw_url if second is cam_b else encoded_url(cam_a)
        publish(node_broker.centre_port, topics.config_desired,
                {"version": 2, "config": {"source": {"kind": "rtsp", "url": other}}})
        assert col.wait_for(lambda: reported(col, 2) is not None, 150), (tmp_path / "agent.err").read_text()[-3000:]
        assert reported(col, 2)["status"] == "applied", reported(col, 2)
        assert first.stats.plays >= 1 and second.stats.plays >= 1  # FFmpeg had the real passwords
        replies.append(get_config(node_broker.centre_port))
        assert wait_until(lambda: f":{second.port}/clip" in stored_reply(store), 30)  # the receiver stored that reply
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        stop(receivers)
        col.close()

    logs = (tmp_path / "agent.err").read_text() + (tmp_path / "agent.out").read_text()
    outputs = {"agent logs": logs, "summary": summary.read_text(), "get_config replies": "".join(replies)}
    outputs.update({f"MQTT {m.topic}": m.payload.decode("latin-1") for m in col.messages
                    if not m.topic.endswith("/config/desired")})  # the test's own (planted) documents
    assert any(t.endswith("/cmd/res") for t in outputs) and any(t.endswith("/config/reported") for t in outputs)
    assert any(p.suffix == ".sqlite3" for p in store.rglob("*"))
    holder = state / "config_state.json"  # the centre's document: the node starts on it again after a restart
    outputs.update({str(p): p.read_bytes().decode("latin-1") for p in [*state.rglob("*"), *store.rglob("*")]
                    if p.is_file() and p != holder})
    leaks = [(where, s) for where, text in outputs.items() for s in PLANTED if s in text]
    assert not leaks, leaks
    assert any(s in holder.read_text() for s in PLANTED) and holder.stat().st_mode & 0o777 == 0o600
    # shown redacted, not left out
    results = [json.loads(r)["result"] for r in replies]
    assert results[0]["mqtt"]["url"] == f"mqtt://***@127.0.0.1:{node_broker.port}"
    assert results[1]["source"]["url"] == f"rtsp://***@127.0.0.1:{second.port}/clip"
    assert results[1]["camera_id"] == "gate-1"
    assert f"mqtt://***@127.0.0.1:{node_broker.port}" in logs and f"rtsp://***@127.0.0.1:{first.port}/clip" in logs
