"""``edgecam provision firstboot``: what ``edgecam-firstboot.service`` does once, on the node, from the card.

Steps, each skipped when already done, so a second run changes nothing and a run cut short by a power cut
finishes on the next boot:

1. install the agent config (``/etc/edgecam/node.toml``: the card's ``edgecam-node.toml``, or one made from the
   provision file), the pinned CA (``/etc/edgecam/ca.crt``) and the OTA trusted root when the card carries one
   (``STATE/ota/root.json``; a different root already there is refused, not replaced);
2. enrol through the enrolment CLI (``edgecam provision enrol …``), unless ``STATE/identity`` is complete;
3. remove the token from the card (the provision file becomes ``edgecam-provisioned.toml``, without it);
4. enable the agent (``systemctl enable --now``; in a fixture root, the ``multi-user.target.wants`` link).

A failed enrolment keeps the token on the card and exits 1, so the unit's ``Restart=on-failure`` tries again;
every step is told on the console (the journal) and appended to ``edgecam-firstboot.log`` on the card, which a
technician can read in any card reader. ``root`` prefixes every node path, so tests run it on a fixture tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from agent.identity import IdentityPaths
from provisioning.card_model import (
    FIRSTBOOT_LOG,
    PROVISION_FILE,
    PROVISIONED_FILE,
    CardError,
    CardProvision,
    read_provision,
)
from provisioning.card_write import write_card_file

STATE_DIR = Path("/var/lib/edgecam")
CONFIG = Path("/etc/edgecam/node.toml")
CA_CERT = Path("/etc/edgecam/ca.crt")
AGENT_UNIT = "edgecam.service"
UNIT_DIR = Path("/etc/systemd/system")
ENROL_TIMEOUT_S = 300.0
SERVICE_USER = "edgecam"


@dataclass(frozen=True)
class EnrolRequest:
    """The enrolment CLI's arguments (DESIGN's CLI contract), node paths as seen on the node."""

    token: str
    url: str
    ca_cert: Path
    state_dir: Path
    node_id: str


#: runs one enrolment; returns None on success or the reason it failed (one line)
Enrol = Callable[[EnrolRequest], "str | None"]


def cli_enrol(edgecam: list[str]) -> Enrol:
    """Enrol by running ``edgecam provision enrol`` (``edgecam``: the command that starts the CLI)."""

    def enrol(req: EnrolRequest) -> str | None:
        # the token goes in a 0600 file (``--claim @FILE``), not on the command line any local user can read
        fd, token_file = tempfile.mkstemp(prefix="edgecam-claim-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(req.token + "\n")
            cmd = [*edgecam, "provision", "enrol", "--claim", f"@{token_file}", "--mqtt", req.url, "--ca-cert",
                   str(req.ca_cert), "--state-dir", str(req.state_dir), "--node-id", req.node_id]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=ENROL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"enrolment command did not run: {exc}"
        finally:
            Path(token_file).unlink(missing_ok=True)
        if res.returncode == 0:
            return None
        lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
        return (lines[-1] if lines else "no message") + f" (exit {res.returncode})"

    return enrol


class CardLog:
    """One line to the console (journal) and, timestamped, to ``edgecam-firstboot.log`` on the card."""

    def __init__(self, boot: Path, echo: Callable[[str], None] = print) -> None:
        self.path, self.echo = boot / FIRSTBOOT_LOG, echo

    def __call__(self, line: str) -> None:
        self.echo(f"edgecam-firstboot: {line}")
        ts = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{ts} {line}\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # a read-only card must not stop the node from enrolling
            self.echo(f"edgecam-firstboot: cannot write {self.path}: {exc.strerror or exc}")


@dataclass
class Firstboot:
    boot: Path
    root: Path
    enrol: Enrol
    log: CardLog
    systemctl: Callable[[list[str]], int] | None = None  # None: the fixture-root way (links, no systemd)

    def node(self, path: Path) -> Path:
        """A node path under ``root``."""
        return self.root / path.relative_to("/")

    def run(self) -> int:
        """0: provisioned (now or before); 1: enrolment failed, token kept, retry; 2: the card is unusable."""
        prov_path = self.boot / PROVISION_FILE
        if not prov_path.exists():
            done = (self.boot / PROVISIONED_FILE).exists()
            self.log.echo("edgecam-firstboot: " + ("already provisioned; nothing to do" if done else
                          f"no {PROVISION_FILE} on {self.boot}; nothing to do"))
            return 0
        try:
            prov = read_provision(prov_path)
            self.install_config(prov)
        except CardError as exc:
            self.log(f"FAILED: {exc}")
            return 2
        identity = IdentityPaths(self.node(STATE_DIR))
        if identity.installed():
            self.log(f"node {prov.node_id} already holds its identity ({STATE_DIR}/identity); not enrolling again")
        elif prov.token is None:
            self.log(f"FAILED: {prov_path} has no token and the node has no identity: mint a new token "
                     "(edgecam provision token) and write the card again (edgecam provision card)")
            return 2
        else:
            self.log(f"enrolling node {prov.node_id} at {prov.enrol_url}")
            why = self.enrol(EnrolRequest(prov.token.get_secret_value(), prov.enrol_url, self.node(CA_CERT),
                                          self.node(STATE_DIR), prov.node_id))
            if why is None and not identity.installed():
                why = f"enrolment reported success but {STATE_DIR}/identity is incomplete"
            if why is not None:
                self.log(f"enrolment FAILED: {why}; the token stays on the card and the unit retries")
                return 1
            self.log(f"enrolled: certificate for {prov.node_id} installed in {STATE_DIR}/identity")
        if self.systemctl is not None:
            own_state_dir(self.node(STATE_DIR))
        self.burn_token(prov)
        return self.enable_agent(prov)

    def install_config(self, prov: CardProvision) -> None:
        if prov.node_config:
            try:
                text = (self.boot / prov.node_config).read_text(encoding="utf-8")
            except OSError as exc:
                raise CardError(f"{self.boot / prov.node_config}: cannot read ({exc.strerror or exc})") from None
        else:
            text = default_node_config(prov)
        if self._write_if_changed(CONFIG, text):
            self.log(f"installed {CONFIG}")
        if self._write_if_changed(CA_CERT, prov.ca_cert):
            self.log(f"installed {CA_CERT} (the CA this node pins)")
        if prov.ota_root:
            self.install_ota_root(self.boot / prov.ota_root)

    def install_ota_root(self, src: Path) -> None:
        """The release repository's root, checked as ``edgecam ota install-root`` checks it."""
        from agent.errors import EdgecamError
        from agent.ota.paths import OtaPaths
        from agent.ota.trust import install_root

        paths = OtaPaths(self.node(STATE_DIR))
        before = paths.bootstrap_root.read_bytes() if paths.bootstrap_root.is_file() else None
        try:
            dest = install_root(src, paths)
        except EdgecamError as exc:
            raise CardError(f"OTA root: {exc}") from None
        if dest.read_bytes() != before:
            self.log(f"installed the OTA trusted root ({STATE_DIR}/ota/root.json)")

    def _write_if_changed(self, path: Path, text: str) -> bool:
        target = self.node(path)
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            return False
        write_card_file(target, text)  # atomic; 0644 (no secret in either file)
        return True

    def burn_token(self, prov: CardProvision) -> None:
        """The provision file without its token, under the name that no longer triggers the unit."""
        done = self.boot / PROVISIONED_FILE
        write_card_file(done, prov.without_token().to_toml())
        (self.boot / PROVISION_FILE).unlink()
        self.log(f"token removed from the card ({PROVISION_FILE} is now {PROVISIONED_FILE})")

    def enable_agent(self, prov: CardProvision) -> int:
        if self.systemctl is not None:
            if self.systemctl(["is-enabled", "--quiet", AGENT_UNIT]) != 0:
                code = self.systemctl(["enable", "--now", "--no-block", AGENT_UNIT])
                if code != 0:
                    self.log(f"FAILED: systemctl enable {AGENT_UNIT} exited {code}")
                    return 1
                self.log(f"enabled and started {AGENT_UNIT}")
        else:
            unit = self.node(UNIT_DIR / AGENT_UNIT)
            if not unit.is_file():
                self.log(f"FAILED: {UNIT_DIR / AGENT_UNIT} is not installed (run scripts/install-device)")
                return 2
            link = self.node(UNIT_DIR / "multi-user.target.wants" / AGENT_UNIT)
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(UNIT_DIR / AGENT_UNIT)
                self.log(f"enabled {AGENT_UNIT} (multi-user.target.wants)")
        self.log(f"node {prov.node_id} provisioned; the agent runs with {CONFIG}")
        return 0


def default_node_config(prov: CardProvision) -> str:
    """The agent config when the card carries none: node id, state dir (holding the enrolled identity) and
    broker; every other field keeps its default (provisioning/templates/node.toml shows them all)."""
    import json

    return (f"# written at first boot from the card's {PROVISION_FILE}; every other field keeps its default\n"
            f"node_id = {json.dumps(prov.node_id)}\nstate_dir = {json.dumps(str(STATE_DIR))}\n\n"
            f"[mqtt]\nurl = {json.dumps(prov.mqtt_url)}\n"
            + (f"\n[ota]\nrepo_url = {json.dumps(prov.ota_url)}\n" if prov.ota_url else ""))


def own_state_dir(state: Path, user: str = SERVICE_USER) -> None:
    """The agent runs as ``user``: the state dir (0700) and the identity enrolment made as root become its."""
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return  # no service user (a development machine): leave the files as they are
    for dirpath, _dirs, files in os.walk(state):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), pw.pw_uid, pw.pw_gid)


def run_systemctl(args: list[str]) -> int:
    return subprocess.run(["systemctl", *args], check=False).returncode


def firstboot(boot: Path, root: Path = Path("/"), edgecam: list[str] | None = None,
              echo: Callable[[str], None] = print) -> int:
    """The command: on ``/`` through systemctl, on any other root through unit links."""
    enrol = cli_enrol(edgecam or [sys.executable, "-m", "agent.cli"])
    systemctl = run_systemctl if root.resolve() == Path("/") else None
    return Firstboot(boot, root, enrol, CardLog(boot, echo), systemctl).run()

