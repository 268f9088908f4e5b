"""What a node's certificate request may ask for before the CA signs it (enrolment, renewal, ``ca sign``).

The CA imposes the CN anyway (``CertificateAuthority.sign_csr``); refusing a CSR that asks for anything else
(another CN, extra subject fields, SANs or other extensions, a weak key) tells a confused or hostile node
*why* instead of silently handing it a certificate it did not ask for.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning.ca import CaError, key_problem

MAX_CSR_BYTES = 16_384


class CsrRefused(CaError):
    """A CSR the CA will not sign; ``str()`` is the reason given to the node."""


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    if len(pem) > MAX_CSR_BYTES:
        raise CsrRefused(f"CSR is {len(pem)} bytes (at most {MAX_CSR_BYTES})")
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise CsrRefused(f"not a PEM certificate request ({exc})") from None


def check_csr(pem: bytes, node_id: str) -> x509.CertificateSigningRequest:
    """The parsed CSR if it is signed by its key, the key is strong and the subject is exactly ``CN=node_id``."""
    csr = load_csr(pem)
    if not csr.is_signature_valid:
        raise CsrRefused("CSR signature does not verify (not made with the key it carries)")
    problem = key_problem(csr.public_key())
    if problem:
        raise CsrRefused(f"weak key: {problem}")
    attrs = list(csr.subject)
    cns = [str(a.value) for a in attrs if a.oid == NameOID.COMMON_NAME]
    if cns != [node_id]:
        asked = ", ".join(cns) or "no CN"
        raise CsrRefused(f"CSR subject asks for CN {asked!r}; it must be exactly CN={node_id}")
    others = [a.oid._name for a in attrs if a.oid != NameOID.COMMON_NAME]
    if others:
        raise CsrRefused(f"CSR subject asks for more than the node id ({', '.join(others)}); only CN={node_id}")
    if len(csr.extensions):
        names = ", ".join(e.oid._name for e in csr.extensions)
        raise CsrRefused(f"CSR requests extensions ({names}); the CA decides them, send none")
    return csr
