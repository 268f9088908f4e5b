"""The node's side of its identity: a key made on the node, its CSR, and the checked install of a certificate.

Node runtime code (the agent renews its own certificate, ``agent.transport.cert_renewal``) that the
provisioning commands use too (online enrolment, offline ``provision csr`` / ``install-cert``, renewal), so
all of them verify the same way before anything is installed: the certificate chains to the *pinned* CA
(the ``ca.crt`` the technician brought, never a chain the network sent), its CN is the node id, it is a
client certificate valid now, and its public key is the pending key's. The key waits in
``identity/pending.key`` (0600) until then, so a failed or refused enrolment never touches a working identity.

Install order: ``ca.crt``, ``node.crt``, then the key renamed over ``node.key``, each atomic. A crash between
the last two leaves a certificate whose key is still ``pending.key``; the agent's next start (before it
connects) or the next ``provision renew`` finishes it (:func:`finish_interrupted_install`).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.atomic import fsync_dir, write_atomic
from agent.contract.ids import node_id_problem
from agent.errors import EdgecamError
from agent.identity import IdentityPaths

PENDING_KEY = "pending.key"
CSR_FILE = "node.csr"


class IdentityError(EdgecamError):
    """A certificate that must not be installed, or an identity folder that cannot be used."""


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise IdentityError(f"{path}: not a readable unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path}: expected an EC private key")
    return key


def write_new_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key, PEM (PKCS#8), created 0600 from the start."""
    key = ec.generate_private_key(ec.SECP256R1())
    write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)
    return key


def pending_key_path(paths: IdentityPaths) -> Path:
    return paths.dir / PENDING_KEY


def csr_path(paths: IdentityPaths) -> Path:
    return paths.dir / CSR_FILE


def _prepare(paths: IdentityPaths) -> None:
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.dir, 0o700)


def make_csr(paths: IdentityPaths, node_id: str) -> bytes:
    """A fresh EC P-256 key in ``identity/pending.key`` (0600) and a CSR asking for exactly ``CN=node_id``.

    The CSR is also written to ``identity/node.csr`` (it holds no secret) for the offline path."""
    problem = node_id_problem(node_id)
    if problem:
        raise IdentityError(f"--node-id: {problem}")
    _prepare(paths)
    key = write_new_key(pending_key_path(paths))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
           .sign(key, hashes.SHA256()))
    pem = csr.public_bytes(serialization.Encoding.PEM)
    write_atomic(csr_path(paths), pem, mode=0o644)
    return pem


def load_pinned_ca(path: Path) -> x509.Certificate:
    try:
        ca = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise IdentityError(f"--ca-cert {path}: file not found") from None
    except ValueError as exc:
        raise IdentityError(f"--ca-cert {path}: not a PEM certificate ({exc})") from None
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise IdentityError(f"--ca-cert {path}: not a CA certificate")
    return ca


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_cert(cert_pem: bytes, ca: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                node_id: str | None = None) -> x509.Certificate:
    """The certificate, if it chains to ``ca``, is a client certificate valid now, matches ``key`` and (when
    given) has CN = ``node_id``; else IdentityError naming the first problem."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise IdentityError(f"not a PEM certificate ({exc})") from None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise IdentityError("certificate was not issued by the pinned CA (--ca-cert)") from None
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise IdentityError(f"certificate not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; check the node's clock)")
    cn = common_name(cert)
    if node_id is not None and cn != node_id:
        raise IdentityError(f"certificate is for {cn!r}, not this node {node_id!r}")
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise IdentityError("certificate is not a TLS client certificate (no clientAuth usage)")
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        raise IdentityError("certificate does not match this node's pending key (signed from another CSR?)")
    return cert


def pending_key(paths: IdentityPaths) -> ec.EllipticCurvePrivateKey:
    path = pending_key_path(paths)
    if not path.exists():
        raise IdentityError(f"{path}: no pending key; run `edgecam provision csr` (or enrol) first")
    return load_key(path)


def install(paths: IdentityPaths, cert_pem: bytes, ca: x509.Certificate,
            node_id: str | None = None) -> x509.Certificate:
    """Verify ``cert_pem`` against the pinned ``ca`` and the pending key, then install the three files."""
    key = pending_key(paths)
    if node_id is None and csr_path(paths).exists():
        node_id = common_name_of_csr(csr_path(paths).read_bytes())
    cert = verify_cert(cert_pem, ca, key, node_id)
    write_atomic(paths.ca_cert, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    os.replace(pending_key_path(paths), paths.key)  # already 0600: made so by write_key
    fsync_dir(paths.dir)
    csr_path(paths).unlink(missing_ok=True)
    return cert


def finish_interrupted_install(paths: IdentityPaths) -> bool:
    """A crash between installing ``node.crt`` and renaming its key: finish the rename. True if it did."""
    pend = pending_key_path(paths)
    if not (pend.exists() and paths.cert.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        if _public_der(cert.public_key()) != _public_der(load_key(pend).public_key()):
            return False
    except (ValueError, IdentityError):
        return False
    os.replace(pend, paths.key)
    fsync_dir(paths.dir)
    return True


def common_name_of_csr(pem: bytes) -> str:
    csr = x509.load_pem_x509_csr(pem)
    attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def installed_node_id(paths: IdentityPaths) -> str:
    """The CN of the installed certificate: the node id renewal asks for."""
    if not paths.installed():
        raise IdentityError(f"{paths.dir}: no identity installed (enrol first)")
    try:
        return common_name(x509.load_pem_x509_certificate(paths.cert.read_bytes()))
    except ValueError as exc:
        raise IdentityError(f"{paths.cert}: not a PEM certificate ({exc})") from None


def not_after(paths: IdentityPaths) -> dt.datetime | None:
    """When the installed certificate expires, or None without a readable one."""
    try:
        return x509.load_pem_x509_certificate(paths.cert.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None
