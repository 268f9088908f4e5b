"""The state dir deleted or replaced while the node runs: notice it, put it back, lose nothing.

A technician's ``rm -rf /var/lib/edgecam`` or a tmpfiles cleanup unlinks the folder under open files.
SQLite goes on writing the unlinked outbox (whatever is unsent there is gone at exit), and the files
written only now and then (``seq``, the config owner's state, command ids) are missing at the next start,
which would reissue ``seq`` from 0. So each owner of a state file registers here how to put its file back
from what it holds in memory (and, optionally, how to tell its own file is gone while the folder is not);
the runner calls ``check`` once per health period and twice at exit (before and after the final flush).
The folder is compared by identity (``st_dev``, ``st_ino``), not by name: a folder recreated by a write
in between (``write_atomic`` makes missing folders) is still a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.state_files import DIR_MODE, file_identity, private_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keeper:
    """One state file's owner: ``restore`` writes it again and says what it did; ``lost`` tells that the
    file alone went missing (None: only the folder is watched for it)."""

    name: str
    restore: Callable[[], str]
    lost: Callable[[], bool] | None = None


class StateDirWatch:
    """Watches ``path`` (created 0700 here) and restores every registered file when it is lost."""

    def __init__(self, path: Path) -> None:
        self.path = private_dir(Path(path))
        self._identity = file_identity(self.path)
        self._keepers: list[Keeper] = []
        self._cannot_create = False  # logged once until the folder can be created again

    def keep(self, name: str, restore: Callable[[], str], lost: Callable[[], bool] | None = None) -> None:
        self._keepers.append(Keeper(name, restore, lost))

    def lost(self) -> str | None:
        """What went missing (the folder, or which files in it), or None while all is in place."""
        now = file_identity(self.path)
        if now is None:
            return "deleted"
        if now != self._identity:
            return "deleted and created again by someone else"
        gone = [k.name for k in self._keepers if k.lost is not None and k.lost()]
        return f"lost its {', '.join(gone)} file(s)" if gone else None

    def check(self) -> bool:
        """Restore what was lost (one ERROR line naming the folder and what was done); False if nothing was.

        A file with a ``lost`` probe whose restore failed still reads as lost: the next check tries again."""
        why = self.lost()
        if why is None:
            return False
        try:
            private_dir(self.path)
        except OSError as exc:
            if not self._cannot_create:
                log.error("state_dir %s %s while the agent runs, and cannot be created again (%s); going on "
                          "with the unlinked files, trying again every health period", self.path, why, exc.strerror)
            self._cannot_create = True
            return True
        self._cannot_create = False
        self._identity = file_identity(self.path)
        done = []
        for keeper in self._keepers:
            try:
                done.append(f"{keeper.name}: {keeper.restore()}")
            except Exception as exc:  # the others must still be restored; this one is tried again later
                done.append(f"{keeper.name}: FAILED ({type(exc).__name__}: {exc})")
        log.error("state_dir %s %s while the agent runs: put back (folder %o); %s", self.path, why, DIR_MODE,
                  "; ".join(done))
        return True
