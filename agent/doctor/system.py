"""The node's clock and the disk under its outbox.

Clock: the same source as ``clock_synced`` in health and events (``agent.events.clock``): the kernel's
NTP state, else timesyncd's flag. Unsynchronised is a warning, not a failure: the agent still runs and
marks its events ``clock_synced: false``; but a clock far off also breaks TLS (certificates look not yet
valid or expired), which the certificate and broker checks then report as failures.

Disk: the outbox holds up to ``outbox.max_bytes`` and leaves ``outbox.disk_reserve_bytes`` free to
others; it can grow into its own file plus the file system's free space less the reserve (as
``Outbox._limit`` computes). Room for less than ``max_bytes`` is a warning (an outage shorter than
planned fills it); no room above the reserve is a failure (the outbox keeps only a small working set and
drops the rest).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.doctor.report import Check, fail, ok, warn
from agent.events.clock import TIMESYNCD_FLAG, kernel_clock_synced


def clock_check(kernel: Callable[[], bool | None] = kernel_clock_synced, flag: Path = TIMESYNCD_FLAG) -> Check:
    name = "clock"
    state = kernel()
    how = "kernel NTP state"
    if state is None and flag.parent.is_dir():
        state, how = flag.exists(), "systemd-timesyncd"
    if state is None:
        return warn(name, "cannot tell whether the clock is synchronised here (events say clock_synced: true)")
    if state:
        return ok(name, f"synchronised ({how})")
    return warn(name, f"not synchronised ({how}): events are marked clock_synced: false until NTP (chrony, "
                      "systemd-timesyncd) disciplines the clock; check the network's NTP access")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def disk_check(cfg: AgentConfig) -> Check:
    name = "disk for the outbox"
    state = Path(cfg.state_dir)
    try:
        st = os.statvfs(_existing(state))
    except OSError as exc:
        return fail(name, f"{state}: {exc.strerror}")
    free = st.f_bavail * st.f_frsize
    from agent.transport.facade import OUTBOX_FILE

    own = sum(p.stat().st_size for p in state.glob(f"{OUTBOX_FILE}*") if p.is_file())
    reserve, cap = cfg.outbox.disk_reserve_bytes, cfg.outbox.max_bytes
    room = own + free - reserve
    where = f"{state}: {mib(free)} free, reserve {mib(reserve)}"
    if room <= 0:
        return fail(name, f"{where}: no room for the outbox (it keeps a small working set and drops the rest); "
                          "free space or lower outbox.disk_reserve_bytes")
    if room < cap:
        return warn(name, f"{where}: the outbox can hold {mib(room)} of its outbox.max_bytes {mib(cap)}")
    return ok(name, f"{where}: room for outbox.max_bytes {mib(cap)}")
