"""``Transport``: what the pipeline sees of MQTT (outbox + link + state/health + commands + config sync).

Publishing of outbox rows happens only on the link thread (``on_tick``): rows are read in id order
behind a cursor, at most ``window`` unacknowledged at once; a PUBACK with a success reason deletes the
row, a permanent refusal drops it (counted), a transient one retries it after a pause. A PUBACK
saying no subscriber matched (0x10) means nobody will ever get the message, so for the channels in
``outbox.hold_unmatched`` the row stays and the queue is resent with backoff until a subscriber (or a
persistent session) takes it: the guarantee is "delivered to at least one subscriber". On every new
connection the cursor restarts at the oldest row, so whatever was in flight is sent again
(duplicates are possible, losses are not).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import Backoff
from agent.config import AgentConfig
from agent.config_owner import ConfigOwner
from agent.contract import (
    BY_KEY,
    CentreState,
    CommandRequest,
    ConfigReported,
    Event,
    Health,
    OtaJob,
    OtaStatus,
    ReleaseAnnouncement,
    State,
    Topics,
    Versions,
    utc_now,
)
from agent.identity import IdentityPaths
from agent.transport.cert_renewal import CertRenewal, finish_install
from agent.transport.commands import CommandHandler, RecentIds, Reply
from agent.transport.config_sync import ConfigSync
from agent.transport.mqtt_client import MqttLink
from agent.transport.outbox import Item, Outbox, Row
from agent.transport.packet_size import publish_packet_size

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
CMD_IDS_FILE = "cmd_ids.json"
EXPIRE_EVERY_S = 5.0
RETRY_PAUSE_S = 1.0
MAX_TRANSIENT_FAILURES = 10
RESERVED_INFLIGHT = 4  # of the broker's Receive Maximum, kept for state, replies and reports
#: PUBACK reasons that will never succeed for this message: drop it rather than block the queue
PERMANENT_REFUSALS = {0x87, 0x90, 0x95, 0x99}
NO_MATCHING_SUBSCRIBERS = 0x10
#: resend pauses while no subscriber matches (full jitter, from RETRY_PAUSE_S up to this)
UNMATCHED_MAX_PAUSE_S = 15.0
CHANNEL_OF_KIND = {"event": "events", "thumb": "thumbs"}


def _props(content_type: str) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    p.ContentType = content_type
    return p


def _with_historical(payload: bytes) -> bytes:
    """The event JSON with ``historical: true`` (it waited in the outbox through an outage/restart)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(data, dict) or data.get("historical") is True:
        return payload
    data["historical"] = True
    return json.dumps(data, separators=(",", ":")).encode()


class Transport:
    """No-loss MQTT transport of one node; see the module doc and docs/TRANSPORT.md.

    ``config`` owns the node's config (``config/desired`` goes to it); by default one over ``cfg``.
    """

    #: config sections read after start (hot): the health period sets the cadence and the message expiry
    CONFIG_SECTIONS: ClassVar[frozenset[str]] = frozenset({"health"})

    def __init__(self, cfg: AgentConfig, *, boot_id: str, versions: Versions, caps: list[str],
                 on_command: Callable[[CommandRequest], Any] | None = None,
                 config: ConfigOwner | None = None, on_ota_nudge: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.boot_id = boot_id
        self.versions = versions
        self.caps = list(caps)
        self.topics = Topics(cfg.node_id)
        state_dir = cfg.state_dir
        self.outbox = Outbox(state_dir / OUTBOX_FILE, cfg.outbox.max_bytes, cfg.outbox.max_age_s,
                             disk_reserve_bytes=cfg.outbox.disk_reserve_bytes)
        self.commands = CommandHandler(self.topics, boot_id, on_command, RecentIds(state_dir / CMD_IDS_FILE))
        self.config = config or ConfigOwner(cfg)
        self.config_sync = ConfigSync(self.config)
        self.on_ota_nudge = on_ota_nudge
        self.health_period_s = cfg.health.period_s
        self._next_health = math.inf
        finish_install(cfg.mqtt, IdentityPaths(state_dir))
        self.link = MqttLink(cfg.mqtt, cfg.node_id, self)
        self.renewal = CertRenewal(cfg.mqtt, IdentityPaths(state_dir), self.topics,
                                   lambda topic, payload: self.link.publish(topic, payload, qos=1))
        self._props = {"event": _props("application/json"), "thumb": _props("image/jpeg")}
        self._bd_seq = self.outbox.meta("bd_seq")
        self._inflight: dict[int, Row] = {}
        self._cursor = 0
        self._acked: list[int] = []
        self._refused: list[int] = []
        self._failures: dict[int, int] = {}
        self._pause_until = 0.0
        self._unmatched_pauses: Backoff | None = None  # set while no subscriber matches
        self.unmatched = 0  # PUBACKs with 0x10 that kept their row
        self._more = threading.Event()
        self._next_expire = 0.0
        self._max_payload: int | None = None
        self._closed = False
        self._report_lock = threading.RLock()  # see on_message and _publish_report
        self.health_published = 0

    # ------------------------------------------------------------ pipeline API

    def start(self) -> None:
        self._more.set()
        self._next_health = time.monotonic() + min(5.0, self.health_period_s)
        self.config.watch(on_report=self._publish_report)
        self.link.start()

    def reconfigure(self, cfg: AgentConfig) -> None:
        """A hot change of what this reads after start (``CONFIG_SECTIONS``): the health period."""
        self.health_period_s = cfg.health.period_s
        self._next_health = min(self._next_health, time.monotonic() + self.health_period_s)

    def health_due(self, now: float) -> bool:
        """True once per health period (monotonic ``now``); the caller then publishes health."""
        if now < self._next_health:
            return False
        self._next_health = now + self.health_period_s
        return True

    def submit_many(self, items: list[tuple[Event, bytes | None]]) -> None:
        """Thumb then event JSON of each item, all in one outbox transaction; wakes the sender."""
        late = self.link.in_outage
        rows: list[Item] = []
        for event, thumb in items:
            if thumb:
                rows.append(Item("thumb", self.topics.thumbs(event.event_id), bytes(thumb), late))
            rows.append(Item("event", self.topics.events, event.model_dump_json().encode(), late))
        self.outbox.put(rows)
        self._more.set()

    def publish_snapshot(self, jpeg: bytes, event_id: str) -> None:
        """A full-scene picture for the ``snapshot`` command: a thumbnail row (same delivery and limits)."""
        self.outbox.put([Item("thumb", self.topics.thumbs(event_id), bytes(jpeg), self.link.in_outage)])
        self._more.set()

    def publish_health(self, health: Health) -> bool:
        """QoS 0, message expiry two periods; skipped (False) while disconnected."""
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = max(1, math.ceil(2 * self.health_period_s))
        props.ContentType = "application/json"
        mid = self.link.publish(self.topics.health, health.model_dump_json().encode(), qos=0, properties=props)
        self.health_published += mid is not None
        return mid is not None

    @property
    def max_payload(self) -> int | None:
        """Largest thumbnail the broker accepts (its Maximum Packet Size minus our PUBLISH overhead)."""
        size = self.link.max_packet_size
        if size is None:
            return None
        overhead = publish_packet_size(self.topics.thumbs("0" * 36), 0, 1, self._props["thumb"]) + 4
        return max(0, size - overhead)

    def stats(self) -> dict[str, Any]:
        ob = self.outbox
        return {
            "published": ob.acked.get("event", 0),
            "published_thumbs": ob.acked.get("thumb", 0),
            "dropped_events": ob.dropped.get("event", 0),
            "dropped_thumbs": ob.dropped.get("thumb", 0),
            "dropped_events_total": ob.dropped_total.get("event", 0),
            "dropped_thumbs_total": ob.dropped_total.get("thumb", 0),
            "outbox_depth": ob.depth,
            "outbox_bytes": ob.bytes,
            "outbox_oldest_age_s": ob.oldest_age_s(),
            "outbox_limit_bytes": ob.limit_bytes,
            "outbox_disk_limited": ob.disk_limited,
            "outbox_dropping": ob.dropping(),
            "outbox_recovery": dataclasses.asdict(ob.recovery) if ob.recovery else None,
            "unmatched": self.unmatched,
            "waiting_for_subscriber": self._unmatched_pauses is not None,
            "inflight": len(self._inflight),
            "connected": self.link.connected,
            "reconnects": self.link.reconnects,
            "bd_seq": self._bd_seq,
            "max_packet_size": self.link.max_packet_size,
            "commands": dict(self.commands.counts),
            "health_published": self.health_published,
        }

    def flush(self, timeout: float) -> bool:
        """Wait until every row is acknowledged (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth == 0 and not self._inflight:
                return True
            self._more.set()
            time.sleep(0.02)
        return self.outbox.depth == 0 and not self._inflight

    def close(self, timeout: float = 5.0) -> None:
        """Publish retained ``online: false`` (waiting for its PUBACK), disconnect cleanly, close the outbox."""
        if self._closed:
            return
        self._closed = True

        def last_words() -> int | None:
            return self._publish_state(online=False)

        self.link.close(timeout, last_words)
        self.outbox.close()

    # ------------------------------------------------------------ link owner (link thread)

    def will(self) -> tuple[str, bytes]:
        self._bd_seq = self.outbox.incr("bd_seq")
        will = State(online=False, bd_seq=self._bd_seq)
        return self.topics.state, will.model_dump_json(exclude_defaults=True).encode()

    def _publish_state(self, online: bool) -> int | None:
        if online:
            state = State(online=True, bd_seq=self._bd_seq, boot_id=self.boot_id, ts=utc_now(),
                          versions=self.versions, caps=self.caps)
        else:
            state = State(online=False, bd_seq=self._bd_seq, boot_id=self.boot_id, ts=utc_now())
        return self.link.publish(self.topics.state, state.model_dump_json().encode(), qos=1, retain=True)

    def on_link_up(self, session_present: bool) -> None:
        self._inflight.clear()
        self._cursor = 0
        self._failures.clear()
        self._pause_until = 0.0
        # subscribe before the birth: the broker handles one client's packets in order, so a centre that sees
        # `online: true` and sends a command at once finds the node's subscription already in place
        self.link.subscribe(self.topics.subscriptions())
        self._publish_state(online=True)
        self._more.set()
        self.renewal.check()

    def on_link_down(self) -> None:
        self._inflight.clear()
        self._flush_acks()

    def on_ack(self, mid: int, reason: ReasonCode | None) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return
        self._more.set()
        if reason is not None and reason.value == NO_MATCHING_SUBSCRIBERS and self._holds(row):
            self._hold_unmatched(row)
            return
        if reason is None or not reason.is_failure:
            self._acked.append(row.id)
            self._failures.pop(row.id, None)
            if self._unmatched_pauses is not None:
                self._unmatched_pauses = None
                log.info("outbox: a subscriber matches again; held rows are being delivered")
            return
        code = reason.value
        n = self._failures[row.id] = self._failures.get(row.id, 0) + 1
        if code in PERMANENT_REFUSALS or n >= MAX_TRANSIENT_FAILURES:
            log.warning("outbox: %s row %d on %s refused by the broker (%s); dropped", row.kind, row.id, row.topic,
                        reason)
            self._refused.append(row.id)
            self._failures.pop(row.id, None)
        else:
            log.info("outbox: %s row %d refused (%s); retrying", row.kind, row.id, reason)
            self._cursor = min(self._cursor, row.id - 1)
            self._pause_until = time.monotonic() + RETRY_PAUSE_S

    def _holds(self, row: Row) -> bool:
        return CHANNEL_OF_KIND.get(row.kind) in self.cfg.outbox.hold_unmatched

    def _hold_unmatched(self, row: Row) -> None:
        """0x10: keep the row, rewind the cursor to it and pause the queue (order kept), backing off."""
        self.unmatched += 1
        self._cursor = min(self._cursor, row.id - 1)
        now = time.monotonic()
        if self._unmatched_pauses is None:
            self._unmatched_pauses = Backoff(RETRY_PAUSE_S, UNMATCHED_MAX_PAUSE_S)
            log.warning("outbox: no subscriber matches %s (PUBACK 0x10); holding the queue and resending with "
                        "backoff until one does (outbox.hold_unmatched)", row.topic)
        if now >= self._pause_until:  # one step of backoff per round, however many rows came back
            self._pause_until = now + self._unmatched_pauses.next()

    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.ack(acked)
        if self._refused:
            refused, self._refused = self._refused, []
            self.outbox.drop(refused)

    def on_tick(self) -> None:
        self._flush_acks()
        self.renewal.check()
        now = time.monotonic()
        if now >= self._next_expire:
            self._next_expire = now + EXPIRE_EVERY_S
            self.outbox.expire()
        if now < self._pause_until or not self._more.is_set():
            return
        window = max(1, min(self.cfg.mqtt.max_inflight, self.link.receive_maximum - RESERVED_INFLIGHT))
        space = window - len(self._inflight)
        if space <= 0:
            return
        self._more.clear()
        rows = self.outbox.next_rows(self._cursor, space)
        sent, too_big = [], []
        for row in rows:
            if self._too_big(row):
                too_big.append(row.id)
                self._cursor = row.id
                continue
            payload = row.payload
            if row.kind == "event" and self._historical(row):
                payload = _with_historical(payload)
            mid = self.link.publish(row.topic, payload, qos=1, properties=self._props.get(row.kind))
            if mid is None:
                break
            self._inflight[mid] = row
            self._cursor = row.id
            sent.append(row.id)
        self.outbox.mark_attempted(sent)
        if too_big:
            log.warning("outbox: %d message(s) larger than the broker's maximum packet size %s; dropped",
                        len(too_big), self.link.max_packet_size)
            self.outbox.drop(too_big)
        if len(rows) == space or too_big:
            self._more.set()

    def _too_big(self, row: Row) -> bool:
        limit = self.link.max_packet_size
        size = publish_packet_size(row.topic, len(row.payload), 1, self._props.get(row.kind))
        return limit is not None and size > limit

    def _historical(self, row: Row) -> bool:
        return row.late or row.attempts > 0 or row.id <= self.outbox.startup_max_id

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.cmd_req:
            props = getattr(msg, "properties", None)
            reply = self.commands.handle(
                msg.payload,
                response_topic=getattr(props, "ResponseTopic", None),
                correlation=getattr(props, "CorrelationData", None),
                expiry_s=getattr(props, "MessageExpiryInterval", None),
            )
            if reply is not None:
                self._send_reply(reply)
        elif msg.topic == self.topics.config_desired:
            # decided and published under one lock: a commit on the main thread (whose report takes the same
            # lock) cannot slip between this thread's decision and its publish and be overwritten by it
            with self._report_lock:
                report = self.config_sync.handle(msg.payload)
                if report is not None:
                    self._publish_report(report)
        elif msg.topic == Topics.centre_state:
            self._on_centre_state(msg)
        elif msg.topic == self.topics.cert_res:
            self.renewal.handle(msg.payload)
        elif msg.topic == self.topics.ota_job or BY_KEY["fleet_releases"].match(msg.topic) is not None:
            self._on_ota_nudge(msg)

    def _on_ota_nudge(self, msg: mqtt.MQTTMessage) -> None:
        """``ota/job`` or a ``fleet/releases`` announcement: check now. Nothing in it is trusted but "look"."""
        if not msg.payload:
            return
        model = OtaJob if msg.topic == self.topics.ota_job else ReleaseAnnouncement
        try:
            channel = model.model_validate_json(msg.payload).channel
        except ValueError:
            log.info("%s: invalid payload ignored", msg.topic)
            return
        if self.on_ota_nudge is not None:
            self.on_ota_nudge(channel)

    def publish_ota_status(self, status: OtaStatus) -> bool:
        """Retained ``ota/status``; False when not connected (the caller offers it again)."""
        return self.link.publish(self.topics.ota_status, status.model_dump_json(exclude_none=True).encode(),
                                 qos=1, retain=True) is not None

    def _publish_report(self, report: ConfigReported) -> None:
        """Retained, so the centre sees the outcome of its newest document whenever it looks; reports go out
        in the order the config owner decided them (``_report_lock``, re-entrant for the MQTT thread)."""
        with self._report_lock:
            self._publish_report_now(report)

    def _publish_report_now(self, report: ConfigReported) -> None:
        mid = self.link.publish(self.topics.config_reported, report.model_dump_json().encode(), qos=1, retain=True)
        if mid is None:  # the retained config/desired comes again on the next connection, and so does this
            log.info("config/reported v%d %s: not published (not connected)", report.version, report.status)

    def _send_reply(self, reply: Reply) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = reply.expiry_s
        props.ContentType = "application/json"
        if reply.correlation is not None:
            props.CorrelationData = reply.correlation
        try:
            self.link.publish(reply.topic, reply.payload, qos=1, properties=props)
        except ValueError as exc:  # a response topic paho refuses; answer on our own cmd/res instead
            log.warning("command reply to %r failed (%s); using %s", reply.topic, exc, self.topics.cmd_res)
            self.link.publish(self.topics.cmd_res, reply.payload, qos=1, properties=props)

    def _on_centre_state(self, msg: mqtt.MQTTMessage) -> None:
        """A live (not retained) ``online: true`` from the centre: it restarted, so say who we are again."""
        if msg.retain or not msg.payload:
            return
        try:
            centre = CentreState.model_validate_json(msg.payload)
        except ValueError:
            log.debug("centre/state: invalid payload ignored")
            return
        if centre.online:
            self._publish_state(online=True)
