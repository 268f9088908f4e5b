"""Installing the node's trust anchor: the repository's first root, at provisioning.

Everything the node ever runs is judged from this file, so it is checked before it is written: it must parse as
TUF root metadata, be signed by its own root threshold, use consistent snapshots, and replacing a different
installed root needs ``--force`` (that is a change of trust anchor, not an update: rotations arrive through TUF).
"""

from __future__ import annotations

from pathlib import Path

from agent.atomic import write_atomic
from agent.errors import EdgecamError
from agent.ota.paths import OtaPaths


def check_root(src: Path) -> bytes:
    """The root file's bytes once it is root metadata signed by its own threshold with consistent snapshots
    (also run on the technician's machine by ``provision card --ota-root``: a bad root found on the pole costs
    a trip)."""
    from tuf.api.exceptions import UnsignedMetadataError
    from tuf.api.metadata import Metadata, Root
    from tuf.api.serialization import DeserializationError

    try:
        data = src.read_bytes()
        md = Metadata[Root].from_bytes(data)
        if not isinstance(md.signed, Root):
            raise EdgecamError(f"{src}: not root metadata ({md.signed.type})")
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except OSError as exc:
        raise EdgecamError(f"{src}: {exc.strerror}") from None
    except DeserializationError as exc:
        raise EdgecamError(f"{src}: not TUF metadata ({exc})") from None
    except UnsignedMetadataError as exc:
        raise EdgecamError(f"{src}: not signed by its own root threshold ({exc})") from None
    if not md.signed.consistent_snapshot:
        raise EdgecamError(f"{src}: the repository must use consistent snapshots")
    return data


def install_root(src: Path, paths: OtaPaths, force: bool = False) -> Path:
    """Install ``src`` as the node's trusted root; a different installed root stays unless ``force``."""
    data = check_root(src)
    dest = paths.make().bootstrap_root
    if dest.exists() and dest.read_bytes() != data and not force:
        raise EdgecamError(f"{dest}: a different trusted root is installed; --force replaces the trust anchor")
    write_atomic(dest, data, mode=0o644)
    return dest
