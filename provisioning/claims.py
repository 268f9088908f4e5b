"""Claim tokens: one per node, single use, short lived, bound to the node id; only hashes are kept.

A token is ``<claim_id>.<secret>``. The claim id (64 random bits, hex) is public: it is the claim identity's
username on the broker's enrolment listener and a topic level (``edgecam/v1/enrol/<claim_id>/…``). The secret
(256 random bits) is the password. The store (``CA/claims/``) keeps, per claim, the node id, the expiry, the
SHA-256 of the whole token (the worker's check) and a Mosquitto PBKDF2 hash of the secret (the broker's
password file); never the token itself. Burning a token creates ``<claim_id>.used`` with ``O_EXCL``, so two
workers (or a retry racing its first try) can never both use one token.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from agent.atomic import fsync_dir, write_atomic
from agent.contract.ids import node_id_problem
from provisioning.ca import CaError, CaFiles

CLAIMS = "claims"
#: broker folders ``broker-config --enrol-port`` wrote from this CA, one a line: where the worker keeps
#: ``enrol.passwd`` current when it is not told (``centre enrol --broker-dir``)
BROKERS = "brokers.txt"
CLAIM_ID = re.compile(r"[0-9a-f]{16}")
_TOKEN = re.compile(r"([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_TTL = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: how long after its expiry a claim may still log in on the enrolment listener: long enough to be told
#: "expired" or "already used" by the worker instead of a bare "not authorised" from the broker
LOGIN_GRACE = dt.timedelta(hours=24)
PBKDF2_ITERATIONS = 1000


class ClaimRefused(CaError):
    """A claim token the worker will not honour; ``str()`` is the reason sent back to the node."""


class ClaimRecord(BaseModel):
    claim_id: str
    node_id: str
    token_sha256: str
    password_hash: str
    created: dt.datetime
    expires: dt.datetime


@dataclass(frozen=True)
class Used:
    at: dt.datetime


def parse_ttl(text: str) -> dt.timedelta:
    """``90s``, ``30m``, ``1h``, ``72h``, ``7d`` (one number and unit)."""
    m = _TTL.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise CaError(f"--ttl {text!r}: expected a positive number and a unit s, m, h or d (e.g. 1h)")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def split_token(token: str) -> tuple[str, str]:
    """(claim id, secret); one-line error for anything that is not a token."""
    m = _TOKEN.fullmatch(token.strip())
    if not m:
        raise ClaimRefused("not a claim token (expected <16 hex>.<43 base64url>, as `edgecam provision token` prints)")
    return m.group(1), m.group(2)


def read_claim(arg: str) -> str:
    """``--claim`` as given, or the token in file ``@PATH`` (a token on a command line is visible in ``ps``)."""
    if not arg.startswith("@"):
        return arg.strip()
    try:
        return Path(arg[1:]).read_text().strip()
    except OSError as exc:
        raise CaError(f"--claim {arg}: cannot read ({exc.strerror})") from None


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2.0 password-file hash (``$7$``: PBKDF2-HMAC-SHA512, 12-byte salt), as mosquitto_passwd."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ClaimStore:
    """The claims of one CA (``CA/claims/``, 0700): records, burn markers, the broker's password-file lines."""

    def __init__(self, ca_dir: Path) -> None:
        self.dir = CaFiles(Path(ca_dir)).dir / CLAIMS

    def _record_path(self, claim_id: str) -> Path:
        return self.dir / f"{claim_id}.json"

    def _used_path(self, claim_id: str) -> Path:
        return self.dir / f"{claim_id}.used"

    def mint(self, node_id: str, ttl: dt.timedelta) -> str:
        """A new token for ``node_id``; the caller shows it once, the store keeps only its hashes."""
        problem = node_id_problem(node_id)
        if problem:
            raise CaError(f"node id: {problem}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        claim_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        token = f"{claim_id}.{secret}"
        now = _now()
        rec = ClaimRecord(claim_id=claim_id, node_id=node_id, token_sha256=_sha256(token),
                          password_hash=mosquitto_hash(secret), created=now, expires=now + ttl)
        write_atomic(self._record_path(claim_id), rec.model_dump_json(indent=1), mode=0o600)
        return token

    def load(self, claim_id: str) -> ClaimRecord | None:
        if not CLAIM_ID.fullmatch(claim_id):
            return None
        try:
            return ClaimRecord.model_validate_json(self._record_path(claim_id).read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def used(self, claim_id: str) -> Used | None:
        try:
            data = json.loads(self._used_path(claim_id).read_text())
            return Used(dt.datetime.fromisoformat(data["at"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError):  # a marker half written by a crash still means used
            return Used(_now())

    def check(self, token: str, node_id: str, claim_id: str | None = None) -> ClaimRecord:
        """The record of a token that may enrol ``node_id`` now; else ClaimRefused naming why.

        ``claim_id``: the claim the request came in on (its topic): a token of another claim is refused."""
        cid, _secret = split_token(token)
        rec = self.load(cid)
        if rec is None or not hmac.compare_digest(rec.token_sha256, _sha256(token.strip())):
            raise ClaimRefused("unknown claim token (not minted by this CA, or mistyped)")
        if claim_id is not None and cid != claim_id:
            raise ClaimRefused(f"token belongs to claim {cid}, not to {claim_id}")
        used = self.used(cid)
        if used is not None:
            raise ClaimRefused(f"token already used at {used.at.isoformat(timespec='seconds')} (single use); "
                               f"mint a new one")
        if _now() >= rec.expires:
            raise ClaimRefused(f"token expired at {rec.expires.isoformat(timespec='seconds')}; mint a new one")
        if rec.node_id != node_id:
            raise ClaimRefused(f"token is for node {rec.node_id!r}, not {node_id!r}")
        return rec

    def burn(self, claim_id: str) -> None:
        """Mark the token used, exactly once (``O_EXCL``): a second burn raises ClaimRefused."""
        try:
            fd = os.open(self._used_path(claim_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ClaimRefused("token already used (single use); mint a new one") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"at": _now().isoformat()}))
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.dir)

    def register_broker(self, broker_dir: Path) -> None:
        """Remember a broker folder with an enrolment listener (``broker-config --enrol-port``)."""
        known = self.broker_dirs(existing=False)
        path = Path(broker_dir).resolve()
        if path not in known:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.dir.chmod(0o700)
            write_atomic(self.dir / BROKERS, "".join(f"{p}\n" for p in [*known, path]), mode=0o600)

    def broker_dirs(self, existing: bool = True) -> list[Path]:
        """The registered broker folders (by default only those still holding a broker config)."""
        try:
            lines = (self.dir / BROKERS).read_text().splitlines()
        except FileNotFoundError:
            return []
        dirs = [Path(line) for line in dict.fromkeys(lines) if line.strip()]
        return [d for d in dirs if not existing or (d / "mosquitto.conf").is_file()]

    def records(self) -> list[ClaimRecord]:
        if not self.dir.is_dir():
            return []
        return [r for p in sorted(self.dir.glob("*.json")) if (r := self.load(p.stem)) is not None]

    def password_file(self, now: dt.datetime | None = None) -> str:
        """The enrolment listener's password file: every claim that may still log in (until LOGIN_GRACE
        after its expiry, used or not, so the worker, not the broker, tells the node why it is refused)."""
        now = now or _now()
        lines = [f"{r.claim_id}:{r.password_hash}" for r in self.records() if now < r.expires + LOGIN_GRACE]
        return "".join(f"{line}\n" for line in lines)
