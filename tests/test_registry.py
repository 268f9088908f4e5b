"""The kind registries: the config unions come from them, and loading a config imports no implementation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config import build_config
from agent.registry import NamedRegistry
from agent.sources import source_config_from_uri
from agent.sources.kinds import SOURCES
from agent.vision.delegates import DELEGATES
from agent.vision.formats import FORMATS


@pytest.mark.parametrize("registry", [SOURCES, DELEGATES], ids=["sources", "delegates"])
def test_every_registered_kind_is_in_the_config_union_and_its_target_resolves(registry) -> None:
    field = "source" if registry is SOURCES else "model"
    for entry in registry:
        section = {"kind": entry.kind, **({"path": "x.mp4"} if entry.kind == "file" else {}),
                   **({"url": "rtsp://h/s"} if entry.kind == "rtsp" else {})}
        cfg = build_config({field: section} if field == "source" else {"model": {"delegate": section}})
        got = cfg.source if field == "source" else cfg.model.delegate
        assert type(got) is entry.config
        assert callable(entry.load())


def test_every_registered_format_is_a_model_format_value_and_its_targets_resolve() -> None:
    for entry in FORMATS:
        assert build_config({"model": {"format": entry.kind}}).model.format == entry.kind
        assert callable(entry.load("probe")) and callable(entry.load("decoder"))


def test_a_named_kind_needs_every_role_and_one_registration() -> None:
    table = NamedRegistry("widget", roles=("probe", "decoder"))
    with pytest.raises(ValueError, match="widget kind 'w' needs targets for probe, decoder"):
        table.register("w", {"probe": "m:p"})
    table.register("w", {"probe": "m:p", "decoder": "m:d"}, colour="red")
    with pytest.raises(ValueError, match="registered twice"):
        table.register("w", {"probe": "m:p", "decoder": "m:d"})
    assert "w" in table and table["w"].traits == {"colour": "red"} and table.kinds == ["w"]


def test_uri_forms_come_from_the_registry() -> None:
    assert source_config_from_uri("synthetic:?seed=3&fps=5") == {"kind": "synthetic", "seed": "3", "fps": "5"}
    assert source_config_from_uri("v4l2:/dev/video2") == {"kind": "v4l2", "device": "/dev/video2"}
    assert source_config_from_uri("rtsps://cam/s") == {"kind": "rtsp", "url": "rtsps://cam/s"}
    assert source_config_from_uri("picamera2:1") == {"kind": "picamera2", "index": 1}


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"source kind 'webcam' is not registered.*synthetic"):
        SOURCES["webcam"]


def test_loading_a_config_imports_no_implementation() -> None:
    code = ("import sys, agent.config as c; c.build_config({'source': {'kind': 'rtsp', 'url': 'rtsp://h/s'}, "
            "'model': {'format': 'ssd'}}); print(sorted(m for m in ('cv2', 'av', 'numpy', 'paho', 'picamera2', "
            "'agent.sources.base', 'agent.vision.layout', 'agent.vision.ssd') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
