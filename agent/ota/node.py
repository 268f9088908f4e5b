"""The node's OTA entry points as the CLI and the units call them: one check, supervise, roll back, status.

Facts about the node come from its config (``ota`` section, ``node_id``, ``state_dir``) and its identity
(``STATE_DIR/identity``: the repository is fetched with the node's own certificate when the URL is https).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent import __version__
from agent.config import AgentConfig
from agent.contract.payloads import OtaStatus
from agent.errors import EdgecamError
from agent.identity import IdentityPaths
from agent.ota.check import Checker, NodeFacts, Refused
from agent.ota.fetcher import NodeFetcher, TlsFiles
from agent.ota.install import Installer, InstallError
from agent.ota.lock import Busy, ota_lock
from agent.ota.paths import OtaPaths
from agent.ota.state import OtaState, StatusFile
from agent.ota.supervisor import Supervisor

#: how long a supervisor decision or a rollback waits for a check's install to finish (an agent venv takes a while)
LOCK_WAIT_S = 600.0

class OtaError(EdgecamError):
    """OTA is not set up on this node (no repository URL, no trusted root)."""


@dataclass
class NodeOta:
    cfg: AgentConfig

    @property
    def paths(self) -> OtaPaths:
        return OtaPaths(self.cfg.state_dir)

    def status_file(self) -> StatusFile:
        return StatusFile(self.paths.make().status, OtaState.load(self.paths.state).running)

    def installer(self) -> Installer:
        return Installer(self.paths)

    def supervisor(self) -> Supervisor:
        return Supervisor(self.installer(), self.status_file(), self.cfg.ota.trial_s,
                          max_starts=self.cfg.trial.max_starts)

    def fetcher(self) -> NodeFetcher:
        url = self.cfg.ota.repo_url or ""
        ident = IdentityPaths(self.cfg.state_dir)
        if url.startswith("https://") and ident.installed():
            return NodeFetcher(TlsFiles(ca=ident.ca_cert, cert=ident.cert, key=ident.key))
        if url.startswith("https://") and self.cfg.mqtt.tls_cert is not None:
            mqtt = self.cfg.mqtt
            return NodeFetcher(TlsFiles(ca=mqtt.tls_ca, cert=mqtt.tls_cert, key=mqtt.tls_key))
        return NodeFetcher(TlsFiles(ca=self.cfg.mqtt.tls_ca) if url.startswith("https://") else None)

    def check(self, clock_synced: Callable[[], bool] | None = None, install: bool = True) -> OtaStatus:
        """One check and, when a release is due, its install and switch to trial; the final status.

        A check already at work (timer and nudge at once) makes this one a no-op that reports nothing."""
        try:
            with ota_lock(self.paths.dir):
                return self._check(clock_synced, install)
        except Busy as exc:
            return OtaStatus(state="checking", error=str(exc))

    def _check(self, clock_synced: Callable[[], bool] | None, install: bool) -> OtaStatus:
        from agent.events.clock import clock_synced as kernel_synced

        ota = self.cfg.ota
        if not ota.repo_url:
            raise OtaError("ota.repo_url is not set: this node has no update repository")
        paths = self.paths.make()
        status = self.status_file()
        facts = NodeFacts(node_id=self.cfg.node_id, device_type=ota.device_type, agent_version=__version__,
                          channel=ota.channel, repo_url=ota.repo_url, root=ota.root or paths.bootstrap_root,
                          reserve_bytes=ota.disk_reserve_bytes)
        synced = clock_synced or (kernel_synced if ota.require_clock_sync else lambda: True)
        checker = Checker(facts, paths, self.fetcher(), status, synced)
        try:
            plan = checker.run()
        except Refused as r:
            return status(r.state, r.release, r.reason)
        if not install:
            return status("verifying", plan.release.release)
        status("installing", plan.release.release)
        try:
            self.installer().install(plan, ota.commit_window_s)
        except InstallError as exc:  # the same signed bundle fails the same way: not retried on every check
            installer = self.installer()
            state = installer.state()
            state.failed[plan.release.release] = f"install: {exc}"
            state.save(paths.state)
            return status("refused", plan.release.release, f"install: {exc}")
        return status("trial", plan.release.release)

    def rollback(self, reason: str = "rolled back by hand (edgecam ota rollback)") -> int | None:
        with ota_lock(self.paths.dir, wait_s=LOCK_WAIT_S):
            return self._rollback(reason)

    def supervise(self, event: str) -> str:
        """One supervisor decision (``start``, ``failure``, ``tick``, ``boot``) under the OTA lock."""
        sup = self.supervisor()
        actions = {"start": sup.on_start, "failure": sup.on_failure, "tick": sup.tick, "boot": sup.tick}
        if event not in actions:
            raise OtaError(f"supervise {event!r}: one of {', '.join(actions)}")
        with ota_lock(self.paths.dir, wait_s=LOCK_WAIT_S):
            return actions[event]()

    def _rollback(self, reason: str) -> int | None:
        installer = self.installer()
        state = installer.state()
        n = state.trial.release if state.trial else state.running
        running = installer.revert_commit(reason)
        status = self.status_file()
        status.running = running
        status("rolled_back", n, reason)
        return running
