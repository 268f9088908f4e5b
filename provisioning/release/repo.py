"""A TUF release repository on ``tuf.api.metadata``: init, add a release, roll it out, refresh, rotate keys.

Roles: ``root`` (threshold of offline ed25519 keys), ``targets`` (offline; signs every release and its parts),
``rollout`` (a delegated role with an online key, paths ``rollout/*`` only, terminating: it can say which share
of the fleet takes a release the offline keys signed, and nothing else), ``snapshot`` and ``timestamp``
(online). Consistent snapshots: metadata is written as ``N.role.json`` (``timestamp.json`` unversioned) and
target files as ``targets/{dir}/{sha256}.{name}``, so a client never sees a half-published state and any
static file server can serve ``REPO`` as is. ``REPO/metadata/1.root.json`` is the root nodes are provisioned with.
"""

from __future__ import annotations

import copy
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from agent.atomic import write_atomic
from agent.errors import EdgecamError
from agent.ota.manifest import (
    PART_KINDS,
    ROLLOUT_ROLE,
    PartInfo,
    PartKind,
    PartRef,
    ReleaseInfo,
    RolloutInfo,
    TargetPaths,
    check_channel,
)
from provisioning.release.bundle import Packed
from provisioning.release.keys import KeyStore

SPEC_VERSION = "1.0.31"


class RepoError(EdgecamError):
    """A repository operation that cannot be done (named problem, nothing half-written)."""


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid, in days (timestamp: refresh it from a timer)."""

    root: float = 365
    targets: float = 90
    rollout: float = 30
    snapshot: float = 7
    timestamp: float = 1


def _channel(channel: str) -> str:
    try:
        return check_channel(channel)
    except ValueError as exc:
        raise RepoError(str(exc)) from None


def _expires(days: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)


class ReleaseRepo:
    """One repository folder and its keys; every change publishes new snapshot and timestamp versions."""

    def __init__(self, repo: Path, keys: KeyStore, expiry: Expiry | None = None) -> None:
        self.dir = repo
        self.meta_dir = repo / "metadata"
        self.targets_dir = repo / "targets"
        self.keys = keys
        self.expiry = expiry or Expiry()
        self.md: dict[str, Metadata[Any]] = {}

    # ------------------------------------------------------------ init and loading

    def init(self, threshold: int = 1, root_keys: int | None = None) -> None:
        """A new repository: keys generated, version 1 of every role written and signed."""
        n_root = root_keys or threshold
        if threshold < 1 or n_root < threshold:
            raise RepoError(f"--threshold {threshold}: needs 1 <= threshold <= root keys ({n_root})")
        if (self.meta_dir / "1.root.json").exists():
            raise RepoError(f"{self.meta_dir / '1.root.json'}: repository already initialised")
        if any(any(self.keys.role_dir(r).glob("*.pem")) for r in ("root", "targets")):
            raise RepoError(f"{self.keys.dir}: holds keys already; give --keys a new folder")
        root = Root(expires=_expires(self.expiry.root), consistent_snapshot=True)
        for _ in range(n_root):
            root.add_key(self.keys.generate("root").public_key, "root")
        root.roles["root"].threshold = threshold
        for role in ("targets", "snapshot", "timestamp"):
            root.add_key(self.keys.generate(role).public_key, role)
        rollout_key = self.keys.generate(ROLLOUT_ROLE).public_key
        targets = Targets(expires=_expires(self.expiry.targets))
        targets.delegations = Delegations(keys={}, roles={ROLLOUT_ROLE: DelegatedRole(
            ROLLOUT_ROLE, [], 1, terminating=True, paths=["rollout/*"])})
        targets.add_key(rollout_key, ROLLOUT_ROLE)
        self.md = {
            "root": Metadata(root),
            "targets": Metadata(targets),
            ROLLOUT_ROLE: Metadata(Targets(expires=_expires(self.expiry.rollout))),
            "snapshot": Metadata(Snapshot(expires=_expires(self.expiry.snapshot))),
            "timestamp": Metadata(Timestamp(expires=_expires(self.expiry.timestamp))),
        }
        for md in self.md.values():
            md.signed.spec_version = SPEC_VERSION
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self._write("root")
        self._publish(["targets", ROLLOUT_ROLE], bump=False)

    def load(self) -> ReleaseRepo:
        """Read the newest trusted state: root by highest version, the rest through timestamp → snapshot."""
        roots = sorted(self.meta_dir.glob("*.root.json"), key=lambda p: int(p.name.split(".")[0]))
        if not roots:
            raise RepoError(f"{self.meta_dir}: no root metadata (run `edgecam release init {self.dir}`)")
        try:
            self.md = {"root": Metadata.from_file(str(roots[-1]))}
            self.md["timestamp"] = Metadata.from_file(str(self.meta_dir / "timestamp.json"))
            snap_v = self.md["timestamp"].signed.snapshot_meta.version
            self.md["snapshot"] = Metadata.from_file(str(self.meta_dir / f"{snap_v}.snapshot.json"))
            for role in ("targets", ROLLOUT_ROLE):
                v = self.md["snapshot"].signed.meta[f"{role}.json"].version
                self.md[role] = Metadata.from_file(str(self.meta_dir / f"{v}.{role}.json"))
        except (OSError, KeyError, DeserializationError, RepositoryError) as exc:
            raise RepoError(f"{self.meta_dir}: unreadable repository metadata ({type(exc).__name__}: {exc})") from None
        return self

    # ------------------------------------------------------------ writing

    def _sign(self, role: str) -> None:
        """Sign ``role`` with every key of it in the store; refuse below its threshold.

        A new root version is signed by a threshold of the previous root's root keys as well, else clients
        holding the previous root refuse it; those keys are still in the store until the rotation retires them."""
        md = self.md[role]
        md.signatures.clear()
        delegator = self.md["targets"].signed if role == ROLLOUT_ROLE else self.md["root"].signed
        rules = [delegator.get_delegated_role(role)]
        if role == "root" and self._previous_root is not None:
            rules.append(self._previous_root.roles["root"])
        wanted_ids = {k for rule in rules for k in rule.keyids}
        signers = [s for s in self.keys.signers(role) if s.public_key.keyid in wanted_ids]
        have = {s.public_key.keyid for s in signers}
        for rule in rules:
            if len(have & set(rule.keyids)) < rule.threshold:
                raise RepoError(f"{role}: {rule.threshold} key(s) needed to sign, {len(have & set(rule.keyids))} "
                                f"found in {self.keys.role_dir(role)}")
        for s in signers:
            md.sign(s, append=True)

    _previous_root: Root | None = None  # set only while a rotated root is written

    def _write(self, role: str) -> None:
        self._sign(role)
        name = "timestamp.json" if role == "timestamp" else f"{self.md[role].signed.version}.{role}.json"
        write_atomic(self.meta_dir / name, self.md[role].to_bytes(JSONSerializer(compact=False)))

    def _publish(self, changed: list[str], bump: bool = True) -> None:
        """Write the changed targets roles, then a snapshot naming them, then a timestamp naming it."""
        for role in changed:
            if bump:
                self.md[role].signed.version += 1
            self._write(role)
        snap = self.md["snapshot"].signed
        for role in ("targets", ROLLOUT_ROLE):
            snap.meta[f"{role}.json"] = MetaFile(version=self.md[role].signed.version)
        if bump:
            snap.version += 1
        snap.expires = _expires(self.expiry.snapshot)
        self._write("snapshot")
        self.refresh_timestamp(bump=bump)

    def refresh_timestamp(self, bump: bool = True) -> None:
        """A new timestamp (online key): what a timer runs so nodes do not see the repository as frozen."""
        ts = self.md["timestamp"].signed
        ts.snapshot_meta = MetaFile(version=self.md["snapshot"].signed.version)
        if bump:
            ts.version += 1
        ts.expires = _expires(self.expiry.timestamp)
        self._write("timestamp")

    def refresh(self) -> None:
        """Re-sign snapshot and timestamp with fresh expiry (online keys only)."""
        self._publish([], bump=True)

    # ------------------------------------------------------------ releases

    def _add_target(self, role: str, path: str, data: bytes, custom: dict[str, Any]) -> TargetFile:
        """Copy ``data`` to its consistent-snapshot name and list it in ``role`` with signed ``custom``."""
        tf = TargetFile.from_data(path, data, ["sha256"])
        tf.unrecognized_fields["custom"] = custom
        folder, _, base = path.rpartition("/")
        dest = self.targets_dir / folder / f"{tf.hashes['sha256']}.{base}"
        if not dest.exists():
            write_atomic(dest, data)
        self.md[role].signed.targets[path] = tf
        return tf

    def current_release(self, channel: str) -> ReleaseInfo | None:
        tf = self.md["targets"].signed.targets.get(TargetPaths.release(channel))
        return ReleaseInfo.model_validate(tf.custom) if tf else None

    def current_rollout(self, channel: str) -> RolloutInfo | None:
        tf = self.md[ROLLOUT_ROLE].signed.targets.get(TargetPaths.rollout(channel))
        return RolloutInfo.model_validate(tf.custom) if tf else None

    def add_release(self, channel: str, release: int, parts: dict[PartKind, Packed], *,
                    device_types: list[str] | None = None, min_agent_version: str | None = None,
                    targets_expires_days: float | None = None, percent: int = 100) -> ReleaseInfo:
        """Sign release ``release`` of ``channel``: its new parts, plus the previous release's other parts.

        A release always names every part it runs with (pinned by hash in the signed ``custom``), so a node
        installs one consistent set; a model-only release carries the agent and config of the one before."""
        _channel(channel)
        prev = self.current_release(channel)
        if prev and release <= prev.release:
            raise RepoError(f"--version {release}: channel {channel!r} is at release {prev.release} already "
                            "(release counters only go up)")
        if not parts and not prev:
            raise RepoError("nothing to release: give --agent, --model and/or --config")
        device_types = sorted(set(device_types or []))
        refs: dict[PartKind, PartRef] = dict(prev.parts) if prev else {}
        for kind in PART_KINDS:
            if kind not in parts:
                continue
            packed = parts[kind]
            info = PartInfo(kind=kind, channel=channel, release=release, device_types=device_types,
                            min_agent_version=min_agent_version, version=packed.version)
            path = TargetPaths.part(kind, release, packed.name)
            tf = self._add_target("targets", path, packed.data, info.model_dump(mode="json"))
            refs[kind] = PartRef(path=path, length=tf.length, sha256=tf.hashes["sha256"], version=packed.version)
        rel = ReleaseInfo(channel=channel, release=release, device_types=device_types,
                          min_agent_version=min_agent_version, parts=refs)
        body = rel.model_dump(mode="json")
        self._add_target("targets", TargetPaths.release(channel), json.dumps(body, sort_keys=True).encode(), body)
        if targets_expires_days is not None:
            self.md["targets"].signed.expires = _expires(targets_expires_days)
        else:
            self.md["targets"].signed.expires = _expires(self.expiry.targets)
        self._set_rollout(RolloutInfo(channel=channel, release=release, percent=percent,
                                      seed=secrets.token_hex(16)))
        self._publish(["targets", ROLLOUT_ROLE])
        return rel

    def _set_rollout(self, info: RolloutInfo) -> None:
        body = info.model_dump(mode="json")
        self._add_target(ROLLOUT_ROLE, TargetPaths.rollout(info.channel), json.dumps(body, sort_keys=True).encode(),
                         body)
        self.md[ROLLOUT_ROLE].signed.expires = _expires(self.expiry.rollout)

    def rollout(self, channel: str, percent: int) -> RolloutInfo:
        """Change the share of nodes taking the channel's current release; online keys only (same seed)."""
        _channel(channel)
        cur = self.current_rollout(channel)
        if cur is None:
            raise RepoError(f"channel {channel!r}: no release to roll out (run `edgecam release add`)")
        info = cur.model_copy(update={"percent": percent})
        RolloutInfo.model_validate(info.model_dump())
        self._set_rollout(info)
        self._publish([ROLLOUT_ROLE])
        return info

    def channels(self) -> list[str]:
        return sorted(p.split("/")[1] for p in self.md["targets"].signed.targets if p.startswith("channels/"))

    # ------------------------------------------------------------ key rotation

    def rotate(self, role: str) -> tuple[str, str]:
        """Replace one key of ``role`` by a new one; returns (retired keyid, new keyid).

        ``root``: the new root version is signed by the old root keys (threshold) and the new ones, so a
        client holding the old root accepts it; ``targets``, ``snapshot``, ``timestamp``: a new root lists
        the new key, the role is re-signed with it; ``rollout``: the targets role delegates to the new key.
        The old key moves to ``KEYS/retired/``: metadata it signs alone is refused from then on."""
        if role == ROLLOUT_ROLE:
            targets = self.md["targets"].signed
            old = targets.get_delegated_role(ROLLOUT_ROLE).keyids[0]
            new = self.keys.generate(ROLLOUT_ROLE).public_key
            targets.revoke_key(old, ROLLOUT_ROLE)
            targets.add_key(new, ROLLOUT_ROLE)
            self.keys.retire(role, old)
            self._publish(["targets", ROLLOUT_ROLE])
            return old, new.keyid
        root = self.md["root"].signed
        if role not in root.roles:
            raise RepoError(f"--role {role}: not a role of this repository")
        self._previous_root = copy.deepcopy(root)  # to_dict() shares the keyids lists with the original
        old = root.roles[role].keyids[0]
        new = self.keys.generate(role).public_key
        root.add_key(new, role)
        root.revoke_key(old, role)
        root.version += 1
        root.expires = _expires(self.expiry.root)
        try:
            self._write("root")
        finally:
            self._previous_root = None
        self.keys.retire(role, old)
        if role in ("targets", "snapshot", "timestamp"):
            self._publish(["targets", ROLLOUT_ROLE] if role == "targets" else [])
        return old, new.keyid
