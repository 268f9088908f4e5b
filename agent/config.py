"""Agent configuration: one pydantic model, loaded from TOML, then ``EDGECAM_…`` env, then CLI overrides.

Sections that choose an implementation (source kind, model delegate) are discriminated unions, so a
new kind is one class here plus one module. Every validation failure becomes a one-line
``ConfigError`` naming the field path (``model.threads: …``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Jetson JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "EDGECAM_"
Point = tuple[float, float]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- sources


class SyntheticSource(Section):
    """The procedural street scene (default source; deterministic for a seed)."""

    kind: Literal["synthetic"] = "synthetic"
    seed: int = 7
    width: int = Field(1280, ge=64, le=7680)
    height: int = Field(720, ge=64, le=4320)
    fps: float = Field(15.0, gt=0, le=240)
    duration_s: float | None = Field(None, gt=0, description="end of stream after this much scene time")


class FileSource(Section):
    """A video file, a single image, or a folder of images."""

    kind: Literal["file"] = "file"
    path: Path
    fps: float | None = Field(None, gt=0, description="rate for images/folders, or to override a video's")
    loop: bool = False


class V4l2Source(Section):
    kind: Literal["v4l2"] = "v4l2"
    device: str = "/dev/video0"
    width: int | None = None
    height: int | None = None
    fps: float | None = None


class RtspSource(Section):
    kind: Literal["rtsp"] = "rtsp"
    url: str
    tcp: bool = True


class Picamera2Source(Section):
    kind: Literal["picamera2"] = "picamera2"
    index: int = Field(0, ge=0)
    width: int = 1920
    height: int = 1080
    lores_width: int = 640
    lores_height: int = 360
    fps: float = 15.0


SourceConfig = Annotated[
    SyntheticSource | FileSource | V4l2Source | RtspSource | Picamera2Source,
    Field(discriminator="kind"),
]


class CaptureConfig(Section):
    fast: bool = Field(False, description="file sources as fast as possible, no frame skipped")
    reopen_min_s: float = Field(0.5, gt=0)
    reopen_max_s: float = Field(30.0, gt=0)
    decode_threads: int = Field(1, ge=0, le=16, description="video decoder threads for files and RTSP (0: one "
                                "per core); 1 leaves the cores to the interpreter, which needs them more")


# ---------------------------------------------------------------- model


class CpuDelegate(Section):
    kind: Literal["cpu"] = "cpu"


class EdgeTpuDelegate(Section):
    """Coral EdgeTPU through ``libedgetpu``; falls back to CPU (with a warning) when it does not load."""

    kind: Literal["edgetpu"] = "edgetpu"
    library: str = "libedgetpu.so.1"
    device: str | None = None


DelegateConfig = Annotated[CpuDelegate | EdgeTpuDelegate, Field(discriminator="kind")]


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
    format: Literal["auto", "ssd", "yolo"] = "auto"
    resize: Literal["auto", "letterbox", "stretch"] = "auto"
    delegate: DelegateConfig = Field(default_factory=CpuDelegate)

    @field_validator("delegate")
    @classmethod
    def _one_interpreter_per_accelerator(cls, delegate: Any, info: ValidationInfo) -> Any:
        n = info.data.get("interpreters", 1)
        if n > 1 and delegate.kind != "cpu":
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
    url: str = "mqtt://127.0.0.1:1883"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5)
    session_expiry_s: int = Field(86_400, ge=0)
    backoff_min_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    max_inflight: int = Field(20, ge=1)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        return url


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


class AgentConfig(Section):
    node_id: str = Field("edgecam-dev", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    camera_id: str = Field("cam0", min_length=1)
    state_dir: Path = Path("var/edgecam")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    source: SourceConfig = Field(default_factory=SyntheticSource)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    zones: list[Zone] = Field(default_factory=list)
    masks: list[Mask] = Field(default_factory=list)
    thumbnails: ThumbnailConfig = Field(default_factory=ThumbnailConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)


# ---------------------------------------------------------------- loading


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """The first error as ``path.to.field: message`` on one line."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{prefix}{path or '<root>'}: {err['msg']}{more}"


_UNION_TAGS = {"synthetic", "file", "v4l2", "rtsp", "picamera2", "cpu", "edgetpu"}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "kind" not in value:
            out[key] = _merge(out[key], value)
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
        if not key.startswith(ENV_PREFIX) or key == "EDGECAM_CONFIG":
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
    data = _merge(data, env_overrides(environ))
    data = _merge(data, overrides or {})
    return build_config(data, str(path) if path else "config")
