"""Config: TOML → env → CLI precedence, discriminated source kinds, one-line errors with field paths."""

from __future__ import annotations

import json

import pytest

from agent.cli import run_overrides
from agent.config import env_overrides, load_config
from agent.errors import ConfigError
from agent.sources.kinds import FileSource, SyntheticSource


def test_precedence_toml_env_cli(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text('node_id = "from-file"\n[model]\nthreads = 1\n[mqtt]\nurl = "mqtt://file:1883"\n'
                    '[source]\nkind = "synthetic"\nseed = 3\n')
    env = {"EDGECAM_MODEL__THREADS": "3", "EDGECAM_MQTT__URL": "mqtt://env:1883"}
    cfg = load_config(toml, {"mqtt": {"url": "mqtts://cli:8883"}}, environ=env)
    assert cfg.node_id == "from-file" and cfg.model.threads == 3 and cfg.mqtt.url.reveal() == "mqtts://cli:8883"
    assert isinstance(cfg.source, SyntheticSource) and cfg.source.seed == 3


def test_source_kind_switch_replaces_the_section(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    cfg = load_config(None, run_overrides(str(clip), None, None, None, None, None, fast=True), environ={})
    assert isinstance(cfg.source, FileSource) and cfg.capture.fast


def test_env_values_are_toml_literals():
    out = env_overrides({"EDGECAM_MOTION__ENABLED": "false", "EDGECAM_DETECT__LABELS": '["car", "person"]',
                         "EDGECAM_NODE_ID": "n-7", "OTHER": "x", "EDGECAM_CONFIG": "/etc/edgecam/node.toml",
                         "EDGECAM_VENV": "/opt/venv", "EDGECAM_SHARED_DATA": "/data",
                         "EDGECAM_FREE_PORTS": "20000-20999"})
    assert out == {"motion": {"enabled": False}, "detect": {"labels": ["car", "person"]}, "node_id": "n-7"}


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[model]\nthreads = 0\n", "model.threads:"),
        ('[mqtt]\nurl = "http://x"\n', "mqtt.url:"),
        ('[source]\nkind = "file"\n', "source.path: Field required"),
        ('[source]\nkind = "webcam"\n', "source:"),
        ('[[zones]]\nname = "a"\npolygon = [[0, 0], [2, 0], [1, 1]]\n', "zones.0.polygon:"),
        ("[tracker]\nbogus = 1\n", "tracker.bogus: Extra inputs are not permitted"),
        ("node_id = 'has space'\n", "node_id:"),
        ("[model\n", "invalid TOML"),
        ("[ota]\ntrial_s = 60\ntrial_window_s = 30\n", "ota: Value error, trial_window_s 30 is shorter than trial_s"),
    ],
)
def test_invalid_config_is_one_line_naming_the_field(tmp_path, toml, needle):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


@pytest.mark.parametrize("bad", ["centre", "fleet", "enrol", "centre\n", "a/b", "+", "#", "x" * 65, ""])
def test_node_ids_that_are_not_one_plain_topic_level_are_refused(tmp_path, bad):
    """The contract's node-id rule, from a file and from --node-id alike: one line naming node_id."""
    path = tmp_path / "node.toml"
    path.write_text(f"node_id = {json.dumps(bad)}\n")  # a JSON string is a TOML basic string
    for source in ({"path": path}, {"overrides": {"node_id": bad}}):
        with pytest.raises(ConfigError) as err:
            load_config(**source, environ={})
        msg = str(err.value)
        assert "node_id: " in msg and repr(bad) in msg and "\n" not in msg, msg


@pytest.mark.parametrize("good", ["cam-0042", "n1", "A.b_c-9", "x" * 64, "centre-2"])
def test_normal_node_ids_are_accepted(good):
    assert load_config(overrides={"node_id": good}, environ={}).node_id == good


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_example_node_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "provisioning/templates/node.toml"
    cfg = load_config(example, environ={})
    assert cfg.source.kind == "rtsp" and cfg.zones[0].name == "crossing" and cfg.model.delegate.kind == "cpu"


@pytest.mark.parametrize(("bad", "problem"), [
    ("x" * 1_000_000, "must be 1-64 characters, not 1000000"), ("x" * 65, "not 65"), ("", "not 0"),
    ("gate\n1", "U+000A at position 4"), ("gate\x1b[31m", "U+001B"), ("cam\u2028", "U+2028"), ("a\x7f", "U+007F"),
])
def test_camera_id_is_short_and_printable(tmp_path, bad, problem):
    """camera_id is in every event and centre row: one line naming it, never the value echoed back."""
    path = tmp_path / "node.toml"
    path.write_text(f"camera_id = {json.dumps(bad)}\n")
    for source in ({"path": path}, {"overrides": {"camera_id": bad}}):
        with pytest.raises(ConfigError) as err:
            load_config(**source, environ={})
        msg = str(err.value)
        assert "camera_id: " in msg and problem in msg and "\n" not in msg and len(msg) < 300, msg


@pytest.mark.parametrize("good", ["cam0", "Gate 3 (north)", "x" * 64, "Kamera-Süd"])
def test_camera_ids_in_the_rule_are_kept(good):
    assert load_config(overrides={"camera_id": good}, environ={}).camera_id == good
