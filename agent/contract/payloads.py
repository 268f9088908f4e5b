"""MQTT contract v1: the payload models (what goes inside the messages of the channel table).

These models are the API of the product. ``edgecam contract`` renders them to ``docs/schemas/*.json``
and ``docs/asyncapi.json``; a test fails when those files are stale.
Consumers must ignore unknown fields, so every model allows extra keys on input.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

CONTRACT_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_ms(ts: datetime) -> str:
    """UTC ISO 8601 with milliseconds and a ``Z`` suffix, as the contract requires."""
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: a datetime that goes on the wire as UTC ISO 8601 with milliseconds (``2026-11-27T05:14:38.123Z``)
UtcTime = Annotated[
    datetime,
    PlainSerializer(iso_ms, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

CAMERA_ID_MAX = 64


def _camera_id(value: str) -> str:
    """In every event and every centre row: short, and nothing that breaks a log line or a terminal."""
    if not 1 <= len(value) <= CAMERA_ID_MAX:
        raise PydanticCustomError("camera_id", "must be 1-{max} characters, not {n}", {"max": CAMERA_ID_MAX,
                                  "n": len(value)})
    bad = next((i for i, c in enumerate(value) if not c.isprintable()), None)
    if bad is not None:
        raise PydanticCustomError("camera_id", "must be printable characters: {code} at position {i} is not",
                                  {"code": f"U+{ord(value[bad]):04X}", "i": bad})
    return value


#: a camera's name on its node: 1-64 printable characters (no control characters, no line breaks)
CameraId = Annotated[
    str,
    AfterValidator(_camera_id),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": CAMERA_ID_MAX,
                    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
                    "description": "1-64 printable characters (Python's str.isprintable: no control characters)"}),
]


class Payload(BaseModel):
    """Base of every payload: unknown fields are ignored (consumers and nodes alike)."""

    model_config = ConfigDict(extra="ignore")


class ThumbRef(Payload):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)
    w: int = Field(ge=1)
    h: int = Field(ge=1)


class ModelRef(Payload):
    name: str
    sha256: str


BBox = tuple[float, float, float, float]


class Event(Payload):
    """One step of a track's life (``start``, ``update``, ``end``) on ``events``."""

    v: Literal[1] = CONTRACT_VERSION
    event_id: str = Field(description="UUIDv7; consumers upsert by it (delivery is at least once)")
    node_id: str
    # the node's config holds camera_id to CameraId; the payload stays as v1 published it (a plain string), so
    # a centre on this code does not refuse events of nodes deployed before that rule
    camera_id: str
    boot_id: str
    seq: int = Field(ge=0, description="persisted, monotonic per node")
    type: Literal["start", "update", "end"]
    track_id: int = Field(ge=0)
    label: str
    score: float = Field(ge=0, le=1)
    top_score: float = Field(ge=0, le=1)
    bbox: BBox = Field(description="[x1, y1, x2, y2] normalised to 0..1 of the full frame")
    zones: list[str] = Field(default_factory=list)
    ts: UtcTime = Field(description="frame time")
    start_ts: UtcTime
    end_ts: UtcTime | None = None
    clock_synced: bool
    historical: bool = Field(False, description="true when replayed from the outbox after an outage")
    thumb: ThumbRef | None = None
    model: ModelRef


class Versions(Payload):
    agent: str
    model: str | None = None
    config: str | None = Field(None, description="the OTA release whose config layer the node runs (r{N})")
    release: int | None = Field(None, description="the OTA release the node runs (None: as provisioned)")


class State(Payload):
    """Retained birth/death certificate on ``state``; the Will carries only ``online`` and ``bd_seq``."""

    online: bool
    bd_seq: int = Field(ge=0)
    boot_id: str | None = None
    ts: UtcTime | None = None
    versions: Versions | None = None
    caps: list[str] = Field(default_factory=list)


class Dropped(Payload):
    events: int = 0
    thumbnails: int = 0


class OutboxRecovered(Payload):
    """The outbox file was damaged at start: moved aside, readable rows carried into a fresh one."""

    moved_to: str
    error: str
    salvaged: int = 0
    unreadable: int = 0


class Health(Payload):
    """Periodic node health on ``health`` (QoS 0, message expiry two periods)."""

    ts: UtcTime
    uptime_s: float
    fps: float
    inference_ms_p50: float | None = None
    inference_ms_p95: float | None = None
    frames: int = 0
    frames_skipped: int = 0
    inferences: int = 0
    outbox_depth: int = 0
    outbox_bytes: int = 0
    outbox_oldest_age_s: float | None = None
    dropped: Dropped = Field(default_factory=Dropped)
    outbox_limit_bytes: int | None = Field(None, description="the outbox's byte cap now (max_bytes or less on a "
                                                               "short disk)")
    outbox_dropping: list[Literal["age", "cap", "disk full"]] = Field(
        default_factory=list, description="drop episodes going on now")
    outbox_recovered: OutboxRecovered | None = None
    source_reconnects: int = 0
    cpu_temp_c: float | None = None
    throttled: bool | None = None
    disk_free_bytes: int | None = None
    clock_synced: bool


class CommandRequest(Payload):
    """``cmd/req``: the centre asks a node to do something; replies go to the MQTT 5 response topic."""

    cmd_id: str = Field(min_length=1, max_length=128)
    op: Literal["ping", "snapshot", "get_config", "set_log_level", "restart"]
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "Per op: snapshot {annotate: bool = false} (true: detections, zones and masks drawn on the picture; "
        "the JPEG goes on thumbs/{id} under the thumbnail byte budget either way, the reply's result names "
        "the topic and, when annotated, lists the detections drawn); set_log_level {level: DEBUG|INFO|"
        "WARNING|ERROR}; the other ops take none"))


class SnapshotArgs(Payload):
    """``args`` of the ``snapshot`` command (also what ``edgecam snapshot`` asks the running agent)."""

    annotate: bool = False


class CommandResponse(Payload):
    cmd_id: str | None
    status: Literal["ok", "error"]
    result: Any | None = None
    error: str | None = None


class ConfigDesired(Payload):
    """Retained ``config/desired``: a full agent config document at a version."""

    version: int = Field(ge=0)
    config: dict[str, Any]


class ConfigReported(Payload):
    """Retained ``config/reported``: what became of the newest ``config/desired`` the node has taken up.

    ``trial``: the document needs a restart and is being tried; the node commits it (``applied``) once it
    runs healthily, or goes back to ``applied_version`` by itself and reports ``rejected`` with the reason.
    """

    version: int = Field(ge=0)
    status: Literal["applied", "rejected", "trial"]
    applied_version: int | None = None
    error: str | None = None
    restart: bool = False


class CentreState(Payload):
    online: bool
    ts: UtcTime | None = None


#: a PEM block as text (certificate, CSR); bounded so a request cannot make the centre parse megabytes
Pem = Annotated[str, Field(min_length=1, max_length=16_384)]


class EnrolRequest(Payload):
    """``enrol/{claim_id}/csr`` (with the claim token) and ``{node_id}/cert/csr`` (renewal, no token).

    The key behind the CSR was made on the node and never leaves it; the CSR's subject is ``CN=<node_id>``.
    """

    request_id: str = Field(min_length=1, max_length=64, description="echoed in the reply (a retry's old reply "
                            "is told apart)")
    node_id: str = Field(description="the node id the certificate is for (must be the claim token's)")
    token: str | None = Field(None, max_length=256, description="claim token (`<claim_id>.<secret>`); enrolment only")
    csr: Pem = Field(description="PKCS#10 certificate request, PEM")


class EnrolReply(Payload):
    """``enrol/{claim_id}/cert`` and ``{node_id}/cert/res``: the certificate and CA chain, or why not."""

    request_id: str | None = None
    status: Literal["ok", "refused"]
    node_id: str | None = None
    cert: Pem | None = Field(None, description="the node certificate, PEM (status ok)")
    chain: Pem | None = Field(None, description="the CA certificate(s) that signed it, PEM (status ok)")
    reason: str | None = Field(None, max_length=500, description="why the request was refused (status refused)")


class OtaProgress(Payload):
    bytes: int = Field(ge=0, description="bytes of the release's parts on the node so far")
    total: int = Field(ge=0, description="bytes of the parts this release needs downloaded")


class OtaStatus(Payload):
    """Retained ``ota/status``: the step an update is at, and why when it stopped.

    Trust never comes from this message or from ``ota/job``: the node decides from the TUF metadata alone.
    ``refused``: nothing was installed (``error`` says why: a signature, an expiry, a downgrade, the device
    type, the disk); ``rolled_back``: a switched release failed its trial and the previous one runs again.
    ``waiting``: a release exists but this node is not (yet) in its rollout share; ``current``: up to date."""

    release: int | None = Field(None, description="the release this status is about")
    state: Literal["checking", "downloading", "verifying", "installing", "trial", "committed", "rolled_back",
                   "refused", "waiting", "current"]
    progress: OtaProgress | None = None
    error: str | None = None
    running: int | None = Field(None, description="the committed release the node runs (None: as provisioned)")
    ts: UtcTime | None = None


class OtaJob(Payload):
    """Retained ``ota/job``: a nudge to check a channel now. It carries no trust: the node decides from the TUF
    metadata alone, and only checks its own configured channel (a different ``channel`` here is ignored)."""

    channel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    ts: UtcTime | None = None


class ReleaseAnnouncement(Payload):
    """Retained ``fleet/releases/{channel}``: the channel's newest release and TUF timestamp version.

    A hint that saves a poll; nodes verify everything through TUF and ignore what this says beyond 'look now'."""

    channel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    release: int = Field(ge=1)
    timestamp_version: int = Field(ge=1)
    percent: int = Field(ge=0, le=100)
    ts: UtcTime | None = None
