"""``config/desired`` payload → ``ConfigOwner.propose`` → the ``config/reported`` to publish (retained).

This module only reads the payload; what the document does (layering, validation, hot or trial,
persistence, last-known-good) is the config owner's (``agent.config_owner``).
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from agent.config import format_validation_error
from agent.config_owner import ConfigOwner
from agent.contract import ConfigDesired, ConfigReported


class ConfigSync:
    """Handles one raw ``config/desired`` payload at a time and says what to report."""

    def __init__(self, owner: ConfigOwner) -> None:
        self.owner = owner

    def handle(self, payload: bytes) -> ConfigReported | None:
        """The report to publish (retained), or None for an empty payload (a cleared retained message)."""
        if not payload:
            return None
        version = self.owner.applied_version or 0
        try:
            data = json.loads(payload)
            if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] >= 0:
                version = data["version"]
            desired = ConfigDesired.model_validate(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            msg = format_validation_error(exc) if isinstance(exc, ValidationError) else f"invalid JSON: {exc}"
            return self.owner.rejected(version, msg)
        return self.owner.propose(desired.version, desired.config)
