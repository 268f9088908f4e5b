"""What a running agent does for OTA; imports no ``tuf`` (``edgecam run`` stays light).

* ``apply_release``: the effective start config is ``local ⊕ release ⊕ centre document``: the current release's
  config layer (``current/config/config.toml``) and its model (``current/model``) go on top of the local layers
  with the same merge and validation as a centre document, and the same refusal of local-only fields
  (``node_id``, ``state_dir``, ``trial``, ``ota``). A release whose layer does not validate ends the start with
  a one-line error; under the unit that is a crash loop and the supervisor reverts the release.
* ``OtaRuntime.poll`` (main loop, at most once a second): tells the supervisor how the trial goes
  (``health.json``: healthy since when, or why not), hands a changed ``status.json`` to the transport for
  ``ota/status``, starts ``edgecam ota check`` (its own process: tuf, downloads and installs never run in the
  agent) on the timer and on an ``ota/job`` or ``fleet/releases`` nudge for the node's channel, and asks for a
  restart when ``current`` points at another release.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, build_config, merge_layers, read_toml
from agent.contract.payloads import OtaStatus
from agent.errors import ConfigError
from agent.ota.install import link_release
from agent.ota.paths import OtaPaths
from agent.ota.state import OtaState, StatusFile
from agent.ota.supervisor import Health, read_health, write_health
from agent.redact import REVEAL

log = logging.getLogger(__name__)

POLL_S = 1.0


def release_layer(state_dir: Path) -> dict[str, Any]:
    """The current release's config layer, with ``model.path`` set to its model; {} without a release."""
    current = OtaPaths(state_dir).current
    if link_release(current) is None:
        return {}
    layer: dict[str, Any] = {}
    config = current / "config" / "config.toml"
    if config.is_file():
        layer = read_toml(config)
    for name, why in AgentConfig.LOCAL_ONLY.items():
        if name in layer:
            raise ConfigError(f"{config}: OTA config may not set {name} ({why})")
    if (current / "model").is_dir():
        layer = merge_layers(layer, {"model": {"path": str(current / "model")}})
    return layer


def apply_release(local: AgentConfig) -> AgentConfig:
    """``local`` with the current release's layer on top (see the module docstring)."""
    layer = release_layer(local.state_dir)
    if not layer:
        return local
    n = link_release(OtaPaths(local.state_dir).current)
    local_data = local.model_dump(mode="json", exclude_unset=True, context=REVEAL)  # real URLs, set fields only
    return build_config(merge_layers(local_data, layer), f"OTA release {n}")


class OtaRuntime:
    """The agent's OTA duties (module docstring); ``nudge`` may come from the MQTT thread, the rest is main."""

    def __init__(self, cfg: AgentConfig, config_path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.paths = OtaPaths(cfg.state_dir)
        self.release = link_release(self.paths.current)
        self.clock = clock
        self._next_poll = 0.0
        self._status_seen: float | None = None
        self._nudged = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._healthy_since: float | None = None
        self.enabled = bool(cfg.ota.repo_url)
        self._next_check = clock() + min(60.0, cfg.ota.check_interval_s) if self.enabled else float("inf")

    def versions(self) -> dict[str, Any]:
        """The release and config version for the node's ``state``."""
        if self.release is None:
            return {}
        return {"release": self.release, "config": f"r{self.release}"}

    def nudge(self, channel: str) -> None:
        if channel == self.cfg.ota.channel and self.enabled:
            self._nudged.set()

    def poll(self, missing: str | None, publish: Callable[[OtaStatus], bool]) -> bool:
        """Once a second at most; True when the agent should restart onto another release."""
        now = self.clock()
        if now < self._next_poll:
            return False
        self._next_poll = now + POLL_S
        self._report_health(missing)
        self._publish_status(publish)
        self._run_check(now)
        return link_release(self.paths.current) != self.release

    def _report_health(self, missing: str | None) -> None:
        if self.release is None:
            return
        trial = OtaState.load(self.paths.state).trial if self.paths.state.exists() else None
        if trial is None or trial.release != self.release:
            return
        if missing is None and self._healthy_since is None:
            self._healthy_since = time.time()
        elif missing is not None:
            self._healthy_since = None
        health = Health(release=self.release, healthy_since=self._healthy_since, reason=missing)
        if read_health(self.paths.dir) != health:
            write_health(self.paths.dir, health)

    def _publish_status(self, publish: Callable[[OtaStatus], bool]) -> None:
        try:
            mtime = self.paths.status.stat().st_mtime_ns
        except OSError:
            return
        if mtime == self._status_seen:
            return
        status = StatusFile.read(self.paths.status)
        if status is not None and publish(status):
            self._status_seen = mtime

    def _run_check(self, now: float) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = None
        if not (self._nudged.is_set() or now >= self._next_check):
            return
        self._nudged.clear()
        self._next_check = now + self.cfg.ota.check_interval_s
        cmd = [sys.executable, "-m", "agent.cli", "ota", "check", "--state-dir", str(self.cfg.state_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        log.info("ota: checking channel %s", self.cfg.ota.channel)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def close(self, grace_s: float = 60.0) -> None:
        """Wait a little for a check in progress, then stop it: every step of it is crash-safe, and a check
        must not outlive the agent that started it (the next start or timer runs it again)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
