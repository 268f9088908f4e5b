"""Frame sources chosen by URI or config kind (``agent.sources.kinds``); each kind's module is imported lazily.

URIs: ``synthetic:[?seed=1&width=1280&height=720&fps=15&duration_s=30]``, a path or ``file:PATH``
(video, image, folder of images), ``v4l2:/dev/videoN``, ``rtsp://…``, ``picamera2:N``.
This package imports no frame code itself (``Frame`` and ``Source`` are in ``agent.sources.base``), so
the config model can load ``agent.sources.kinds`` without cv2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import SourceError
from agent.redact import redact_url
from agent.sources.kinds import SOURCES

if TYPE_CHECKING:
    from agent.sources.base import Source

__all__ = ["open_source", "source_config_from_uri"]


def source_config_from_uri(uri: str) -> dict[str, Any]:
    """Turn a ``--source`` URI into a source config dict (validated later with the rest)."""
    for entry in SOURCES:
        prefixes, fields = entry.traits.get("uri", ((), None))
        for prefix in prefixes:
            if uri.startswith(prefix):
                return {"kind": entry.kind, **fields(uri, uri[len(prefix):])}
    if uri.startswith("file:"):
        uri = uri[len("file:"):]
    elif "://" in uri or (":" in uri.split("/")[0] and not Path(uri).exists()):
        forms = ", ".join(p for e in SOURCES for p in e.traits.get("uri", ((),))[0])
        raise SourceError(f"--source {redact_url(uri)}: unknown source (use a file path, file:PATH or {forms}…)")
    if not Path(uri).exists():
        raise SourceError(f"--source {uri}: no such file or folder")
    return {"kind": "file", "path": uri}


def open_source(cfg: Any, decode_threads: int = 1) -> Source:
    """Build (not yet open) the Source for a validated source config section."""
    entry = SOURCES[cfg.kind]
    factory = entry.load()
    return factory(cfg, decode_threads=decode_threads) if entry.traits.get("decoded") else factory(cfg)
