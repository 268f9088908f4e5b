"""Signing keys of a release repository, kept in a folder *outside* ``REPO`` (never served).

Layout: ``KEYS/offline/{role}/{keyid}.pem`` for ``root`` and ``targets`` (the keys that decide what code a node
runs: keep this folder on removable media, offline), ``KEYS/online/{role}/{keyid}.pem`` for ``snapshot``,
``timestamp`` and ``rollout`` (these live where the repository is refreshed: a compromise of them can delay
or speed up the rollout of releases the offline keys signed, never ship new content), and
``KEYS/retired/{role}/`` for keys a rotation removed (kept for audit, never loaded to sign).
Private keys are PKCS#8 PEM ed25519 files, mode 0600, in 0700 folders.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey

from agent.atomic import write_atomic
from agent.errors import EdgecamError

OFFLINE_ROLES = ("root", "targets")
ONLINE_ROLES = ("snapshot", "timestamp", "rollout")


class KeyError_(EdgecamError):
    """A signing key that is missing or unusable."""


def default_keys_dir(repo: Path) -> Path:
    """``REPO`` → ``REPO.keys`` beside it (outside everything a static server of REPO would serve)."""
    repo = repo.resolve()
    return repo.with_name(repo.name + ".keys")


@dataclass(frozen=True)
class KeyStore:
    """The keys folder of one repository."""

    dir: Path

    def role_dir(self, role: str, *, retired: bool = False) -> Path:
        if retired:
            return self.dir / "retired" / role
        return self.dir / ("offline" if role in OFFLINE_ROLES else "online") / role

    def generate(self, role: str) -> CryptoSigner:
        """A new ed25519 key for ``role``, written (0600) before it is used to sign anything."""
        signer = CryptoSigner.generate_ed25519()
        folder = self.role_dir(role)
        for d in (self.dir, folder.parent, folder):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(folder / f"{signer.public_key.keyid}.pem", signer.private_bytes, mode=0o600)
        return signer

    def signers(self, role: str) -> list[Signer]:
        """Every usable key of ``role`` in this store (retired ones excluded)."""
        out: list[Signer] = []
        folder = self.role_dir(role)
        for pem in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
            try:
                priv = load_pem_private_key(pem.read_bytes(), password=None)
            except (ValueError, TypeError, OSError) as exc:
                raise KeyError_(f"{pem}: not a usable private key ({exc})") from None
            out.append(CryptoSigner(priv, SSlibKey.from_crypto(priv.public_key())))  # type: ignore[arg-type]
        return out

    def retire(self, role: str, keyid: str) -> None:
        """Move a key a rotation removed to ``retired/`` (it signs nothing any more)."""
        src = self.role_dir(role) / f"{keyid}.pem"
        dst_dir = self.role_dir(role, retired=True)
        dst_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if src.exists():
            shutil.move(str(src), dst_dir / src.name)
            os.sync()
