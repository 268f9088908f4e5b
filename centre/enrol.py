"""The enrolment worker: answers CSRs from claims (enrolment) and from nodes (renewal) with certificates.

It connects to the mTLS listener as a centre identity and reads ``enrol/+/csr`` and ``+/cert/csr``. For a
claim it checks the token (hash, single use, expiry, node id), the CSR (``provisioning.csr_policy``) and a
per-claim rate limit, burns the token, signs with the CA and replies on ``enrol/<claim_id>/cert``; for a
renewal the broker has already authenticated the node (the ACL lets it publish only its own ``cert/csr``),
so the worker checks the CSR, that the node still holds a live certificate, and the rate limit. Refusals
carry their reason on the reply and in the log.

It also keeps the enrolment listener's password file in step with the claim store (new tokens in, long-expired
ones out) and sends Mosquitto SIGHUP (through its ``pid_file``) when it changed: in ``broker_dir``, or else in
every broker folder ``broker-config --enrol-port`` wrote from this CA (``CA/claims/brokers.txt``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from agent.atomic import write_atomic
from agent.config import format_validation_error
from agent.contract import BY_KEY, EnrolReply, EnrolRequest, match_topic
from agent.errors import EdgecamError
from centre.mqtt import MqttOptions, connect_blocking, make_client
from provisioning.broker_config import ENROL_PASSWD, PID_FILE
from provisioning.ca import CaError, CertificateAuthority, check_namespace, has_live_certificate
from provisioning.claims import ClaimRefused, ClaimStore
from provisioning.csr_policy import check_csr

log = logging.getLogger("edgecam.enrol")

REQUESTS = (BY_KEY["enrol_csr"], BY_KEY["cert_csr"])
REPLY_OF = {"enrol_csr": BY_KEY["enrol_cert"], "cert_csr": BY_KEY["cert_res"]}


@dataclass
class RateLimit:
    """At most ``max_requests`` per ``window_s`` per claim (or node); the first refusal of a window is
    answered, later ones only counted, so a flood cannot make the worker flood back."""

    max_requests: int = 5
    window_s: float = 60.0
    _seen: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _told: dict[str, float] = field(default_factory=dict)

    def admit(self, key: str, now: float) -> str | None:
        """None to go ahead; else "reply" (tell it once) or "drop"."""
        seen = self._seen[key]
        while seen and now - seen[0] >= self.window_s:
            seen.popleft()
        if len(seen) < self.max_requests:
            seen.append(now)
            return None
        if now - self._told.get(key, -self.window_s) >= self.window_s:
            self._told[key] = now
            return "reply"
        return "drop"


class EnrolWorker:
    """Decides one request: ``handle(topic, payload)`` → (reply topic, reply) or None (not ours, or dropped)."""

    def __init__(self, ca_dir: Path, rate: RateLimit | None = None, days: int | None = None) -> None:
        self.ca_dir = Path(ca_dir)
        self.ca = CertificateAuthority.load(self.ca_dir)
        self.claims = ClaimStore(self.ca_dir)
        self.rate = rate or RateLimit()
        self.days = days
        self.chain = self.ca.cert.public_bytes(serialization.Encoding.PEM).decode()
        self._lock = threading.Lock()  # one decision at a time: check, burn and sign never interleave

    def handle(self, topic: str, payload: bytes) -> tuple[str, EnrolReply] | None:
        found = match_topic(topic)
        if found is None or found[0] not in REQUESTS:
            return None
        ch, params = found
        renewal = ch.key == "cert_csr"
        who = params["node_id"] if renewal else params["claim_id"]
        reply_topic = REPLY_OF[ch.key].topic(**params)
        with self._lock:
            verdict = self.rate.admit(f"{ch.key}:{who}", time.monotonic())
            if verdict == "drop":
                log.warning("%s %s: request dropped (rate limit)", ch.key, who)
                return None
            if verdict == "reply":
                reason = f"rate limited: more than {self.rate.max_requests} requests in {self.rate.window_s:g}s"
                log.warning("%s %s: refused: %s", "renewal" if renewal else "claim", who, reason)
                return reply_topic, EnrolReply(request_id=_request_id(payload), status="refused", reason=reason)
            return reply_topic, self._decide(payload, who, renewal)

    def _decide(self, payload: bytes, who: str, renewal: bool) -> EnrolReply:
        what = "renewal" if renewal else "claim"
        try:
            req = EnrolRequest.model_validate_json(payload)
        except ValidationError as exc:
            reason = f"invalid request: {format_validation_error(exc)}"
            log.warning("%s %s: refused: %s", what, who, reason)
            return EnrolReply(status="refused", reason=reason)
        try:
            cert = self._renew(req, who) if renewal else self._enrol(req, who)
        except CaError as exc:
            log.warning("%s %s (node %s): refused: %s", what, who, req.node_id, exc)
            return EnrolReply(request_id=req.request_id, status="refused", node_id=req.node_id, reason=str(exc))
        log.info("%s %s: issued node %s certificate serial %x (until %s)", what, who, req.node_id,
                 cert.serial_number, cert.not_valid_after_utc.date())
        return EnrolReply(request_id=req.request_id, status="ok", node_id=req.node_id,
                          cert=cert.public_bytes(serialization.Encoding.PEM).decode(), chain=self.chain)

    def _sign(self, req: EnrolRequest):
        pem = req.csr.encode()
        return self.ca.sign_csr(pem, req.node_id) if self.days is None else self.ca.sign_csr(pem, req.node_id,
                                                                                               self.days)

    def _enrol(self, req: EnrolRequest, claim_id: str):
        if not req.token:
            raise ClaimRefused("no claim token in the request")
        rec = self.claims.check(req.token, req.node_id, claim_id)
        check_csr(req.csr.encode(), req.node_id)
        check_namespace(self.ca_dir, req.node_id, centre=False)
        self.claims.burn(rec.claim_id)  # before signing: a token signs at most once
        return self._sign(req)

    def _renew(self, req: EnrolRequest, node_id: str):
        if req.node_id != node_id:
            raise CaError(f"renewal on {node_id}'s topic asks for {req.node_id!r}: a node renews only itself")
        if not has_live_certificate(node_id, self.ca_dir):
            raise CaError(f"node {node_id!r} holds no live certificate of this CA (revoked or expired): enrol again")
        check_csr(req.csr.encode(), node_id)
        return self._sign(req)


def _request_id(payload: bytes) -> str | None:
    """The request id of a request refused before it is read (so the node can match the refusal)."""
    try:
        return EnrolRequest.model_validate_json(payload).request_id
    except ValidationError:
        return None


class PasswordSync:
    """Keeps ``broker_dir/enrol.passwd`` equal to the claim store's; SIGHUPs Mosquitto when it changes."""

    def __init__(self, claims: ClaimStore, broker_dir: Path) -> None:
        self.claims = claims
        self.passwd = Path(broker_dir) / ENROL_PASSWD
        self.pid_file = Path(broker_dir) / PID_FILE
        self._stamp: tuple[int, int, int] | None = None

    def sync(self) -> bool:
        """Rewrite and reload when the store changed (a new claim adds a file to its folder) or a minute
        passed (claims leave the file LOGIN_GRACE after their expiry); else nothing is read."""
        minute = int(time.time() // 60)
        try:  # the entry count too: two claims minted within one coarse mtime tick still differ
            stamp = (self.claims.dir.stat().st_mtime_ns, len(os.listdir(self.claims.dir)), minute)
        except FileNotFoundError:
            stamp = (0, 0, minute)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        text = self.claims.password_file()
        try:
            current = self.passwd.read_text()
        except FileNotFoundError:
            current = None
        if current == text:
            return False
        owner = self.passwd.stat() if current is not None else None
        write_atomic(self.passwd, text, mode=0o600)
        if owner is not None and os.geteuid() == 0:  # keep it readable by the account Mosquitto runs as
            os.chown(self.passwd, owner.st_uid, owner.st_gid)
        self._reload()
        return True

    def _reload(self) -> None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError, IndexError) as exc:
            log.warning("%s changed but Mosquitto was not reloaded (%s: %s); send it SIGHUP", self.passwd,
                        self.pid_file, exc)
        else:
            log.info("%s updated; sent Mosquitto (pid %d) SIGHUP", self.passwd, pid)


def run_worker(opts: MqttOptions, ca_dir: Path, broker_dir: Path | None = None, rate: RateLimit | None = None,
               sync_every_s: float = 1.0, days: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT; prints one ``ready`` line once subscribed."""
    worker = EnrolWorker(ca_dir, rate, days)
    dirs = [Path(broker_dir)] if broker_dir is not None else worker.claims.broker_dirs()
    syncs = [PasswordSync(worker.claims, d) for d in dirs]
    if not syncs:
        log.warning("no broker folder to keep enrol.passwd in (run `edgecam broker-config --enrol-port` from this "
                    "CA on this host, or give --broker-dir): claims minted now cannot log in")
    for sync in syncs:
        log.info("keeping %s current", sync.passwd)
        sync.sync()
    client = make_client(opts)
    subscribed = threading.Event()

    def on_message(_c, _u, msg) -> None:
        out = worker.handle(msg.topic, msg.payload)
        if out is not None:
            topic, reply = out
            client.publish(topic, reply.model_dump_json(exclude_none=True), qos=1)

    def subscribe() -> None:
        client.subscribe([(ch.filter(), 1) for ch in REQUESTS])

    connect_blocking(client, opts)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda _c, _u, _f, rc, _p: None if rc.is_failure else subscribe()
    client.on_disconnect = lambda _c, _u, _f, rc, _p: log.warning("broker connection lost (%s); reconnecting", rc)
    subscribe()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise EdgecamError(f"{opts.url}: no SUBACK for the enrolment topics")
    print(f"enrolment worker ready on {opts.url}", flush=True)
    try:
        while not stop.wait(sync_every_s):
            for sync in syncs:
                with contextlib.suppress(OSError):
                    sync.sync()
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
