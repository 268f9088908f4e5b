"""Turn what a maintainer hands ``release add`` into single target files (a TUF target is one file).

A model folder or an agent bundle folder (the project's wheel plus its dependency wheels) becomes a tar with
sorted members, zero times and owners, so the same input gives the same bytes and the same hash. A config is
validated as an agent config before it is signed: a release must not carry a config every node would refuse.

``build_agent_bundle`` makes the agent bundle with pip (``edgecam release bundle``): the project's wheel, then
every dependency as a binary wheel for the node's platform (``--platform``/``--python-version`` when it is not
this machine's), so the node installs it with ``--no-index`` and never reaches an index.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import EdgecamError


class BundleError(EdgecamError):
    """An input to ``release add`` that cannot become a target."""


@dataclass(frozen=True)
class Packed:
    """One part ready to be copied into the repository."""

    name: str
    data: bytes
    version: str


def tar_folder(folder: Path) -> bytes:
    """A deterministic, uncompressed tar of ``folder``'s regular files (paths relative to it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            data = path.read_bytes()
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pack_model(folder: Path, release: int) -> Packed:
    """A model folder (manifest.json + model + labels) → ``{name}.tar``; version from the manifest."""
    if not folder.is_dir():
        raise BundleError(f"{folder}: --model wants a model folder (with manifest.json)")
    version = f"r{release}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise BundleError(f"{manifest}: unreadable manifest ({exc})") from None
        version = str(meta.get("version") or version)
    if not any(folder.glob("*.tflite")):
        raise BundleError(f"{folder}: no .tflite model in the folder")
    return Packed(f"{folder.name}.tar", tar_folder(folder), version)


_WHEEL = re.compile(r"^edgecam-([^-]+)-.*\.whl$")


def pack_agent(bundle: Path, release: int) -> Packed:
    """An agent bundle (a folder of wheels, or a tar of one) → ``agent-bundle.tar``; version of edgecam's wheel."""
    if bundle.is_dir():
        data = tar_folder(bundle)
    elif bundle.is_file():
        data = bundle.read_bytes()
    else:
        raise BundleError(f"{bundle}: --agent wants a folder of wheels or a tar of one")
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = [Path(m.name).name for m in tar.getmembers() if m.isfile()]
    except tarfile.TarError as exc:
        raise BundleError(f"{bundle}: not a tar of wheels ({exc})") from None
    versions = [m.group(1) for n in names if (m := _WHEEL.match(n))]
    if not versions:
        raise BundleError(f"{bundle}: no edgecam-*.whl in the bundle")
    return Packed("agent-bundle.tar", data, versions[0])


@dataclass(frozen=True)
class BundleSpec:
    """What ``build_agent_bundle`` is asked for; empty platforms and python version mean this machine's."""

    source: Path | None = None  # project tree to build the wheel from (default: the wheel given)
    wheel: Path | None = None  # an already built edgecam wheel
    extras: tuple[str, ...] = ()  # node extras to include (e.g. systemd)
    platforms: tuple[str, ...] = ()  # pip platform tags, e.g. manylinux2014_aarch64 manylinux_2_28_aarch64
    python_version: str | None = None  # e.g. 3.11 (Raspberry Pi OS 12), 3.10 (JetPack 6)
    find_links: tuple[Path, ...] = field(default_factory=tuple)
    no_index: bool = False  # offline: wheels from find_links only (and the wheel built without isolation)


def _pip(args: list[str], what: str) -> None:
    """Run pip in this interpreter; its last error line becomes the BundleError."""
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise BundleError(f"{what}: {(lines or ['pip failed'])[-1].strip()}")


def build_agent_bundle(out: Path, spec: BundleSpec) -> Path:
    """Fill ``out`` with edgecam's wheel and all its dependency wheels; returns edgecam's wheel in it.

    Binary wheels only (``--only-binary=:all:``): a node has no compiler, and a pip that builds from source on
    the pole is an install that can fail there."""
    if (spec.source is None) == (spec.wheel is None):
        raise BundleError("an agent bundle is built from one of: a source tree, a wheel")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("edgecam-*.whl")):
        raise BundleError(f"{out}: already holds an edgecam wheel (bundle into an empty folder)")
    index = ["--no-index"] if spec.no_index else []
    links = [a for d in spec.find_links for a in ("--find-links", str(d))]
    if spec.wheel is not None:
        if not _WHEEL.match(spec.wheel.name) or not spec.wheel.is_file():
            raise BundleError(f"{spec.wheel}: not an edgecam-*.whl file")
        shutil.copy2(spec.wheel, out / spec.wheel.name)
    else:
        assert spec.source is not None
        if not (spec.source / "pyproject.toml").is_file():
            raise BundleError(f"{spec.source}: not a project tree (no pyproject.toml)")
        isolation = ["--no-build-isolation"] if spec.no_index else []
        _pip(["wheel", "--no-deps", *isolation, *index, *links, "--wheel-dir", str(out), str(spec.source)],
             f"building edgecam's wheel from {spec.source}")
    wheels = sorted(out.glob("edgecam-*.whl"))
    if len(wheels) != 1:
        raise BundleError(f"{out}: expected one edgecam wheel, found {len(wheels)}")
    target = [a for p in spec.platforms for a in ("--platform", p)]
    if spec.python_version:
        target += ["--python-version", spec.python_version, "--implementation", "cp"]
    req = f"{wheels[0]}[{','.join(spec.extras)}]" if spec.extras else str(wheels[0])
    _pip(["download", "--only-binary=:all:", *index, *links, *target, "--dest", str(out), req],
         "collecting the dependency wheels")
    return wheels[0]


def pack_config(path: Path, release: int) -> Packed:
    """A node config TOML, checked as an agent config layer, → ``config.toml``."""
    from agent.config import build_config, read_toml

    build_config(read_toml(path), str(path))
    return Packed("config.toml", path.read_bytes(), f"r{release}")
