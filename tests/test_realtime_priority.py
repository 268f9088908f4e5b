"""``model.priority = "realtime"``: the interpreter's own threads (the invoking one and XNNPACK's workers) run
SCHED_FIFO, threads they start do not inherit it, and where it is not permitted the agent says so once and
runs at normal priority. Real interpreter, real kernel scheduling calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.config import DetectConfig, ModelConfig
from agent.thread_priority import normal_priority, realtime_permitted
from agent.vision.detector import Detector

REPO = Path(__file__).resolve().parents[1]


def _policy(tid: int) -> int:
    return os.sched_getscheduler(tid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)


@pytest.mark.skipif(not hasattr(os, "SCHED_FIFO"), reason="no POSIX real-time scheduling here")
def test_realtime_reaches_the_interpreters_worker_threads():
    if not realtime_permitted():
        pytest.skip("real-time priority is not permitted here (no CAP_SYS_NICE, RLIMIT_RTPRIO 0)")
    det = Detector(ModelConfig(threads=3, priority="realtime"), DetectConfig())
    workers = det.lanes[0].runtime.worker_tids
    assert len(workers) == 2  # XNNPACK's pool: threads - 1; the invoking thread is the third
    assert all(_policy(t) == os.SCHED_OTHER for t in workers)  # nothing real-time before it is claimed
    seen: dict[str, int] = {}

    def invoking_thread() -> None:
        assert det.claim_cores(0)
        seen["self"] = _policy(0)
        seen["workers"] = {_policy(t) for t in workers}
        det.runtime.invoke()  # the workers still serve this thread's invokes
        child = threading.Thread(target=lambda: seen.__setitem__("child", _policy(0)))
        child.start()
        child.join()
        normal_priority()
        seen["after"] = _policy(0)

    t = threading.Thread(target=invoking_thread)
    t.start()
    t.join()
    assert seen == {"self": os.SCHED_FIFO, "workers": {os.SCHED_FIFO}, "child": os.SCHED_OTHER,
                    "after": os.SCHED_OTHER}
    assert det.realtime_lanes == 1


def test_normal_priority_leaves_the_threads_alone():
    det = Detector(ModelConfig(threads=2), DetectConfig())
    seen: list[bool] = []
    t = threading.Thread(target=lambda: seen.append(det.claim_cores(0)))
    t.start()
    t.join()
    assert seen == [False] and det.realtime_lanes == 0
    assert all(_policy(tid) == os.SCHED_OTHER for tid in det.lanes[0].runtime.worker_tids)


CLAIM = """
from agent.config import DetectConfig, ModelConfig
from agent.vision.detector import Detector
det = Detector(ModelConfig(threads=2, interpreters=2, priority="realtime"), DetectConfig())
print(det.claim_cores(0), det.claim_cores(1), det.priority, det.realtime_lanes)
"""


def unprivileged() -> list[str]:
    """A command prefix without real-time rights: RLIMIT_RTPRIO 0 and, for root, no CAP_SYS_NICE.

    The privilege is dropped rather than the user changed, so the child still reads the checkout wherever it
    is (a clone in a 0700 folder is closed to ``nobody``).
    """
    cmd = ["prlimit", "--rtprio=0:0"]
    if os.geteuid() == 0:  # root keeps its uid; a capability it lacks cannot come back on exec
        cmd += ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"]
    missing = [tool for tool in ("prlimit", "setpriv") if tool in cmd and shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (util-linux) to drop the real-time privilege")
    return cmd


@pytest.mark.skipif(not hasattr(os, "SCHED_FIFO"), reason="no POSIX real-time scheduling here")
def test_not_permitted_is_one_warning_and_normal_priority(tmp_path):
    """Without CAP_SYS_NICE and RLIMIT_RTPRIO (a node whose unit lacks LimitRTPRIO=1)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    res = subprocess.run([*unprivileged(), sys.executable, "-c", CLAIM], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False", "normal", "0"]
    warnings = [line for line in res.stderr.splitlines() if "model.priority = realtime: not permitted" in line]
    assert len(warnings) == 1, res.stderr  # one warning, not one per interpreter
