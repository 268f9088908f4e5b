"""Provisioning subcommands mounted on the ``edgecam`` CLI (``ca``, ``broker-config``, ``centre``, …)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Mount the provisioning command groups on the root app."""
