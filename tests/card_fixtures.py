"""Boot partitions as flashed cards carry them, built in a test's tmp folder from small realistic files.

- ``cloud_init_boot``: Raspberry Pi OS Trixie written by rpi-imager 2.x with OS customisation: ``user-data``
  (#cloud-config with hostname, user, SSH key, as rpi-imager's generator emits it), ``meta-data`` (the image's
  ``instance_id``), ``network-config`` (the image's comment-only default), ``cmdline.txt``, ``config.txt``.
- ``firstrun_boot``: Bookworm written by rpi-imager 1.x with customisation: ``firstrun.sh`` (hostname, user,
  then its self-removal) and the ``systemd.run=`` hook on ``cmdline.txt``; ``customised=False`` is the stock card.
"""

from __future__ import annotations

from pathlib import Path

CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=8a438930-02 rootfstype=ext4 fsck.repair=yes "
           "rootwait quiet splash plymouth.ignore-serial-consoles cfg80211.ieee80211_regdom=VN")
CONFIG_TXT = "# http://rptl.io/configtxt\ndtparam=audio=on\ncamera_auto_detect=1\nauto_initramfs=1\narm_64bit=1\n"

USER_DATA = """#cloud-config
# written by Raspberry Pi Imager
hostname: hue-cam-0042
manage_etc_hosts: true
packages:
- avahi-daemon

apt:
  conf: |
    Acquire {
      Check-Date "false";
    };

timezone: Asia/Ho_Chi_Minh
enable_ssh: true
users:
- name: tech
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: true
  ssh_authorized_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVqZ2ZmYWtla2V5Zm9ydGVzdHM tech@laptop
  sudo: ALL=(ALL) NOPASSWD:ALL
"""
META_DATA = "instance_id: rpios-image\n"
NETWORK_CONFIG = """# This file contains a netplan-compatible configuration which cloud-init will
# apply on first-boot (if it exists). Please refer to the cloud-init documentation
# and the netplan reference for full details.
#
#network:
#  version: 2
#  wifis:
#    wlan0:
#      dhcp4: true
#      optional: true
#      access-points:
#        myhomewifi:
#          password: "S3kr1t"
"""

FIRSTRUN = """#!/bin/bash

set +e

CURRENT_HOSTNAME=`cat /etc/hostname | tr -d " \\t\\n\\r"`
if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname hue-cam-0042
else
   echo hue-cam-0042 >/etc/hostname
   sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\thue-cam-0042/g" /etc/hosts
fi
FIRSTUSER=`getent passwd 1000 | cut -d: -f1`
FIRSTUSERHOME=`getent passwd 1000 | cut -d: -f6`
if [ -f /usr/lib/userconf-pi/userconf ]; then
   /usr/lib/userconf-pi/userconf 'tech' '$6$rounds=656000$salt$hash'
fi
rm -f /boot/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/cmdline.txt
exit 0
"""
FIRSTRUN_HOOK = (" systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot"
                 " systemd.unit=kernel-command-line.target")


def cloud_init_boot(path: Path, user_data: str = USER_DATA) -> Path:
    path.mkdir(parents=True)
    (path / "cmdline.txt").write_text(CMDLINE + "\n")
    (path / "config.txt").write_text(CONFIG_TXT)
    (path / "user-data").write_text(user_data)
    (path / "meta-data").write_text(META_DATA)
    (path / "network-config").write_text(NETWORK_CONFIG)
    return path


def firstrun_boot(path: Path, customised: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "cmdline.txt").write_text(CMDLINE + (FIRSTRUN_HOOK if customised else "") + "\n")
    (path / "config.txt").write_text(CONFIG_TXT)
    if customised:
        (path / "firstrun.sh").write_text(FIRSTRUN)
    return path


def snapshot(*folders: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every file and link under the folders: kind, content (or link target) and mtime, to show that a second
    run changed nothing."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", str(p.readlink()), st.st_mtime_ns)
            elif p.is_file():
                out[str(p)] = ("file", p.read_bytes(), st.st_mtime_ns)
            else:
                out[str(p)] = ("dir", "", 0)
    return out
