"""The node's TLS identity on disk: which files, who may read the key, and how long the certificates last.

Which files: ``mqtt.tls_ca`` / ``tls_cert`` / ``tls_key`` when the config names them, else what provisioning
installed under ``STATE_DIR/identity`` (``agent.identity``), as ``edgecam run`` uses them.

- The key must be readable by its owner only (no group or other bits) and owned by the service user the
  agent runs as: a key others can read is a node identity others can copy (fail).
- Certificates (the node's and the CA's): fail when expired or not yet valid (a clock far behind shows as
  the latter), warn within ``EXPIRY_WARN_DAYS`` of the end so renewal happens before the broker refuses.
- The node certificate's CN must be the node id (the broker makes it the MQTT username the ACL confines to
  ``edgecam/v1/{node_id}/``), and its public key must be the key's.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.doctor.report import Check, fail, ok, warn
from agent.identity import IdentityPaths

EXPIRY_WARN_DAYS = 30


@dataclass(frozen=True)
class IdentityFiles:
    ca: Path | None
    cert: Path | None
    key: Path | None
    origin: str

    @property
    def client(self) -> bool:
        return self.cert is not None and self.key is not None


def identity_files(cfg: AgentConfig) -> IdentityFiles:
    """The files ``edgecam run`` would connect with (config options first, then the installed identity)."""
    m = cfg.mqtt
    if m.tls_cert is not None or m.tls_ca is not None:
        return IdentityFiles(m.tls_ca, m.tls_cert, m.tls_key, "mqtt.tls_* options")
    paths = IdentityPaths(Path(cfg.state_dir))
    if paths.installed():
        return IdentityFiles(paths.ca_cert, paths.cert, paths.key, f"installed in {paths.dir}")
    return IdentityFiles(None, None, None, f"none installed in {paths.dir}")


def default_service_user() -> str:
    """``edgecam`` (the unit's ``User=``) where that account exists, else whoever runs the doctor."""
    try:
        pwd.getpwnam("edgecam")
        return "edgecam"
    except KeyError:
        return pwd.getpwuid(os.geteuid()).pw_name


def key_check(key: Path, service_user: str) -> Check:
    name = "key permissions"
    try:
        st = key.stat()
    except OSError as exc:
        return fail(name, f"{key}: {exc.strerror}")
    mode = st.st_mode & 0o777
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    if mode & 0o077:
        return fail(name, f"{key}: mode {mode:04o}, readable beyond its owner (chmod 600 {key})")
    if owner != service_user:
        return fail(name, f"{key}: owned by {owner}, not the service user {service_user} "
                          f"(chown {service_user} {key})")
    return ok(name, f"{key}: {mode:04o}, owned by {owner}")


def _load_cert(path: Path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def validity(name: str, path: Path, now: dt.datetime | None = None):
    """The validity check of one certificate file, and the certificate (None when unreadable)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        cert = _load_cert(path)
    except (OSError, ValueError) as exc:
        return fail(name, f"{path}: cannot read the certificate ({exc})"), None
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = end - now
    days = left.total_seconds() / 86400
    when = end.strftime("%Y-%m-%d %H:%M UTC")
    if now < start:
        return fail(name, f"{path}: not valid before {start:%Y-%m-%d %H:%M} UTC (is the clock right?)"), cert
    if left.total_seconds() <= 0:
        return fail(name, f"{path}: expired {when}"), cert
    if days < EXPIRY_WARN_DAYS:
        return warn(name, f"{path}: expires {when}, in {days:.0f} day(s): renew it"), cert
    return ok(name, f"{path}: valid until {when} ({days:.0f} days)"), cert


def matches(cert, key: Path, node_id: str) -> Check:
    """CN = node id, and the certificate's public key is the key's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    name = "certificate subject"
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [node_id]:
        return fail(name, f"CN {', '.join(map(str, cns)) or '(none)'} is not the node id {node_id}")
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return fail(name, f"{key}: cannot read the key ({exc})")
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        return fail(name, "the certificate is not for this node's key")
    return ok(name, f"CN {node_id}, matches the key")


def identity_checks(cfg: AgentConfig, service_user: str, now: dt.datetime | None = None) -> list[Check]:
    files = identity_files(cfg)
    tls = cfg.mqtt.url.reveal().startswith("mqtts://")
    if not files.client:
        if tls:
            return [fail("identity", f"{files.origin}; enrol the node (edgecam provision enrol …)")]
        return [warn("identity", f"{files.origin}; broker URL is mqtt:// (production nodes use mqtts:// "
                                 "with their own identity)")]
    out = [ok("identity", f"{files.origin}")]
    missing = [p for p in (files.ca, files.cert, files.key) if p is not None and not p.is_file()]
    if missing:
        return [*out, fail("identity files", f"missing: {', '.join(map(str, missing))}")]
    out.append(key_check(files.key, service_user))
    check, cert = validity("certificate", files.cert, now)
    out.append(check)
    if cert is not None:
        out.append(matches(cert, files.key, cfg.node_id))
    if files.ca is not None:
        out.append(validity("CA certificate", files.ca, now)[0])
    return out
