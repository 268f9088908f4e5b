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
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.backoff import Backoff
from agent.config import format_validation_error
from agent.contract import BY_KEY, CENTRE, Channel, Event, match_topic, node_id_problem
from centre.limits import REFUSED, ThumbLimits
from centre.mqtt import MqttOptions, connect_blocking, make_client
from centre.stats import Stats
from centre.store import Store
from centre.view import EventView

log = logging.getLogger("edgecam.centre")

#: channels the receiver stores their latest message of, per node (the store's ``kind`` is the topic tail)
STATUS_CHANNELS = ("state", "health", "cmd_res", "config_reported", "ota_status")
#: everything the receiver consumes; its subscriptions are these rows of the channel table
CONSUMED = ("events", "thumbs", *STATUS_CHANNELS)
#: the heavy streams go through a shared subscription so several receivers split them
SHARED = frozenset({"events", "thumbs"})
#: reconnect backoff after a lost connection (full jitter, ``agent.backoff``): base and cap in seconds
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0


def status_kind(ch: Channel) -> str:
    """``cmd/res`` for ``{node_id}/cmd/res``: the key the store has always used."""
    return ch.template.split("/", 1)[1]


def subscriptions(group: str) -> list[tuple[str, int]]:
    """Shared for the heavy streams, plain for the per-node status topics, each at its channel's QoS.

    An empty ``group`` subscribes plainly: one receiver only, but Mosquitto 2.0 queues plain subscriptions
    of a persistent session while the receiver is offline, and does not queue shared ones (measured with
    2.0.11: events published while every member of a share group was disconnected never reached it).
    """
    subs = []
    for key in CONSUMED:
        ch = BY_KEY[key]
        if CENTRE not in ch.subscribers:
            raise ValueError(f"channel {key}: the contract does not let the centre subscribe to it")
        shared = f"$share/{group}/" if group and key in SHARED else ""
        subs.append((shared + ch.filter(), ch.qos))
    return subs


class Receiver:
    """Routes one MQTT message to validation and the store; independent of the network loop."""

    def __init__(self, store: Store, view: EventView | None = None) -> None:
        self.store = store
        self.view = view
        self.stats = Stats()
        #: node → thumbnails refused since its refusals began: one log line when an episode starts and one
        #: when it ends, so a flooding node cannot flood the log too (the store counts every refusal)
        self.refusing: dict[str, int] = {}

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
        found = match_topic(topic)
        if found is None:
            raise ValueError("not a channel of the edgecam/v1 contract")
        ch, params = found
        if ch.key not in CONSUMED:
            return  # e.g. centre/state, which also matches the `+/state` subscription
        node_id = params["node_id"]
        problem = node_id_problem(node_id)
        if problem:
            raise ValueError(f"node id: {problem}")
        if ch.key == "events":
            self._event(topic, node_id, payload)
        elif ch.key == "thumbs":
            self._thumb(topic, node_id, params["event_id"], payload)
        elif payload and ch.payload is not None:  # an empty payload is a cleared retained message
            msg = ch.payload.model_validate_json(payload)
            self.store.set_status(node_id, status_kind(ch), json.loads(msg.model_dump_json()))
            self.stats.status += 1

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
        self._episode(node_id, status, len(payload))
        if self.view and status in ("ok", "mismatch"):
            self.view.thumb(event_id, status)
        if status == "ok":
            self.stats.thumbnails += 1
        elif status == "pending":
            self.stats.thumbs_pending += 1
        elif status == "mismatch":
            self.stats.thumbs_bad += 1
            self._invalid(topic, "thumbnail sha256 does not match its event's thumb.sha256 (or no thumb expected)")

    def _episode(self, node_id: str, status: str, size: int) -> None:
        if status in REFUSED:
            self.stats.thumbs_refused += 1
            if node_id not in self.refusing:
                lim = self.store.limits
                log.warning("thumbnails of %s refused (%s: %d bytes; limits: %d per thumbnail, %d pending per "
                            "node, %d pending in all); counting further refusals until one is accepted",
                            node_id, status, size, lim.max_bytes, lim.pending_node_bytes, lim.pending_total_bytes)
            self.refusing[node_id] = self.refusing.get(node_id, 0) + 1
        elif node_id in self.refusing:
            log.warning("thumbnails of %s accepted again after %d refused", node_id, self.refusing.pop(node_id))


def run_listen(opts: MqttOptions, store_dir: Path, *, group: str = "centre", until_idle: float | None = None,
               quiet: bool = False, session_expiry: int = 0, limits: ThumbLimits | None = None) -> int:
    """Receive until SIGINT/SIGTERM or ``until_idle`` seconds without a message; print the summary line.

    With ``session_expiry`` the broker queues events for this receiver while it is down (at least once
    end to end, since nodes forget an event once the broker acknowledged it); that needs a stable client id.
    """
    import paho.mqtt.client as mqtt

    from agent.errors import EdgecamError

    if any(c in group for c in "/+#"):
        raise EdgecamError(f"--group {group!r}: must not contain '/', '+' or '#' ('' for a plain subscription)")
    view = EventView(quiet=quiet)
    with Store(store_dir, receiver=opts.client_id, limits=limits) as store:
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
        delays = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)  # jittered: receivers restarted together spread out
        try:
            while not stop[0]:
                rc = client.loop(0.2)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    delay = delays.next()
                    log.warning("%s: connection lost (%s); reconnecting in %.1fs", opts.url, rc, delay)
                    time.sleep(delay)
                    with contextlib.suppress(OSError):
                        client.reconnect()
                    continue
                delays.reset()
                view.tick()
                if until_idle is not None and time.monotonic() - last[0] >= until_idle:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, old)
            client.disconnect()
        view.summary(receiver.stats)
        for node_id, n in receiver.refusing.items():
            log.warning("thumbnails of %s: %d refused in the episode still open at exit", node_id, n)
    return 0
