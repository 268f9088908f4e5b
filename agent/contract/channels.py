"""The channel table of MQTT contract v1: every topic anyone may use, and who may use it.

One row per channel. Everything else that names a topic is generated from this table, so the broker
ACL, the AsyncAPI document and each side's subscriptions cannot drift apart:

- ``Topics`` (below): the concrete topics of one node, used by the node and the centre's command client;
- ``agent.contract_docs``: the AsyncAPI document;
- ``provisioning.broker_config``: the broker ACL (node ``pattern`` lines, centre ``user`` lines, loopback);
- ``centre.receiver``: the centre's subscriptions; ``agent.transport.facade``: the node's subscriptions;
- ``models.bench.meter``: what the bench counts on the uplink.

A channel nothing implements is not in the table: a new channel's row comes with its code.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass

from agent.contract.payloads import (
    CentreState,
    CommandRequest,
    CommandResponse,
    ConfigDesired,
    ConfigReported,
    EnrolReply,
    EnrolRequest,
    Event,
    Health,
    OtaJob,
    OtaStatus,
    Payload,
    ReleaseAnnouncement,
    State,
)

ROOT = "edgecam/v1"

#: Who holds a certificate the broker knows, mapped to the template parameter that is that identity's own
#: certificate CN (so the ACL confines it with ``%u``), or None for an identity with rights on every node.
#: ``claim`` is a node that has no certificate yet: it logs in on the broker's enrolment listener with a
#: claim id (username) and the secret of its claim token (password), and owns ``enrol/{claim_id}/…`` only.
NODE, CENTRE, CLAIM = "node", "centre", "claim"
IDENTITIES: dict[str, str | None] = {NODE: "node_id", CENTRE: None, CLAIM: "claim_id"}

_WILDCARDS = frozenset("/+#")


@dataclass(frozen=True)
class Channel:
    """One row of the table; ``template`` is relative to ``edgecam/v1/`` and each ``{param}`` is one level."""

    key: str
    template: str
    publishers: frozenset[str]
    subscribers: frozenset[str]
    qos: int
    retain: bool
    payload: type[Payload] | None  # None: raw JPEG bytes
    description: str
    #: its payload may carry credentials (a config document's broker or camera URL): nobody anonymous reads it
    holds_secrets: bool = False

    def __post_init__(self) -> None:
        for level, param in zip(self.levels, self.level_params, strict=True):
            if param is None and ("{" in level or "}" in level or _WILDCARDS & set(level)):
                raise ValueError(f"channel {self.key}: template level {level!r} must be a literal or one {{param}}")
        unknown = (self.publishers | self.subscribers) - IDENTITIES.keys()
        if unknown:
            raise ValueError(f"channel {self.key}: unknown identities {sorted(unknown)}")

    @property
    def levels(self) -> list[str]:
        return self.template.split("/")

    @property
    def level_params(self) -> list[str | None]:
        """The parameter name of each level, or None for a literal level."""
        out: list[str | None] = []
        for level in self.levels:
            parsed = list(string.Formatter().parse(level))
            whole = len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] and not parsed[0][2]
            out.append(parsed[0][1] if whole else None)
        return out

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(p for p in self.level_params if p is not None)

    @property
    def address(self) -> str:
        return f"{ROOT}/{self.template}"

    @property
    def direction(self) -> str:
        return f"{' + '.join(sorted(self.publishers))} → {' + '.join(sorted(self.subscribers))}"

    @property
    def content_type(self) -> str:
        return "image/jpeg" if self.payload is None else "application/json"

    def topic(self, **params: str) -> str:
        """The concrete topic; every parameter must be one non-empty level without wildcards."""
        for name in self.params:
            value = params.get(name)
            if not value or _WILDCARDS & set(value):
                raise ValueError(f"{self.address}: {name} {value!r} is not a single topic level")
        return self.address.format(**params)

    def filter(self, **fixed: str) -> str:
        """A subscription filter: the given parameters filled in, the others ``+``."""
        return self.address.format(**{p: fixed.get(p, "+") for p in self.params})

    def acl_topic(self, identity: str) -> str:
        """The ACL topic for ``identity``: its own parameter becomes ``%u``, any other ``+``."""
        own = IDENTITIES[identity]
        return self.address.format(**{p: "%u" if p == own else "+" for p in self.params})

    def match(self, topic: str) -> dict[str, str] | None:
        """The parameters of ``topic`` if it is an instance of this channel, else None."""
        levels = topic.split("/")
        root = ROOT.split("/")
        if levels[: len(root)] != root or len(levels) - len(root) != len(self.levels):
            return None
        params: dict[str, str] = {}
        for got, want, param in zip(levels[len(root):], self.levels, self.level_params, strict=True):
            if param is None:
                if got != want:
                    return None
            elif not got or _WILDCARDS & set(got):
                return None
            else:
                params[param] = got
        return params


def _row(key: str, template: str, pub: Iterable[str], sub: Iterable[str], qos: int, retain: bool,
         payload: type[Payload] | None, description: str, holds_secrets: bool = False) -> Channel:
    return Channel(key, template, frozenset(pub), frozenset(sub), qos, retain, payload, description, holds_secrets)


CHANNELS: tuple[Channel, ...] = (
    _row("state", "{node_id}/state", {NODE}, {CENTRE}, 1, True, State,
         "Birth/death certificate, also the MQTT Will; republished on every connect and when the centre comes "
         "online"),
    _row("health", "{node_id}/health", {NODE}, {CENTRE}, 0, False, Health,
         "Periodic health; message expiry 2 × period"),
    _row("events", "{node_id}/events", {NODE}, {CENTRE}, 1, False, Event,
         "Track events; delivery at least once, consumers upsert by event_id"),
    _row("thumbs", "{node_id}/thumbs/{event_id}", {NODE}, {CENTRE}, 1, False, None,
         "Raw JPEG bytes of the thumbnail an event references (MQTT 5 content type image/jpeg)"),
    _row("cmd_req", "{node_id}/cmd/req", {CENTRE}, {NODE}, 1, False, CommandRequest,
         "Commands; MQTT 5 response topic and correlation data honoured; repeated cmd_id ignored"),
    _row("cmd_res", "{node_id}/cmd/res", {NODE}, {CENTRE}, 1, False, CommandResponse, "Command replies"),
    _row("config_desired", "{node_id}/config/desired", {CENTRE}, {NODE}, 1, True, ConfigDesired,
         "Desired agent config", holds_secrets=True),
    _row("config_reported", "{node_id}/config/reported", {NODE}, {CENTRE}, 1, True, ConfigReported,
         "Applied config version or rejection reason"),
    _row("ota_job", "{node_id}/ota/job", {CENTRE}, {NODE}, 1, True, OtaJob,
         "A nudge to check the node's OTA channel now; trust comes from the TUF metadata, never from this message"),
    _row("ota_status", "{node_id}/ota/status", {NODE}, {CENTRE}, 1, True, OtaStatus,
         "Each step of an over-the-air update (checking, downloading with bytes, verifying, installing, trial, "
         "committed, rolled_back, refused with the reason)"),
    _row("fleet_releases", "fleet/releases/{channel}", {CENTRE}, {NODE, CENTRE}, 1, True, ReleaseAnnouncement,
         "The channel's newest release and TUF timestamp version (nodes read it as a nudge to check; only the "
         "centre writes)"),
    # The centre may read it too: the broker grants node rights with `pattern` lines, which hold for every
    # identity on the listener, so the table says what the ACL really allows.
    _row("centre_state", "centre/state", {CENTRE}, {NODE, CENTRE}, 1, True, CentreState,
         "Centre online state; nodes republish state when it comes online"),
    # enrolment: only on the broker's enrolment listener (claim credentials, enrol.acl), answered by the centre's
    # enrolment worker on the mTLS listener (docs/PROVISIONING.md (Enrolment))
    _row("enrol_csr", "enrol/{claim_id}/csr", {CLAIM}, {CENTRE}, 1, False, EnrolRequest,
         "A node without a certificate asks for one: claim token + CSR (CN = node id); single use"),
    _row("enrol_cert", "enrol/{claim_id}/cert", {CENTRE}, {CLAIM}, 1, False, EnrolReply,
         "The enrolment worker's answer: the certificate and the CA chain, or a refusal with its reason"),
    # renewal: a node with a valid certificate asks for a new one (new key) for its own id only
    _row("cert_csr", "{node_id}/cert/csr", {NODE}, {CENTRE}, 1, False, EnrolRequest,
         "Certificate renewal: a CSR for a new key, CN = the node's own id (no token: the mTLS identity is proof)"),
    _row("cert_res", "{node_id}/cert/res", {CENTRE}, {NODE}, 1, False, EnrolReply,
         "The renewed certificate and the CA chain, or a refusal with its reason"),
)

BY_KEY: dict[str, Channel] = {ch.key: ch for ch in CHANNELS}


def publishes(identity: str) -> list[Channel]:
    return [ch for ch in CHANNELS if identity in ch.publishers]


def subscribes(identity: str) -> list[Channel]:
    return [ch for ch in CHANNELS if identity in ch.subscribers]


def non_node_levels() -> frozenset[str]:
    """First levels under ``edgecam/v1/`` that are literal (``centre``): no node may be called that."""
    return frozenset(ch.levels[0] for ch in CHANNELS if ch.level_params[0] is None)


def match_topic(topic: str) -> tuple[Channel, dict[str, str]] | None:
    """The row ``topic`` belongs to; a row with more literal levels wins (``centre/state`` over
    ``{node_id}/state``), so a reserved first level is never read as a node id."""
    found = [(ch, p) for ch in CHANNELS if (p := ch.match(topic)) is not None]
    return min(found, key=lambda f: len(f[0].params), default=None)


class Topics:
    """The concrete topics of one node: one attribute per row, named by its key (generated below).

    Rows with only ``{node_id}`` are properties (``topics.events``), rows with more parameters are methods
    taking them in template order (``topics.thumbs(event_id)``), absolute rows are class attributes
    (``Topics.centre_state``, or static methods when they have parameters).
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def subscriptions(self) -> list[tuple[str, int]]:
        """What this node subscribes to: every channel the table lets a node read, at the channel's QoS."""
        return [(ch.filter(node_id=self.node_id), ch.qos) for ch in subscribes(NODE)]


def _accessor(ch: Channel) -> object:
    if "node_id" not in ch.params:  # absolute: a constant, or a static method over its parameters
        if not ch.params:
            return ch.topic()
        return staticmethod(lambda *args: ch.topic(**dict(zip(ch.params, args, strict=True))))
    rest = [p for p in ch.params if p != "node_id"]
    if not rest:
        return property(lambda self: ch.topic(node_id=self.node_id))

    def method(self: Topics, *args: str) -> str:
        return ch.topic(node_id=self.node_id, **dict(zip(rest, args, strict=True)))

    method.__name__ = ch.key
    method.__doc__ = f"``{ch.address}``"
    return method


for _ch in CHANNELS:
    if hasattr(Topics, _ch.key):
        raise ValueError(f"channel key {_ch.key!r} clashes with Topics.{_ch.key}")
    setattr(Topics, _ch.key, _accessor(_ch))
