"""``edgecam provision card``: prepare a freshly flashed Raspberry Pi OS card for one node, on the technician's
machine, before the card ever goes into the node.

It writes ``edgecam-provision.toml`` (node id, brokers, claim token, the CA to pin) and, for the kind of image
on the card, what its first boot reads (cloud-init or firstrun.sh; ``provisioning.card_image``). Nothing is typed
on the pole and no key exists yet: the node makes its own at first boot and enrols with the token.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, ValidationError

from agent.errors import EdgecamError
from agent.transport.mqtt_url import parse_mqtt_url
from provisioning.card_image import ImageKind, Wifi, detect_kind, write_image_files
from provisioning.card_model import NODE_CONFIG_FILE, OTA_ROOT_FILE, PROVISION_FILE, CardError, CardProvision
from provisioning.card_write import write_card_file

#: the broker's mTLS listener when only the enrolment URL is given (``edgecam broker-config --port``'s default)
DEFAULT_MQTTS_PORT = 8883


def default_mqtt_url(enrol_url: str) -> str:
    """The agent's broker: the enrolment listener's host on the mTLS port."""
    try:
        addr = parse_mqtt_url(enrol_url, "--broker")
    except ValueError as exc:
        raise CardError(str(exc)) from None
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    return f"mqtts://{host}:{DEFAULT_MQTTS_PORT}"


def provision_card(boot: Path, node_id: str, enrol_url: str, token: str, ca_cert: Path,
                   mqtt_url: str | None = None, wifi: Wifi | None = None,
                   node_config: Path | None = None, plain: bool = False, ota_root: Path | None = None,
                   ota_url: str | None = None) -> tuple[ImageKind | None, list[Path]]:
    """Write the card; returns the image kind found and the files written. Refuses (``CardError``) before
    writing anything when the card, the CA, the node config or the OTA root is unusable. ``plain``: any folder
    (a USB stick for a Jetson, which has no first-boot files), only the provision files are written.
    ``ota_root``/``ota_url``: the release repository's trusted root and URL (the URL only for the config made
    from these fields; a full ``node_config`` says its own ``[ota]``)."""
    if plain and not boot.is_dir():
        raise CardError(f"{boot}: not a folder")
    if plain and wifi is not None:
        raise CardError("--wifi needs a Raspberry Pi OS boot partition (configure a Jetson's network in oem-config)")
    kind = None if plain else detect_kind(boot)
    try:
        pem = ca_cert.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"--ca-cert {ca_cert}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    config_text = _node_config(node_config, node_id) if node_config else None
    if ota_url is not None and node_config is not None:
        raise CardError("--ota-url is for the config made from the card's fields; put ota.repo_url in --config")
    root_bytes = _ota_root(ota_root) if ota_root is not None else None
    try:
        prov = CardProvision(node_id=node_id, enrol_url=enrol_url, mqtt_url=mqtt_url or default_mqtt_url(enrol_url),
                             token=SecretStr(token), ca_cert=pem,
                             node_config=NODE_CONFIG_FILE if config_text is not None else None,
                             ota_root=OTA_ROOT_FILE if root_bytes is not None else None, ota_url=ota_url)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CardError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    if not token.strip():
        raise CardError("--token is empty (mint one with `edgecam provision token NODE_ID --ca CA`)")
    written = write_image_files(boot, kind, node_id, wifi) if kind is not None else []
    if config_text is not None:
        write_card_file(boot / NODE_CONFIG_FILE, config_text)
        written.append(boot / NODE_CONFIG_FILE)
    if root_bytes is not None:
        write_card_file(boot / OTA_ROOT_FILE, root_bytes.decode("utf-8"))
        written.append(boot / OTA_ROOT_FILE)
    write_card_file(boot / PROVISION_FILE, prov.to_toml(), secret=True)
    written.append(boot / PROVISION_FILE)
    return kind, written


def _ota_root(path: Path) -> bytes:
    """The repository's root, checked as the node will check it (a bad root found on the pole costs a trip)."""
    from agent.ota.trust import check_root

    try:
        return check_root(path)
    except EdgecamError as exc:
        raise CardError(f"--ota-root {exc}") from None


def _node_config(path: Path, node_id: str) -> str:
    """The technician's agent config, validated now (a bad field found on the pole costs a trip)."""
    from agent.config import load_config, read_toml

    try:
        text = path.read_text(encoding="utf-8")
        cfg = load_config(path, environ={})
    except OSError as exc:
        raise CardError(f"--config {path}: cannot read ({exc.strerror or exc})") from None
    except EdgecamError as exc:
        raise CardError(f"--config {path}: {exc}") from None
    if read_toml(path).get("node_id", node_id) != node_id:
        raise CardError(f"--config {path}: node_id is {cfg.node_id!r}, but --node-id is {node_id!r}")
    return text
