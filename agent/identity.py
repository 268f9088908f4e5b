"""Where a node's own identity lives: ``STATE_DIR/identity/`` (key 0600, certificate, CA chain).

Provisioning installs it there (online enrolment, offline CSR + ``install-cert``, renewal), ``edgecam run
--state-dir DIR`` uses it when no ``--tls-*`` option is given, and ``edgecam doctor`` checks it. The key is
made on the node and never leaves it. This module only names the files, so every side agrees on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IDENTITY_DIR = "identity"


@dataclass(frozen=True)
class IdentityPaths:
    """The identity files under one state dir."""

    state_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / IDENTITY_DIR

    @property
    def key(self) -> Path:
        """The node's private key (PEM, 0600, made on the node)."""
        return self.dir / "node.key"

    @property
    def cert(self) -> Path:
        """The node's certificate (PEM, CN = node id)."""
        return self.dir / "node.crt"

    @property
    def ca_cert(self) -> Path:
        """The pinned CA certificate (chain) that signed the node's and the broker's certificates."""
        return self.dir / "ca.crt"

    def installed(self) -> bool:
        """True when key, certificate and CA are all present."""
        return self.key.is_file() and self.cert.is_file() and self.ca_cert.is_file()
