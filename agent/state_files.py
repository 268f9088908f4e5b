"""Private state: the state folder is 0700 and the files in it 0600.

The outbox holds thumbnails of people and cars and the counters hold nothing anyone else needs, so no
other local user may read them. SQLite creates its ``-wal`` and ``-shm`` files with the mode of the
database file, which is why the database is created here (0600) before SQLite opens it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 when this process owns it (never someone else's dir)."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _restrict(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty at 0600 if missing; tighten an existing one (older versions wrote 0644)."""
    path = Path(path)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    os.close(fd)
    _restrict(path, FILE_MODE)
    return path


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, None when it is gone: a deleted or replaced file or folder shows as
    a different identity, whatever its name."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


def _restrict(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):  # not ours, or a read-only mount: leave it as it is
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o777 != mode:
            path.chmod(mode)
