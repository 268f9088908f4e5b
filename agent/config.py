"""Agent configuration: one pydantic model, loaded from TOML, then ``EDGECAM_…`` env, then CLI overrides.

Sections that choose an implementation (source kind, model delegate) are discriminated unions built from
the kind registries (``agent.sources.kinds``, ``agent.vision.delegates``), and ``model.format`` takes the
names in ``agent.vision.formats``: a new kind is its module plus one registration there, nothing here.
Every validation failure becomes a one-line ``ConfigError`` naming the field path (``model.threads: …``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.contract import CameraId, NodeId
from agent.errors import ConfigError
from agent.identity import IdentityPaths
from agent.redact import SecretUrl
from agent.section import Section
from agent.sources.kinds import SOURCES, SyntheticSource
from agent.transport.mqtt_url import MqttOptionError, check_tls_files, parse_mqtt_url
from agent.vision.delegates import DELEGATES, CpuDelegate
from agent.vision.formats import FormatChoice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Jetson JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "EDGECAM_"
#: variables with the prefix that are not config fields: the config file's path, and the scripts' and tests'
#: own settings (a node whose unit or shell sets one must still start)
ENV_NOT_CONFIG = frozenset({"EDGECAM_CONFIG", "EDGECAM_VENV", "EDGECAM_SHARED_DATA", "EDGECAM_FREE_PORTS"})
Point = tuple[float, float]


# ---------------------------------------------------------------- sources

#: one config class per registered source kind (``agent.sources.kinds``), told apart by ``kind``
SourceConfig = SOURCES.union()


class CaptureConfig(Section):
    fast: bool = Field(False, description="file sources as fast as possible, no frame skipped")
    reopen_min_s: float = Field(0.5, gt=0)
    reopen_max_s: float = Field(30.0, gt=0)
    decode_threads: int = Field(1, ge=0, le=16, description="video decoder threads for files and RTSP (0: one "
                                "per core); 1 leaves the cores to the interpreter, which needs them more")


# ---------------------------------------------------------------- model


#: one config class per registered delegate (``agent.vision.delegates``), told apart by ``kind``
DelegateConfig = DELEGATES.union()


class ModelConfig(Section):
    path: Path | None = Field(None, description="a .tflite or a model folder with manifest.json; "
                              "default: the bundled demo model")
    labels: Path | None = None
    threads: int = Field(2, ge=1, le=64, description="interpreter threads (per interpreter)")
    interpreters: int = Field(1, ge=1, le=8, description="copies of the model invoked side by side on "
                              "alternate frames, each with `threads` threads: on a 2-core node 2 x 1 thread "
                              "infers more frames a second than 1 x 2 (docs/PERFORMANCE.md), at one more "
                              "model's memory and one invoke's latency; recurrent models need 1")
    priority: Literal["normal", "realtime"] = Field(
        "normal", description="realtime: the interpreter's threads run SCHED_FIFO, so no other thread on the "
        "node takes a core from an invoke (docs/PERFORMANCE.md); needs RLIMIT_RTPRIO >= 1 (the systemd "
        "unit's LimitRTPRIO=1) or root, else a warning and normal priority; with interpreters > 1 of one "
        "thread each keep normal (they leave no gaps for video decoding)")
    format: FormatChoice = Field("auto", description="the model's output format (agent.vision.formats); auto: "
                                 "the manifest's, else recognised from the output tensors")
    resize: Literal["auto", "letterbox", "stretch"] = "auto"
    delegate: DelegateConfig = Field(default_factory=CpuDelegate)

    @field_validator("delegate")
    @classmethod
    def _one_interpreter_per_accelerator(cls, delegate: Any, info: ValidationInfo) -> Any:
        n = info.data.get("interpreters", 1)
        if n > 1 and DELEGATES[delegate.kind].traits.get("exclusive"):
            raise PydanticCustomError("one_interpreter", "an {kind} device serves one interpreter, not "
                                      "model.interpreters = {n}; set it to 1", {"kind": delegate.kind, "n": n})
        return delegate


class LabelFilter(Section):
    min_score: float | None = Field(None, ge=0, le=1)
    threshold: float | None = Field(None, ge=0, le=1)
    min_area: float | None = Field(None, ge=0, le=1)


class DetectConfig(Section):
    score_floor: float | None = Field(None, ge=0, le=1, description="per-detection floor; default: "
                                      "the manifest's, else 0.3")
    nms_iou: float = Field(0.45, gt=0, le=1)
    max_detections: int = Field(100, ge=1)
    labels: list[str] | None = Field(None, description="only these labels become tracks")
    per_label: dict[str, LabelFilter] = Field(default_factory=dict)


class MotionConfig(Section):
    enabled: bool = True
    width: int = Field(160, ge=16, le=1280)
    alpha: float = Field(0.05, gt=0, le=1, description="running-average weight of the newest frame")
    pixel_threshold: int = Field(20, ge=1, le=255)
    min_area: float = Field(0.0005, ge=0, le=1, description="share of the frame a moving blob must cover")
    max_area: float = Field(0.6, gt=0, le=1, description="above this the change is lighting, not motion")
    refresh_s: float = Field(5.0, gt=0, description="infer at least this often so still objects are seen")
    hold_s: float = Field(2.0, ge=0, description="keep inferring this long after motion or live tracks")


class TrackerConfig(Section):
    iou_match: float = Field(0.2, ge=0, le=1)
    max_centroid_dist: float = Field(0.15, ge=0, le=1, description="normalised, for small fast objects")
    threshold: float = Field(0.5, ge=0, le=1, description="median of recent scores to confirm a track")
    window: int = Field(5, ge=1)
    min_hits: int = Field(2, ge=1)
    lost_s: float = Field(4.0, gt=0, description="a track unseen this long ends (long enough for a walker "
                          "hidden behind a passing car to keep its track, and its one start/end/thumbnail)")
    min_area: float = Field(0.0, ge=0, le=1)
    stationary_s: float = Field(30.0, gt=0, description="a track that has not moved this long is parked")
    stationary_iou: float = Field(0.85, ge=0, le=1)


class EventsConfig(Section):
    on_label_change: bool = True
    on_zone_change: bool = True
    top_score_delta: float = Field(0.2, ge=0, le=1, description="update when the top score rose by this much")
    bbox_move: float = Field(0.0, ge=0, description="update when the centre moved by this many box diagonals "
                             "since the last event; 0 = off (start and end carry the positions; position updates "
                             "on a busy street cost more uplink than its thumbnails)")
    heartbeat_s: float = Field(60.0, gt=0)
    min_update_interval_s: float = Field(1.0, ge=0)


class Zone(Section):
    name: str = Field(min_length=1)
    polygon: list[Point] = Field(min_length=3)
    labels: list[str] | None = None

    @field_validator("polygon")
    @classmethod
    def _normalised(cls, pts: list[Point]) -> list[Point]:
        for x, y in pts:
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise ValueError(f"point ({x}, {y}) outside 0..1 (coordinates are normalised)")
        return pts


class Mask(Section):
    """Detections whose bottom-centre falls inside are ignored (trees, a clock, the sky)."""

    polygon: list[Point] = Field(min_length=3)

    _normalised = field_validator("polygon")(Zone._normalised.__func__)  # type: ignore[attr-defined]


class ThumbnailConfig(Section):
    enabled: bool = True
    max_bytes: int = Field(24_000, ge=1_000)
    max_side: int = Field(320, ge=32)
    context: float = Field(0.15, ge=0, le=2, description="margin added around the box, share of its size")
    quality: int = Field(55, ge=10, le=100, description="JPEG quality at native resolution (uplink budget: "
                         "see docs/PERFORMANCE.md)")
    min_quality: int = Field(35, ge=5, le=100)


class MqttConfig(Section):
    url: SecretUrl = SecretUrl("mqtt://127.0.0.1:1883")
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5)
    session_expiry_s: int = Field(86_400, ge=0)
    backoff_min_s: float = Field(0.5, gt=0, description="base of the full-jitter reconnect backoff: the n-th "
                                 "delay is uniform in [0, min(backoff_max_s, backoff_min_s * 2^n)]")
    backoff_max_s: float = Field(30.0, gt=0)
    max_inflight: int = Field(20, ge=1)
    renew_before_days: int = Field(30, ge=0, description="renew the identity provisioning installed in "
                                   "state_dir/identity over MQTT when its certificate has this many days left "
                                   "(0: never); files named by tls_cert/tls_key are left alone")

    @field_validator("url")
    @classmethod
    def _url(cls, url: SecretUrl) -> SecretUrl:
        try:
            parse_mqtt_url(url.reveal())
        except MqttOptionError as exc:
            raise PydanticCustomError("mqtt_url", exc.problem) from None
        return url

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        try:
            check_tls_files(parse_mqtt_url(self.url.reveal()).tls, self.tls_ca, self.tls_cert, self.tls_key)
        except MqttOptionError as exc:  # reported at the option it names (mqtt.tls_key), not at mqtt
            raise ValidationError.from_exception_data("MqttConfig", [InitErrorDetails(
                type=PydanticCustomError("mqtt_tls", exc.problem), loc=(exc.option.rsplit(".", 1)[-1],),
                input=getattr(self, exc.option.rsplit(".", 1)[-1]))]) from None
        return self


class OutboxConfig(Section):
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)
    max_age_s: float = Field(7 * 86_400, gt=0)
    disk_reserve_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="free disk the outbox leaves to others; its cap shrinks to keep it")
    hold_unmatched: list[Literal["events", "thumbs"]] = Field(
        default_factory=lambda: ["events", "thumbs"],
        description="channels whose rows stay queued (resent with backoff) while the broker says no "
                    "subscriber matched (PUBACK 0x10), instead of counting as delivered")


class HealthConfig(Section):
    period_s: float = Field(30.0, gt=0)


class TrialConfig(Section):
    """How a config from the centre that needs a restart is tried before it is kept (local only)."""

    window_s: float = Field(120.0, gt=0, description="seconds from the change's arrival (restart included) in "
                            "which the node must become healthy (source open, model loaded, broker connected, "
                            "frames flowing), or it goes back to its last-known-good config by itself")
    max_starts: int = Field(3, ge=1, description="starts allowed during one trial; more is a crash loop")


#: a trial must be committed within this many ``trial_s`` of the switch unless ``ota.trial_window_s`` says
DEFAULT_WINDOW_FACTOR = 3


class OtaConfig(Section):
    """Over-the-air updates from a TUF repository (docs/OTA.md); off while ``repo_url`` is unset.

    Read by ``edgecam ota check`` (its own process, started by the timer and on an ``ota/job`` nudge) and by the
    supervisor; local only: it names what the node trusts to run, which no config from elsewhere may change."""

    repo_url: str | None = Field(None, pattern=r"^https?://[^\s]+$", description="base URL of the release "
                                 "repository (REPO/metadata and REPO/targets beneath it); https in production, "
                                 "fetched with the node's own client certificate")
    channel: str = Field("stable", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    root: Path | None = Field(None, description="the trusted root installed at provisioning "
                              "(REPO/metadata/1.root.json); default STATE_DIR/ota/root.json")
    check_interval_s: float = Field(6 * 3600, ge=10, description="poll period (the centre can also nudge on "
                                    "ota/job or the fleet/releases announcement)")
    trial_s: float = Field(300, ge=5, description="a switched release must run healthily this long before it is "
                           "committed; the supervisor reverts it otherwise")
    trial_window_s: float | None = Field(None, ge=5, description="time from the switch by which a release must be "
                                         "committed (restarts, model load and trial_s included); default "
                                         "3 × trial_s")
    device_type: str = Field("generic", min_length=1, max_length=64, description="matched against a release's "
                             "device types (e.g. rpi4, rpi5, jetson-orin)")
    disk_reserve_bytes: int = Field(64 * 1024 * 1024, ge=0, description="free space a download and install must "
                                    "leave on the state disk")
    inference_budget_ms: float | None = Field(None, gt=0, description="a release on trial is healthy only while "
                                              "the model's p95 invoke time stays within this (None: any)")
    require_clock_sync: bool = Field(True, description="check only while the kernel says the clock is "
                                     "synchronised (NTP); false only where the clock is kept by means the kernel "
                                     "cannot see (the durable time floor still applies)")

    @model_validator(mode="after")
    def _window_holds_the_trial(self) -> OtaConfig:
        if self.trial_window_s is not None and self.trial_window_s < self.trial_s:
            raise ValueError(f"trial_window_s {self.trial_window_s:g} is shorter than trial_s {self.trial_s:g}: "
                             "no release could ever be committed")
        return self

    @property
    def commit_window_s(self) -> float:
        """How long a switched release has to be committed: ``trial_window_s``, else 3 × ``trial_s``."""
        return self.trial_window_s if self.trial_window_s is not None else DEFAULT_WINDOW_FACTOR * self.trial_s


#: ``json_schema_extra`` of an ``AgentConfig`` field that is read once at start: a change restarts the agent
RESTART = {"restart": True}


class AgentConfig(Section):
    node_id: NodeId = "edgecam-dev"
    camera_id: CameraId = Field("cam0", json_schema_extra=RESTART)
    state_dir: Path = Path("var/edgecam")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    source: SourceConfig = Field(default_factory=SyntheticSource, json_schema_extra=RESTART)
    capture: CaptureConfig = Field(default_factory=CaptureConfig, json_schema_extra=RESTART)
    model: ModelConfig = Field(default_factory=ModelConfig, json_schema_extra=RESTART)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    zones: list[Zone] = Field(default_factory=list)
    masks: list[Mask] = Field(default_factory=list)
    thumbnails: ThumbnailConfig = Field(default_factory=ThumbnailConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig, json_schema_extra=RESTART)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, json_schema_extra=RESTART)
    health: HealthConfig = Field(default_factory=HealthConfig)
    trial: TrialConfig = Field(default_factory=TrialConfig)
    ota: OtaConfig = Field(default_factory=OtaConfig, json_schema_extra=RESTART)

    #: fields config/desired may not change, and why (the rejection names the field and says this)
    LOCAL_ONLY: ClassVar[dict[str, str]] = {
        "node_id": "it is the node's identity (certificate, client id, topics)",
        "state_dir": "it is where the node keeps its state",
        "trial": "it guards the node against a bad config from the centre",
        "ota": "it names the update repository and trust root the node runs code from",
    }

    @model_validator(mode="after")
    def _installed_identity(self) -> AgentConfig:
        """``mqtts://`` with no TLS file given: use the identity provisioning installed in the state dir."""
        m = self.mqtt
        if (m.tls_ca, m.tls_cert, m.tls_key) == (None, None, None) and parse_mqtt_url(m.url.reveal()).tls:
            ident = IdentityPaths(self.state_dir)
            if ident.installed():
                self.mqtt = m.model_copy(update={"tls_ca": ident.ca_cert, "tls_cert": ident.cert,
                                                 "tls_key": ident.key})
        return self

    @classmethod
    def needs_restart(cls, name: str) -> bool:
        """A change to field ``name`` takes effect only after a restart (the field says so: ``RESTART``)."""
        extra = cls.model_fields[name].json_schema_extra
        return isinstance(extra, dict) and bool(extra.get("restart"))


# ---------------------------------------------------------------- loading


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """The first error as ``path.to.field: message`` on one line."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{prefix}{path or '<root>'}: {err['msg']}{more}"


#: the ``kind`` tags pydantic puts in error paths of the unions (``source.file.path``); dropped from messages
_UNION_TAGS = frozenset(SOURCES.kinds + DELEGATES.kinds)


def merge_layers(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section; a section naming its ``kind`` replaces the other whole."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "kind" not in value:
            out[key] = merge_layers(out[key], value)
        else:
            out[key] = value
    return out


def _parse_env_value(raw: str) -> Any:
    """Env values are TOML literals when they parse as one (``2``, ``true``, ``[1, 2]``), else strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``EDGECAM_MQTT__URL=…`` → ``{"mqtt": {"url": …}}`` (double underscore nests)."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_CONFIG:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None


def build_config(data: dict[str, Any], origin: str = "config") -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{origin}: ")) from None


def load_config(
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> AgentConfig:
    """TOML file (optional), then env, then CLI overrides; validated once at the end."""
    data: dict[str, Any] = read_toml(path) if path else {}
    data = merge_layers(data, env_overrides(environ))
    data = merge_layers(data, overrides or {})
    return build_config(data, str(path) if path else "config")
