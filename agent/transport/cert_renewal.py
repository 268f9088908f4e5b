"""The agent renews its own certificate before it expires, over its own mTLS connection.

Only an identity provisioning installed (``STATE_DIR/identity``, the files ``mqtt.tls_*`` point at) is
renewed: files an operator named are theirs. When the certificate has less than ``mqtt.renew_before_days``
left, the agent makes a new key (``identity/pending.key``), publishes a CSR on its own
``{node_id}/cert/csr`` and, when the centre's enrolment worker answers on ``cert/res``, verifies the
certificate against the pinned CA and installs key and certificate (``agent.node_identity``). The running
connection keeps its TLS session; the next connection (``MqttLink`` loads the files at every connect) uses
the new pair. A refusal or no answer is logged and retried after ``RETRY_S``.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable

from pydantic import ValidationError

from agent.config import MqttConfig
from agent.contract import EnrolReply, EnrolRequest, Topics
from agent.errors import EdgecamError
from agent.identity import IdentityPaths
from agent.node_identity import finish_interrupted_install, install, load_pinned_ca, make_csr, not_after

log = logging.getLogger(__name__)

#: after a refused or unanswered request, and between checks while connected
RETRY_S = 3600.0


def owns(cfg: MqttConfig, paths: IdentityPaths) -> bool:
    """Whether the connection uses the identity provisioning installed (the agent may renew and repair it)."""
    return cfg.tls_cert == paths.cert and cfg.tls_key == paths.key


def finish_install(cfg: MqttConfig, paths: IdentityPaths) -> None:
    """Before connecting: a renewal cut off between installing ``node.crt`` and renaming its key (power loss)
    is finished, or the first TLS handshake would fail on a certificate that does not match ``node.key``."""
    if owns(cfg, paths) and finish_interrupted_install(paths):
        log.warning("certificate renewal: finished an install interrupted before its key was renamed")


class CertRenewal:
    """Decides when to ask, builds the request, and installs the answer; the facade moves the messages."""

    def __init__(self, cfg: MqttConfig, paths: IdentityPaths, topics: Topics,
                 publish: Callable[[str, bytes], object], clock: Callable[[], float] = time.monotonic) -> None:
        self.paths, self.topics, self.publish, self.clock = paths, topics, publish, clock
        self.before = dt.timedelta(days=cfg.renew_before_days)
        self.enabled = cfg.renew_before_days > 0 and owns(cfg, paths)
        self._request_id: str | None = None
        self._next_check = 0.0
        self.renewed = 0

    def due(self) -> bool:
        end = not_after(self.paths)
        return end is not None and end - dt.datetime.now(dt.timezone.utc) <= self.before

    def check(self) -> None:
        """On link up and on ticks: ask for a new certificate when due and not asked within RETRY_S."""
        if not self.enabled or self.clock() < self._next_check:
            return
        self._next_check = self.clock() + RETRY_S
        if not self.due():
            return
        try:
            csr = make_csr(self.paths, self.topics.node_id)
        except (OSError, EdgecamError) as exc:
            log.warning("certificate renewal: cannot make a key and CSR (%s); retrying in %.0f s", exc, RETRY_S)
            return
        self._request_id = secrets.token_hex(8)
        req = EnrolRequest(request_id=self._request_id, node_id=self.topics.node_id, csr=csr.decode())
        self.publish(self.topics.cert_csr, req.model_dump_json(exclude_none=True).encode())
        log.info("certificate renewal: certificate expires %s; asked the centre for a new one",
                 not_after(self.paths))

    def handle(self, payload: bytes) -> None:
        """A message on ``cert/res``: install the certificate it carries if it answers our request."""
        try:
            reply = EnrolReply.model_validate_json(payload)
        except ValidationError:
            log.warning("certificate renewal: unreadable reply on %s ignored", self.topics.cert_res)
            return
        if self._request_id is None or reply.request_id != self._request_id:
            return
        self._request_id = None
        if reply.status != "ok" or not reply.cert:
            log.warning("certificate renewal refused by the centre: %s; retrying in %.0f s", reply.reason, RETRY_S)
            return
        try:
            cert = install(self.paths, reply.cert.encode(), load_pinned_ca(self.paths.ca_cert), self.topics.node_id)
        except (OSError, EdgecamError) as exc:
            log.warning("certificate renewal: certificate not installed (%s); retrying in %.0f s", exc, RETRY_S)
            return
        self.renewed += 1
        log.info("certificate renewal: installed serial %x valid until %s (used from the next connection)",
                 cert.serial_number, cert.not_valid_after_utc.date())

