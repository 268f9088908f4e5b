"""No-loss MQTT transport: SQLite outbox, paho MQTT 5 link, state/health, commands, config sync.

The pipeline uses only ``Transport`` (see ``facade.py`` and docs/TRANSPORT.md).
"""

from agent.transport.facade import Transport

__all__ = ["Transport"]
