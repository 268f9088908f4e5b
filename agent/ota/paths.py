"""Where OTA keeps its files under the state dir (one place, so updater, installer, supervisor and CLI agree).

``STATE_DIR/ota/``: ``root.json`` (the bootstrap root installed at provisioning), ``metadata/`` (ngclient's
trusted metadata), ``downloads/`` (resumable parts, named by sha256), ``tmp/`` (``TMPDIR`` for ngclient's
temporary files: on the state disk, never a RAM /tmp), ``parts/{kind}/{sha256}/`` (installed parts, shared by
releases), ``releases/r{N}/`` (one folder per release linking its parts), ``current`` and ``previous``
(links to a release folder, each switched with one ``os.replace``), ``state.json``, ``status.json``,
``time_floor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OtaPaths:
    state_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / "ota"

    @property
    def bootstrap_root(self) -> Path:
        return self.dir / "root.json"

    @property
    def metadata(self) -> Path:
        return self.dir / "metadata"

    @property
    def downloads(self) -> Path:
        return self.dir / "downloads"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    @property
    def parts(self) -> Path:
        return self.dir / "parts"

    @property
    def releases(self) -> Path:
        return self.dir / "releases"

    @property
    def current(self) -> Path:
        return self.dir / "current"

    @property
    def previous(self) -> Path:
        return self.dir / "previous"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def time_floor(self) -> Path:
        return self.dir / "time_floor"

    def part_dir(self, kind: str, sha256: str) -> Path:
        return self.parts / kind / sha256

    def release_dir(self, release: int) -> Path:
        return self.releases / f"r{release}"

    def make(self) -> OtaPaths:
        for d in (self.dir, self.metadata, self.downloads, self.tmp, self.parts, self.releases):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self
