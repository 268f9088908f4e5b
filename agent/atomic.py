"""Replace a file atomically and durably: readers see the old content or the new, never a torn write.

Why every step: the temporary file sits in the target's folder (``os.replace`` is atomic only within one
file system), its data is fsynced before the rename (else a power cut can leave the new name pointing at
an empty file), and the folder is fsynced after it (else the rename itself may be lost). ``mode`` is set
when the temporary file is created, so a private key is never readable by others, not even briefly.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path | str, data: bytes | str, mode: int | None = None) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` through a temp file + fsync + rename + folder fsync.

    ``mode``: exact permissions (e.g. 0o600 for a key); None leaves them to the umask as ``open`` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is not None else 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # exact, whatever the umask or a temp file left over from a crash
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable; best effort where folders cannot sync."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
