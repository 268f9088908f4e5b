"""Frame sources and the capture thread on real files; a scripted picamera2 for the CSI path."""

from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import pytest

from agent.config import CaptureConfig
from agent.errors import SourceError
from agent.sources import open_source, source_config_from_uri
from agent.sources.base import Frame, Source
from agent.sources.capture import Capture
from agent.sources.kinds import FileSource, Picamera2Source, RtspSource
from tests.conftest import shared
from tests.fakes import picamera2 as fake_picamera2
from tests.waiting import wait_until


def write_video(path, frames: int = 12, size=(160, 96), fps: float = 12.0) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, :, 2] = 200  # red in BGR
        cv2.rectangle(img, (i * 8, 20), (i * 8 + 20, 60), (255, 255, 255), -1)
        w.write(img)
    w.release()


def drain(src: Source) -> list[Frame]:
    src.open()
    out = []
    while (f := src.read()) is not None:
        out.append(f)
    src.close()
    return out


def test_uri_parsing():
    assert source_config_from_uri("synthetic:?seed=3&fps=5") == {"kind": "synthetic", "seed": "3", "fps": "5"}
    assert source_config_from_uri("v4l2:/dev/video2") == {"kind": "v4l2", "device": "/dev/video2"}
    assert source_config_from_uri("rtsp://cam/1")["kind"] == "rtsp"
    assert source_config_from_uri("picamera2:1") == {"kind": "picamera2", "index": 1}
    for bad in ("ftp://x/y", "webcam:0", "/no/such/file.mp4", "picamera2:x"):
        with pytest.raises(SourceError) as err:
            source_config_from_uri(bad)
        assert bad in str(err.value)


def test_video_file_is_rgb_and_timed(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path)
    frames = drain(open_source(FileSource(path=path)))
    assert len(frames) == 12
    r, _, b = frames[0].image[5, 150]
    assert r > 150 and b < 80, "frames must be RGB"
    assert frames[3].ts - frames[0].ts == pytest.approx(3 / 12, abs=1e-6)


def test_real_clip_plays_all_frames():
    frames = drain(open_source(FileSource(path=shared("clips/traffic_frames.mp4"))))
    assert len(frames) == 20 and frames[0].image.shape == (540, 960, 3)


def test_image_is_a_short_still_scene_and_folder_plays_in_order(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    for i in range(3):
        img[:] = i * 50
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), img)
    (tmp_path / "notes.txt").write_text("ignored")
    folder = drain(open_source(FileSource(path=tmp_path, fps=30)))
    assert [int(f.image[0, 0, 0]) for f in folder] == [0, 50, 100]
    still = drain(open_source(FileSource(path=tmp_path / "f001.png")))
    assert len(still) >= 2 and all(int(f.image[0, 0, 0]) == 50 for f in still)


def test_unreadable_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (junk, broken, empty):
        with pytest.raises(SourceError) as err:
            open_source(FileSource(path=path)).open()
        assert str(path) in str(err.value) and "\n" not in str(err.value)


class Scripted(Source):
    """A source test double: yields numbered frames, fails on the frame numbers asked."""

    live = True

    def __init__(self, n: int, fail_at=(), finite=False, fail_open=0):
        self.n, self.fail_at, self.finite, self.fail_open = n, set(fail_at), finite, fail_open
        self.i, self.opens = 0, 0

    def open(self):
        self.opens += 1
        if self.fail_open > 0:
            self.fail_open -= 1
            raise SourceError("camera not there yet")

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        if self.i in self.fail_at:
            raise SourceError(f"dropped at {self.i}")
        return Frame(np.zeros((4, 4, 3), np.uint8), time.time(), self.i)

    def close(self):
        pass


FAST_REOPEN = CaptureConfig(reopen_min_s=0.01, reopen_max_s=0.05)


def test_newest_frame_wins_and_skips_are_counted():
    src = Scripted(50, finite=True)
    src.live = True  # unpaced producer, consumer slower than it
    cap = Capture(src, FAST_REOPEN).start()
    assert wait_until(lambda: cap.stats.captured >= 2, 30)  # frame 1 was replaced before anyone took it
    got = []
    while (f := cap.get(timeout=2)) is not None:
        got.append(f.index)
        time.sleep(0.01)
    assert got == sorted(got) and got[-1] == 50
    assert cap.stats.captured == 50 and cap.stats.skipped == 50 - len(got) > 0


def test_fast_finite_source_is_lossless():
    src = Scripted(40, finite=True)
    src.live = False
    cap = Capture(src, CaptureConfig(fast=True)).start()
    got = []
    while (f := cap.get(timeout=2)) is not None:
        got.append(f.index)
        time.sleep(0.002)
    assert got == list(range(1, 41)) and cap.stats.skipped == 0


def test_failing_source_is_reopened_with_backoff_not_raised():
    src = Scripted(30, fail_at={5, 6, 20}, finite=True, fail_open=2)
    cap = Capture(src, FAST_REOPEN).start()
    got = []
    while (f := cap.get(timeout=3)) is not None:
        got.append(f.index)
    assert cap.stats.errors == 5 and cap.stats.reopens == 5
    assert src.opens == 3 + 3  # 2 failed + 1 good initial open, then one reopen per failed read
    assert got[-1] == 30


def test_first_frame_after_each_opening_is_fresh():
    """Capture marks where a new sequence begins (a recurrent model's state starts over there)."""
    src = Scripted(30, fail_at={5, 6, 20}, finite=True)
    cap = Capture(src, CaptureConfig(fast=True, reopen_min_s=0.01, reopen_max_s=0.05)).start()
    fresh = []
    while (f := cap.get(timeout=3)) is not None:
        if f.fresh:
            fresh.append(f.index)
    assert fresh == [1, 7, 21]


def test_paced_file_source_respects_native_rate(tmp_path):
    src = Scripted(6, finite=True)
    src.live, src.fps = False, 20.0
    started = time.time()  # the source stamps frames with time.time() when it reads them
    cap = Capture(src, CaptureConfig()).start()
    frames = []
    while (f := cap.get(timeout=2)) is not None:
        frames.append(f)
    # a paced source hands over the newest frame: a consumer the machine starves may miss some, counted
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and idx[-1] == 6 and cap.stats.captured == 6 and cap.stats.skipped == 6 - len(idx)
    # read at 20 fps: frame i is read no earlier than (i - 1) / 20 s after the reader started, which is after
    # `started`. (Not relative to the first frame's stamp: a reader starved before that read then catches up
    # on its schedule, so later frames can follow the first by less than 50 ms each.)
    assert all(f.ts - started >= (f.index - 1) / 20 - 0.005 for f in frames), [f.ts - started for f in frames]


def test_stop_interrupts_a_camera_that_never_opens():
    src = Scripted(10, fail_open=10**6)
    cap = Capture(src, CaptureConfig(reopen_min_s=0.05, reopen_max_s=0.1)).start()
    assert wait_until(lambda: cap.stats.reopens >= 1, 30)  # it is in its reopen loop
    t = threading.Thread(target=cap.stop)
    t.start()
    t.join(3)
    assert not t.is_alive() and cap.stats.reopens >= 1


def test_unreachable_rtsp_is_a_source_error():
    src = open_source(RtspSource(url="rtsp://user:secret@127.0.0.1:1/stream"))
    with pytest.raises(SourceError) as err:
        src.open()
    assert "secret" not in str(err.value) and "127.0.0.1:1" in str(err.value)


@pytest.fixture
def picamera(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    monkeypatch.setattr(fake_picamera2, "FAIL_AFTER", None)
    fake_picamera2.opened.clear()
    return fake_picamera2


def test_picamera2_main_and_lores(picamera):
    src = open_source(Picamera2Source(index=0, width=320, height=240, lores_width=160, lores_height=120))
    src.open()
    f = src.read()
    src.close()
    assert f.image.shape == (240, 320, 3) and f.lores.shape == (120, 160, 3)
    assert f.image[10, 10, 1] == 200 and f.image[200, 300, 1] == 0  # RGB order kept
    assert abs(int(f.lores[10, 10, 1]) - 200) < 12  # I420 → RGB round trip
    assert not picamera.opened[0].started


def test_picamera2_failures(picamera, monkeypatch):
    with pytest.raises(SourceError, match="picamera2:3: cannot start camera"):
        open_source(Picamera2Source(index=3)).open()
    monkeypatch.setattr(picamera, "FAIL_AFTER", 2)
    src = open_source(Picamera2Source(index=0, width=64, height=48, lores_width=32, lores_height=24))
    src.open()
    src.read()
    src.read()
    with pytest.raises(SourceError, match="timed out"):
        src.read()


def test_picamera2_missing_module_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="picamera2 is not installed"):
        open_source(Picamera2Source()).open()


def test_a_looped_folder_keeps_time_moving_forward(tmp_path):
    """Frame times are media time: looping back to the first picture must not step back in time (the tracker
    would see objects jump into the past)."""
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    src = open_source(FileSource(path=tmp_path, fps=10, loop=True))
    src.open()
    frames = [src.read() for _ in range(7)]
    src.close()
    ts = [f.ts for f in frames]
    assert ts == sorted(set(ts))  # strictly increasing
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 40, 80, 0, 40, 80, 0]  # the pictures do loop
