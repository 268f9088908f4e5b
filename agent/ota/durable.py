"""fsync of a whole folder tree: ngclient writes its metadata without fsync, and an installed part must be on
disk before the marker that says it is complete (``agent.atomic`` covers single files and one folder)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_tree(folder: Path) -> None:
    """fsync every regular file and every folder under ``folder`` (symlinks are written with their folder)."""
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
