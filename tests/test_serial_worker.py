"""The post-processing worker: order kept, bounded queue, a failure reaches the submitting thread."""

from __future__ import annotations

import threading

import pytest

from agent.serial_worker import SerialWorker, WorkerFailed


def test_calls_run_in_submission_order_on_one_thread():
    seen: list[tuple[int, str]] = []
    w = SerialWorker("t", depth=2)
    for i in range(200):
        w.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    w.drain()
    assert [i for i, _ in seen] == list(range(200))
    assert {name for _, name in seen} == {"t"}
    w.stop()


def test_full_queue_makes_the_submitter_wait():
    gate = threading.Event()
    w = SerialWorker("t", depth=1)
    w.submit(gate.wait)  # running
    w.submit(lambda: None)  # queued: the queue is now full
    blocked = threading.Thread(target=w.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # back-pressure, not an ever-growing queue
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive()
    w.drain()
    w.stop()


def test_a_failure_is_raised_in_the_submitting_thread_and_never_blocks_it():
    w = SerialWorker("t", depth=1)
    w.submit(lambda: 1 / 0)
    with pytest.raises(WorkerFailed, match="ZeroDivisionError"):
        w.drain()
    with pytest.raises(WorkerFailed):
        w.submit(lambda: None)
    w.stop()


def test_stop_runs_what_is_queued_first():
    done: list[int] = []
    w = SerialWorker("t", depth=8)
    for i in range(5):
        w.submit(done.append, i)
    w.stop()
    assert done == [0, 1, 2, 3, 4]
