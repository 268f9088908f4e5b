"""``edgecam release serve``: REPO over HTTP or HTTPS (optionally requiring client certificates), with ranges.

For tests and small sites; production serves REPO with any static HTTPS server. It serves files only (no
listings), refuses paths outside REPO and answers ``Range: bytes=N-`` with 206 (and ``If-Range`` against
the file's ETag), so nodes can resume an interrupted download. With ``--tls-ca`` a client must present a
certificate that CA signed (nodes fetch with their own identity, as on the broker).
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def etag_of(path: Path) -> str:
    """A strong validator from size and mtime (consistent-snapshot files never change under one name)."""
    st = path.stat()
    return '"' + hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32] + '"'


class RepoHandler(SimpleHTTPRequestHandler):
    """Static files with single byte ranges; no directory listings; quiet unless asked."""

    quiet = True
    #: counts bytes sent per path (tests read it to prove a resumed download did not start over)
    sent: dict[str, int]

    def log_message(self, format: str, *args: object) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def list_directory(self, path: str | os.PathLike[str]) -> None:  # type: ignore[override]
        self.send_error(HTTPStatus.NOT_FOUND, "no listings")
        return None

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size, etag = path.stat().st_size, etag_of(path)
        start, end = 0, size - 1
        m = _RANGE.match(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        partial_ok = m is not None and (if_range is None or if_range == etag)
        if partial_ok:
            assert m is not None
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        limit = self.server.max_bytes_per_response  # type: ignore[attr-defined]
        with path.open("rb") as fh:
            fh.seek(start)
            left = end - start + 1
            sent = 0
            while left > 0:
                chunk = fh.read(min(65536, left))
                if not chunk:
                    break
                if limit is not None and sent + len(chunk) > limit:  # a link that drops mid-file (tests)
                    chunk = chunk[: max(0, limit - sent)]
                    self._count(path, len(chunk))
                    self.wfile.write(chunk)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                self._count(path, len(chunk))
                sent += len(chunk)
                left -= len(chunk)

    def _count(self, path: Path, n: int) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.sent[path.name] = self.server.sent.get(path.name, 0) + n  # type: ignore[attr-defined]



class RepoServer(ThreadingHTTPServer):
    """A threaded server of one REPO folder; ``sent`` counts payload bytes per file name."""

    daemon_threads = True

    def __init__(self, repo: Path, host: str = "127.0.0.1", port: int = 0, *, tls_cert: Path | None = None,
                 tls_key: Path | None = None, tls_ca: Path | None = None) -> None:
        super().__init__((host, port), partial(RepoHandler, directory=str(repo)))
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.max_bytes_per_response: int | None = None
        self.tls = tls_cert is not None
        if tls_cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls_cert, tls_key)
            if tls_ca is not None:
                ctx.load_verify_locations(tls_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
            self.socket = ctx.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"
