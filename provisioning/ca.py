"""The node CA: one EC P-256 root that signs the broker's server certificate and every client identity.

Client identities (nodes and the centre) carry their id as the certificate CN; Mosquitto's
``use_identity_as_username`` turns that CN into the MQTT username, so the ACL's ``%u`` patterns confine
each node to ``edgecam/v1/{CN}/…``. That is why ids are validated here, with the contract's node-id rule
(``agent.contract.ids``): a CN with ``/``, ``+`` or ``#``, or one equal to a level that is not a node
(``centre``, ``fleet``, ``enrol``), would escape its subtree.

Nodes and centres share one namespace: the ACL grants centre rights by username (``user NAME``), so a
centre identity named like a node would hand that node's certificate centre rights. A name once issued
to a node (even revoked) never becomes a centre, and a centre's name never becomes a node
(:func:`check_namespace`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.atomic import write_atomic
from agent.contract.ids import identity_problem, node_id_problem
from agent.errors import EdgecamError

CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 825

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
CENTRE_CERT, CENTRE_KEY = "centre.crt", "centre.key"
CRL = "crl.pem"
ISSUED = "issued"
"""Every certificate the CA signs is kept here as ``{serial:x}.crt``: revocation finds them by CN."""
REVOKED = "revoked.json"
CRL_DAYS = 365
CENTRES = "centres.txt"
"""Names of every centre identity this CA issued; ``broker-config`` grants each the centre's rights."""


class CaError(EdgecamError):
    """A CA folder, key or certificate that cannot be used."""


@dataclass(frozen=True)
class CaFiles:
    """Paths inside a CA folder made by :func:`init_ca`."""

    dir: Path

    ca_cert = property(lambda self: self.dir / CA_CERT)
    ca_key = property(lambda self: self.dir / CA_KEY)
    server_cert = property(lambda self: self.dir / SERVER_CERT)
    server_key = property(lambda self: self.dir / SERVER_KEY)
    centre_cert = property(lambda self: self.dir / CENTRE_CERT)
    centre_key = property(lambda self: self.dir / CENTRE_KEY)
    centres = property(lambda self: self.dir / CENTRES)
    crl = property(lambda self: self.dir / CRL)
    issued = property(lambda self: self.dir / ISSUED)
    revoked = property(lambda self: self.dir / REVOKED)


@dataclass(frozen=True)
class Identity:
    """A client key and certificate on disk, with the CA certificate that verifies the broker."""

    name: str
    cert: Path
    key: Path
    ca_cert: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PEM (PKCS#8, unencrypted) created with mode 0600 from the start, never world-readable."""
    write_atomic(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CaError(f"{path}: certificate not found") from None
    except ValueError as exc:
        raise CaError(f"{path}: not a PEM certificate ({exc})") from None


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise CaError(f"{path}: private key not found") from None
    except (ValueError, TypeError) as exc:
        raise CaError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{path}: expected an EC private key")
    return key


#: node keys the CA signs (enrolment): EC P-256 and stronger curves, RSA from 2048 bits
EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
RSA_MIN_BITS = 2048


def key_problem(key: object) -> str | None:
    """Why a public key is too weak for a node identity, or None."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.name in EC_CURVES else f"EC curve {key.curve.name} (use P-256 or stronger)"
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= RSA_MIN_BITS else f"RSA {key.key_size} bits (at least {RSA_MIN_BITS})"
    return f"{type(key).__name__.lstrip('_')} keys are not accepted (EC P-256+ or RSA ≥ {RSA_MIN_BITS})"


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def check_client_id(name: str, *, what: str = "node id", allow_reserved: bool = False) -> str:
    """Reject ids that would break topic confinement (wildcards, slashes, reserved levels).

    Centre names follow the same lexical rule but may be a reserved level (the default centre is ``centre``).
    """
    problem = identity_problem(name) if allow_reserved else node_id_problem(name)
    if problem:
        raise CaError(f"{what}: {problem}")
    return name


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew on nodes
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class CertificateAuthority:
    """A loaded CA certificate and key, able to sign server and client certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    dir: Path | None = None

    @classmethod
    def load(cls, ca_dir: Path) -> CertificateAuthority:
        files = CaFiles(Path(ca_dir))
        if not files.ca_cert.exists():
            raise CaError(f"{files.ca_cert}: no CA here; run `edgecam ca init --dir {ca_dir}` first")
        return cls(load_cert(files.ca_cert), load_key(files.ca_key), files.dir)

    @property
    def org(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(attrs[0].value) if attrs else "edgecam"

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        cert = (
            builder.add_extension(aki, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                              data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        if self.dir is not None:
            write_cert(CaFiles(self.dir).issued / f"{cert.serial_number:x}.crt", cert)
        return cert

    def write_crl(self, revoked: dict[int, dt.datetime], days: int = CRL_DAYS) -> x509.CertificateRevocationList:
        """The CRL Mosquitto checks every client certificate against (``crlfile``)."""
        now = _now()
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
             .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days)))
        for serial, when in sorted(revoked.items()):
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        crl = b.sign(self.key, hashes.SHA256())
        if self.dir is not None:
            write_atomic(CaFiles(self.dir).crl, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return crl

    def _days(self, days: int) -> int:
        """A certificate never outlives the CA that signed it."""
        left = (self.cert.not_valid_after_utc - _now()).days
        return max(1, min(days, left))

    def sign_client(self, cn: str, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
                    days: int = CLIENT_DAYS) -> x509.Certificate:
        """A TLS client certificate whose CN is the MQTT username (node id or centre name)."""
        b = _builder(_name(cn, self.org), self.cert.subject, public_key, self._days(days))
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return self._sign(b)

    def sign_server(self, hosts: list[str], public_key: ec.EllipticCurvePublicKey,
                    days: int = SERVER_DAYS) -> x509.Certificate:
        """The broker's certificate: SANs for every host name and IP address clients will dial."""
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        b = _builder(_name(hosts[0], self.org), self.cert.subject, public_key, self._days(days))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return self._sign(b)

    def sign_csr(self, csr_pem: bytes, cn: str, days: int = CLIENT_DAYS) -> x509.Certificate:
        """Sign a node's CSR (enrolment). The CN is ours to choose, whatever the CSR asked for."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CaError(f"CSR for {cn!r}: not a PEM certificate request ({exc})") from None
        if not csr.is_signature_valid:
            raise CaError(f"CSR for {cn!r}: signature does not verify")
        pub = csr.public_key()
        problem = key_problem(pub)
        if problem:
            raise CaError(f"CSR for {cn!r}: weak key: {problem}")
        check_client_id(cn)
        if self.dir is not None:
            check_namespace(self.dir, cn, centre=False)
        return self.sign_client(cn, pub, days)


def init_ca(ca_dir: Path, hosts: list[str] | None = None, centre: str = "centre", org: str = "edgecam",
            days: int = CA_DAYS, force: bool = False) -> CaFiles:
    """Create the CA, the broker server identity and the centre's client identity in ``ca_dir``."""
    files = CaFiles(Path(ca_dir))
    if files.ca_key.exists() and not force:
        raise CaError(f"{files.ca_key}: a CA already exists here (use --force to replace it and every cert)")
    check_client_id(centre, what="centre name", allow_reserved=True)
    all_hosts = ["localhost", "127.0.0.1"] + [h for h in (hosts or []) if h not in ("localhost", "127.0.0.1")]

    key = new_key()
    subject = _name(f"{org} node CA", org)
    cert = (
        _builder(subject, subject, key.public_key(), days)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    files.dir.mkdir(parents=True, exist_ok=True)
    files.dir.chmod(0o700)
    write_key(files.ca_key, key)
    write_cert(files.ca_cert, cert)
    if files.revoked.exists():
        files.revoked.unlink()
    if files.issued.exists():  # certificates of a replaced CA mean nothing to the new one
        shutil.rmtree(files.issued)
    ca = CertificateAuthority(cert, key, files.dir)
    ca.write_crl({})

    server_key = new_key()
    write_key(files.server_key, server_key)
    write_cert(files.server_cert, ca.sign_server(all_hosts, server_key.public_key()))

    centre_key = new_key()
    write_key(files.centre_key, centre_key)
    write_cert(files.centre_cert, ca.sign_client(centre, centre_key.public_key()))
    write_atomic(files.centres, centre + "\n")
    return files


def centre_name(ca_dir: Path) -> str:
    """The main centre identity's CN (``centre.crt`` in the CA folder)."""
    return common_name(load_cert(CaFiles(Path(ca_dir)).centre_cert))


def centre_names(ca_dir: Path) -> list[str]:
    """Every centre identity issued by this CA (the ACL grants each the centre's rights)."""
    files = CaFiles(Path(ca_dir))
    names = files.centres.read_text().split() if files.centres.exists() else []
    main = centre_name(ca_dir)
    return [main, *[n for n in dict.fromkeys(names) if n != main]]


def issued_client_names(ca_dir: Path) -> set[str]:
    """CNs of every client certificate this CA signed (``issued/``), revoked ones included."""
    names = set()
    for path in sorted(CaFiles(Path(ca_dir)).issued.glob("*.crt")):
        cert = load_cert(path)
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if ExtendedKeyUsageOID.CLIENT_AUTH in usage:
            names.add(common_name(cert))
    return names


def check_namespace(ca_dir: Path, name: str, *, centre: bool) -> None:
    """Refuse a node id a centre holds, and a centre name a node holds (issued, revoked or not).

    Why both ways: the ACL's ``user NAME`` block gives centre rights to whoever connects with CN ``NAME``,
    and a revoked node certificate still works on a broker whose CRL is stale.
    """
    centres = centre_names(ca_dir)
    if centre:
        if name not in centres and name in issued_client_names(ca_dir):
            raise CaError(f"centre name {name!r}: a node certificate with this CN was issued by this CA "
                          "(revoked or not); a centre of that name would give it centre rights")
    elif name in centres:
        raise CaError(f"node id {name!r}: is a centre identity of this CA (nodes and centres share one namespace)")


def issue_node(node_id: str, ca_dir: Path, out_dir: Path, days: int = CLIENT_DAYS,
               force: bool = False, centre: bool = False) -> Identity:
    """A client key and certificate (CN = id) in ``out_dir``, next to a copy of the CA certificate.

    ``centre=True`` issues one more centre identity (e.g. one per receiver process, because the broker
    makes the client id equal to the CN) and records it so ``broker-config`` grants it the centre's rights;
    regenerate the broker config and reload Mosquitto afterwards.
    """
    check_client_id(node_id, what="centre name" if centre else "node id", allow_reserved=centre)
    ca = CertificateAuthority.load(ca_dir)
    check_namespace(ca_dir, node_id, centre=centre)
    centres = centre_names(ca_dir)
    out = Path(out_dir)
    ident = Identity(node_id, out / f"{node_id}.crt", out / f"{node_id}.key", out / CA_CERT)
    if ident.key.exists() and not force:
        raise CaError(f"{ident.key}: exists (use --force to issue a new key for {node_id})")
    key = new_key()
    write_key(ident.key, key)
    write_cert(ident.cert, ca.sign_client(node_id, key.public_key(), days))
    write_cert(ident.ca_cert, ca.cert)
    if centre and node_id not in centres:
        files = CaFiles(Path(ca_dir))
        write_atomic(files.centres, "\n".join([*centres, node_id]) + "\n")
    return ident


def _read_revoked(files: CaFiles) -> dict[int, dt.datetime]:
    if not files.revoked.exists():
        return {}
    data = json.loads(files.revoked.read_text())
    return {int(k, 16): dt.datetime.fromisoformat(v) for k, v in data.items()}


def revoke(name: str, ca_dir: Path) -> list[int]:
    """Revoke every certificate this CA issued with CN = ``name``; rewrite ``crl.pem``. Returns the serials."""
    ca = CertificateAuthority.load(ca_dir)
    files = CaFiles(Path(ca_dir))
    revoked = _read_revoked(files)
    found = [c for c in (load_cert(p) for p in sorted(files.issued.glob("*.crt"))) if common_name(c) == name]
    if not found:
        raise CaError(f"{files.issued}: no certificate with CN {name!r} was issued by this CA")
    new = [c.serial_number for c in found if c.serial_number not in revoked]
    now = _now()
    revoked.update({s: now for s in new})
    write_atomic(files.revoked, json.dumps({f"{k:x}": v.isoformat() for k, v in revoked.items()}, indent=1))
    ca.write_crl(revoked)
    return new


def has_live_certificate(name: str, ca_dir: Path) -> bool:
    """Whether this CA issued ``name`` a certificate that is neither revoked nor expired (renewal needs one:
    a broker with a stale CRL could still let a revoked node ask)."""
    files = CaFiles(Path(ca_dir))
    revoked = _read_revoked(files)
    now = _now()
    return any(common_name(c) == name and c.serial_number not in revoked and c.not_valid_after_utc > now
               for c in (load_cert(p) for p in sorted(files.issued.glob("*.crt"))))
