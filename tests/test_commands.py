"""Commands (cmd/req → cmd/res) and config sync (config/desired → config/reported), fuzzed.

Most fuzz cases go straight to ``CommandHandler.handle`` / ``ConfigSync.handle`` (no network); a few
hundred go through a real Mosquitto to show the transport answers each and keeps publishing events.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import AgentConfig
from agent.config_owner import STATE_FILE, Change, ConfigOwner
from agent.contract import CommandRequest, CommandResponse, ConfigReported, Topics
from agent.errors import EdgecamError
from agent.transport import Transport
from agent.transport.commands import CommandHandler, RecentIds
from agent.transport.config_sync import ConfigSync
from tests.broker import Broker
from tests.transport_util import Subscriber, make_cfg, make_event, publish, versions
from tests.waiting import wait_until

NODE = "node-t"
T = Topics(NODE)
OPS = ["ping", "snapshot", "get_config", "set_log_level", "restart"]


def on_command(req: CommandRequest) -> Any:
    """A stand-in for the runner's handler: results for some ops, user errors for bad args."""
    if req.op == "set_log_level":
        level = req.args.get("level")
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("args.level must be one of DEBUG, INFO, WARNING, ERROR")
        return {"level": level}
    if req.op == "snapshot":
        raise EdgecamError("no frame captured yet")
    if req.op == "restart":
        raise RuntimeError("boom")  # a handler bug: still an error reply
    return {"op": req.op}


def handler(tmp_path: Path | None = None) -> CommandHandler:
    return CommandHandler(T, "boot-1", on_command, RecentIds(tmp_path / "ids.json" if tmp_path else None))


# ---------------------------------------------------------------- commands, direct


def test_ping_reply_goes_to_response_topic_with_correlation() -> None:
    h = handler()
    r = h.handle(b'{"cmd_id": "a1", "op": "ping"}', response_topic="centre/replies/7", correlation=b"\x01\x02",
                 expiry_s=30)
    body = CommandResponse.model_validate_json(r.payload)
    assert (r.topic, r.correlation, r.expiry_s) == ("centre/replies/7", b"\x01\x02", 30)
    assert body.status == "ok" and body.cmd_id == "a1" and body.result["pong"] is True
    r = h.handle(b'{"cmd_id": "a2", "op": "ping"}', response_topic="bad/+/wildcard")
    assert r.topic == T.cmd_res and r.correlation is None and r.expiry_s > 0


def test_errors_are_replies_naming_the_problem() -> None:
    h = handler()
    cases = {
        b"{not json": (None, "invalid JSON"),
        b"[1, 2]": (None, "JSON object"),
        b'{"cmd_id": "x1", "op": "explode"}': ("x1", "op"),
        b'{"cmd_id": "x2"}': ("x2", "op"),
        b'{"cmd_id": "x3", "op": "ping", "args": 5}': ("x3", "args"),
        b'{"cmd_id": "x4", "op": "set_log_level", "args": {"level": "LOUD"}}': ("x4", "args.level"),
        b'{"cmd_id": "x5", "op": "snapshot"}': ("x5", "no frame"),
        b'{"cmd_id": "x6", "op": "restart"}': ("x6", "internal error"),
        b'{"cmd_id": "", "op": "ping"}': (None, "cmd_id"),
        b"\xff\xfe": (None, "invalid JSON"),
        b"[" * 100_000: (None, "invalid JSON"),
    }
    for payload, (cmd_id, fragment) in cases.items():
        body = CommandResponse.model_validate_json(h.handle(payload).payload)
        assert body.status == "error" and body.cmd_id == cmd_id, payload[:40]
        assert fragment in body.error and "\n" not in body.error
    assert h.counts["error"] == len(cases)


def test_repeated_cmd_id_is_dropped_also_after_restart(tmp_path: Path) -> None:
    calls = []
    h = CommandHandler(T, "b", lambda req: calls.append(req.cmd_id) or "done", RecentIds(tmp_path / "ids.json"))
    req = b'{"cmd_id": "same", "op": "get_config"}'
    assert h.handle(req) is not None
    assert h.handle(req) is None
    h2 = CommandHandler(T, "b", lambda req: calls.append(req.cmd_id) or "done", RecentIds(tmp_path / "ids.json"))
    assert h2.handle(req) is None
    assert calls == ["same"]
    small = RecentIds(tmp_path / "small.json", size=3)
    for i in range(5):
        small.add(f"id{i}")
    assert not small.seen("id1") and small.seen("id4")
    (tmp_path / "bad.json").write_text("{{{")
    assert not RecentIds(tmp_path / "bad.json").seen("x")  # a damaged file is not fatal


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_value = st.recursive(json_leaf, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=8), ch,
                                                                                          max_size=4), max_leaves=12)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "cmd_id": st.text(max_size=140) | st.integers() | st.none(),
        "op": st.sampled_from([*OPS, "PING", "", "reboot"]) | json_leaf,
        "args": st.dictionaries(st.sampled_from(["level", "x", ""]), json_leaf | st.sampled_from(["DEBUG", "INFO"]),
                                max_size=3) | json_value,
    },
)
well_formed = st.fixed_dictionaries({
    "cmd_id": st.text(min_size=1, max_size=40),
    "op": st.sampled_from(OPS),
    "args": st.dictionaries(st.sampled_from(["level", "x"]), st.sampled_from(["DEBUG", "ERROR", "LOUD"]) | json_leaf,
                            max_size=2),
})
raw_payloads = st.one_of(st.binary(max_size=200), near_valid.map(lambda d: json.dumps(d).encode()),
                         json_value.map(lambda v: json.dumps(v).encode()),
                         well_formed.map(lambda d: json.dumps(d).encode()))


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=raw_payloads, rt=st.none() | st.text(max_size=30), corr=st.none() | st.binary(max_size=16),
       exp=st.none() | st.integers(-5, 2**33))
def test_fuzzed_requests_always_get_a_valid_reply(payload: bytes, rt, corr, exp) -> None:
    h = handler()
    r = h.handle(payload, response_topic=rt, correlation=corr, expiry_s=exp)
    assert r is not None  # a fresh handler has seen no id
    body = CommandResponse.model_validate_json(r.payload)
    assert 0 < r.expiry_s <= 0xFFFFFFFF and "+" not in r.topic and "#" not in r.topic and r.topic
    assert r.correlation == corr
    try:
        data = json.loads(payload)
        req = CommandRequest.model_validate(data)
    except Exception:
        req = None
    if req is None:
        assert body.status == "error" and body.error
    else:
        assert body.cmd_id == req.cmd_id
        expected_ok = req.op in ("ping", "get_config") or (
            req.op == "set_log_level" and req.args.get("level") in ("DEBUG", "INFO", "WARNING", "ERROR"))
        assert (body.status == "ok") == expected_ok


# ---------------------------------------------------------------- config sync, direct


def desired(version: int, config: dict[str, Any]) -> bytes:
    return json.dumps({"version": version, "config": config}).encode()


def local_cfg(tmp_path: Path) -> AgentConfig:
    cfg = make_cfg("mqtt://127.0.0.1:1", tmp_path / "s")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def test_config_applied_persisted_and_reported(tmp_path: Path) -> None:
    local = local_cfg(tmp_path)
    owner = ConfigOwner(local)
    changes: list[Change] = []
    owner.watch(on_change=changes.append)
    sync = ConfigSync(owner)
    rep = sync.handle(desired(3, {"detect": {"nms_iou": 0.6}, "log_level": "DEBUG"}))
    assert rep == ConfigReported(version=3, status="applied", applied_version=3, restart=False)
    (change,) = changes
    assert change.version == 3 and not change.restart and change.sections == {"detect", "log_level"}
    assert change.cfg.detect.nms_iou == 0.6 and change.cfg.mqtt.url == local.mqtt.url  # overlaid on local
    assert ConfigOwner(local).committed() == change.cfg  # persisted
    assert sync.handle(desired(3, {"detect": {"nms_iou": 0.6}, "log_level": "DEBUG"})).status == "applied"
    assert len(changes) == 1  # already in force: not applied again
    rep = sync.handle(desired(4, {"source": {"kind": "file", "path": "/x.mp4"}}))
    assert (rep.status, rep.restart, rep.applied_version) == ("trial", True, 3) and changes[-1].restart
    # the restart: a fresh owner over the same *local* config (never over an effective one) starts on the trial;
    # v4 replaces v3 whole, so nms_iou is the local value again, with or without the restart
    restarted = ConfigOwner(local)
    started = restarted.start_config()
    assert started.source.kind == "file" and started.detect.nms_iou == local.detect.nms_iou
    assert started == owner.effective()
    again: list[Change] = []
    restarted.watch(on_change=again.append)
    assert ConfigSync(restarted).handle(desired(4, {"source": {"kind": "file", "path": "/x.mp4"}})).status == "trial"
    assert restarted.healthy() and not again
    rep = ConfigSync(restarted).handle(desired(4, {"source": {"kind": "file", "path": "/x.mp4"}}))
    assert rep == ConfigReported(version=4, status="applied", applied_version=4, restart=False)


def test_config_rejections_name_the_reason(tmp_path: Path) -> None:
    local = local_cfg(tmp_path)
    sync = ConfigSync(ConfigOwner(local))
    sync.handle(desired(5, {"log_level": "INFO"}))
    cases = [
        (desired(6, {"detect": {"nms_iou": 7}}), 6, "detect.nms_iou"),
        (desired(6, {"node_id": "other"}), 6, "node_id: cannot be changed"),
        (desired(6, {"state_dir": "/var/other"}), 6, "state_dir: cannot be changed"),
        (desired(6, {"trial": {"window_s": 1}}), 6, "trial: cannot be changed"),
        (desired(4, {"log_level": "INFO"}), 4, "older"),
        (b'{"version": 7}', 7, "config"),
        (b"{oops", 5, "invalid JSON"),
        (b'{"version": -1, "config": {}}', 5, "version"),
    ]
    for payload, version, fragment in cases:
        rep = sync.handle(payload)
        assert rep.status == "rejected" and rep.version == version and fragment in rep.error, (payload, rep)
        assert rep.applied_version == 5
    assert sync.handle(b"") is None  # a cleared retained message
    assert ConfigOwner(local).applied_version == 5
    (local.state_dir / STATE_FILE).write_text("garbage")
    damaged = ConfigOwner(local)  # a damaged state file is not fatal: the local config is safe
    assert damaged.applied_version is None and damaged.start_config() == local


config_docs = st.dictionaries(
    st.sampled_from(["log_level", "detect", "tracker", "zones", "node_id", "motion", "mqtt", "bogus"]),
    json_value | st.fixed_dictionaries({}, optional={"nms_iou": json_leaf, "threshold": json_leaf,
                                                     "enabled": json_leaf}),
    max_size=4,
)


@pytest.fixture(scope="module")
def sync_base(tmp_path_factory) -> AgentConfig:
    cfg = make_cfg("mqtt://127.0.0.1:1", tmp_path_factory.mktemp("cs") / "s")
    cfg.state_dir.mkdir(parents=True)
    return cfg


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(st.binary(max_size=100), json_value.map(lambda v: json.dumps(v).encode()),
                         st.builds(desired, st.integers(0, 10**6), config_docs)))
def test_fuzzed_desired_config_always_reported(sync_base: AgentConfig, payload: bytes) -> None:
    rep = ConfigSync(ConfigOwner(sync_base)).handle(payload)
    if not payload:
        assert rep is None
        return
    assert isinstance(rep, ConfigReported) and rep.version >= 0
    assert (rep.status == "rejected") == bool(rep.error)
    ConfigReported.model_validate_json(rep.model_dump_json())


# ---------------------------------------------------------------- through the broker


class Recorder:
    def __init__(self) -> None:
        self.commands: list[str] = []
        self.configs: list[int] = []
        self.lock = threading.Lock()

    def on_command(self, req: CommandRequest) -> Any:
        with self.lock:
            self.commands.append(req.cmd_id)
        return on_command(req)

    def on_change(self, change: Change) -> None:
        with self.lock:
            self.configs.append(change.version)


def start_transport(broker: Broker, state_dir: Path, rec: Recorder) -> Transport:
    cfg = make_cfg(broker.url, state_dir)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    owner = ConfigOwner(cfg)
    owner.watch(on_change=rec.on_change)
    t = Transport(cfg, boot_id="boot-1", versions=versions(), caps=["events"], on_command=rec.on_command,
                  config=owner)
    t.start()
    # commands published before the node subscribed would go nowhere: wait for its SUBACK, not for a while
    assert wait_until(lambda: broker.subacks_to("node-t") >= 1, 30), broker.log()[-2000:]
    return t


def test_command_roundtrip_with_mqtt5_response_topic(broker: Broker, tmp_path: Path) -> None:
    rec = Recorder()
    t = start_transport(broker, tmp_path / "s", rec)
    sub = Subscriber(broker.port, topic="#")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "centre/replies/abc"
    props.CorrelationData = b"corr-1"
    props.MessageExpiryInterval = 60
    publish(broker.port, T.cmd_req, b'{"cmd_id": "c1", "op": "get_config"}', props=props)
    publish(broker.port, T.cmd_req, b'{"cmd_id": "c2", "op": "ping"}')
    publish(broker.port, T.cmd_req, b'{"cmd_id": "c2", "op": "ping"}')  # repeated: no second reply
    publish(broker.port, T.cmd_req, b'{"cmd_id": "c3", "op": "set_log_level", "args": {"level": "X"}}')
    # a barrier: commands are answered in order, so a second reply to c2 would come before c4's
    publish(broker.port, T.cmd_req, b'{"cmd_id": "c4", "op": "ping"}')
    assert sub.wait_for(lambda: any(b'"c4"' in m.payload for m in sub.on("/cmd/res")) and sub.on("/replies/abc"))
    reply = sub.on("/replies/abc")[0]
    assert reply.properties.CorrelationData == b"corr-1" and reply.properties.MessageExpiryInterval > 0
    assert json.loads(reply.payload) == {"cmd_id": "c1", "status": "ok", "result": {"op": "get_config"},
                                         "error": None}
    res = [json.loads(m.payload) for m in sub.on("/cmd/res")]
    assert [(r["cmd_id"], r["status"]) for r in res] == [("c2", "ok"), ("c3", "error"), ("c4", "ok")]
    assert rec.commands == ["c1", "c3"]
    t.close()
    sub.close()


def test_fuzzed_commands_and_configs_through_the_broker(broker: Broker, tmp_path: Path) -> None:
    """300 fuzzed requests and 100 fuzzed desired configs: each gets an answer, events still flow."""
    rec = Recorder()
    t = start_transport(broker, tmp_path / "s", rec)
    sub = Subscriber(broker.port, topic="#")
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    centre = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    centre.connect("127.0.0.1", broker.port)
    centre.loop_start()
    cmd_payloads: list[bytes] = []
    cfg_payloads: list[bytes] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(raw_payloads)
    def gen_cmd(p: bytes) -> None:
        cmd_payloads.append(p)

    @settings(max_examples=100, deadline=None, database=None)
    @given(st.one_of(st.binary(max_size=60), st.builds(desired, st.integers(0, 10**6), config_docs)))
    def gen_cfg(p: bytes) -> None:
        cfg_payloads.append(p)

    gen_cmd()
    gen_cfg()
    # a unique cmd_id per valid-looking request so none is a repeat; count the answers we expect
    expected = 0
    seen_ids: set[str] = set()
    for i, p in enumerate(cmd_payloads):
        try:
            data = json.loads(p)
        except Exception:
            data = None
        if isinstance(data, dict) and isinstance(data.get("cmd_id"), str):
            data["cmd_id"] = f"f{i}-{data['cmd_id'][:100]}"
            p = json.dumps(data).encode()
        try:
            valid_id = CommandRequest.model_validate(data).cmd_id if isinstance(data, dict) else None
        except Exception:
            valid_id = None
        if valid_id is None or valid_id not in seen_ids:
            expected += 1
        if valid_id:
            seen_ids.add(valid_id)
        centre.publish(T.cmd_req, p, qos=1).wait_for_publish(5)
    for p in cfg_payloads:
        centre.publish(T.config_desired, p, qos=1).wait_for_publish(5)
    assert sub.wait_for(lambda: len(sub.on("/cmd/res")) >= expected, timeout=60)
    replies = [CommandResponse.model_validate_json(m.payload) for m in sub.on("/cmd/res")]
    assert len(replies) == expected
    assert any(r.status == "ok" for r in replies) and any(r.status == "error" for r in replies)
    nonempty = sum(1 for p in cfg_payloads if p)
    assert sub.wait_for(lambda: len(sub.on("/config/reported")) >= nonempty, timeout=60)
    for m in sub.on("/config/reported"):
        ConfigReported.model_validate_json(m.payload)
    # still alive and publishing
    t.submit_many([(make_event(i), b"\xff\xd8x") for i in range(5)])
    assert t.flush(15)
    assert sub.wait_for(lambda: len(sub.on("/events")) >= 5)
    assert t.stats()["connected"]
    centre.loop_stop()
    centre.disconnect()
    t.close()
    sub.close()


def test_retained_desired_config_is_applied_and_reported(broker: Broker, tmp_path: Path) -> None:
    publish(broker.port, T.config_desired, desired(2, {"log_level": "WARNING"}), retain=True)
    rec = Recorder()
    t = start_transport(broker, tmp_path / "s", rec)
    sub = Subscriber(broker.port, topic=T.config_reported)
    assert sub.wait_for(lambda: sub.on("/config/reported"))
    rep = ConfigReported.model_validate_json(sub.on("/config/reported")[0].payload)
    # retained for the centre: a subscriber that comes later still gets it (the first may have seen it live)
    late = Subscriber(broker.port, topic=T.config_reported)
    assert late.wait_for(lambda: late.on("/config/reported"))
    assert late.on("/config/reported")[0].retain and late.on("/config/reported")[0].payload == \
        sub.on("/config/reported")[0].payload
    late.close()
    assert rep.status == "applied" and rep.version == 2 and rec.configs == [2]
    publish(broker.port, T.config_desired, desired(3, {"detect": {"nms_iou": 3}}), retain=True)
    assert sub.wait_for(lambda: len(sub.on("/config/reported")) >= 2)
    rep = ConfigReported.model_validate_json(sub.on("/config/reported")[-1].payload)
    assert rep.status == "rejected" and rep.applied_version == 2 and "detect.nms_iou" in rep.error
    t.close()
    sub.close()
    assert ConfigOwner(make_cfg(broker.url, tmp_path / "s")).applied_version == 2  # persisted
