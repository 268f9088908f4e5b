"""A stand-in for ``edgecam provision enrol`` (built in parallel), honouring its exact CLI:

    enrol_standin.py provision enrol --claim TOKEN --mqtt URL --ca-cert ca.crt --state-dir DIR --node-id ID

It does what the real command's caller can observe: it needs the broker (a real MQTT CONNECT to ``--mqtt``, so a
stopped broker fails it), accepts each token once (``STANDIN_TOKENS``: a file of valid tokens; used ones are
appended to ``STANDIN_TOKENS.used``), makes a P-256 key on the node (0600), and installs key, certificate (CN =
node id) and the pinned CA under ``STATE/identity`` (``agent.identity``). Errors: one line, exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def reach_broker(url: str, ca: Path) -> None:
    import paho.mqtt.client as mqtt

    from agent.transport.mqtt_url import parse_mqtt_url

    addr = parse_mqtt_url(url, "--mqtt")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="standin-claim", protocol=mqtt.MQTTv5)
    if addr.tls:
        client.tls_set(ca_certs=str(ca))
    try:
        client.connect(addr.host, addr.port, keepalive=10)
    except OSError as exc:
        fail(f"cannot reach the enrolment broker at {addr.host}:{addr.port}: {exc}")
    client.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser(prog="edgecam")
    ap.add_argument("group", choices=["provision"])
    ap.add_argument("command", choices=["enrol"])
    ap.add_argument("--claim", required=True)
    ap.add_argument("--mqtt", required=True)
    ap.add_argument("--ca-cert", required=True, type=Path)
    ap.add_argument("--state-dir", required=True, type=Path)
    ap.add_argument("--node-id", required=True)
    a = ap.parse_args()

    if not a.ca_cert.is_file():
        fail(f"--ca-cert {a.ca_cert}: no such file")
    reach_broker(a.mqtt, a.ca_cert)
    if a.claim.startswith("@"):  # as the real command: the token from a file, out of `ps`
        a.claim = Path(a.claim[1:]).read_text().strip()
    tokens = Path(os.environ["STANDIN_TOKENS"])
    used = tokens.with_name(tokens.name + ".used")
    if a.claim not in tokens.read_text().split():
        fail("claim refused: unknown token")
    if used.exists() and a.claim in used.read_text().split():
        fail("claim refused: token already used")

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from agent.atomic import write_atomic
    from agent.identity import IdentityPaths

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, a.node_id)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    ids = IdentityPaths(a.state_dir)
    ids.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(ids.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), mode=0o600)
    write_atomic(ids.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(ids.ca_cert, a.ca_cert.read_bytes())
    with open(used, "a") as fh:
        fh.write(a.claim + "\n")
    print(f"enrolled {a.node_id}: {ids.cert}")


if __name__ == "__main__":
    main()
