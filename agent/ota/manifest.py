"""The signed ``custom`` fields of the OTA targets: one contract for the repository tools and the node.

TUF signs whatever sits in a target's ``custom`` together with its length and hashes, so these fields are as
trustworthy as the role that signed them (``targets``: offline keys; ``rollout``: an online key). They are
pydantic models so both sides validate the same shape and an unknown or missing field is refused, never guessed.

Target paths (``TargetPaths``) are fixed so a node can ask for them by name:

* ``channels/{channel}/release.json`` — the channel's current release; its ``custom`` is a ``ReleaseInfo``
  that pins the hashes of its parts (agent, model, config), so parts of two releases are never mixed.
* ``{kind}/r{release}/{name}`` — one part; its ``custom`` is a ``PartInfo`` naming kind and release again.
* ``rollout/{channel}.json`` — the staged-rollout state, signed by the online ``rollout`` role (``RolloutInfo``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PartKind = Literal["agent", "model", "config"]
PART_KINDS: tuple[PartKind, ...] = ("agent", "model", "config")
#: a channel name: also a path segment and an MQTT topic level
CHANNEL_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
#: the delegated role that signs rollout state with an online key (never the offline targets keys)
ROLLOUT_ROLE = "rollout"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartRef(_Strict):
    """One part of a release as the release target pins it (path, length and sha256 of that exact file)."""

    path: str = Field(min_length=1)
    length: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    version: str = Field(min_length=1, description="the part's own version (wheel version, model version, "
                         "config release) reported in the node's state")


class ReleaseInfo(_Strict):
    """``custom`` of ``channels/{channel}/release.json``: what one release of a channel is made of."""

    kind: Literal["release"] = "release"
    channel: str = Field(pattern=CHANNEL_RE)
    release: int = Field(ge=1, description="the release counter; a node never installs a lower one")
    device_types: list[str] = Field(default_factory=list, description="empty: every device type")
    min_agent_version: str | None = Field(None, description="the agent version this release needs at least "
                                          "(when it brings no agent of its own)")
    parts: dict[PartKind, PartRef] = Field(min_length=1)

    def fits(self, device_type: str) -> bool:
        return not self.device_types or device_type in self.device_types


class PartInfo(_Strict):
    """``custom`` of one part target: signed again on the part so a part cannot be re-labelled."""

    kind: PartKind
    channel: str = Field(pattern=CHANNEL_RE)
    release: int = Field(ge=1)
    device_types: list[str] = Field(default_factory=list)
    min_agent_version: str | None = None
    version: str = Field(min_length=1)


class RolloutInfo(_Strict):
    """``custom`` of ``rollout/{channel}.json``: which share of the fleet takes which release.

    ``seed`` stays the same while a release rolls out, so raising ``percent`` only adds nodes."""

    kind: Literal["rollout"] = "rollout"
    channel: str = Field(pattern=CHANNEL_RE)
    release: int = Field(ge=1)
    percent: int = Field(ge=0, le=100, description="whole percent (canonical JSON, which TUF signs, has no floats)")
    seed: str = Field(min_length=8)


class TargetPaths:
    """The fixed target names (see the module docstring)."""

    @staticmethod
    def release(channel: str) -> str:
        return f"channels/{channel}/release.json"

    @staticmethod
    def part(kind: PartKind, release: int, name: str) -> str:
        return f"{kind}/r{release}/{name}"

    @staticmethod
    def rollout(channel: str) -> str:
        return f"rollout/{channel}.json"


def check_channel(channel: str) -> str:
    """``channel`` if it is a valid channel name, else ValueError naming the rule."""
    if not re.match(CHANNEL_RE, channel):
        raise ValueError(f"channel {channel!r}: 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    return channel


def version_tuple(version: str) -> tuple[int, ...]:
    """``"1.2.10"`` → ``(1, 2, 10)``; a non-numeric part counts as 0 (compare release versions, not builds)."""
    out = []
    for piece in re.split(r"[.+-]", version):
        m = re.match(r"\d+", piece)
        out.append(int(m.group()) if m else 0)
    return tuple(out)
