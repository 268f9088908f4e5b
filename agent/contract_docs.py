"""Render the MQTT contract v1 from the payload models: one JSON Schema per payload and an AsyncAPI 3
document (``docs/asyncapi.json``). ``edgecam contract --check`` (and a test) fail when docs are stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent import contract as c
from agent.config import AgentConfig

#: (channel key, address under the node root or absolute, action from the node's view, message model,
#:  qos, retained, description)
CHANNELS: list[tuple[str, str, str, type[BaseModel] | None, int, bool, str]] = [
    ("state", "{node_id}/state", "send", c.State, 1, True,
     "Birth/death certificate, also the MQTT Will; republished on every connect and when the centre comes online"),
    ("health", "{node_id}/health", "send", c.Health, 0, False, "Periodic health; message expiry 2 × period"),
    ("events", "{node_id}/events", "send", c.Event, 1, False,
     "Track events; delivery at least once, consumers upsert by event_id"),
    ("thumbs", "{node_id}/thumbs/{event_id}", "send", None, 1, False,
     "Raw JPEG bytes of the thumbnail an event references (MQTT 5 content type image/jpeg)"),
    ("cmdReq", "{node_id}/cmd/req", "receive", c.CommandRequest, 1, False,
     "Commands; MQTT 5 response topic and correlation data honoured; repeated cmd_id ignored"),
    ("cmdRes", "{node_id}/cmd/res", "send", c.CommandResponse, 1, False, "Command replies"),
    ("configDesired", "{node_id}/config/desired", "receive", c.ConfigDesired, 1, True, "Desired agent config"),
    ("configReported", "{node_id}/config/reported", "send", c.ConfigReported, 1, True,
     "Applied config version or rejection reason"),
    ("otaJob", "{node_id}/ota/job", "receive", c.OtaJob, 1, True, "OTA job pointing at a signed release"),
    ("otaStatus", "{node_id}/ota/status", "send", c.OtaStatus, 1, True, "OTA progress"),
    ("centreState", "/centre/state", "receive", c.CentreState, 1, True,
     "Centre online state; nodes republish state when it comes online"),
]

SCHEMA_MODELS = sorted({m for *_, m, _q, _r, _d in CHANNELS if m is not None}, key=lambda m: m.__name__)


def schema_of(model: type[BaseModel], ref_root: str = "#/$defs/{model}") -> dict[str, Any]:
    return model.model_json_schema(mode="serialization", ref_template=ref_root)


def render() -> dict[str, str]:
    """Relative path → file text, for every generated file."""
    files: dict[str, str] = {}
    components: dict[str, Any] = {}
    for model in SCHEMA_MODELS:
        schema = schema_of(model)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://edgecam.invalid/contract/v1/{model.__name__}.schema.json"
        files[f"schemas/{model.__name__}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        comp = schema_of(model, "#/components/schemas/{model}")
        for name, sub in comp.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = comp
    files["asyncapi.json"] = json.dumps(asyncapi(components), indent=2, sort_keys=True) + "\n"
    config = AgentConfig.model_json_schema(mode="validation")
    config["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    config["description"] = "edgecam agent config (TOML file, config/desired documents)"
    files["schemas/AgentConfig.schema.json"] = json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
    return files


def asyncapi(schemas: dict[str, Any]) -> dict[str, Any]:
    channels, operations, messages = {}, {}, {}
    for key, address, action, model, qos, retain, desc in CHANNELS:
        full = c.ROOT + address if address.startswith("/") else f"{c.ROOT}/{address}"
        params = {p: {"description": f"{p} (see DESIGN.md)"} for p in ("node_id", "event_id") if f"{{{p}}}" in full}
        msg_name = model.__name__ if model else "Thumbnail"
        messages[msg_name] = (
            {"name": msg_name, "contentType": "application/json",
             "payload": {"$ref": f"#/components/schemas/{model.__name__}"}}
            if model else
            {"name": "Thumbnail", "contentType": "image/jpeg",
             "payload": {"type": "string", "format": "binary", "description": "raw JPEG bytes, no base64"}}
        )
        channels[key] = {"address": full, "description": desc, **({"parameters": params} if params else {}),
                         "messages": {msg_name: {"$ref": f"#/components/messages/{msg_name}"}}}
        operations[f"{action}{key[0].upper()}{key[1:]}"] = {
            "action": action, "channel": {"$ref": f"#/channels/{key}"},
            "bindings": {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": "0.2.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "edgecam MQTT contract", "version": f"{c.CONTRACT_VERSION}.0.0",
                 "description": "What a camera node publishes and accepts. Unknown fields must be ignored; "
                                "breaking changes bump v1. Generated by `edgecam contract` from agent/contract.py."},
        "defaultContentType": "application/json",
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def write_docs(out: Path) -> list[Path]:
    written = []
    for rel, text in render().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def check_docs(out: Path) -> list[str]:
    """Relative paths that are missing or differ from what the models generate."""
    stale = []
    for rel, text in render().items():
        path = out / rel
        if not path.exists() or path.read_text() != text:
            stale.append(rel)
    return stale
