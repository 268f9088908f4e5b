"""PUBACK 0x10 "No matching subscribers": the broker will give the message to nobody, so it is not delivered.

Real Mosquitto, no subscriber at first: the node keeps the rows and resends them (with backoff) until a
subscriber exists, then they arrive in order. ``outbox.hold_unmatched = []`` restores "the broker has it".
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.transport import Transport
from tests.transport_util import Subscriber, make_cfg, make_event, versions
from tests.waiting import wait_until

NODE = "node-t"


def answered(t: Transport, n: int) -> bool:
    """The broker answered ``n`` PUBACKs (deleted rows, or rows kept because nobody subscribed)."""
    st = t.stats()
    return st["inflight"] == 0 and st["published"] + st.get("unmatched", 0) >= n


def test_events_nobody_subscribed_to_stay_queued_until_someone_does(tmp_path: Path, broker) -> None:
    t = Transport(make_cfg(broker.url, tmp_path / "s"), boot_id="boot-u", versions=versions(), caps=[])
    t.start()
    sub = None
    try:
        events = [make_event(i) for i in range(5)]
        t.submit_many([(e, b"\xff\xd8" + bytes(500)) for e in events])
        assert wait_until(lambda: answered(t, 5), timeout=20), t.stats()
        st = t.stats()
        assert st["published"] == 0 and st["outbox_depth"] == 10, st  # nobody got them: nothing counts as sent
        assert st["waiting_for_subscriber"]
        sub = Subscriber(broker.port, topic=f"edgecam/v1/{NODE}/#")
        assert t.flush(30), t.stats()
        ids = {ev.event_id for ev in events}

        def got() -> list[str]:  # acknowledged to the node first, delivered to the subscriber after
            return [e for e in (json.loads(m.payload)["event_id"] for m in sub.on("/events")) if e in ids]

        assert wait_until(lambda: len(got()) >= 5, timeout=30), got()
        assert got()[:5] == [e.event_id for e in events]
        assert len(sub.on("/thumbs/" + events[0].event_id)) >= 1
        assert t.stats()["published"] == 5 and not t.stats()["waiting_for_subscriber"]
    finally:
        t.close()
        if sub is not None:
            sub.close()


def test_hold_unmatched_off_counts_the_broker_as_the_destination(tmp_path: Path, broker) -> None:
    cfg = make_cfg(broker.url, tmp_path / "s", outbox={"hold_unmatched": []})
    t = Transport(cfg, boot_id="boot-u", versions=versions(), caps=[])
    t.start()
    try:
        t.submit_many([(make_event(0), None)])
        assert t.flush(20), t.stats()
        assert t.stats()["published"] == 1 and t.stats()["unmatched"] == 0
    finally:
        t.close()
