"""systemd's start loop for one service unit, for tests on a machine without systemd (run as a process).

It reads the real unit file and does what systemd does with the lines the agent unit uses: ``ExecStartPre=``
then ``ExecStart=`` with ``INVOCATION_ID`` set (so the agent exits to be restarted instead of re-executing
itself) and the unit's ``Environment=``; ``Restart=on-failure`` after ``RestartSec=`` when either exits non-zero;
``StartLimitBurst=`` starts in ``StartLimitIntervalSec=`` end the loop (exit 1, as a unit that failed for
good). SIGTERM stops the running command and ends the loop with its status. Paths are rewritten with
``--replace OLD=NEW`` (the unit's /opt/edgecam/venv and /etc/edgecam/node.toml become the test's).
Not emulated: Type=notify, the watchdog, sandboxing, OnFailure=.

    python -m tests.unit_loop UNIT [--replace OLD=NEW]… [--restart-sec S]
"""

from __future__ import annotations

import argparse
import configparser
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path


def read_unit(path: Path, replace: list[tuple[str, str]]) -> configparser.SectionProxy:
    text = path.read_text(encoding="utf-8")
    for old, new in replace:
        text = text.replace(old, new)
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in units
    parser.read_string(text)
    unit = parser["Unit"]
    service = parser["Service"]
    service.setdefault("StartLimitBurst", unit.get("StartLimitBurst", "5"))
    service.setdefault("StartLimitIntervalSec", unit.get("StartLimitIntervalSec", "10"))
    return service


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("unit", type=Path)
    ap.add_argument("--replace", action="append", default=[])
    ap.add_argument("--restart-sec", type=float, default=None, help="instead of the unit's RestartSec")
    args = ap.parse_args(argv)
    service = read_unit(args.unit, [tuple(r.split("=", 1)) for r in args.replace])
    if service.get("Restart", "no") != "on-failure":
        print(f"unit_loop: only Restart=on-failure is emulated, not {service.get('Restart')}", file=sys.stderr)
        return 2
    env = {**os.environ}
    for assignment in shlex.split(service.get("Environment", "")):
        key, _, value = assignment.partition("=")
        env[key] = value
    restart_s = args.restart_sec if args.restart_sec is not None else float(service.get("RestartSec", "0.1"))
    burst, interval = int(service["StartLimitBurst"]), float(service["StartLimitIntervalSec"])

    stopping = False
    child: subprocess.Popen | None = None

    def _term(_signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, _term)
    starts: list[float] = []
    while True:
        now = time.monotonic()
        starts = [t for t in starts if now - t < interval] + [now]
        if len(starts) > burst:
            print(f"unit_loop: start limit hit ({burst} starts in {interval:g} s)", file=sys.stderr, flush=True)
            return 1
        env["INVOCATION_ID"] = uuid.uuid4().hex
        code = 0
        for key in ("ExecStartPre", "ExecStart"):
            if key not in service or stopping:
                continue
            print(f"unit_loop: {key}={service[key]}", file=sys.stderr, flush=True)
            child = subprocess.Popen(shlex.split(service[key]), env=env)
            if stopping:  # SIGTERM came while it was being started
                child.terminate()
            code = child.wait()
            child = None
            if code != 0:
                break
        if stopping:
            return code
        print(f"unit_loop: exited with {code}", file=sys.stderr, flush=True)
        if code == 0:
            return 0
        time.sleep(restart_s)


if __name__ == "__main__":
    sys.exit(main())
