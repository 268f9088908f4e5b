"""Per-thread CPU priority (Linux): the interpreter's threads get the cores first.

On a 2-core node the interpreter's two threads keep both cores busy during an invoke. Every other thread
of the agent should use the gaps they leave, not take a core from them: a worker that loses its core in
the middle of a parallel operation stalls the whole invoke until it gets it back.
"""

from __future__ import annotations

import os
import threading

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
