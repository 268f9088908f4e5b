"""One doctor finding and how findings print: ``name  value`` rows, as ``edgecam doctor`` always printed.

Facts (board, temperature, runtimes) are plain rows. Checks say ``ok: …``, ``WARN: …`` or ``FAIL: …``
first, so a technician reads the verdict before the detail and a script can grep it. The exit code is 1
when any check failed, 0 otherwise (warnings do not fail the doctor: a certificate that expires in three
weeks still works today).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "fact"]
PREFIX = {"ok": "ok: ", "warn": "WARN: ", "fail": "FAIL: ", "fact": ""}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    @property
    def value(self) -> str:
        return PREFIX[self.status] + self.detail


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str) -> Check:
    return Check(name, "warn", detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, "fail", detail)


def fact(name: str, detail: str) -> Check:
    return Check(name, "fact", detail)


def render(checks: Iterable[Check]) -> list[str]:
    rows = list(checks)
    width = max((len(c.name) for c in rows), default=0)
    return [f"{c.name:<{width}}  {c.value}" for c in rows]


def exit_code(checks: Iterable[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0
