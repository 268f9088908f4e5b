"""Install a verified release beside the running one and switch to it with one atomic link change.

Parts go to ``parts/{kind}/{sha256}/``, built in place (a venv holds its own absolute path, so it cannot be
built elsewhere and renamed), fsynced, then marked complete by a ``.ok`` file; a folder without it is an
interrupted install and is done again. A part another release already installed is reused: a model or config
update never reinstalls the agent. A release is a folder
``releases/r{N}/`` of links to its parts plus its signed ``release.json``; ``current`` links to one release folder,
so agent, model and config switch together (no mix on disk either).

Crash consistency: the state file says which release the node should run (``trial.release`` while on trial,
else ``running``) and is written *before* the link changes; ``reconcile()`` (run by the supervisor at boot and
before any decision) makes ``current`` follow the state. So a power cut or SIGKILL at any step leaves either
the old release or the new one on trial, and never a half-switched node. Links are switched by creating a new
link under a temporary name, ``os.replace`` over the old one (atomic; ``ln -sfn`` is not), then fsync of the
folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.atomic import fsync_dir, write_atomic
from agent.errors import EdgecamError
from agent.ota.durable import fsync_tree
from agent.ota.manifest import PartKind, ReleaseInfo
from agent.ota.paths import OtaPaths
from agent.ota.state import OtaState, TrialState

if TYPE_CHECKING:  # the check (tuf, urllib3) is not loaded by the agent, which imports this module
    from agent.ota.check import Plan

log = logging.getLogger(__name__)

OK = ".ok"


class InstallError(EdgecamError):
    """A part that cannot be installed, or a switch that cannot be made; the message is the status's reason."""


def switch_link(link: Path, target: Path | None) -> None:
    """Point ``link`` at ``target`` (relative) atomically and durably; None removes it."""
    if target is None:
        link.unlink(missing_ok=True)
    else:
        tmp = link.with_name(f".{link.name}.new")
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, link.parent), tmp)
        os.replace(tmp, link)
    fsync_dir(link.parent)


def link_release(link: Path) -> int | None:
    """The release number ``link`` points at (``releases/r{N}``), or None."""
    try:
        return release_number(Path(os.readlink(link)).name)
    except OSError:
        return None


def release_number(name: str) -> int | None:
    """``r12`` → 12; anything else → None."""
    return int(name[1:]) if name.startswith("r") and name[1:].isdigit() else None


def _safe_extract(file: Path, dest: Path, _tmp: Path | None = None) -> None:
    """Regular files only, no absolute paths, nothing outside ``dest`` (the tar is signed, but be strict).

    Streamed from the verified file: an agent bundle is ~100 MB, more than a Pi Zero 2 W should hold in RAM."""
    with tarfile.open(file) as tar:
        for m in tar.getmembers():
            name = Path(m.name)
            if not m.isfile() or name.is_absolute() or ".." in name.parts:
                raise InstallError(f"archive member {m.name!r} is not a plain relative file")
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            with out.open("wb") as fh:
                shutil.copyfileobj(src, fh, 1 << 20)


def _system_site_packages() -> bool:
    """Does the provisioned venv see the system's packages? A release venv must see the same (picamera2 and
    libcamera on a Pi, JetPack's OpenCV and python3-systemd are apt packages, not wheels)."""
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    try:
        lines = cfg.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return any(k.strip() == "include-system-site-packages" and v.strip().lower() == "true"
               for k, _, v in (ln.partition("=") for ln in lines))


def _install_agent(file: Path, dest: Path, tmp: Path) -> None:
    """Wheels → ``dest/wheels``; a venv at ``dest/venv`` with edgecam installed from them only (no index).

    pip's build and unpack space is ``tmp`` on the state disk (``/tmp`` may be RAM, or private to the unit)."""
    wheels = dest / "wheels"
    _safe_extract(file, wheels, tmp)
    env = {**os.environ, "TMPDIR": str(tmp)}
    site = ["--system-site-packages"] if _system_site_packages() else []
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", *site, str(dest / "venv")], check=True,
                   capture_output=True, env=env)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(dest / "venv" / "bin" / "python"), "install",
                        "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet",
                        "--find-links", str(wheels), "edgecam"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise InstallError(f"agent bundle: offline install failed: {tail}")


def _install_config(file: Path, dest: Path, _tmp: Path) -> None:
    shutil.copyfile(file, dest / "config.toml")


#: kind → install(verified file, final folder, temporary space on the state disk)
INSTALLERS: dict[PartKind, Callable[[Path, Path, Path], None]] = {
    "agent": _install_agent,
    "model": _safe_extract,
    "config": _install_config,
}


class Installer:
    """Installs a ``Plan``, switches to it for a trial, commits or rolls back; ``step`` is told each step."""

    def __init__(self, paths: OtaPaths, step: Callable[[str], None] | None = None) -> None:
        self.paths = paths.make()
        self.step = step or (lambda _name: None)

    def state(self) -> OtaState:
        return OtaState.load(self.paths.state)

    # ------------------------------------------------------------ install and switch

    def install_part(self, kind: PartKind, sha256: str, file: Path) -> Path:
        """Install one part in its final folder (a venv cannot move), ``.ok`` written last and fsynced.

        A folder without ``.ok`` is an interrupted install: removed and done again."""
        final = self.paths.part_dir(kind, sha256)
        if (final / OK).exists():
            return final
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir(parents=True)
        fsync_dir(final.parent)
        try:
            INSTALLERS[kind](file, final, self.paths.tmp)
        except (OSError, tarfile.TarError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise InstallError(f"{kind}: {type(exc).__name__}: {exc}") from None
        except InstallError:
            shutil.rmtree(final, ignore_errors=True)
            raise
        fsync_tree(final)
        write_atomic(final / OK, sha256 + "\n")
        self.step(f"part:{kind}")
        return final

    def build_release(self, rel: ReleaseInfo) -> Path:
        final = self.paths.release_dir(rel.release)
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        tmp.mkdir(parents=True)
        for kind, ref in rel.parts.items():
            os.symlink(os.path.relpath(self.paths.part_dir(kind, ref.sha256), tmp), tmp / kind)
        write_atomic(tmp / "release.json", rel.model_dump_json(indent=1))
        fsync_tree(tmp)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        self.step("release")
        return final

    def install(self, plan: Plan, window_s: float) -> None:
        """Install the plan's parts, build its release folder, start its trial (state first, then the link).

        ``window_s``: time from now by which the trial must be committed (starts and health included)."""
        rel = plan.release
        for kind, ref in rel.parts.items():
            file = plan.files.get(kind)
            if not (self.paths.part_dir(kind, ref.sha256) / OK).exists():
                if file is None:
                    raise InstallError(f"{kind}: neither installed nor downloaded")
                self.install_part(kind, ref.sha256, file)
        self.build_release(rel)
        state = self.state()
        state.trial = TrialState(release=rel.release, previous=state.running, deadline=time.time() + window_s)
        state.trial_parts = dict(rel.parts)
        state.save(self.paths.state)
        self.step("state:trial")
        self.reconcile()
        self.step("switched")
        for file in plan.files.values():  # the downloads are installed now
            if file is not None:
                file.unlink(missing_ok=True)

    # ------------------------------------------------------------ decisions

    def reconcile(self) -> int | None:
        """Make ``current`` (and ``previous``) follow the state; returns the release ``current`` points at."""
        state = self.state()
        want = state.trial.release if state.trial else state.running
        if want is not None and not self.paths.release_dir(want).is_dir():
            log.error("ota: release %s in the state has no folder; going back to the last committed one", want)
            if state.trial and state.trial.release == want:
                state.failed[want] = "its folder is missing"
                state.trial, state.trial_parts = None, {}
                state.save(self.paths.state)
                return self.reconcile()
            want = None
        prev = state.trial.previous if state.trial else None
        if link_release(self.paths.previous) != prev:
            switch_link(self.paths.previous, self.paths.release_dir(prev) if prev is not None else None)
        if link_release(self.paths.current) != want:
            switch_link(self.paths.current, self.paths.release_dir(want) if want is not None else None)
        return want

    def commit(self) -> int:
        """The trial release becomes the running one (the trial passed)."""
        state = self.state()
        if state.trial is None:
            raise InstallError("no release on trial")
        n = state.trial.release
        state.before, state.before_parts = state.running, state.parts
        state.running, state.parts = n, state.trial_parts
        state.trial, state.trial_parts = None, {}
        state.save(self.paths.state)
        self.step("state:committed")
        self.reconcile()
        self.prune()
        return n

    def rollback(self, reason: str) -> int | None:
        """Back to the last committed release (or the provisioned install); the trial release is never retried."""
        state = self.state()
        if state.trial is not None:
            state.failed[state.trial.release] = reason
            state.trial, state.trial_parts = None, {}
        state.save(self.paths.state)
        self.step("state:rolled_back")
        return self.reconcile()

    def revert_commit(self, reason: str) -> int | None:
        """``edgecam ota rollback`` after a commit: back to the release committed before this one."""
        state = self.state()
        if state.trial is not None:
            return self.rollback(reason)
        if state.running is None:
            raise InstallError("nothing to roll back: the node runs its provisioned install")
        state.failed[state.running] = reason
        state.running, state.parts = state.before, state.before_parts
        state.before, state.before_parts = None, {}
        state.save(self.paths.state)
        self.step("state:rolled_back")
        return self.reconcile()

    def prune(self) -> None:
        """Remove release folders and parts that neither the running release nor the one before names."""
        state = self.state()
        keep_rel = {state.running, state.before} | ({state.trial.release} if state.trial else set())
        for folder in self.paths.releases.glob("r*"):
            if release_number(folder.name) not in keep_rel:
                shutil.rmtree(folder, ignore_errors=True)
        named = [*state.parts.items(), *state.trial_parts.items(), *state.before_parts.items()]
        keep = {(k, r.sha256) for k, r in named}
        installed = {sha for _k, sha in keep}
        for download in self.paths.downloads.iterdir():  # complete downloads of installed parts (a crash
            if download.name in installed:                # between the switch and their removal leaves them)
                download.unlink(missing_ok=True)
        for kind_dir in self.paths.parts.iterdir():
            for part in kind_dir.iterdir():
                if (kind_dir.name, part.name) not in keep:
                    shutil.rmtree(part, ignore_errors=True)


def read_release(folder: Path) -> ReleaseInfo | None:
    try:
        return ReleaseInfo.model_validate(json.loads((folder / "release.json").read_bytes()))
    except (OSError, ValueError):
        return None
