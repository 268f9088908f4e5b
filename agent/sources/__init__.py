"""Frame sources chosen by URI or config kind; each kind lives in its own module, imported lazily.

URIs: ``synthetic:[?seed=1&width=1280&height=720&fps=15&duration_s=30]``, a path or ``file:PATH``
(video, image, folder of images), ``v4l2:/dev/videoN``, ``rtsp://…``, ``picamera2:N``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from agent.errors import SourceError
from agent.sources.base import Frame, Source, TruthBox

__all__ = ["Frame", "Source", "TruthBox", "open_source", "source_config_from_uri"]

#: kind → "module:factory"; the factory takes the validated config section and returns a Source
_FACTORIES = {
    "synthetic": "agent.sources.synthetic:SyntheticSceneSource",
    "file": "agent.sources.files:FileSource",
    "v4l2": "agent.sources.stream:StreamSource",
    "rtsp": "agent.sources.stream:StreamSource",
    "picamera2": "agent.sources.picamera:Picamera2Source",
}


def _query(text: str) -> dict[str, Any]:
    return dict(parse_qsl(text.lstrip("?"), keep_blank_values=False))


def source_config_from_uri(uri: str) -> dict[str, Any]:
    """Turn a ``--source`` URI into a source config dict (validated later with the rest)."""
    if uri.startswith("synthetic:"):
        return {"kind": "synthetic", **_query(uri[len("synthetic:"):])}
    if uri.startswith("v4l2:"):
        dev = uri[len("v4l2:"):] or "/dev/video0"
        return {"kind": "v4l2", "device": dev}
    if uri.startswith(("rtsp://", "rtsps://")):
        return {"kind": "rtsp", "url": uri}
    if uri.startswith("picamera2:"):
        idx = uri[len("picamera2:"):] or "0"
        if not idx.isdigit():
            raise SourceError(f"--source {uri}: picamera2 index must be a number")
        return {"kind": "picamera2", "index": int(idx)}
    if uri.startswith("file:"):
        uri = uri[len("file:"):]
    elif "://" in uri or (":" in uri.split("/")[0] and not Path(uri).exists()):
        raise SourceError(
            f"--source {uri}: unknown source (use synthetic:, a file path, file:PATH, "
            "v4l2:/dev/videoN, rtsp://… or picamera2:N)"
        )
    if not Path(uri).exists():
        raise SourceError(f"--source {uri}: no such file or folder")
    return {"kind": "file", "path": uri}


#: kinds whose frames come out of a video decoder (they take the capture section's ``decode_threads``)
_DECODED = {"file", "rtsp"}


def open_source(cfg: Any, decode_threads: int = 1) -> Source:
    """Build (not yet open) the Source for a validated source config section."""
    target = _FACTORIES[cfg.kind]
    mod_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(mod_name), attr)
    return factory(cfg, decode_threads=decode_threads) if cfg.kind in _DECODED else factory(cfg)
