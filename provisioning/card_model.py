"""``edgecam-provision.toml``: what a flashed card tells a node at first boot (node id, brokers, claim token, CA).

One pydantic model, read by ``edgecam provision firstboot`` on the node and written by ``edgecam provision card``
on the technician's machine, so both sides agree on every field. The token is the only secret: it is single-use
and short-lived, and first boot removes it from the card once the node holds its own identity.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agent.contract.ids import NodeId
from agent.errors import EdgecamError
from agent.transport.mqtt_url import parse_mqtt_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

#: names on the boot partition (FAT: no permissions to rely on, so nothing here outlives its use)
PROVISION_FILE = "edgecam-provision.toml"
#: what the provision file becomes once the node is enrolled: the same fields, never the token
PROVISIONED_FILE = "edgecam-provisioned.toml"
#: an optional full agent config the technician put on the card (installed as /etc/edgecam/node.toml)
NODE_CONFIG_FILE = "edgecam-node.toml"
#: the OTA repository's trusted root (REPO/metadata/1.root.json), installed as STATE_DIR/ota/root.json
OTA_ROOT_FILE = "edgecam-ota-root.json"
#: the technician-readable first-boot log on the card
FIRSTBOOT_LOG = "edgecam-firstboot.log"


class CardError(EdgecamError):
    """A boot partition or provision file that cannot be used; one line naming the problem."""


class CardProvision(BaseModel):
    """The fields of ``edgecam-provision.toml``."""

    model_config = ConfigDict(extra="forbid")

    node_id: NodeId
    #: the broker's enrolment listener (claim identity, enrolment topics only), ``mqtts://host:P2``
    enrol_url: str
    #: the broker the agent publishes to with its own certificate, ``mqtts://host:P``
    mqtt_url: str
    #: the single-use claim token; None once first boot has enrolled the node
    token: SecretStr | None = None
    #: PEM of the CA that signs the broker's and the node's certificates (pinned at enrolment)
    ca_cert: str
    #: name of a full agent config on the card (``edgecam-node.toml``), or None for one made from these fields
    node_config: str | None = None
    #: name of the OTA trusted root on the card (``edgecam-ota-root.json``), or None: no OTA trust installed
    ota_root: str | None = None
    #: the release repository (``ota.repo_url`` of the config made from these fields)
    ota_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")

    @field_validator("enrol_url", "mqtt_url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parse_mqtt_url(v, "broker URL")
        except (EdgecamError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("ca_cert")
    @classmethod
    def _pem(cls, v: str) -> str:
        if "-----BEGIN CERTIFICATE-----" not in v:
            raise ValueError("not a PEM certificate")
        return v

    def to_toml(self) -> str:
        """The file's text (every value a TOML basic string: JSON string escapes are valid TOML)."""
        lines = ["# edgecam provisioning for this card: read once by edgecam-firstboot.service at first boot.",
                 "# The token is single-use; first boot removes it from the card after enrolling."]
        for key, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    def without_token(self) -> CardProvision:
        return self.model_copy(update={"token": None})


def read_provision(path: Path) -> CardProvision:
    """Parse and validate the provision file; a bad one is a ``CardError`` naming the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CardError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: not valid TOML ({exc})") from None
    try:
        return CardProvision.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise CardError(f"{path}: {where}: {err['msg']}") from None
