"""``edgecam release bundle``: errors a maintainer can act on, in one line; and the release venv's view of system
packages follows the provisioned venv's. (A whole bundle built and installed on a node: tests/test_ota_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.ota import install

ROOT = Path(__file__).resolve().parents[1]


def bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "release", "bundle", *args], capture_output=True,
                          text=True, timeout=300)


def test_a_folder_that_is_not_a_project_is_named(tmp_path: Path) -> None:
    r = bundle(str(tmp_path / "out"), "--source", str(tmp_path))
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        f"edgecam: error: {tmp_path}: not a project tree (no pyproject.toml)"]


def test_a_missing_dependency_wheel_offline_is_named(tmp_path: Path) -> None:
    """Offline (--no-index) with an empty --find-links: the wheel builds, the first missing dependency is named."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "edgecam"\nversion = "9.9"\ndependencies = ["edgecam-no-such-dependency>=1"]\n'
        '[tool.setuptools]\npy-modules = []\n')
    (tmp_path / "empty").mkdir()
    r = bundle(str(tmp_path / "out"), "--source", str(src), "--find-links", str(tmp_path / "empty"), "--no-index")
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecam: error: collecting the dependency wheels:")
    assert "edgecam-no-such-dependency" in lines[0]
    assert [p.name for p in (tmp_path / "out").glob("*.whl")] == ["edgecam-9.9-py3-none-any.whl"]
    again = bundle(str(tmp_path / "out"), "--source", str(src), "--no-index")
    assert again.returncode != 0 and "already holds an edgecam wheel" in again.stderr


@pytest.mark.parametrize(("cfg", "expected"), [
    ("home = /usr/bin\ninclude-system-site-packages = true\n", True),
    ("home = /usr/bin\ninclude-system-site-packages = false\n", False),
    (None, False),
])
def test_a_release_venv_sees_system_packages_when_the_provisioned_one_does(tmp_path: Path, monkeypatch,
                                                                           cfg: str | None, expected: bool) -> None:
    if cfg is not None:
        (tmp_path / "pyvenv.cfg").write_text(cfg)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert install._system_site_packages() is expected
