"""The OTA supervisor: commits a release that passed its trial, reverts one that did not. Small on purpose.

It runs from the *provisioned* install, never from a release on trial, so a broken new agent cannot break
its own way back. systemd runs it (docs/OTA.md, units in provisioning/templates/): at boot and as the agent
unit's ``ExecStartPre=`` (``on_start``: counts starts, a crash loop reverts), from the agent unit's
``OnFailure=`` (``on_failure``: the unit gave up, revert), and from a timer during a trial (``tick``: commit when
healthy long enough, revert when the deadline passed). Every entry point first ``reconcile``s the ``current``
link with the state, so it also finishes whatever a power cut interrupted. The logic needs no systemd:
tests call the same methods a unit would run.

Health comes from the agent as a file (``health.json``: release, healthy since when, or why not), written by
the release on trial; the supervisor only believes it for the release on trial and only after ``trial_s``
of uninterrupted health, and a new start resets it (the agent rewrites it from scratch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from agent.atomic import write_atomic
from agent.ota.install import Installer
from agent.ota.state import StatusFile

HEALTH_FILE = "health.json"


class Health(BaseModel):
    """What the agent says about itself: healthy since ``since`` (wall time), or not with a reason."""

    release: int | None
    healthy_since: float | None = None
    reason: str | None = None
    boot_id: str | None = None


def health_path(ota_dir: Path) -> Path:
    return ota_dir / HEALTH_FILE


def write_health(ota_dir: Path, health: Health) -> None:
    write_atomic(health_path(ota_dir), health.model_dump_json())


def read_health(ota_dir: Path) -> Health | None:
    try:
        return Health.model_validate(json.loads(health_path(ota_dir).read_bytes()))
    except (OSError, ValueError, ValidationError):
        return None


@dataclass
class Supervisor:
    """Decisions over one state dir's OTA state; ``status`` records each (and ``ota/status`` publishes it)."""

    installer: Installer
    status: StatusFile
    trial_s: float
    max_starts: int = 3
    clock: Callable[[], float] = time.time

    def _trial(self):
        return self.installer.state().trial

    def _revert(self, reason: str) -> str:
        trial = self._trial()
        n = trial.release if trial else None
        running = self.installer.rollback(reason)
        self.status.running = running
        self.status("rolled_back", n, reason)
        return "rolled_back"

    def on_start(self) -> str:
        """Before the agent starts: reconcile, count a start of the release on trial, revert a crash loop."""
        self.installer.reconcile()
        trial = self._trial()
        if trial is None:
            return "running"
        if self.clock() > trial.deadline:
            return self._revert(f"release {trial.release} not committed within its trial")
        state = self.installer.state()
        assert state.trial is not None
        state.trial.starts += 1
        state.save(self.installer.paths.state)
        if state.trial.starts > self.max_starts:
            return self._revert(f"crash loop: {state.trial.starts - 1} starts of release {trial.release} "
                                "during its trial")
        health_path(self.installer.paths.dir).unlink(missing_ok=True)  # health is proven again by this start
        return "trial"

    def on_failure(self) -> str:
        """The agent unit failed for good (systemd ``OnFailure=``): a release on trial is reverted."""
        self.installer.reconcile()
        trial = self._trial()
        if trial is None:
            return "running"
        return self._revert(f"agent failed during the trial of release {trial.release}")

    def tick(self) -> str:
        """Periodic: commit a trial healthy for ``trial_s``, revert one past its deadline."""
        self.installer.reconcile()
        trial = self._trial()
        if trial is None:
            return "running"
        now = self.clock()
        health = read_health(self.installer.paths.dir)
        if health and health.release == trial.release and health.healthy_since is not None \
                and now - health.healthy_since >= self.trial_s:
            n = self.installer.commit()
            self.status.running = n
            self.status("committed", n)
            return "committed"
        if now > trial.deadline:
            why = health.reason if health and health.release == trial.release and health.reason else \
                "no health report from it"
            return self._revert(f"release {trial.release} not healthy within its trial: {why}")
        return "trial"
