"""Turn what a maintainer hands ``release add`` into single target files (a TUF target is one file).

A model folder or an agent bundle folder (the project's wheel plus its dependency wheels) becomes a tar with
sorted members, zero times and owners, so the same input gives the same bytes and the same hash. A config is
validated as an agent config before it is signed: a release must not carry a config every node would refuse.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
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


def pack_config(path: Path, release: int) -> Packed:
    """A node config TOML, checked as an agent config layer, → ``config.toml``."""
    from agent.config import build_config, read_toml

    build_config(read_toml(path), str(path))
    return Packed("config.toml", path.read_bytes(), f"r{release}")
