"""Per-thread CPU priority (Linux): the interpreter's threads get the cores first.

On a 2-core node the interpreter's two threads keep both cores busy during an invoke. Every other thread
of the agent should use the gaps they leave, not take a core from them: a worker that loses its core in
the middle of a parallel operation stalls the whole invoke until it gets it back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable

#: the capture thread: nicer than the interpreter, but not idle-only (bench, 2 cores: at equal priority
#: invoke took 20% longer; at +10, 3%; idle-only starved video decoding and cost more than it saved)
CAPTURE_NICENESS = 10


def lower_thread_priority(niceness: int = CAPTURE_NICENESS) -> bool:
    """Make the calling thread ``niceness`` steps nicer (best effort; False where threads cannot be reniced)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + niceness))
        return True
    except (AttributeError, OSError):
        return False


def idle_thread_priority() -> bool:
    """Run the calling thread under ``SCHED_IDLE``: it gets a core whenever one is idle, and gives it back at
    once when an interpreter thread wakes up. It still progresses under load (CFS gives it a small weight),
    and the agent's bounded queues stop the rest of the pipeline from running ahead of it.

    Post-processing runs like this (bench, 2 cores: the input copy on the inference thread went from 0.6 to
    0.2 ms, because the inference thread no longer waits for a core after each invoke). Falls back to
    the lowest niceness where ``SCHED_IDLE`` is not available."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread on Linux
        return True
    except (AttributeError, OSError):
        return lower_thread_priority(19)


#: SCHED_FIFO level of the interpreter's threads (``model.priority = "realtime"``): the lowest real-time level,
#: above every normal thread and below the kernel's own; an unprivileged user needs RLIMIT_RTPRIO >= 1
#: (systemd ``LimitRTPRIO=1``, as the bundled unit sets)
REALTIME_PRIORITY = 1


def thread_ids() -> set[int]:
    """This process's threads (Linux ``/proc``); empty where that is not available."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except (OSError, ValueError):
        return set()


def realtime_threads(tids: Iterable[int]) -> bool:
    """Run these threads (0: the caller first) under ``SCHED_FIFO``: nothing at normal priority, in this
    process or another, can then take a core from an invoke in progress; the rest of the agent runs when the
    interpreter waits (for a frame, or at its barriers), and its bounded queues keep it from falling behind.
    The kernel keeps 5% of every second for normal threads whatever real-time threads do.

    ``SCHED_RESET_ON_FORK`` keeps threads these start at normal priority. False, changing nothing, where
    the first thread may not be made real-time (no ``CAP_SYS_NICE``, RLIMIT_RTPRIO 0, not Linux)."""
    policy = getattr(os, "SCHED_FIFO", None)
    if policy is None:
        return False
    policy |= getattr(os, "SCHED_RESET_ON_FORK", 0)
    param = os.sched_param(REALTIME_PRIORITY)
    first, *rest = list(tids) or [0]
    try:
        os.sched_setscheduler(first, policy, param)
    except OSError:
        return False
    for tid in rest:
        with contextlib.suppress(OSError):  # a worker thread that has ended meanwhile
            os.sched_setscheduler(tid, policy, param)
    return True


def normal_priority() -> None:
    """The calling thread back to normal scheduling (after an in-process run: the bench, tests)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def realtime_permitted() -> bool:
    """Whether this process may run threads real-time (tried on a throwaway thread, so nothing else changes)."""
    result: list[bool] = []
    probe = threading.Thread(target=lambda: result.append(realtime_threads([0])), name="rt-probe")
    probe.start()
    probe.join()
    return bool(result and result[0])
