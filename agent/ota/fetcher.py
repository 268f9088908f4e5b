"""HTTP(S) for the OTA client: ngclient's ``FetcherInterface`` with the node's client certificate, and a
resumable download of target files.

Why not ngclient's own: its default fetcher presents no client certificate (nodes fetch over mTLS with their
own identity, as on the broker), and ``download_target`` starts every download from byte 0 into a temporary
file. A node on a cellular link that loses it halfway through a 100 MB agent bundle must not pay for the
whole bundle again, so target files come through ``download_resumable``: bytes are appended to
``downloads/{sha256}.part`` (fsynced as they land), an interrupted download continues with ``Range`` from
where the file ends and ``If-Range`` with the validator the server gave (a server whose file changed answers
200 and the download starts over), and nothing beyond the length the signed metadata names is ever written.
The caller then lets ngclient's ``find_cached_target`` check length and hashes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import urllib3
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from agent.atomic import fsync_dir

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """The node's identity for HTTPS: the CA that signs the repository server, the node's cert and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class NodeFetcher(FetcherInterface):
    """ngclient's fetcher contract on urllib3, presenting the node's certificate when it has one."""

    def __init__(self, tls: TlsFiles | None = None, timeout_s: float = 30.0) -> None:
        tls = tls or TlsFiles()
        kwargs: dict = {}
        if tls.ca is not None:
            kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=str(tls.ca))
        if tls.cert is not None:
            kwargs.update(cert_file=str(tls.cert), key_file=str(tls.key) if tls.key else None)
        self.pool = urllib3.PoolManager(retries=False, **kwargs)
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        #: payload bytes received, all requests together (tests and the status's progress read it)
        self.received = 0

    def _request(self, url: str, headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        try:
            return self.pool.request("GET", url, headers=headers or {}, preload_content=False, timeout=self.timeout,
                                     redirect=False)
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: timed out") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self._request(url)
        if response.status >= 400:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {response.status}", response.status)
        return self._chunks(response, url)

    def _chunks(self, response: urllib3.BaseHTTPResponse, url: str) -> Iterator[bytes]:
        try:
            for chunk in response.stream(CHUNK):
                self.received += len(chunk)
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: timed out") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.release_conn()

    def download_resumable(self, url: str, dest: Path, length: int,
                           progress: Callable[[int], None] | None = None) -> Path:
        """Make ``dest`` hold the ``length`` bytes at ``url``, continuing a ``dest.part`` left by an earlier try.

        Returns ``dest`` (complete, fsynced, not yet hash-checked). A failed try leaves the part file (fsynced)
        for the next one; ``DownloadError`` says what failed."""
        part = dest.with_name(dest.name + ".part")
        validator = dest.with_name(dest.name + ".etag")
        if dest.exists():
            return dest
        have = part.stat().st_size if part.exists() else 0
        if have > length:  # longer than the signed length: not ours to keep
            part.unlink()
            have = 0
        headers: dict[str, str] = {}
        if 0 < have < length:
            headers["Range"] = f"bytes={have}-"
            if validator.exists():
                headers["If-Range"] = validator.read_text(encoding="utf-8").strip()
        if have < length:
            have = self._append(url, part, validator, headers, have, length, progress)
        if have != length:
            raise exceptions.DownloadError(f"{url}: got {have} of {length} bytes")
        os.replace(part, dest)
        validator.unlink(missing_ok=True)
        fsync_dir(dest.parent)
        return dest

    def _append(self, url: str, part: Path, validator: Path, headers: dict[str, str], have: int, length: int,
                progress: Callable[[int], None] | None) -> int:
        response = self._request(url, headers)
        if response.status == 206:
            m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                response.release_conn()
                raise exceptions.DownloadError(f"{url}: server answered a range we did not ask for")
            mode = "ab"
        elif response.status == 200:
            mode, have = "wb", 0  # no ranges, or the file changed (If-Range): from the start
        else:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {response.status}", response.status)
        etag = response.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            validator.write_text(etag, encoding="utf-8")
        else:
            validator.unlink(missing_ok=True)
        with part.open(mode) as fh:
            try:
                for chunk in self._chunks(response, url):
                    if have + len(chunk) > length:
                        raise exceptions.DownloadLengthMismatchError(
                            f"{url}: longer than the {length} bytes the signed metadata names")
                    fh.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have)
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        return have
