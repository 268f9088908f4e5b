"""The one owner of the agent's config: the local layers ⊕ the centre's document, tried before it is kept.

Layers: defaults → TOML → env → CLI (*local*, fixed for the life of the process) and the centre's
``config/desired`` document (*centre*). The effective config is always ``local ⊕ document``, computed
afresh from those two and never from an earlier effective config, so restarts change nothing of it.

A change to a field read only at start (``RESTART`` on the field) can brick a node for good (an
unreadable source, a missing model, an unreachable broker), so it is *tried*: the owner keeps the
last-known-good document, persists the new one as a trial (version, document, deadline in wall time,
starts), and the node restarts into it. The node commits the trial with ``healthy()`` once it runs
healthily; ``revert(reason)`` goes back to last-known-good when it does not by the deadline or fails to
start, and ``start_config()`` reverts a trial that ran out of time or of starts (a crash loop). All of
it is persisted atomically in the state dir, so a restart at any point changes nothing of the outcome.
Hot changes are committed at once and delivered to the consumers that declared the changed sections
(``Consumers``). A document that arrives during a trial waits for the trial's end (latest one wins).
The same owner serves config from any channel (``config/desired`` today, OTA config releases next).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.atomic import write_atomic
from agent.config import AgentConfig, build_config, merge_layers
from agent.contract import ConfigReported
from agent.errors import ConfigError
from agent.redact import REVEAL, redact_text

log = logging.getLogger(__name__)

STATE_FILE = "config_state.json"
LEGACY_FILE = "config_desired.json"  # before trials: the last applied document, taken as last-known-good
MAX_ERROR_LEN = 500
ORIGIN = "config/desired"


class Document(BaseModel):
    version: int
    config: dict[str, Any]


class Trial(Document):
    deadline: float  # wall time (time.time()): a restart or reboot does not extend it
    starts: int = 0


class Rejection(Document):
    error: str


class OwnerState(BaseModel):
    """What is persisted; everything else is computed from it and the local config."""

    good: Document | None = None
    trial: Trial | None = None
    rejected: Rejection | None = None
    pending: Document | None = None


@dataclass(frozen=True)
class Change:
    """A committed or tried change: the new effective config and the top-level fields that changed."""

    cfg: AgentConfig
    version: int
    sections: frozenset[str]
    restart: bool


class Consumers:
    """Who reads which config sections; a hot change reaches exactly those whose sections changed.

    Each consumer's ``apply`` is called on the thread that calls ``deliver`` (the runner's main loop);
    a consumer owned by another thread hands the call over itself.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, frozenset[str], Callable[[AgentConfig], Any]]] = []

    def add(self, name: str, sections: Iterable[str], apply: Callable[[AgentConfig], Any]) -> None:
        sections = frozenset(sections)
        unknown = sections - set(AgentConfig.model_fields)
        if unknown:
            raise ValueError(f"{name}: reads unknown config sections {sorted(unknown)}")
        self._items.append((name, sections, apply))

    def deliver(self, change: Change) -> list[str]:
        """Apply ``change`` to each consumer of a changed section; the names of those reached."""
        reached = []
        for name, sections, apply in self._items:
            if sections & change.sections:
                apply(change.cfg)
                reached.append(name)
        return reached

    def uncovered(self) -> set[str]:
        """Hot fields nobody consumes (a change to one would be committed and reach no one)."""
        read = set().union(*(s for _, s, _ in self._items))
        return {n for n in AgentConfig.model_fields
                if not AgentConfig.needs_restart(n) and n not in AgentConfig.LOCAL_ONLY} - read


class ConfigOwner:
    """Holds the local config and the centre's document; see the module doc. Thread-safe."""

    def __init__(self, local: AgentConfig, clock: Callable[[], float] = time.time) -> None:
        self.local = local
        # only what the layers set: a field left to its default stays unset (e.g. detect.nms_iou defers
        # to the model's manifest) whatever the centre's document changes beside it
        self._local_data = local.model_dump(mode="json", exclude_unset=True, context=REVEAL)  # real URLs
        self._path = Path(local.state_dir) / STATE_FILE
        self._clock = clock
        self._lock = threading.RLock()
        self._change_listeners: list[Callable[[Change], None]] = []
        self._report_listeners: list[Callable[[ConfigReported], None]] = []
        self._started_trial: tuple[int, float] | None = None  # (version, deadline) of the trial this process runs
        self._state = self._load()

    # ------------------------------------------------------------ queries

    @property
    def applied_version(self) -> int | None:
        good = self._state.good
        return good.version if good else None

    @property
    def on_trial(self) -> bool:
        return self._state.trial is not None

    @property
    def running_trial(self) -> bool:
        """This process started on the trial config (only then can it prove it healthy)."""
        trial = self._state.trial
        return trial is not None and (trial.version, trial.deadline) == self._started_trial

    def trial_expired(self) -> bool:
        trial = self._state.trial
        return trial is not None and self._clock() >= trial.deadline

    def committed(self) -> AgentConfig:
        """Local ⊕ the last-known-good document."""
        return self._compose(self._state.good)

    def effective(self) -> AgentConfig:
        """Local ⊕ the document the node runs now: the trial's while there is one, else last-known-good."""
        state = self._state
        return self._compose(state.trial or state.good)

    def watch(self, on_change: Callable[[Change], None] | None = None,
              on_report: Callable[[ConfigReported], None] | None = None) -> None:
        """Be told of changes to apply (hot or restart) and of reports made outside ``propose``."""
        if on_change is not None:
            self._change_listeners.append(on_change)
        if on_report is not None:
            self._report_listeners.append(on_report)

    # ------------------------------------------------------------ lifecycle

    def start_config(self) -> AgentConfig:
        """The config to start on; counts a start of a trial, and ends one out of time or of starts."""
        reports: list[ConfigReported] = []
        with self._lock:
            while (trial := self._state.trial) is not None:  # a revert may start the held document's trial
                if self._clock() >= trial.deadline:
                    reports += self._revert(f"not healthy within its trial window ({self.local.trial.window_s:g} s)")
                elif trial.starts >= self.local.trial.max_starts:
                    reports += self._revert(f"started {trial.starts} times during its trial without becoming "
                                            "healthy (crash loop)")
                else:
                    trial.starts += 1
                    self._save_quietly()
                    break
            self._started_trial = (trial.version, trial.deadline) if trial is not None else None
            cfg = self.effective()
        self._emit(reports)
        return cfg

    def propose(self, version: int, doc: dict[str, Any]) -> ConfigReported:
        """A document from the centre: rejected, committed hot, held, or started as a trial; the report."""
        with self._lock:
            return self._propose(version, doc)

    def rejected(self, version: int, error: str) -> ConfigReported:
        """The report for a payload that never became a document (unreadable JSON, no version)."""
        return self._rejected(version, error)

    def healthy(self) -> bool:
        """The node runs healthily on its trial config: commit it (False when there is nothing to commit)."""
        with self._lock:
            trial = self._state.trial
            if trial is None or not self.running_trial:
                return False
            self._state.good = Document(version=trial.version, config=trial.config)
            self._state.trial = None
            self._save_quietly()
            log.info("config v%d committed: the node runs healthily on it", trial.version)
            reports = [self._report(trial.version, "applied", restart=True), *self._take_pending()]
        self._emit(reports)
        return True

    def revert(self, reason: str) -> bool:
        """Give up the trial and go back to last-known-good (False when there is no trial)."""
        with self._lock:
            if self._state.trial is None:
                return False
            reports = self._revert(reason)
        self._emit(reports)
        return True

    # ------------------------------------------------------------ inside the lock

    def _propose(self, version: int, doc: dict[str, Any]) -> ConfigReported:
        state = self._state
        if state.trial is not None:
            if (version, doc) != (state.trial.version, state.trial.config):
                log.info("config v%d held until the trial of v%d ends", version, state.trial.version)
                state.pending = Document(version=version, config=doc)
                self._save_quietly()
            return self._report(state.trial.version, "trial", restart=True)
        if state.rejected is not None and (version, doc) == (state.rejected.version, state.rejected.config):
            return self._report(version, "rejected", error=state.rejected.error)
        if state.good is not None:
            if version < state.good.version:
                return self._rejected(version, f"{ORIGIN}: version {version} is older than the applied "
                                               f"version {state.good.version}")
            if (version, doc) == (state.good.version, state.good.config):
                return self._report(version, "applied")
        try:
            new = build_config(merge_layers(self._local_data, doc), ORIGIN)
        except ConfigError as exc:
            return self._rejected(version, str(exc))
        except RecursionError:
            return self._rejected(version, f"{ORIGIN}: document nested too deeply")
        for name, why in AgentConfig.LOCAL_ONLY.items():
            if getattr(new, name) != getattr(self.local, name):
                return self._rejected(version, f"{ORIGIN}: {name}: cannot be changed from the centre; {why}")
        old = self.committed()
        sections = frozenset(n for n in AgentConfig.model_fields if getattr(new, n) != getattr(old, n))
        change = Change(new, version, sections, any(AgentConfig.needs_restart(n) for n in sections))
        if not change.restart:
            state.good = Document(version=version, config=doc)
            self._save_quietly()
            if sections:
                log.info("config v%d applied hot: %s", version, ", ".join(sorted(sections)))
                self._notify(change)
            return self._report(version, "applied")
        state.trial = Trial(version=version, config=doc, deadline=self._clock() + self.local.trial.window_s)
        try:
            self._save()
        except OSError as exc:  # a trial that would not survive its restart would be tried forever
            state.trial = None
            return self._rejected(version, f"{ORIGIN}: cannot persist the trial in {self._path}: {exc.strerror}")
        log.info("config v%d on trial (needs a restart: %s)", version, ", ".join(sorted(sections)))
        self._notify(change)
        return self._report(version, "trial", restart=True)

    def _revert(self, reason: str) -> list[ConfigReported]:
        trial = self._state.trial
        assert trial is not None
        good = self._state.good
        error = f"{ORIGIN} v{trial.version} reverted to {f'v{good.version}' if good else 'the local config'}: {reason}"
        log.warning("%s", error)
        self._state.rejected = Rejection(version=trial.version, config=trial.config, error=error)
        self._state.trial = None
        self._save_quietly()
        return [self._report(trial.version, "rejected", error=error), *self._take_pending()]

    def _take_pending(self) -> list[ConfigReported]:
        pending, self._state.pending = self._state.pending, None
        if pending is None:
            return []
        self._save_quietly()
        return [self._propose(pending.version, pending.config)]

    def _compose(self, doc: Document | None) -> AgentConfig:
        if doc is None:
            return self.local
        try:
            return build_config(merge_layers(self._local_data, doc.config), f"{self._path} v{doc.version}")
        except ConfigError as exc:  # the local config changed under a kept document: local wins
            log.warning("config v%d not in force: %s", doc.version, exc)
            return self.local

    def _notify(self, change: Change) -> None:
        for listener in self._change_listeners:
            listener(change)

    def _emit(self, reports: list[ConfigReported]) -> None:
        for report in reports:
            for listener in self._report_listeners:
                listener(report)

    def _report(self, version: int, status: str, error: str | None = None, restart: bool = False) -> ConfigReported:
        # the error may quote the rejected document's values: shown as every URL is (agent.redact)
        text = redact_text(" ".join(error.split()))[:MAX_ERROR_LEN] if error else None
        return ConfigReported(version=version, status=status, applied_version=self.applied_version, error=text,
                              restart=restart)

    def _rejected(self, version: int, error: str) -> ConfigReported:
        log.warning("config v%d rejected: %s", version, error)
        return self._report(version, "rejected", error=error)

    # ------------------------------------------------------------ persistence

    def _load(self) -> OwnerState:
        try:
            return OwnerState.model_validate_json(self._path.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValidationError) as exc:  # damaged: start from the local config, which is safe
            log.warning("%s: ignored (%s)", self._path, exc)
            return OwnerState()
        legacy = self._path.with_name(LEGACY_FILE)
        try:
            return OwnerState(good=Document.model_validate_json(legacy.read_bytes()))
        except FileNotFoundError:
            return OwnerState()
        except (OSError, ValidationError) as exc:
            log.warning("%s: ignored (%s)", legacy, exc)
            return OwnerState()

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path, self._state.model_dump_json().encode(), mode=0o600)  # documents may hold passwords

    def save_again(self) -> str:
        """Write the persisted state again (the state dir was lost with it); what was done."""
        with self._lock:
            if self._state == OwnerState():
                return "nothing to keep"
            self._save()
        return f"{self._path.name} written again"

    def _save_quietly(self) -> None:
        try:
            self._save()
        except OSError as exc:
            log.warning("config state not persisted to %s: %s", self._path, exc)

