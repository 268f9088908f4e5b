"""The RTSP source against a real RTSP server speaking the real protocol (tests/fakes/rtsp_server.py).

FFmpeg (through PyAV) is the client, exactly as on a node: RTSP over TCP, RTP/H.264 depacketising, the
decoder. The camera serves the real H.264 clip, so every decoded picture can be compared with the same
picture decoded straight from the mp4.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from agent.config import CaptureConfig
from agent.errors import SourceError
from agent.sources.base import Frame
from agent.sources.capture import Capture
from agent.sources.kinds import RtspSource
from agent.sources.stream import StreamSource, rtsp_options
from agent.sources.video import VideoReader
from tests.conftest import shared
from tests.fakes.rtsp_server import MTU, H264Clip, RtspServer
from tests.mqtt_collect import Collector
from tests.waiting import wait_until

W, H = 960, 540
USER, PASSWORD = "operator", "hunter@2secret"  # an unencoded '@', as operators type them


@pytest.fixture(scope="module")
def clip() -> H264Clip:
    return H264Clip.load(shared("clips/traffic_frames.mp4"))


@pytest.fixture(scope="module")
def reference() -> list[np.ndarray]:
    """Every picture of the clip decoded straight from the mp4 (display order), as I420."""
    import av

    with av.open(str(shared("clips/traffic_frames.mp4"))) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


@pytest.fixture
def camera(clip):
    with RtspServer(clip) as cam:
        yield cam


@pytest.fixture
def locked_camera(clip):
    with RtspServer(clip, credentials=(USER, PASSWORD)) as cam:
        yield cam


@pytest.fixture
def thread_errors(monkeypatch) -> list[BaseException]:
    """Exceptions that escaped any thread (the capture thread must never let one out)."""
    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def closest(frame: np.ndarray, reference: list[np.ndarray]) -> tuple[int, float]:
    """(index, mean absolute difference) of the clip picture this decoded picture is."""
    diffs = [mad(frame, ref) for ref in reference]
    return int(np.argmin(diffs)), min(diffs)


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        assert PASSWORD not in text and "2secret" not in text and USER not in text, text


def test_clip_needs_fragmentation_and_reordering(clip):
    """What the stream exercises: NAL units above the MTU (FU-A) and B-frames (RTP time not monotonic)."""
    assert max(len(nal) for unit in clip.units for nal in unit.nals) > MTU
    ticks = [unit.rtp_ticks for unit in clip.units]
    assert ticks != sorted(ticks) and sorted(ticks) == [i * 3000 for i in range(len(clip.units))]
    assert clip.units[0].keyframe and (clip.width, clip.height, clip.fps) == (W, H, 30.0)


def test_rtsp_frames_are_the_clip_picture_for_picture(camera, reference):
    src = StreamSource(RtspSource(url=camera.url))
    src.open()
    try:
        frames = [src.read() for _ in range(45)]  # past the loop point (20 pictures)
    finally:
        src.close()
    assert src.fps == pytest.approx(30.0) and src.describe() == camera.url
    for i, frame in enumerate(frames):
        assert isinstance(frame, Frame) and frame.index == i
        assert frame.yuv is not None and frame.yuv.shape == (H * 3 // 2, W) and frame.yuv.dtype == np.uint8
        assert frame.size == (W, H)
    # the same bitstream through RTP: the first picture decodes to the mp4's first picture
    assert mad(frames[0].yuv, reference[0]) < 0.5
    # and every picture is the clip's next one, in display order, across the loop
    assert [closest(f.yuv, reference) for f in frames] == [
        (i % len(reference), pytest.approx(0.0, abs=0.5)) for i in range(len(frames))]
    assert frames[5].image.shape == (H, W, 3)
    assert camera.stats.transports and all("RTP/AVP/TCP" in t for t in camera.stats.transports)
    assert wait_until(lambda: camera.stats.teardowns == 1, 5), camera.stats  # close() ends the session


def test_the_keyframe_sent_at_play_is_decoded_not_thrown_away(camera, clip, reference):
    """The first picture is the keyframe the camera sends at PLAY, not its next one a GOP later.

    ``fflags=nobuffer`` used to discard every packet FFmpeg read while probing the stream, that keyframe
    among them. Media time counts from the session's first RTP packet: pictures of the clip's first pass
    are earlier than one clip duration.
    """
    cfg = RtspSource(url=camera.url)
    video = VideoReader(cfg.url.reveal(), name="cam", options=rtsp_options(cfg), timeout_s=5)
    try:
        got = [video.read() for _ in range(5)]
    finally:
        video.close()
    assert closest(got[0][0], reference) == (0, pytest.approx(0.0, abs=0.5))
    times = [t for _, _, t in got if t is not None]
    one_pass_s = len(clip.units) / clip.fps
    assert times and max(times) < one_pass_s, times


@pytest.mark.timeout(60)
def test_capture_reopens_after_camera_reboot(locked_camera, reference, caplog, thread_errors):
    caplog.set_level(logging.DEBUG)
    cam = locked_camera
    src = StreamSource(RtspSource(url=cam.url_with(USER, PASSWORD)))
    cap = Capture(src, CaptureConfig(reopen_min_s=0.2, reopen_max_s=1)).start()
    try:
        assert all(cap.get(timeout=10) is not None for _ in range(5))
        assert cam.drop_clients(refuse=1) == 1
        assert wait_until(lambda: cam.stats.plays >= 2, 20), (cam.stats, cap.stats)
        reopened_at = time.time()
        fresh: list[Frame] = []
        deadline = time.monotonic() + 10
        while len(fresh) < 10 and time.monotonic() < deadline:
            frame = cap.get(timeout=1)
            if frame is not None and frame.ts > reopened_at:  # not a picture flushed from the old session
                fresh.append(frame)
        assert len(fresh) == 10 and not cap.ended
    finally:
        cap.stop()
    assert cap.stats.reopens >= 1 and cap.stats.errors >= 1
    assert cam.stats.refused >= 1  # it did try while the camera was down, and got through afterwards
    for frame in fresh:  # whole, correctly decoded pictures after the reopen
        assert frame.yuv.shape == (H * 3 // 2, W) and closest(frame.yuv, reference)[1] < 0.5
    assert not thread_errors
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "reopening" in r.getMessage()]
    assert warnings and f"rtsp://***@127.0.0.1:{cam.port}/clip" in warnings[0].getMessage()
    assert_no_secret([r.getMessage() for r in caplog.records] + [cap.stats.last_error or ""])


def test_credentials_are_redacted_where_the_user_sees_the_url(locked_camera):
    src = StreamSource(RtspSource(url=locked_camera.url_with(USER, PASSWORD)))
    # FFmpeg takes the host after the last '@' of the authority; so must the redaction
    assert src.describe() == f"rtsp://***@127.0.0.1:{locked_camera.port}/clip"
    src.open()
    try:
        assert src.read().yuv.shape == (H * 3 // 2, W)
    finally:
        src.close()


@pytest.mark.parametrize("auth", ["basic", "digest"])
@pytest.mark.parametrize("password", ["wrong", None])
def test_wrong_or_missing_credentials_are_one_line_errors(clip, auth, password, caplog):
    caplog.set_level(logging.DEBUG)
    with RtspServer(clip, credentials=(USER, PASSWORD), auth=auth) as cam:
        url = cam.url if password is None else cam.url_with(USER, password)
        src = StreamSource(RtspSource(url=url))
        with pytest.raises(SourceError) as err:
            src.open()
        assert cam.stats.unauthorized >= 1 and cam.stats.plays == 0
    msg = str(err.value)
    expected = cam.url if password is None else f"rtsp://***@127.0.0.1:{cam.port}/clip"
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{expected}: cannot open") and "401" in msg, msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no FFmpeg traceback chained
    assert "wrong" not in msg
    assert_no_secret([msg] + [r.getMessage() for r in caplog.records])


def test_right_digest_credentials_open(clip):
    with RtspServer(clip, credentials=(USER, PASSWORD), auth="digest") as cam:
        src = StreamSource(RtspSource(url=cam.url_with(USER, PASSWORD)))
        src.open()
        try:
            assert src.read() is not None
        finally:
            src.close()
        assert cam.stats.plays == 1 and cam.stats.unauthorized == 1  # challenged once, then let in


def test_unknown_path_is_a_one_line_error(camera):
    src = StreamSource(RtspSource(url=camera.url + "-nope"))
    with pytest.raises(SourceError, match=r"clip-nope: cannot open \(.*404"):
        src.open()


def test_tcp_false_asks_for_udp(camera):
    """``tcp = false`` really asks the camera for RTP over UDP; this TCP-only camera refuses (461)."""
    src = StreamSource(RtspSource(url=camera.url, tcp=False))
    with pytest.raises(SourceError, match=r"/clip: cannot open \("):
        src.open()
    assert camera.stats.transports and camera.stats.transports[0].startswith("RTP/AVP/UDP")
    assert camera.stats.plays == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_hung_camera_is_a_source_error_not_a_hung_thread(locked_camera, reference):
    """A camera that keeps the connection but stops sending: the read times out (PyAV's 5 s timeout)."""
    src = StreamSource(RtspSource(url=locked_camera.url_with(USER, PASSWORD)))
    src.open()
    try:
        assert src.read() is not None
        locked_camera.stall()
        with pytest.raises(SourceError) as err:
            for _ in range(100):  # pictures already received may still come out first
                src.read()
    finally:
        src.close()
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"rtsp://***@127.0.0.1:{locked_camera.port}/clip:"), msg
    assert_no_secret([msg])
    locked_camera.stall(False)
    src.open()  # the camera recovered: the same source opens again and decodes the clip from its start
    try:
        assert closest(src.read().yuv, reference) == (0, pytest.approx(0.0, abs=0.5))
    finally:
        src.close()


@pytest.mark.slow
def test_agent_runs_on_an_rtsp_camera(tmp_path, broker, locked_camera):
    """``edgecam run`` on the camera: frames flow, the session is ended, the password shows up nowhere."""
    col = Collector(broker.port)
    summary = tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "agent.cli", "run", "--source", locked_camera.url_with(USER, PASSWORD),
           "--mqtt", broker.url, "--node-id", "rtsp1", "--max-frames", "40", "--until-eof",
           "--state-dir", str(tmp_path / "state"), "--summary-json", str(summary)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(summary.read_text())
    assert out["source_reconnects"] == 0 and out["frames"] >= 1, out
    assert out["frames"] + out["dropped"]["frames_skipped"] == 40 and out["inferences"] >= 1, out
    assert locked_camera.stats.plays == 1
    assert wait_until(lambda: locked_camera.stats.teardowns == 1, 5), locked_camera.stats  # ended, not leaked
    assert col.wait_for(lambda: any(m.json().get("online") is False for m in col.on("/state")), 10)  # last one
    col.close()
    assert f"rtsp://***@127.0.0.1:{locked_camera.port}/clip" in res.stderr
    assert_no_secret([res.stdout, res.stderr, summary.read_text()]
                     + [m.payload.decode("utf-8", "replace") for m in col.messages])
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
