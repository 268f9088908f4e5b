"""``edgecam centre listen``: subscribe to the fleet, validate every payload, keep it in the store.

Events and thumbnails come through a shared subscription (``$share/{group}/…``) so several receivers
split the load; state, health, command replies and reported config are small and go to every
receiver (non-shared). A payload that fails the contract models is counted and logged with its
topic; nothing a node sends can stop the receiver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config import format_validation_error
from agent.contract import (
    ROOT,
    CommandResponse,
    ConfigReported,
    Event,
    Health,
    OtaStatus,
    State,
)
from centre.mqtt import MqttOptions, connect_blocking, make_client
from centre.store import Store
from centre.view import EventView

log = logging.getLogger("edgecam.centre")

NOT_NODES = frozenset({"centre", "fleet", "enrol"})
STATUS_MODELS: dict[str, type[BaseModel]] = {
    "state": State,
    "health": Health,
    "cmd/res": CommandResponse,
    "config/reported": ConfigReported,
    "ota/status": OtaStatus,
}


def subscriptions(group: str) -> list[tuple[str, int]]:
    """Shared for the heavy streams, plain for the per-node status topics.

    An empty ``group`` subscribes plainly: one receiver only, but Mosquitto 2.0 queues plain subscriptions
    of a persistent session while the receiver is offline, and does not queue shared ones (measured with
    2.0.11: events published while every member of a share group was disconnected never reached it).
    """
    prefix = f"$share/{group}/" if group else ""
    shared = [f"{prefix}{ROOT}/+/events", f"{prefix}{ROOT}/+/thumbs/+"]
    plain = [f"{ROOT}/+/{kind}" for kind in STATUS_MODELS]
    return [(t, 1) for t in shared + plain]


@dataclass
class Stats:
    """What this receiver process saw (the store holds the union of all receivers)."""

    events: int = 0
    duplicates: int = 0
    thumbnails: int = 0
    thumbs_pending: int = 0
    thumbs_bad: int = 0
    status: int = 0
    invalid: int = 0
    errors: int = 0
    event_ids: set[str] = field(default_factory=set)
    tracks: set[tuple[str, str, str, int]] = field(default_factory=set)

    def line(self) -> str:
        return (f"summary: events={self.events} unique_event_ids={len(self.event_ids)} tracks={len(self.tracks)} "
                f"thumbnails={self.thumbnails} invalid={self.invalid}")


class Receiver:
    """Routes one MQTT message to validation and the store; independent of the network loop."""

    def __init__(self, store: Store, view: EventView | None = None) -> None:
        self.store = store
        self.view = view
        self.stats = Stats()

    def _invalid(self, topic: str, error: str) -> None:
        self.stats.invalid += 1
        log.warning("invalid payload on %s: %s", topic, error)
        self.store.add_invalid(topic, error)

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            self._route(topic, payload)
        except ValidationError as exc:
            self._invalid(topic, format_validation_error(exc))
        except (ValueError, UnicodeDecodeError) as exc:  # JSON errors, unsafe ids
            self._invalid(topic, str(exc).splitlines()[0])
        except sqlite3.Error as exc:
            self.stats.errors += 1
            log.error("store error on %s: %s", topic, exc)

    def _route(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 4 or "/".join(parts[:2]) != ROOT:
            raise ValueError("not an edgecam/v1 node topic")
        node_id, rest = parts[2], "/".join(parts[3:])
        if node_id in NOT_NODES:
            return
        if rest == "events":
            self._event(topic, node_id, payload)
        elif len(parts) == 5 and parts[3] == "thumbs":
            self._thumb(topic, node_id, parts[4], payload)
        elif rest in STATUS_MODELS:
            if not payload:  # a cleared retained message
                return
            msg = STATUS_MODELS[rest].model_validate_json(payload)
            self.store.set_status(node_id, rest, json.loads(msg.model_dump_json()))
            self.stats.status += 1
        else:
            raise ValueError(f"unexpected topic level {rest!r}")

    def _event(self, topic: str, node_id: str, payload: bytes) -> None:
        ev = Event.model_validate_json(payload)
        if ev.node_id != node_id:
            raise ValueError(f"node_id {ev.node_id!r} in the payload differs from the topic's")
        res = self.store.add_event(ev)
        self.stats.events += 1
        self.stats.duplicates += 0 if res.new else 1
        self.stats.event_ids.add(ev.event_id)
        self.stats.tracks.add((ev.node_id, ev.camera_id, ev.boot_id, ev.track_id))
        if res.new and res.thumb == "ok":
            self.stats.thumbnails += 1
        if self.view:
            self.view.event(ev, res.thumb, duplicate=not res.new)

    def _thumb(self, topic: str, node_id: str, event_id: str, payload: bytes) -> None:
        if not payload:
            raise ValueError("empty thumbnail")
        status = self.store.add_thumb(node_id, event_id, payload)
        if self.view and status in ("ok", "mismatch"):
            self.view.thumb(event_id, status)
        if status == "ok":
            self.stats.thumbnails += 1
        elif status == "pending":
            self.stats.thumbs_pending += 1
        elif status == "mismatch":
            self.stats.thumbs_bad += 1
            self._invalid(topic, "thumbnail sha256 does not match its event's thumb.sha256 (or no thumb expected)")


def run_listen(opts: MqttOptions, store_dir: Path, *, group: str = "centre", until_idle: float | None = None,
               quiet: bool = False, session_expiry: int = 0) -> int:
    """Receive until SIGINT/SIGTERM or ``until_idle`` seconds without a message; print the summary line.

    With ``session_expiry`` the broker queues events for this receiver while it is down (at least once
    end to end, since nodes forget an event once the broker acknowledged it); that needs a stable client id.
    """
    import paho.mqtt.client as mqtt

    from agent.errors import EdgecamError

    if any(c in group for c in "/+#"):
        raise EdgecamError(f"--group {group!r}: must not contain '/', '+' or '#' ('' for a plain subscription)")
    view = EventView(quiet=quiet)
    with Store(store_dir, receiver=opts.client_id) as store:
        receiver = Receiver(store, view)
        last = [time.monotonic()]
        subacks: list[Any] = []
        client = make_client(opts)

        def on_message(_c, _u, msg) -> None:
            last[0] = time.monotonic()
            receiver.handle(msg.topic, msg.payload)

        def on_subscribe(_c, _u, _mid, codes, _props) -> None:
            subacks.extend(codes)

        def on_connect(c, _u, _flags, reason, _props) -> None:
            if not reason.is_failure:
                c.subscribe(subscriptions(group))

        # handlers first: a persistent session's queued messages may come right behind the CONNACK
        client.on_message, client.on_subscribe = on_message, on_subscribe
        connect_blocking(client, opts, session_expiry=session_expiry)
        client.on_connect = on_connect
        client.subscribe(subscriptions(group))
        deadline = time.monotonic() + 10
        while not subacks and time.monotonic() < deadline:
            client.loop(0.1)
        refused = [c for c in subacks if c.is_failure]
        if not subacks or refused:
            raise EdgecamError(f"{opts.url}: subscriptions refused ({refused or 'no SUBACK'})")
        view.started(opts.url, group)

        stop = [False]

        def on_signal(_sig, _frame) -> None:
            stop[0] = True

        old = signal.signal(signal.SIGTERM, on_signal)
        last[0] = time.monotonic()
        backoff = 0.5
        try:
            while not stop[0]:
                rc = client.loop(0.2)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    log.warning("%s: connection lost (%s); reconnecting in %.1fs", opts.url, rc, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    with contextlib.suppress(OSError):
                        client.reconnect()
                    continue
                backoff = 0.5
                view.tick()
                if until_idle is not None and time.monotonic() - last[0] >= until_idle:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, old)
            client.disconnect()
        view.summary(receiver.stats)
    return 0
