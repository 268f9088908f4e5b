"""Board probes read from sysfs/procfs under a configurable root, so tests use a fixture tree.

Every probe returns None when the machine does not expose the value (a laptop, a container).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

#: Raspberry Pi firmware throttling bits (vcgencmd get_throttled): current under-voltage, freq capped,
#: throttled, soft temp limit
THROTTLED_NOW_MASK = 0x1 | 0x2 | 0x4 | 0x8


@dataclass(frozen=True)
class Probes:
    root: Path = Path("/")

    def _read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(errors="replace").strip("\x00\n ")
        except OSError:
            return None

    def board_model(self) -> str | None:
        """``Raspberry Pi 4 Model B Rev 1.4``, ``NVIDIA Jetson Orin Nano …``, or the DMI product name."""
        return (self._read("proc/device-tree/model") or self._read("sys/firmware/devicetree/base/model")
                or self._read("sys/class/dmi/id/product_name"))

    def cpu_temp_c(self) -> float | None:
        zones = sorted((self.root / "sys/class/thermal").glob("thermal_zone*/temp"))
        temps = []
        for z in zones:
            try:
                temps.append(int(z.read_text().strip()) / 1000.0)
            except (OSError, ValueError):
                continue
        return max(temps) if temps else None

    def throttled(self) -> bool | None:
        """Pi firmware's get_throttled bits (exposed by the raspberrypi-hwmon/firmware sysfs node)."""
        raw = self._read("sys/devices/platform/soc/soc:firmware/get_throttled")
        if raw is None:
            return None
        try:
            return bool(int(raw, 16) & THROTTLED_NOW_MASK)
        except ValueError:
            return None

    def cameras(self) -> list[str]:
        """V4L2 capture devices by name (``/dev/video0: USB Camera``)."""
        out = []
        for dev in sorted((self.root / "sys/class/video4linux").glob("video*")):
            name = (dev / "name").read_text().strip() if (dev / "name").exists() else "?"
            out.append(f"/dev/{dev.name}: {name}")
        return out

    def disk_free_bytes(self, path: Path) -> int | None:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None
