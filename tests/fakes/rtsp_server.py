"""A small RTSP 1.0 camera for tests: serves a real H.264 clip to real clients (FFmpeg) over RTP/AVP/TCP.

Why hand-written: there is no RTSP server package on the test machines, and the agent's RTSP source was
otherwise only ever tested against an unreachable address. This speaks what an IP camera speaks to the
agent: OPTIONS, DESCRIBE (SDP with ``sprop-parameter-sets``), SETUP (``RTP/AVP/TCP;interleaved=0-1``
only), PLAY, GET_PARAMETER (keep-alive), TEARDOWN, optional Basic or Digest auth; then RTP interleaved in
the RTSP connection (RFC 2326 §10.12), H.264 packetised per RFC 6184 (single NAL unit packets and FU-A),
paced at the clip's frame rate and looped with continuous timestamps. Each session starts at the clip's
first (IDR) access unit.

Test controls: ``drop_clients(refuse)`` closes every connection at once and refuses the next ``refuse``
connection attempts (a camera rebooting: down until the client has tried, however long that takes);
``stall()`` stops sending while keeping connections open (a hung camera);
``stats`` counts what clients did.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: RTP payload size above which a NAL unit is split into FU-A fragments (fits a 1500-byte Ethernet MTU)
MTU = 1400
PAYLOAD_TYPE = 96
CLOCK_HZ = 90_000
FU_A = 28


# ---------------------------------------------------------------- H.264 clip → access units


@dataclass(frozen=True)
class AccessUnit:
    """One coded picture: its NAL units (no start codes or length prefixes) and RTP time in 90 kHz ticks."""

    nals: tuple[bytes, ...]
    rtp_ticks: int  # presentation time from the clip start (B-frames: not monotonic in send order)
    keyframe: bool


@dataclass(frozen=True)
class H264Clip:
    """An mp4's H.264 stream as NAL units in decode order, with the parameter sets for the SDP."""

    sps: bytes
    pps: bytes
    units: tuple[AccessUnit, ...]
    fps: float
    width: int
    height: int

    @property
    def loop_ticks(self) -> int:
        """RTP time one pass of the clip takes (the next pass continues from here)."""
        return round(len(self.units) * CLOCK_HZ / self.fps)

    @classmethod
    def load(cls, path: Path | str) -> H264Clip:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.name != "h264":
                raise ValueError(f"{path}: not H.264 ({stream.codec_context.name})")
            length_size, sps, pps = parse_avcc(bytes(stream.codec_context.extradata or b""))
            rate = stream.average_rate or stream.guessed_rate
            units = []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue  # the demuxer's final flush packet
                ticks = round(packet.pts * packet.time_base * CLOCK_HZ)
                units.append(AccessUnit(tuple(split_length_prefixed(bytes(packet), length_size)), ticks,
                                        packet.is_keyframe))
            first = min(u.rtp_ticks for u in units)
            units = [AccessUnit(u.nals, u.rtp_ticks - first, u.keyframe) for u in units]
            return cls(sps[0], pps[0], tuple(units), float(rate), stream.width, stream.height)

    def sdp(self, host: str) -> str:
        sprop = ",".join(base64.b64encode(p).decode() for p in (self.sps, self.pps))
        return "\r\n".join([
            "v=0",
            f"o=- {random.getrandbits(32)} 1 IN IP4 {host}",
            "s=edgecam test camera",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "a=control:*",
            "a=range:npt=0-",
            f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
            f"a=rtpmap:{PAYLOAD_TYPE} H264/{CLOCK_HZ}",
            f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={self.sps[1:4].hex()};"
            f"sprop-parameter-sets={sprop}",
            f"a=framerate:{self.fps:g}",
            "a=control:track1",
            "",
        ])


def parse_avcc(extradata: bytes) -> tuple[int, list[bytes], list[bytes]]:
    """(NAL length size, SPS list, PPS list) from an ``avcC`` box (ISO/IEC 14496-15 §5.3.3.1)."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise ValueError("extradata is not an avcC record (Annex B streams are not supported)")
    length_size = (extradata[4] & 0x03) + 1
    pos = 5
    sets: list[list[bytes]] = []
    for mask in (0x1F, 0xFF):  # SPS count has 3 reserved bits, PPS count has none
        count = extradata[pos] & mask
        pos += 1
        found = []
        for _ in range(count):
            size = int.from_bytes(extradata[pos:pos + 2], "big")
            found.append(extradata[pos + 2:pos + 2 + size])
            pos += 2 + size
        sets.append(found)
    if not sets[0] or not sets[1]:
        raise ValueError("avcC record without SPS or PPS")
    return length_size, sets[0], sets[1]


def split_length_prefixed(data: bytes, length_size: int) -> list[bytes]:
    """AVCC sample (big-endian length + NAL unit, repeated) → NAL units."""
    nals, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise ValueError(f"bad NAL length {size} at byte {pos - length_size} of a {len(data)}-byte sample")
        nals.append(data[pos:pos + size])
        pos += size
    return nals


def rtp_payloads(nal: bytes, mtu: int = MTU) -> list[bytes]:
    """RFC 6184 payloads for one NAL unit: itself when it fits, else FU-A fragments (§5.8)."""
    if len(nal) <= mtu:
        return [nal]
    indicator = (nal[0] & 0xE0) | FU_A  # F and NRI kept, type FU-A
    kind = nal[0] & 0x1F
    body = nal[1:]
    chunk = mtu - 2
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    out = []
    for i, piece in enumerate(pieces):
        header = kind | (0x80 if i == 0 else 0) | (0x40 if i == len(pieces) - 1 else 0)
        out.append(bytes((indicator, header)) + piece)
    return out


def rtp_packet(payload: bytes, *, seq: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """RTP fixed header (RFC 3550 §5.1, version 2, no CSRC/extension) + payload."""
    header = bytes((0x80, (0x80 if marker else 0) | PAYLOAD_TYPE)) + (seq & 0xFFFF).to_bytes(2, "big")
    return header + (timestamp & 0xFFFFFFFF).to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload


def interleaved(channel: int, packet: bytes) -> bytes:
    """RTSP interleaved binary frame: ``$``, channel, 16-bit length (RFC 2326 §10.12)."""
    return b"$" + bytes((channel,)) + len(packet).to_bytes(2, "big") + packet


# ---------------------------------------------------------------- server


@dataclass
class ServerStats:
    """What clients did; counters only grow (tests compare before/after)."""

    connections: int = 0
    refused: int = 0
    plays: int = 0
    teardowns: int = 0
    unauthorized: int = 0
    rtp_packets: int = 0
    methods: list[str] = field(default_factory=list)
    transports: list[str] = field(default_factory=list)


class _Closed(Exception):
    """The client went away (or was dropped) mid-request."""


class RtspServer:
    """Threaded RTSP camera on a free loopback port; ``with RtspServer(clip) as cam: cam.url``.

    ``credentials=(user, password)`` makes every method but OPTIONS require auth (``auth`` "basic" or
    "digest"), as cameras do.
    """

    def __init__(self, clip: Path | str | H264Clip, *, path: str = "clip", credentials: tuple[str, str] | None = None,
                 auth: str = "basic", host: str = "127.0.0.1") -> None:
        if auth not in ("basic", "digest"):
            raise ValueError(f"auth must be basic or digest, not {auth!r}")
        self.clip = clip if isinstance(clip, H264Clip) else H264Clip.load(clip)
        self.path = path.strip("/")
        self.credentials = credentials
        self.auth = auth
        self.realm = "edgecam-test"
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._conns: set[_Connection] = set()
        self._refuse_next = 0
        self._stalled = threading.Event()
        self._server = _TcpServer((host, 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="rtsp-server", daemon=True)

    # ------------------------------------------------------------ control

    def start(self) -> RtspServer:
        self._thread.start()
        return self

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The stream URL without credentials."""
        return f"rtsp://{self.host}:{self.port}/{self.path}"

    def url_with(self, user: str, password: str) -> str:
        """The stream URL with ``user:password@`` in it (as operators write them, not percent-encoded)."""
        return f"rtsp://{user}:{password}@{self.host}:{self.port}/{self.path}"

    def drop_clients(self, refuse: int = 0) -> int:
        """Close every client connection at once (a camera reboot); refuse the next ``refuse`` connections.

        A count, not a time: a client slowed down by a busy machine still meets the camera down. Returns how
        many connections were dropped.
        """
        with self._lock:
            self._refuse_next = refuse
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        return len(conns)

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) sending RTP while keeping connections open: a camera that hangs, not one that resets."""
        if stalled:
            self._stalled.set()
        else:
            self._stalled.clear()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.drop_clients()
        self._thread.join(timeout=5)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ used by connections

    def _accepting(self) -> bool:
        with self._lock:
            if self._refuse_next <= 0:
                return True
            self._refuse_next -= 1
            self.stats.refused += 1
            return False

    def _register(self, conn: _Connection, present: bool) -> None:
        with self._lock:
            if present:
                self._conns.add(conn)
                self.stats.connections += 1
            else:
                self._conns.discard(conn)

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _authorized(self, method: str, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        user, password = self.credentials
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if self.auth == "basic":
            expected = base64.b64encode(f"{user}:{password}".encode()).decode()
            return scheme.lower() == "basic" and secrets.compare_digest(value.strip(), expected)
        if scheme.lower() != "digest":
            return False
        params = _digest_params(value)
        ha1 = _md5(f"{user}:{self.realm}:{password}")
        ha2 = _md5(f"{method}:{params.get('uri', '')}")
        expected = _md5(f"{ha1}:{params.get('nonce', '')}:{ha2}")
        return params.get("username") == user and secrets.compare_digest(params.get("response", ""), expected)

    def _challenge(self, nonce: str) -> str:
        if self.auth == "basic":
            return f'Basic realm="{self.realm}"'
        return f'Digest realm="{self.realm}", nonce="{nonce}"'


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _digest_params(value: str) -> dict[str, str]:
    out = {}
    for part in value.split(","):
        key, _, val = part.strip().partition("=")
        out[key.strip().lower()] = val.strip().strip('"')
    return out


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: RtspServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def verify_request(self, request, client_address) -> bool:  # type: ignore[override]
        # a refused connection is closed at once: the client sees a reset/EOF, like a rebooting camera's port
        return self.owner._accepting()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn = _Connection(self.request, self.server.owner)  # type: ignore[attr-defined]
        conn.serve()


class _Connection:
    """One RTSP control connection; after PLAY it also carries the RTP packets (channel 0)."""

    def __init__(self, sock: socket.socket, owner: RtspServer) -> None:
        self.sock = sock
        self.owner = owner
        self.reader = sock.makefile("rb")
        self.session = secrets.token_hex(8)
        self.nonce = secrets.token_hex(16)
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._streamer: threading.Thread | None = None
        self._seq = random.getrandbits(16)
        self._rtp_base = random.getrandbits(32)
        self._ssrc = random.getrandbits(32)
        self._setup = False

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def serve(self) -> None:
        self.owner._register(self, True)
        try:
            while not self._closed.is_set():
                self._handle_one()
        except (_Closed, OSError):
            pass
        finally:
            self.close()
            self.owner._register(self, False)
            if self._streamer is not None:
                self._streamer.join(timeout=2)
            self.reader.close()

    # ------------------------------------------------------------ RTSP requests

    def _read(self, n: int) -> bytes:
        data = self.reader.read(n)
        if len(data) < n:
            raise _Closed
        return data

    def _handle_one(self) -> None:
        first = self._read(1)
        if first == b"$":  # the client's RTCP receiver reports on channel 1: read and ignore
            _channel, size = self._read(1), int.from_bytes(self._read(2), "big")
            self._read(size)
            return
        line = (first + self.reader.readline()).decode("utf-8", "replace").strip()
        if not line:
            return
        headers: dict[str, str] = {}
        while True:
            raw = self.reader.readline()
            if not raw:
                raise _Closed
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                break
            key, _, value = text.partition(":")
            headers[key.strip().lower()] = value.strip()
        if int(headers.get("content-length", "0")):
            self._read(int(headers["content-length"]))
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("RTSP/"):
            self._reply(400, "Bad Request", headers)
            return
        method, uri = parts[0].upper(), parts[1]
        self.owner.stats.methods.append(method)
        handler = getattr(self, f"_on_{method.lower()}", None)
        if handler is None:
            self._reply(501, "Not Implemented", headers)
            return
        if method != "OPTIONS" and not self.owner._authorized(method, headers):
            self.owner._count(unauthorized=1)
            self._reply(401, "Unauthorized", headers, {"WWW-Authenticate": self.owner._challenge(self.nonce)})
            return
        handler(uri, headers)

    def _reply(self, code: int, reason: str, request: dict[str, str], extra: dict[str, str] | None = None,
               body: str = "") -> None:
        lines = [f"RTSP/1.0 {code} {reason}", f"CSeq: {request.get('cseq', '0')}", "Server: edgecam-test-rtsp"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        payload = body.encode()
        if payload:
            lines.append(f"Content-Length: {len(payload)}")
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def _send(self, data: bytes) -> None:
        with self._write_lock:
            self.sock.sendall(data)

    def _path_ok(self, uri: str) -> bool:
        path = uri.split("://", 1)[-1].partition("/")[2].split("?")[0].strip("/")
        return path == self.owner.path or path.startswith(self.owner.path + "/")

    def _on_options(self, uri: str, headers: dict[str, str]) -> None:
        self._reply(200, "OK", headers,
                    {"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"})

    def _on_describe(self, uri: str, headers: dict[str, str]) -> None:
        if not self._path_ok(uri):
            self._reply(404, "Not Found", headers)
            return
        base = uri.split("?")[0].rstrip("/") + "/"
        self._reply(200, "OK", headers, {"Content-Base": base, "Content-Type": "application/sdp"},
                    self.owner.clip.sdp(self.owner.host))

    def _on_setup(self, uri: str, headers: dict[str, str]) -> None:
        transport = headers.get("transport", "")
        self.owner.stats.transports.append(transport)
        if not self._path_ok(uri):
            self._reply(404, "Not Found", headers)
        elif "RTP/AVP/TCP" not in transport or "interleaved=" not in transport:
            self._reply(461, "Unsupported Transport", headers)  # a TCP-only camera: the client must retry
        else:
            self._setup = True
            self._reply(200, "OK", headers, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1",
                                             "Session": f"{self.session};timeout=60"})

    def _on_play(self, uri: str, headers: dict[str, str]) -> None:
        if not self._setup or headers.get("session", "").split(";")[0] != self.session:
            self._reply(454, "Session Not Found", headers)
            return
        self._reply(200, "OK", headers, {
            "Session": self.session, "Range": "npt=0.000-",
            "RTP-Info": f"url={uri.rstrip('/')}/track1;seq={self._seq};rtptime={self._rtp_base}",
        })
        if self._streamer is None:
            self.owner._count(plays=1)
            self._streamer = threading.Thread(target=self._stream, name="rtsp-rtp", daemon=True)
            self._streamer.start()

    def _on_get_parameter(self, uri: str, headers: dict[str, str]) -> None:
        self._reply(200, "OK", headers, {"Session": self.session})

    def _on_teardown(self, uri: str, headers: dict[str, str]) -> None:
        self.owner._count(teardowns=1)
        self._reply(200, "OK", headers, {"Session": self.session})
        self.close()

    # ------------------------------------------------------------ RTP

    def _stream(self) -> None:
        """Send the clip's access units in decode order, one per frame interval, looping forever."""
        clip = self.owner.clip
        t0 = time.monotonic()
        n = 0
        try:
            while True:
                for unit in clip.units:
                    delay = t0 + n / clip.fps - time.monotonic()
                    if self._closed.wait(max(delay, 0)):
                        return
                    if self.owner._stalled.is_set():
                        n += 1  # the picture is lost, time goes on
                        continue
                    ticks = self._rtp_base + (n // len(clip.units)) * clip.loop_ticks + unit.rtp_ticks
                    self._send(self._packets(unit, ticks))
                    n += 1
        except OSError:
            self.close()

    def _packets(self, unit: AccessUnit, ticks: int) -> bytes:
        payloads = [p for nal in unit.nals for p in rtp_payloads(nal)]
        out = []
        for i, payload in enumerate(payloads):
            packet = rtp_packet(payload, seq=self._seq, timestamp=ticks, ssrc=self._ssrc,
                                marker=i == len(payloads) - 1)
            self._seq = (self._seq + 1) & 0xFFFF
            out.append(interleaved(0, packet))
        self.owner._count(rtp_packets=len(out))
        return b"".join(out)
