"""Writing files on a boot partition: atomic, and private where the file system keeps permissions.

The boot partition is FAT: ``chmod`` fails there (or is silently ignored, depending on mount options), so a
secret's 0600 is applied where it can be and never makes the write fail. The card is in the technician's hand
only until it goes into the node; first boot removes the token from it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from agent.atomic import write_atomic


def write_card_file(path: Path, text: str, secret: bool = False, executable: bool = False) -> None:
    """Replace ``path`` atomically; 0600 (0700 when executable) for a secret, 0755/0644 otherwise, if allowed."""
    mode = (0o700 if executable else 0o600) if secret else (0o755 if executable else 0o644)
    try:  # private from the first byte where the file system allows it
        write_atomic(path, text, mode=mode)
    except PermissionError:  # FAT mounted without permission support refuses the chmod
        write_atomic(path, text)
    with contextlib.suppress(OSError):
        os.chmod(path, mode)
