"""``config/desired`` → validate → apply → persist → ``config/reported``.

The desired document is overlaid on the node's local config (TOML/env/CLI at start), so the centre
need not know per-node paths, certificates or the broker URL; the result is validated by
``agent.config.build_config`` exactly like a local file. ``node_id`` cannot be changed this way (it is
the node's certificate identity). The last applied document is persisted in the state dir;
``apply_persisted`` lets the runner start from it, so a change that needs a restart survives it (and a
desired config already in force is not applied again).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config import AgentConfig, _merge, build_config, format_validation_error
from agent.contract import ConfigDesired, ConfigReported
from agent.errors import EdgecamError

log = logging.getLogger(__name__)

DESIRED_FILE = "config_desired.json"
MAX_ERROR_LEN = 500


def load_applied(state_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """The last applied ``(version, desired config document)``, or None (absent or unreadable)."""
    path = Path(state_dir) / DESIRED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["version"]), dict(data["config"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: ignored (%s)", path, exc)
        return None


def overlay(base: AgentConfig, desired: dict[str, Any], origin: str = "config/desired") -> AgentConfig:
    """``desired`` over ``base``, validated; raises ``ConfigError`` naming the field."""
    return build_config(_merge(base.model_dump(mode="json"), desired), origin)


def apply_persisted(cfg: AgentConfig) -> AgentConfig:
    """The local config with the last applied desired document on top (for the runner at start)."""
    applied = load_applied(cfg.state_dir)
    if applied is None:
        return cfg
    try:
        return overlay(cfg, applied[1], f"{cfg.state_dir / DESIRED_FILE}")
    except EdgecamError as exc:  # the local config changed under it; local wins
        log.warning("persisted desired config v%d not applied: %s", applied[0], exc)
        return cfg


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ConfigSync:
    """Handles one raw ``config/desired`` payload at a time and says what to report."""

    def __init__(self, base: AgentConfig, on_config: Callable[[AgentConfig, int], bool] | None) -> None:
        self.base = base
        self.current = base
        self.on_config = on_config
        applied = load_applied(base.state_dir)
        self.applied_version: int | None = applied[0] if applied else None

    def handle(self, payload: bytes) -> ConfigReported | None:
        """The report to publish (retained), or None for an empty payload (a cleared retained message)."""
        if not payload:
            return None
        version = self.applied_version or 0
        try:
            data = json.loads(payload)
            if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] >= 0:
                version = data["version"]
            desired = ConfigDesired.model_validate(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            msg = format_validation_error(exc) if isinstance(exc, ValidationError) else f"invalid JSON: {exc}"
            return self._rejected(version, msg)
        if self.applied_version is not None and desired.version < self.applied_version:
            return self._rejected(desired.version, f"version {desired.version} is older than the applied "
                                                   f"version {self.applied_version}")
        try:
            new_cfg = overlay(self.base, desired.config)
        except EdgecamError as exc:
            return self._rejected(desired.version, str(exc))
        except RecursionError:
            return self._rejected(desired.version, "config/desired: document nested too deeply")
        if new_cfg.node_id != self.base.node_id:
            return self._rejected(desired.version, f"config/desired: node_id: cannot change ({self.base.node_id} "
                                                   f"→ {new_cfg.node_id}); it is the node's identity")
        restart = False
        if new_cfg != self.current:
            if self.on_config is not None:
                try:
                    restart = bool(self.on_config(new_cfg, desired.version))
                except (EdgecamError, ValueError, TypeError) as exc:
                    return self._rejected(desired.version, f"config/desired: not applied: {exc}")
                except Exception as exc:
                    log.exception("config v%d: apply failed", desired.version)
                    return self._rejected(desired.version, f"config/desired: apply failed: {type(exc).__name__}")
            self.current = new_cfg
            log.info("config v%d applied%s", desired.version, " (restart needed)" if restart else "")
        try:
            _write_json(self.base.state_dir / DESIRED_FILE, {"version": desired.version, "config": desired.config})
        except (OSError, TypeError, ValueError) as exc:
            log.warning("config v%d applied but not persisted: %s", desired.version, exc)
        self.applied_version = desired.version
        return ConfigReported(version=desired.version, status="applied", applied_version=desired.version,
                              restart=restart)

    def _rejected(self, version: int, error: str) -> ConfigReported:
        log.warning("config v%d rejected: %s", version, error)
        return ConfigReported(version=version, status="rejected", applied_version=self.applied_version,
                              error=" ".join(error.split())[:MAX_ERROR_LEN])
