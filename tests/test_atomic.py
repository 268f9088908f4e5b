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
