"""The config owner: local ⊕ centre layering, trial / commit / last-known-good, restarts, hot consumers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, build_config
from agent.config_owner import LEGACY_FILE, STATE_FILE, Change, ConfigOwner, Consumers
from agent.contract import ConfigReported
from tests.transport_util import make_cfg


class Clock:
    """Wall time the test moves by hand (trial deadlines are in wall time)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def local(state: Path, **sections: Any) -> AgentConfig:
    return make_cfg("mqtt://127.0.0.1:1", state, **{"trial": {"window_s": 60, "max_starts": 3}, **sections})


def restarted(state: Path, clock: Clock, **sections: Any) -> ConfigOwner:
    """What a new process does: a fresh owner from the same local config and state dir, then its start."""
    owner = ConfigOwner(local(state, **sections), clock)
    owner.start_config()
    return owner


SOURCE_FILE = {"source": {"kind": "file", "path": "/srv/clip.mp4"}}


def test_effective_is_local_plus_the_document_whatever_came_before(tmp_path: Path) -> None:
    """The reviewer's case: v3 sets detect.nms_iou, v5 only log_level; with or without a restart between."""
    clock = Clock()
    straight = ConfigOwner(local(tmp_path / "a"), clock)
    straight.propose(3, {"detect": {"nms_iou": 0.6}})
    assert straight.effective().detect.nms_iou == 0.6
    straight.propose(5, {"log_level": "DEBUG"})
    ConfigOwner(local(tmp_path / "b"), clock).propose(3, {"detect": {"nms_iou": 0.6}})
    after_restart = restarted(tmp_path / "b", clock)
    after_restart.propose(5, {"log_level": "DEBUG"})
    for owner in (straight, after_restart):
        eff = owner.effective()
        assert eff.detect.nms_iou == 0.45 and eff.log_level == "DEBUG"
        # a field the layers left to its default stays unset (the detector then takes the model's own value)
        assert "nms_iou" not in eff.detect.model_fields_set


def test_local_layers_stay_under_the_document(tmp_path: Path) -> None:
    owner = ConfigOwner(local(tmp_path, tracker={"threshold": 0.7}, motion={"enabled": False}), Clock())
    owner.propose(1, {"tracker": {"window": 9}})
    eff = owner.effective()
    assert (eff.tracker.threshold, eff.tracker.window, eff.motion.enabled) == (0.7, 9, False)
    assert eff.mqtt.url.reveal() == "mqtt://127.0.0.1:1"


def test_trial_is_committed_when_healthy_and_survives_restarts(tmp_path: Path) -> None:
    clock = Clock()
    owner = ConfigOwner(local(tmp_path), clock)
    changes: list[Change] = []
    owner.watch(on_change=changes.append)
    rep = owner.propose(2, SOURCE_FILE)
    assert rep == ConfigReported(version=2, status="trial", applied_version=None, restart=True)
    assert changes[-1].restart and changes[-1].sections == {"source"}
    assert not owner.healthy(), "only a process started on the trial can prove it"
    assert owner.committed().source.kind == "synthetic"
    first = restarted(tmp_path, clock)
    assert first.running_trial and first.effective().source.kind == "file"
    second = restarted(tmp_path, clock)  # killed and started again during the trial: still on trial
    assert second.running_trial and json.loads((tmp_path / STATE_FILE).read_text())["trial"]["starts"] == 2
    reports: list[ConfigReported] = []
    second.watch(on_report=reports.append)
    assert second.healthy()
    assert reports == [ConfigReported(version=2, status="applied", applied_version=2, restart=True)]
    assert restarted(tmp_path, clock).committed().source.kind == "file" and not ConfigOwner(local(tmp_path)).on_trial


def test_revert_keeps_last_known_good_and_answers_the_same_document_the_same_way(tmp_path: Path) -> None:
    clock = Clock()
    ConfigOwner(local(tmp_path), clock).propose(1, {"camera_id": "north"})
    assert restarted(tmp_path, clock).healthy()
    ConfigOwner(local(tmp_path), clock).propose(2, {"camera_id": "north", **SOURCE_FILE})
    node = restarted(tmp_path, clock)
    reports: list[ConfigReported] = []
    node.watch(on_report=reports.append)
    assert node.revert("source.path: not a video")
    (rep,) = reports
    assert (rep.version, rep.status, rep.applied_version) == (2, "rejected", 1)
    assert "v2 reverted to v1: source.path: not a video" in rep.error
    later = restarted(tmp_path, clock)
    assert later.effective().camera_id == "north" and later.effective().source.kind == "synthetic"
    # the retained document comes again on every connection: same answer, no second trial
    assert later.propose(2, {"camera_id": "north", **SOURCE_FILE}) == rep and not later.on_trial
    assert later.propose(3, {"camera_id": "north", **SOURCE_FILE}).status == "trial"  # a new version is tried


def test_trial_out_of_time_or_of_starts_is_reverted_at_start(tmp_path: Path) -> None:
    clock = Clock()
    ConfigOwner(local(tmp_path / "t"), clock).propose(2, SOURCE_FILE)
    clock.now += 61  # the node was down past the deadline
    late = restarted(tmp_path / "t", clock)
    assert not late.on_trial and late.effective().source.kind == "synthetic"
    assert "not healthy within its trial window (60 s)" in late.propose(2, SOURCE_FILE).error
    ConfigOwner(local(tmp_path / "c"), clock).propose(2, SOURCE_FILE)
    for _ in range(3):  # max_starts: each start dies before it is healthy
        assert restarted(tmp_path / "c", clock).running_trial
    looping = restarted(tmp_path / "c", clock)
    assert not looping.on_trial and "crash loop" in looping.propose(2, SOURCE_FILE).error


def test_a_document_arriving_during_a_trial_waits_for_its_end(tmp_path: Path) -> None:
    clock = Clock()
    ConfigOwner(local(tmp_path), clock).propose(2, SOURCE_FILE)
    node = restarted(tmp_path, clock)
    assert node.propose(3, {"log_level": "DEBUG"}) == ConfigReported(version=2, status="trial", restart=True)
    assert node.effective().log_level == "INFO"
    node = restarted(tmp_path, clock)  # held across a restart too
    reports: list[ConfigReported] = []
    node.watch(on_report=reports.append)
    node.revert("no frames")
    assert [(r.version, r.status) for r in reports] == [(2, "rejected"), (3, "applied")]
    assert node.effective().log_level == "DEBUG" and node.effective().source.kind == "synthetic"


def test_local_only_fields_are_refused_naming_the_field(tmp_path: Path) -> None:
    owner = ConfigOwner(local(tmp_path), Clock())
    for doc, name in [({"node_id": "other"}, "node_id"), ({"state_dir": "/tmp/x"}, "state_dir"),
                      ({"trial": {"window_s": 1}}, "trial")]:
        rep = owner.propose(1, doc)
        assert rep.status == "rejected" and f"config/desired: {name}: cannot be changed from the centre" in rep.error
    assert owner.propose(1, {"node_id": "node-t"}).status == "applied"  # the same value is no change


def test_state_is_written_atomically_and_old_nodes_keep_their_document(tmp_path: Path) -> None:
    owner = ConfigOwner(local(tmp_path), Clock())
    owner.propose(4, {"log_level": "WARNING"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temporary file left behind
    assert json.loads((tmp_path / STATE_FILE).read_text())["good"] == {"version": 4,
                                                                        "config": {"log_level": "WARNING"}}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / LEGACY_FILE).write_text(json.dumps({"version": 7, "config": {"log_level": "ERROR"}}))
    upgraded = ConfigOwner(local(legacy), Clock())
    assert upgraded.applied_version == 7 and upgraded.start_config().log_level == "ERROR"


def test_consumers_get_exactly_the_sections_they_declared() -> None:
    got: list[tuple[str, str]] = []
    consumers = Consumers()
    consumers.add("gate", {"motion"}, lambda c: got.append(("gate", c.log_level)))
    consumers.add("engine", {"tracker", "zones"}, lambda c: got.append(("engine", c.log_level)))
    cfg = build_config({"log_level": "DEBUG"})
    assert consumers.deliver(Change(cfg, 1, frozenset({"tracker", "log_level"}), False)) == ["engine"]
    assert got == [("engine", "DEBUG")]
    assert "health" in consumers.uncovered() and "motion" not in consumers.uncovered()
    assert "source" not in consumers.uncovered() and "node_id" not in consumers.uncovered()


def test_every_hot_section_reaches_a_consumer_of_the_running_agent(tmp_path: Path) -> None:
    from agent.runner import Agent, RunOptions

    agent = Agent(local(tmp_path), RunOptions())
    agent.build()
    try:
        assert agent.consumers.uncovered() == set()
    finally:
        agent.post.stop()
        agent.transport.outbox.close()


# ---------------------------------------------------------------- property: restarts change nothing

HOT = [{"log_level": "DEBUG"}, {"detect": {"nms_iou": 0.6}}, {"motion": {"enabled": False}},
       {"health": {"period_s": 5}}, {"zones": [{"name": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}]}]
COLD = [{"camera_id": "north"}, {"source": {"kind": "synthetic", "seed": 3}}, {"capture": {"fast": True}},
        {"mqtt": {"url": "mqtt://127.0.0.1:2"}}]
INVALID = [{"detect": {"nms_iou": 7}}, {"node_id": "other"}, {"bogus": 1}, {"source": {"kind": "nope"}},
           {"trial": {"window_s": 1}}]
docs = st.lists(st.sampled_from(HOT + COLD + INVALID), min_size=1, max_size=3).map(
    lambda parts: {k: v for part in parts for k, v in part.items()})
steps = st.lists(st.one_of(
    st.tuples(st.just("propose"), st.integers(0, 12), docs),
    st.tuples(st.just("healthy")),
    st.tuples(st.just("revert")),
), min_size=1, max_size=12)


class Node:
    """An owner driven like the runner drives it: a proposal needing a restart restarts the node."""

    def __init__(self, state: Path, clock: Clock) -> None:
        self.state, self.clock = state, clock
        self.restart()

    def restart(self) -> None:
        self.owner = ConfigOwner(local(self.state, trial={"window_s": 60, "max_starts": 1000}), self.clock)
        self.owner.watch(on_change=self._on_change)
        self.owner.start_config()

    def _on_change(self, change: Change) -> None:
        self.restart_due = self.restart_due or change.restart

    def step(self, op: tuple) -> tuple:
        self.restart_due = False
        if op[0] == "propose":
            report = self.owner.propose(op[1], op[2])
        elif op[0] == "healthy":
            report = self.owner.healthy()
        else:
            report = self.owner.revert("test says no")
        if self.restart_due:
            self.restart()
        return report

    def effective(self) -> dict:
        return self.owner.effective().model_dump(mode="json", exclude={"state_dir"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=steps, restart_at=st.sets(st.integers(0, 11)))
def test_restarts_at_any_point_change_no_effective_config(ops: list[tuple], restart_at: set[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        plain, bumpy = Node(Path(tmp) / "plain", clock), Node(Path(tmp) / "bumpy", clock)
        for i, op in enumerate(ops):
            if i in restart_at:
                bumpy.restart()  # an extra restart (a kill, a power cut) just before this step
            assert plain.step(op) == bumpy.step(op), (i, op)
            assert plain.effective() == bumpy.effective(), (i, op)
