"""MQTT contract v1, the one module node, centre and provisioning share.

- ``payloads``: the pydantic models of every message;
- ``channels``: the channel table (topic, who publishes and subscribes, QoS, retain, payload) and
  ``Topics``, generated from it;
- ``ids``: the node-id rule.

Callers import from here (``from agent.contract import Event, Topics``).
"""

from agent.contract.channels import (
    BY_KEY,
    CENTRE,
    CHANNELS,
    CLAIM,
    IDENTITIES,
    NODE,
    ROOT,
    Channel,
    Topics,
    match_topic,
    publishes,
    subscribes,
)
from agent.contract.ids import NODE_ID_PATTERN, RESERVED_NODE_IDS, NodeId, identity_problem, is_node_id, node_id_problem
from agent.contract.payloads import (
    CONTRACT_VERSION,
    BBox,
    CameraId,
    CentreState,
    CommandRequest,
    CommandResponse,
    ConfigDesired,
    ConfigReported,
    Dropped,
    EnrolReply,
    EnrolRequest,
    Event,
    Health,
    ModelRef,
    OtaJob,
    OtaProgress,
    OtaStatus,
    OutboxRecovered,
    Payload,
    ReleaseAnnouncement,
    SnapshotArgs,
    State,
    ThumbRef,
    UtcTime,
    Versions,
    iso_ms,
    utc_now,
)

__all__ = [
    "BY_KEY", "CENTRE", "CHANNELS", "CLAIM", "CONTRACT_VERSION", "IDENTITIES", "NODE", "NODE_ID_PATTERN",
    "RESERVED_NODE_IDS", "ROOT", "BBox", "CameraId", "CentreState", "Channel", "CommandRequest", "CommandResponse",
    "ConfigDesired", "ConfigReported", "Dropped", "EnrolReply", "EnrolRequest", "Event", "Health", "ModelRef",
    "NodeId", "OtaJob", "OtaProgress", "OtaStatus", "OutboxRecovered", "Payload", "ReleaseAnnouncement",
    "SnapshotArgs", "State", "ThumbRef", "Topics", "UtcTime", "Versions", "identity_problem", "is_node_id", "iso_ms",
    "match_topic", "node_id_problem", "publishes", "subscribes", "utc_now",
]
