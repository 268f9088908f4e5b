"""``cmd/req`` → ``cmd/res``: validate a request, suppress duplicates, dispatch, build the reply.

``CommandHandler.handle`` is a pure-ish function of the raw payload and the MQTT 5 request properties
(no network), so every malformed input can be fuzzed directly; the transport only publishes what it
returns. Any failure becomes an error reply ``{cmd_id, status: "error", error}``, never an exception.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.atomic import write_atomic
from agent.config import format_validation_error
from agent.contract import CommandRequest, CommandResponse, Topics, iso_ms, utc_now
from agent.errors import EdgecamError
from agent.redact import redact_text

log = logging.getLogger(__name__)

DEFAULT_REPLY_EXPIRY_S = 300
MAX_ERROR_LEN = 500


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: bytes
    correlation: bytes | None
    expiry_s: int


class RecentIds:
    """The last ``size`` command ids, kept in order and persisted (JSON) so a restart still drops repeats.

    Thread-safe: the MQTT thread adds ids, the state-dir check may write them again."""

    def __init__(self, path: Path | None, size: int = 1024) -> None:
        self.path = path
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                ids = [i for i in data if isinstance(i, str)] if isinstance(data, list) else []
            except (OSError, ValueError):
                ids = []
            for i in ids[-size:]:
                self._ids[i] = None

    def seen(self, cmd_id: str) -> bool:
        return cmd_id in self._ids

    def add(self, cmd_id: str) -> None:
        with self._lock:
            self._ids[cmd_id] = None
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)
            if self.path is not None:
                try:
                    self._save()
                except OSError as exc:
                    log.warning("%s: cannot persist command ids: %s", self.path, exc)

    def save_again(self) -> str:
        """Write the ids again (the state dir was lost with them); what was done."""
        with self._lock:
            if self.path is None or not self._ids:
                return "nothing to keep"
            self._save()
            return f"{len(self._ids)} id(s) written again"

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(list(self._ids)))


def _valid_topic(topic: Any) -> bool:
    return isinstance(topic, str) and 0 < len(topic.encode("utf-8", "surrogatepass")) <= 65535 and not (
        "+" in topic or "#" in topic or "\0" in topic
    )


def _one_line(text: str) -> str:
    text = redact_text(" ".join(str(text).split()))  # an exception may quote a URL with credentials
    return text[:MAX_ERROR_LEN]


class CommandHandler:
    """Turns one raw ``cmd/req`` message into at most one reply."""

    def __init__(self, topics: Topics, boot_id: str, on_command: Callable[[CommandRequest], Any] | None,
                 recent: RecentIds) -> None:
        self.topics = topics
        self.boot_id = boot_id
        self.on_command = on_command
        self.recent = recent
        self.counts = {"ok": 0, "error": 0, "duplicate": 0}

    def handle(self, payload: bytes, response_topic: Any = None, correlation: Any = None,
               expiry_s: int | None = None) -> Reply | None:
        """The reply to publish, or None for a repeated ``cmd_id`` (nodes drop those)."""
        topic = response_topic if _valid_topic(response_topic) else self.topics.cmd_res
        corr = bytes(correlation) if isinstance(correlation, (bytes, bytearray)) else None
        expiry = expiry_s if isinstance(expiry_s, int) and 0 < expiry_s <= 0xFFFFFFFF else DEFAULT_REPLY_EXPIRY_S
        response = self._respond(payload)
        if response is None:
            self.counts["duplicate"] += 1
            return None
        self.counts[response.status] += 1
        try:
            body = response.model_dump_json().encode()
        except Exception as exc:  # a handler returned something JSON cannot carry
            err = CommandResponse(cmd_id=response.cmd_id, status="error",
                                  error=_one_line(f"result is not JSON-serialisable: {exc}"))
            body = err.model_dump_json().encode()
        return Reply(topic, body, corr, expiry)

    def _respond(self, payload: bytes) -> CommandResponse | None:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return self._error(None, f"invalid JSON: {exc}")
        cmd_id = data.get("cmd_id") if isinstance(data, dict) else None
        cmd_id = cmd_id if isinstance(cmd_id, str) and 0 < len(cmd_id) <= 128 else None
        if not isinstance(data, dict):
            return self._error(None, "request must be a JSON object {cmd_id, op, args}")
        try:
            req = CommandRequest.model_validate(data)
        except ValidationError as exc:
            return self._error(cmd_id, format_validation_error(exc))
        if self.recent.seen(req.cmd_id):
            log.info("command %s: repeated cmd_id, dropped", req.cmd_id)
            return None
        self.recent.add(req.cmd_id)
        try:
            result = self._dispatch(req)
        except (EdgecamError, ValueError, TypeError, KeyError) as exc:
            return self._error(req.cmd_id, f"{req.op}: {exc}")
        except Exception as exc:
            log.exception("command %s (%s) failed", req.cmd_id, req.op)
            return self._error(req.cmd_id, f"{req.op}: internal error: {type(exc).__name__}: {exc}")
        log.info("command %s (%s): ok", req.cmd_id, req.op)
        return CommandResponse(cmd_id=req.cmd_id, status="ok", result=result)

    def _dispatch(self, req: CommandRequest) -> Any:
        if req.op == "ping":
            return {"pong": True, "boot_id": self.boot_id, "ts": iso_ms(utc_now())}
        if self.on_command is None:
            raise ValueError("not supported by this node")
        return self.on_command(req)

    @staticmethod
    def _error(cmd_id: str | None, message: str) -> CommandResponse:
        return CommandResponse(cmd_id=cmd_id, status="error", error=_one_line(message))
