"""``write_atomic``: the one way a file is replaced (state, summaries, CA and broker outputs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.atomic import write_atomic


def test_replaces_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    write_atomic(path, "one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "ca.crt", "cert", mode=0o644)
        write_atomic(tmp_path / "node.key", "key", mode=0o600)
        write_atomic(tmp_path / "plain", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ca.crt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o600  # umask 077 applied


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "seq"
    write_atomic(path, "41\n")

    def refuse(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomic(path, "105\n")
    assert path.read_text() == "41\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_the_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Both fsyncs of the one helper: the new file's data (else a power cut can leave the new name on an empty
    file), then its folder (else the rename itself may be lost)."""
    path = tmp_path / "config_state.json"
    write_atomic(path, "old")
    steps: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        steps.append(("fsync dir" if stat.S_ISDIR(st.st_mode) else "fsync file", st.st_ino))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        steps.append(("rename", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(path, "new")
    new, folder = path.stat().st_ino, tmp_path.stat().st_ino
    assert steps == [("fsync file", new), ("rename", new), ("fsync dir", folder)]
    assert path.read_text() == "new"
