"""No-loss MQTT transport: SQLite outbox, paho MQTT 5 link, state/health, commands, config sync.

The pipeline uses only ``Transport`` (see ``facade.py`` and docs/TRANSPORT.md). It is imported on first
use, so the config model can import ``agent.transport.mqtt_url`` without loading paho or the outbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.transport.facade import Transport

__all__ = ["Transport"]


def __getattr__(name: str) -> Any:
    if name == "Transport":
        from agent.transport.facade import Transport

        return Transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
