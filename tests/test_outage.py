"""No loss through broker outages and a SIGKILLed publisher (real Mosquitto, real processes).

The broker keeps sessions across restarts here (``persistent_broker``) so the *test subscriber* does not
miss messages while it reconnects; the node's delivery guarantee comes from its outbox alone, which is
what these tests check: every submitted event reaches the subscriber (duplicates allowed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.contract import Topics
from agent.transport import Transport
from agent.transport.facade import OUTBOX_FILE
from agent.transport.outbox import Outbox
from tests.conftest import REPO
from tests.transport_util import Subscriber, make_cfg, make_event, persistent_broker, versions
from tests.waiting import wait_until

NODE = "node-t"


def first_occurrences(events: list[dict]) -> list[dict]:
    seen, out = set(), []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [10, 60])
def test_broker_outage_mid_stream_loses_no_event(tmp_path: Path, processes, outage_s: int) -> None:
    broker = processes.adopt(persistent_broker(tmp_path / "b").start())
    sub = Subscriber(broker.port, topic=f"edgecam/v1/{NODE}/#", persistent=True, client_id="centre-sub")
    t = Transport(make_cfg(broker.url, tmp_path / "s"), boot_id="boot-o", versions=versions(), caps=[])
    t.start()
    submitted: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            ev = make_event(i)
            t.submit_many([(ev, b"\xff\xd8" + bytes(2000) if i % 3 == 0 else None)])
            submitted.append(ev.event_id)
            i += 1
            time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert sub.wait_for(lambda: len(sub.events()) >= 20)  # streaming live
        broker.stop()
        live = {e["event_id"] for e in sub.events()}  # delivered before the outage: published live
        time.sleep(outage_s)  # the outage itself
        # what waited in the node's outbox through the outage: submitted during it (late) or sent unacknowledged
        held = {json.loads(r.payload)["event_id"] for r in t.outbox.next_rows(0, 1_000_000)
                if r.kind == "event" and (r.late or r.attempts > 0)}
        broker.start()
        assert sub.wait_for(lambda: any(e["event_id"] not in held and e["event_id"] not in live
                                        for e in sub.events()), timeout=60)  # streaming live again
    finally:
        stop.set()
        producer.join()
    try:
        assert held  # the outage was real: rows waited in the outbox
        assert t.flush(60), t.stats()
        ids = set(submitted)
        assert sub.wait_for(lambda: ids <= {e["event_id"] for e in sub.events()}, timeout=60), (
            f"missing {len(ids - {e['event_id'] for e in sub.events()})} of {len(ids)}")
        events = first_occurrences(sub.events())
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)  # order per node kept
        historical = {e["event_id"] for e in sub.events() if e["historical"]}
        assert held <= historical, f"{len(held - historical)} of {len(held)} held events not marked historical"
        assert not live & {e["event_id"] for e in events if e["historical"]}  # a live first delivery is not
        st = t.stats()
        assert st["reconnects"] >= 1 and st["dropped_events"] == 0 and st["dropped_thumbs"] == 0
        assert st["published"] >= len(ids)
    finally:
        t.close()
        sub.close()
        broker.stop()


class Proxy:
    """A TCP proxy in front of the broker that can hold back the broker's replies (PUBACKs) and cut links."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.hold = threading.Event()
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, from_broker: bool) -> None:
        try:
            while data := src.recv(65536):
                while from_broker and self.hold.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        """Drop every connection (what a NAT timeout or a flaky radio link does)."""
        import socket

        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns = []
        self.hold.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


def test_unacknowledged_rows_are_resent_after_the_link_drops(tmp_path: Path, processes) -> None:
    """Published but never PUBACKed (the link died first): the rows stay and go out again, flagged."""
    broker = processes.adopt(persistent_broker(tmp_path / "b").start())
    proxy = Proxy(broker.port)
    sub = Subscriber(broker.port, topic=f"edgecam/v1/{NODE}/events")
    t = Transport(make_cfg(f"mqtt://127.0.0.1:{proxy.port}", tmp_path / "s"), boot_id="boot-p", versions=versions(),
                  caps=[])
    try:
        t.start()
        deadline = time.monotonic() + 10
        while not t.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.02)
        proxy.hold.set()
        events = [make_event(i) for i in range(10)]
        t.submit_many([(e, None) for e in events])
        assert sub.wait_for(lambda: len(sub.on("/events")) >= 10)  # the broker got them …
        time.sleep(0.3)
        assert t.stats()["outbox_depth"] == 10 and t.stats()["inflight"] == 10  # … but no PUBACK came back
        proxy.cut()
        assert t.flush(20), t.stats()
        assert sub.wait_for(lambda: len(sub.on("/events")) >= 20)
        got = sub.events()
        assert [e["event_id"] for e in got[10:]] == [e.event_id for e in events]  # resent, in order
        assert not any(e["historical"] for e in got[:10]) and all(e["historical"] for e in got[10:])
        assert t.stats()["reconnects"] >= 1
    finally:
        t.close()
        proxy.close()
        sub.close()
        broker.stop()


class Publisher:
    """``python -m tests.transport_util`` in a process: the node's transport submitting ``count`` events.

    ``submitted`` lists the event ids in the order the process printed them (each after its outbox ``put``
    returned). ``kill``/``wait`` also wait for the reader thread, so ``submitted`` is complete afterwards.
    """

    def __init__(self, broker_url: str, state_dir: Path, count: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.transport_util", "--url", broker_url, "--state-dir", str(state_dir),
             "--count", str(count), "--interval", "0.005", "--thumb-bytes", "1000"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    @property
    def submitted(self) -> list[str]:
        return [ln.split()[1] for ln in list(self.lines) if ln.startswith("submitted")]

    def wait_submitted(self, n: int, timeout: float = 60.0) -> None:
        """Until the process printed ``n`` submissions (a deadline for progress that will come)."""
        if not wait_until(lambda: len(self.submitted) >= n or self.proc.poll() is not None, timeout):
            raise TimeoutError(f"publisher printed {len(self.submitted)} submissions in {timeout}s, wanted {n}")
        assert len(self.submitted) >= n, f"publisher exited {self.proc.returncode}: {self.lines[-3:]}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait(10)

    stop = kill  # what the ``processes`` fixture calls at the end of the test

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)  # stdout is closed once the process is gone


def _states(sub: Subscriber) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on("/state") if m.topic == Topics(NODE).state]


def _outbox_event_ids(state_dir: Path) -> list[str]:
    """The events the node's outbox holds (what a restarted node has left to send), read from its file."""
    outbox = Outbox(state_dir / OUTBOX_FILE, max_bytes=1 << 40, max_age_s=1e9)
    try:
        return [json.loads(r.payload)["event_id"] for r in outbox.next_rows(0, 1_000_000) if r.kind == "event"]
    finally:
        outbox.close()


@pytest.mark.slow
def test_sigkilled_publisher_delivers_everything_after_restart(tmp_path: Path, processes) -> None:
    """What the outbox holds at a restart is replayed, flagged historical; nothing submitted is lost.

    Events the broker accepted before it went away may reach the subscriber live (``historical: false``)
    after the restart: the persistent session queued them. So the expected replay is read from the outbox
    file at the restart, not guessed from what the subscriber had seen by then.
    """
    broker = processes.adopt(persistent_broker(tmp_path / "b").start())
    sub = Subscriber(broker.port, topic=f"edgecam/v1/{NODE}/#", persistent=True, client_id="centre-sub")
    state_dir = tmp_path / "node-state"

    def publishers(*args) -> Publisher:
        return processes.adopt(Publisher(*args))

    try:
        # 1: killed mid-stream while connected (rows in flight): the broker publishes the Will
        run1 = publishers(broker.url, state_dir, 1_000_000)
        run1.wait_submitted(200)
        run1.kill()
        assert sub.wait_for(lambda: any(not s["online"] for s in _states(sub)), timeout=20)
        will = _states(sub)[-1]
        births = [s for s in _states(sub) if s["online"]]
        assert will == {"online": False, "bd_seq": births[-1]["bd_seq"]}  # the Will of the last connection
        # 2: restarted, then the broker goes away and the node is killed with a backlog in its outbox
        run2 = publishers(broker.url, state_dir, 1_000_000)
        run2.wait_submitted(100)
        broker.stop()
        after_stop = len(run2.submitted)  # submitted from here on, no broker could have acknowledged them
        run2.wait_submitted(after_stop + 300)
        run2.kill()
        backlog = _outbox_event_ids(state_dir)
        assert set(run2.submitted[after_stop:]) <= set(backlog)
        # what reached the outbox: a SIGKILL between a put and its "submitted" line leaves a row unprinted
        submitted = set(run1.submitted) | set(run2.submitted) | set(backlog)

        # 3: broker back, node restarted without new events: the backlog is replayed, historical
        broker.start()
        run3 = publishers(broker.url, state_dir, 0)
        assert run3.wait(90) == 0, run3.lines[-3:]
        flushed = json.loads(run3.lines[-1].split(maxsplit=2)[2])
        assert flushed["published"] == len(backlog) and flushed["dropped_events"] == 0
        ids = set(submitted)
        assert sub.wait_for(lambda: ids <= {e["event_id"] for e in sub.events()}, timeout=30), (
            f"missing {len(ids - {e['event_id'] for e in sub.events()})} of {len(ids)} submitted events")
        historical = {e["event_id"] for e in sub.events() if e["historical"]}
        assert set(backlog) <= historical, f"{len(set(backlog) - historical)} outbox rows not replayed historical"
        # run 3 stopped gracefully: its offline state comes after its events (another topic, so wait for it too)
        assert sub.wait_for(lambda: _states(sub)[-1]["online"] is False, timeout=10)
        assert max(s["bd_seq"] for s in _states(sub)) > will["bd_seq"]
    finally:
        sub.close()
        broker.stop()
