"""The frame-source kinds: each one's config section, ``--source`` URI form and lazy implementation.

Adding a source is its implementation module plus one ``SOURCES.register`` here; ``agent.config``'s
``source`` union, the URI parsing and ``open_source`` all read this registry. Nothing here imports the
implementations (cv2, PyAV, picamera2): this module is loaded with the config.

Traits: ``uri`` (``--source`` prefixes, a function from the rest of the URI to the section's fields),
``decoded`` (frames come out of a video decoder, so the factory takes ``decode_threads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import Field

from agent.errors import SourceError
from agent.redact import SecretUrl
from agent.registry import Registry
from agent.section import Section

SOURCES: Registry[Section] = Registry("source")


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
    url: SecretUrl
    tcp: bool = True


class Picamera2Source(Section):
    kind: Literal["picamera2"] = "picamera2"
    index: int = Field(0, ge=0)
    width: int = 1920
    height: int = 1080
    lores_width: int = 640
    lores_height: int = 360
    fps: float = 15.0


def _picamera_index(uri: str, rest: str) -> dict[str, Any]:
    idx = rest or "0"
    if not idx.isdigit():
        raise SourceError(f"--source {uri}: picamera2 index must be a number")
    return {"index": int(idx)}


SOURCES.register(SyntheticSource, "agent.sources.synthetic:SyntheticSceneSource",
                 uri=(("synthetic:",), lambda uri, rest: dict(parse_qsl(rest.lstrip("?")))))
SOURCES.register(FileSource, "agent.sources.files:FileSource", decoded=True)  # paths: see source_config_from_uri
SOURCES.register(V4l2Source, "agent.sources.stream:StreamSource",
                 uri=(("v4l2:",), lambda uri, rest: {"device": rest or "/dev/video0"}))
SOURCES.register(RtspSource, "agent.sources.stream:StreamSource", decoded=True,
                 uri=(("rtsp://", "rtsps://"), lambda uri, rest: {"url": uri}))
SOURCES.register(Picamera2Source, "agent.sources.picamera:Picamera2Source", uri=(("picamera2:",), _picamera_index))
