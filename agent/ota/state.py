"""What the node's OTA side persists (``STATE_DIR/ota/state.json``) and what it last reported (``status.json``).

The state is small and written atomically (``write_atomic``): the release that runs and is committed, the one
on trial (with its deadline in wall time and the starts it took, so a reboot neither extends nor forgets it),
and releases that failed a trial (never taken again: a node must not loop installing a release that bricks it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from agent.atomic import write_atomic
from agent.contract.payloads import OtaStatus, utc_now
from agent.ota.manifest import PartKind, PartRef

log = logging.getLogger(__name__)


class TrialState(BaseModel):
    release: int
    previous: int | None = None
    deadline: float = Field(description="wall time by which the release must be committed")
    starts: int = 0


class OtaState(BaseModel):
    running: int | None = Field(None, description="the committed release (None: the provisioned install)")
    parts: dict[PartKind, PartRef] = Field(default_factory=dict, description="parts of the committed release")
    before: int | None = Field(None, description="the release committed before ``running`` (kept for a manual "
                               "rollback)")
    before_parts: dict[PartKind, PartRef] = Field(default_factory=dict)
    trial: TrialState | None = None
    trial_parts: dict[PartKind, PartRef] = Field(default_factory=dict)
    failed: dict[int, str] = Field(default_factory=dict, description="release → why its trial failed")

    @classmethod
    def load(cls, path: Path) -> OtaState:
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, ValidationError, ValueError) as exc:
            log.error("%s unreadable (%s); starting from the provisioned install", path, exc)
            return cls()

    def save(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=1))


class StatusFile:
    """Writes each ``OtaStatus`` to ``status.json`` (the agent publishes it on ``ota/status``) and keeps it."""

    def __init__(self, path: Path, running: int | None = None) -> None:
        self.path = path
        self.running = running
        self.history: list[OtaStatus] = []

    def __call__(self, state: str, release: int | None = None, error: str | None = None,
                 progress: tuple[int, int] | None = None) -> OtaStatus:
        st = OtaStatus(release=release, state=state, error=error, running=self.running, ts=utc_now(),
                       progress={"bytes": progress[0], "total": progress[1]} if progress else None)
        self.history.append(st)
        write_atomic(self.path, st.model_dump_json(exclude_none=True))
        log.info("ota: %s%s%s", state, f" release {release}" if release else "", f": {error}" if error else "")
        return st

    @staticmethod
    def read(path: Path) -> OtaStatus | None:
        try:
            return OtaStatus.model_validate(json.loads(path.read_bytes()))
        except (OSError, ValueError, ValidationError):
            return None
