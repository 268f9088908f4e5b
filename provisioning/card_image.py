"""What a Raspberry Pi OS boot partition expects at first boot, per image kind, merged into what is there.

Two kinds exist in the field (checked against rpi-imager's own generator):

- **cloud-init** (Raspberry Pi OS from Trixie on; rpi-imager 2.x, ``rpi-imager --cli --cloudinit-userdata``):
  the NoCloud seed ``user-data`` (``#cloud-config``), ``meta-data`` and ``network-config`` (netplan v2) sit on
  the boot partition, mounted at ``/boot/firmware``.
- **firstrun** (Bookworm; rpi-imager 1.x): ``firstrun.sh`` on the boot partition, run once through
  ``systemd.run=`` on the one-line ``cmdline.txt``; the script ends by deleting itself and the hook.

A technician may already have customised the card in rpi-imager (user, SSH key, Wi-Fi, locale): we add our part
beside theirs and never replace it. Our part does two things: Wi-Fi (when asked) and making sure
``edgecam-firstboot.service`` runs. The token is not written here; it stays in ``edgecam-provision.toml``.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from provisioning.card_model import FIRSTBOOT_LOG, PROVISION_FILE, CardError
from provisioning.card_write import write_card_file

ImageKind = Literal["cloud-init", "firstrun"]

CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config")
#: where Raspberry Pi OS (Bookworm and later) mounts the boot partition
BOOT_MOUNT = "/boot/firmware"
FIRSTRUN_HOOK = ("systemd.run={boot}/firstrun.sh systemd.run_success_action=reboot "
                 "systemd.unit=kernel-command-line.target")
BEGIN, END = "# >>> edgecam", "# <<< edgecam"
#: what our cloud-init ``runcmd`` entry and firstrun block run: start (or enable) the first-boot unit, or say
#: on the card why nothing will happen
START_FIRSTBOOT = (
    f"if [ -f /etc/systemd/system/edgecam-firstboot.service ]; then systemctl {{verb}} edgecam-firstboot.service; "
    f"else echo 'edgecam is not installed on this image: run scripts/install-device (docs/PROVISIONING.md)' "
    f">>{BOOT_MOUNT}/{FIRSTBOOT_LOG}; fi"
)


@dataclass(frozen=True)
class Wifi:
    ssid: str
    psk: str
    country: str | None = None

    def psk_hash(self) -> str:
        """WPA-PSK as 64 hex digits (PBKDF2-SHA1, 4096 rounds, SSID salt), as rpi-imager writes it: the
        passphrase itself never lands on the card. A 64-hex PSK is passed through."""
        if re.fullmatch(r"[0-9a-fA-F]{64}", self.psk):
            return self.psk.lower()
        if not 8 <= len(self.psk) <= 63:
            raise CardError("Wi-Fi passphrase must be 8 to 63 characters (or a 64-hex-digit PSK)")
        return hashlib.pbkdf2_hmac("sha1", self.psk.encode(), self.ssid.encode(), 4096, 32).hex()


def detect_kind(boot: Path) -> ImageKind:
    """Which first-boot mechanism this boot partition uses; a ``CardError`` when it is neither."""
    if not boot.is_dir():
        raise CardError(f"{boot}: not a folder (give the mounted boot partition, e.g. /media/$USER/bootfs)")
    if any((boot / name).is_file() for name in CLOUD_INIT_FILES):
        return "cloud-init"
    if (boot / "cmdline.txt").is_file():
        return "firstrun"
    raise CardError(f"{boot}: not a Raspberry Pi OS boot partition (no user-data/meta-data/network-config for "
                    "cloud-init, no cmdline.txt for firstrun.sh)")


def write_image_files(boot: Path, kind: ImageKind, node_id: str, wifi: Wifi | None) -> list[Path]:
    """Merge our part into the image's first-boot files; returns the files written."""
    if kind == "cloud-init":
        return _cloud_init(boot, node_id, wifi)
    return _firstrun(boot, wifi)


# ---------------------------------------------------------------- cloud-init


def _yaml() -> Any:
    """PyYAML comes with the ``card`` extra: only the technician's machine writes cloud-init cards."""
    try:
        import yaml
    except ImportError:
        raise CardError('a cloud-init card needs PyYAML: pip install "edgecam[card]"') from None
    return yaml


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    try:
        doc = _yaml().safe_load(text)
    except _yaml().YAMLError as exc:
        raise CardError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix or delete it") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise CardError(f"{path}: expected a YAML mapping at the top")
    return doc


def _dump(doc: dict[str, Any]) -> str:
    return _yaml().safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)


def _cloud_init(boot: Path, node_id: str, wifi: Wifi | None) -> list[Path]:
    written = [_user_data(boot / "user-data")]
    meta = boot / "meta-data"
    if not meta.is_file():  # NoCloud needs it; the stock image ships one (instance_id), which we keep
        write_card_file(meta, f"instance_id: edgecam-{node_id}\n")
        written.append(meta)
    if wifi is not None:
        written.append(_network_config(boot / "network-config", wifi))
    return written


def _user_data(path: Path) -> Path:
    """Add one ``runcmd`` entry (start the first-boot unit) to the technician's ``#cloud-config``.

    Without a ``runcmd`` of theirs, our block is appended as text so their comments survive; with one, the
    document is re-emitted with our entry appended to their list (YAML comments are lost then)."""
    entry = ["sh", "-c", START_FIRSTBOOT.format(verb="start --no-block")]
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text.strip() and not text.lstrip().startswith("#cloud-config"):
        raise CardError(f"{path}: not a #cloud-config document (a script or MIME user-data); "
                        "merge the edgecam runcmd into it by hand (docs/PROVISIONING.md)")
    doc = _load_yaml(path)
    runcmd = doc.get("runcmd")
    if runcmd is not None and not isinstance(runcmd, list):
        raise CardError(f"{path}: runcmd is not a list")
    if runcmd and entry in runcmd:
        return path  # already there (the card was provisioned before): nothing to add
    if runcmd is None:
        head = text if text.strip() else "#cloud-config\n"
        block = f"\n{BEGIN}: start the first-boot unit (edgecam provision card)\n" + _dump({"runcmd": [entry]})
        write_card_file(path, head.rstrip("\n") + "\n" + block + END + "\n")
    else:
        runcmd.append(entry)
        write_card_file(path, "#cloud-config\n" + _dump(doc))
    return path


def _network_config(path: Path, wifi: Wifi) -> Path:
    """Netplan v2 Wi-Fi for ``wlan0`` (the shape rpi-imager 2.x writes), merged with what is there; 0600."""
    doc = _load_yaml(path)
    net = doc.setdefault("network", {}) if "network" in doc or not doc else doc
    if not isinstance(net, dict):
        raise CardError(f"{path}: network is not a mapping")
    if net.setdefault("version", 2) != 2:
        raise CardError(f"{path}: network config version {net['version']}; only version 2 can be merged")
    wlan = net.setdefault("wifis", {}).setdefault("wlan0", {})
    wlan.setdefault("dhcp4", True)
    wlan.setdefault("optional", True)
    if wifi.country:
        wlan["regulatory-domain"] = wifi.country.upper()
    wlan.setdefault("access-points", {})[wifi.ssid] = {"password": wifi.psk_hash()}
    write_card_file(path, _dump(doc), secret=True)
    return path


# ---------------------------------------------------------------- firstrun.sh


def _firstrun(boot: Path, wifi: Wifi | None) -> list[Path]:
    script, cmdline = boot / "firstrun.sh", boot / "cmdline.txt"
    block = _firstrun_block(wifi)
    if script.is_file():
        text = _splice(script.read_text(encoding="utf-8"), block)
    else:
        text = ("#!/bin/bash\n\nset +e\n\n" + block
                + f"rm -f {BOOT_MOUNT}/firstrun.sh\nsed -i 's| systemd.run.*||g' {BOOT_MOUNT}/cmdline.txt\nexit 0\n")
    write_card_file(script, text, secret=wifi is not None, executable=True)
    written = [script]
    line = cmdline.read_text(encoding="utf-8").strip()
    if "systemd.run=" not in line:  # a firstrun.sh written by rpi-imager already has its hook: keep it
        write_card_file(cmdline, f"{line} {FIRSTRUN_HOOK.format(boot=BOOT_MOUNT)}\n")
        written.append(cmdline)
    return written


def _splice(text: str, block: str) -> str:
    """Our block in place of an earlier one, else before the script's own clean-up (``rm -f …firstrun.sh``),
    which must stay last, else before a final ``exit 0``, else at the end."""
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN), text.index(END) + len(END) + 1
        return text[:start] + block + text[end:]
    lines = text.splitlines(keepends=True)
    for i, ln in enumerate(lines):
        if re.match(r"\s*rm -f \S*firstrun\.sh", ln) or (ln.strip() == "exit 0" and i == len(lines) - 1):
            return "".join(lines[:i]) + block + "".join(lines[i:])
    return text.rstrip("\n") + "\n" + block


def _firstrun_block(wifi: Wifi | None) -> str:
    q = shlex.quote
    out = [f"{BEGIN} (edgecam provision card: Wi-Fi, then the first-boot unit; the token stays in {PROVISION_FILE})"]
    if wifi is not None:
        psk, country = wifi.psk_hash(), (wifi.country or "").upper()
        out += [
            "if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then",
            f"   /usr/lib/raspberrypi-sys-mods/imager_custom set_wlan {q(wifi.ssid)} {q(psk)} {q(country)}",
            "else",
            "   install -d -m 700 /etc/NetworkManager/system-connections",
            "   cat >/etc/NetworkManager/system-connections/edgecam-wifi.nmconnection <<'EDGECAMWIFI'",
            "[connection]\nid=edgecam-wifi\ntype=wifi\nautoconnect=true\n[wifi]\nmode=infrastructure",
            f"ssid={wifi.ssid}\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={psk}\n[ipv4]\nmethod=auto",
            "EDGECAMWIFI",
            "   chmod 600 /etc/NetworkManager/system-connections/edgecam-wifi.nmconnection",
            "   rfkill unblock wifi",
            "fi",
        ]
    # systemd.run runs before the normal boot: enable the unit, it runs (and enrols) after the reboot
    out += [START_FIRSTBOOT.format(verb="enable"), END]
    return "\n".join(out) + "\n"
