"""``edgecam doctor``: what this node has (facts) and whether it is fit to run (checks).

Checks of the node's config (``--config`` and overrides, as ``edgecam run``): identity files and key
permissions and certificate expiry (``identity``), the broker over mTLS with that identity (``broker``),
the clock and the disk under the outbox (``system``). Output and exit code: ``report``.
"""

from __future__ import annotations

from agent.config import AgentConfig
from agent.doctor.report import Check, exit_code, render

__all__ = ["Check", "exit_code", "node_checks", "render"]


def node_checks(cfg: AgentConfig, service_user: str, offline: bool = False) -> list[Check]:
    from agent.doctor.broker import broker_check
    from agent.doctor.identity import identity_checks, identity_files
    from agent.doctor.report import fact
    from agent.doctor.system import clock_check, disk_check

    out = [fact("node id", cfg.node_id), *identity_checks(cfg, service_user)]
    if not offline:
        out.append(broker_check(cfg, identity_files(cfg)))
    out += [clock_check(), disk_check(cfg)]
    return out
