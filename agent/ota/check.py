"""One update check: is there a release this node should take, and are its parts here, whole and signed?

The order matters and each step that says no ends the check with a reason on ``ota/status``:

1. clock synchronised and not behind the time floor (``guards``), else no metadata is judged at all;
2. ngclient ``refresh()`` from the provisioned root: signatures, thresholds, expiry, rollback and freeze of
   root → timestamp → snapshot → targets (tampered, expired, older or frozen metadata stops here); then the
   metadata files are fsynced and the time floor raised;
3. the channel's release target: its signed ``custom`` (``ReleaseInfo``) — not a lower release counter than the
   running one (downgrade), not one that failed a trial here, this node's device type, the agent version
   it needs;
4. the rollout target (online ``rollout`` role): same release, and this node in its share (``rollout``);
5. each part the release pins: the targets role lists it with exactly the pinned length and sha256 and its
   own signed ``custom`` agrees (no part of another release is mixed in), and the disk has room;
6. parts not installed yet are downloaded resumably and checked by ``find_cached_target`` (length and hashes
   against the signed metadata); a mismatch deletes the file.

The result is a ``Plan`` (the release and the verified files) for the installer. Nothing is installed here.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from agent.ota.durable import fsync_tree
from agent.ota.fetcher import NodeFetcher
from agent.ota.guards import GuardError, check_clock, check_space, disk_free, raise_floor
from agent.ota.manifest import PartInfo, PartKind, ReleaseInfo, RolloutInfo, TargetPaths, version_tuple
from agent.ota.paths import OtaPaths
from agent.ota.rollout import bucket
from agent.ota.state import OtaState, StatusFile

#: bytes an installed part needs on disk per downloaded byte, besides the download itself (a venv from wheels
#: takes a few times the wheels; a model or config folder about its size)
INSTALL_FACTOR: dict[PartKind, int] = {"agent": 4, "model": 2, "config": 2}


class Refused(Exception):
    """The check ended without a release to install; ``state`` is ``refused``, ``waiting`` or ``current``."""

    def __init__(self, state: str, reason: str | None, release: int | None = None) -> None:
        super().__init__(reason or state)
        self.state, self.reason, self.release = state, reason, release


@dataclass(frozen=True)
class NodeFacts:
    """What the check needs to know about this node."""

    node_id: str
    device_type: str
    agent_version: str
    channel: str
    repo_url: str
    root: Path
    reserve_bytes: int


@dataclass
class Plan:
    """A release to install: its signed description and each part's verified file (None: installed already)."""

    release: ReleaseInfo
    files: dict[PartKind, Path | None] = field(default_factory=dict)


class Checker:
    """Runs one check for a node (see the module docstring); ``run()`` returns a ``Plan`` or raises ``Refused``."""

    def __init__(self, facts: NodeFacts, paths: OtaPaths, fetcher: NodeFetcher, status: StatusFile,
                 clock_synced: Callable[[], bool], free: Callable[[Path], int] = disk_free) -> None:
        self.facts, self.paths, self.fetcher, self.status = facts, paths.make(), fetcher, status
        self.clock_synced, self.free = clock_synced, free
        self.state = OtaState.load(paths.state)

    def _updater(self):
        from tuf.ngclient import Updater

        try:
            bootstrap = self.facts.root.read_bytes()
        except OSError as exc:
            raise Refused("refused", f"trusted root {self.facts.root}: {exc.strerror} (installed at provisioning)"
                          ) from None
        # ngclient's temporary files (tempfile) on the state disk, not a RAM /tmp; this process does only OTA
        tempfile.tempdir = str(self.paths.tmp)
        base = self.facts.repo_url.rstrip("/")
        return Updater(str(self.paths.metadata), f"{base}/metadata/", str(self.paths.downloads), f"{base}/targets/",
                       fetcher=self.fetcher, bootstrap=bootstrap)

    def run(self) -> Plan:
        from tuf.api import exceptions as tuf_errors

        self.status("checking")
        try:
            check_clock(self.paths.time_floor, self.clock_synced)
        except GuardError as exc:
            raise Refused("refused", str(exc)) from None
        try:
            updater = self._updater()
            updater.refresh()
            fsync_tree(self.paths.metadata)
            raise_floor(self.paths.time_floor)
            info = updater.get_targetinfo(TargetPaths.release(self.facts.channel))
            if info is None:
                raise Refused("current", f"channel {self.facts.channel!r} has no release")
            release = self._release(info.custom)
            self._rollout(updater.get_targetinfo(TargetPaths.rollout(self.facts.channel)), release)
            targets = self._parts(updater, release)
            plan = Plan(release)
            need = {k: tf for k, tf in targets.items() if not (self.paths.part_dir(k, tf.hashes["sha256"]) / ".ok")
                    .exists()}
            self._space(release, need)
            self._download(updater, release, need, plan)
            for kind in targets:
                plan.files.setdefault(kind, None)
            return plan
        except tuf_errors.RepositoryError as exc:  # signatures, expiry, rollback, freeze, lengths, hashes
            raise Refused("refused", f"metadata: {type(exc).__name__}: {exc}") from None
        except tuf_errors.DownloadError as exc:
            raise Refused("refused", f"download: {type(exc).__name__}: {exc}") from None

    def _release(self, custom: object) -> ReleaseInfo:
        try:
            rel = ReleaseInfo.model_validate(custom)
        except ValidationError as exc:
            raise Refused("refused", f"release target: invalid custom fields ({exc.errors()[0]['msg']})") from None
        if rel.channel != self.facts.channel:
            raise Refused("refused", f"release target names channel {rel.channel!r}", rel.release)
        running = self.state.running
        if running is not None and rel.release < running:
            raise Refused("refused", f"downgrade: release {rel.release} is older than the running {running}",
                          rel.release)
        if running is not None and rel.release == running:
            raise Refused("current", None, rel.release)
        if rel.release in self.state.failed:
            raise Refused("refused", f"release {rel.release} failed here before "
                          f"({self.state.failed[rel.release]})", rel.release)
        if self.state.trial is not None and self.state.trial.release == rel.release:
            raise Refused("trial", None, rel.release)
        if not rel.fits(self.facts.device_type):
            raise Refused("refused", f"wrong device type: release {rel.release} is for "
                          f"{', '.join(rel.device_types)}, this node is {self.facts.device_type}", rel.release)
        agent = rel.parts["agent"].version if "agent" in rel.parts else self.facts.agent_version
        if rel.min_agent_version and version_tuple(agent) < version_tuple(rel.min_agent_version):
            raise Refused("refused", f"release {rel.release} needs agent {rel.min_agent_version}, it would run "
                          f"{agent}", rel.release)
        return rel

    def _rollout(self, info: object, rel: ReleaseInfo) -> None:
        if info is None:
            raise Refused("waiting", f"release {rel.release} has no rollout yet", rel.release)
        try:
            ro = RolloutInfo.model_validate(info.custom)  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise Refused("refused", f"rollout target: invalid custom fields ({exc.errors()[0]['msg']})") from None
        if ro.release != rel.release or ro.channel != rel.channel:
            raise Refused("waiting", f"the rollout is for release {ro.release}", rel.release)
        b = bucket(self.facts.node_id, ro.seed)
        if b >= ro.percent:
            raise Refused("waiting", f"not in the {ro.percent}% rollout (bucket {b})", rel.release)

    def _parts(self, updater, rel: ReleaseInfo) -> dict:
        """Each pinned part as the targets role lists it; refuse anything that is not exactly the pinned file."""
        out = {}
        for kind, ref in rel.parts.items():
            tf = updater.get_targetinfo(ref.path)
            if tf is None:
                raise Refused("refused", f"{kind} part {ref.path} is not in the signed targets", rel.release)
            if tf.length != ref.length or tf.hashes.get("sha256") != ref.sha256:
                raise Refused("refused", f"mix-and-match: {ref.path} is not the {kind} release {rel.release} "
                              "pins", rel.release)
            try:
                part = PartInfo.model_validate(tf.custom)
            except ValidationError:
                raise Refused("refused", f"{ref.path}: invalid custom fields", rel.release) from None
            if part.kind != kind or part.channel != rel.channel or part.release > rel.release:
                raise Refused("refused", f"mix-and-match: {ref.path} is a {part.kind} of {part.channel} release "
                              f"{part.release}, listed as the {kind} of release {rel.release}", rel.release)
            out[kind] = tf
        return out

    def _space(self, rel: ReleaseInfo, need: dict) -> None:
        needed = sum(tf.length * (1 + INSTALL_FACTOR[k]) for k, tf in need.items())
        try:
            check_space(self.paths.dir, needed, self.facts.reserve_bytes, self.free)
        except GuardError as exc:
            raise Refused("refused", str(exc), rel.release) from None

    def _download(self, updater, rel: ReleaseInfo, need: dict, plan: Plan) -> None:
        total = sum(tf.length for tf in need.values())
        done = 0
        last = [0.0]

        def progress(have: int) -> None:
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                self.status("downloading", rel.release, progress=(done + have, total))

        base = self.facts.repo_url.rstrip("/")
        for kind, tf in need.items():
            sha = tf.hashes["sha256"]
            folder, _, name = tf.path.rpartition("/")
            url = f"{base}/targets/{folder}/{sha}.{name}"
            self.status("downloading", rel.release, progress=(done, total))
            dest = self.fetcher.download_resumable(url, self.paths.downloads / sha, tf.length, progress)
            self.status("verifying", rel.release, progress=(done + tf.length, total))
            if updater.find_cached_target(tf, str(dest)) is None:
                dest.unlink(missing_ok=True)
                raise Refused("refused", f"{kind} {tf.path}: length or hash differs from the signed metadata "
                              "(deleted)", rel.release)
            plan.files[kind] = dest
            done += tf.length
