"""``edgecam centre command``: one MQTT 5 request/response round trip to a node.

The request goes to ``edgecam/v1/{node}/cmd/req`` with a response topic (the node's own ``cmd/res``,
the only reply topic its ACL lets it publish) and correlation data = ``cmd_id``; message expiry makes a
request the node never saw die in the broker instead of running late.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import ValidationError

from agent.config import format_validation_error
from agent.contract import CommandRequest, CommandResponse, Topics, node_id_problem
from agent.errors import EdgecamError
from centre.mqtt import MqttOptions, connect_blocking, make_client


def parse_args(text: str) -> dict[str, Any]:
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgecamError(f"--args: not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(args, dict):
        raise EdgecamError("--args: must be a JSON object")
    return args


def build_request(op: str, args: dict[str, Any]) -> CommandRequest:
    try:
        return CommandRequest(cmd_id=uuid.uuid4().hex, op=op, args=args)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise EdgecamError(format_validation_error(exc, "command: ")) from None


def send_command(opts: MqttOptions, node_id: str, op: str, args: dict[str, Any],
                 timeout: float = 10.0) -> CommandResponse:
    """Publish the request, wait for the reply with our correlation data, return it validated."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    problem = node_id_problem(node_id)
    if problem:
        raise EdgecamError(f"node id: {problem}")
    req = build_request(op, args)
    topics = Topics(node_id)
    client = make_client(opts)
    connect_blocking(client, opts, timeout=timeout)
    state: dict[str, Any] = {}

    def on_subscribe(_c, _u, _mid, codes, _props) -> None:
        state["suback"] = codes

    def on_publish(_c, _u, _mid, reason, _props) -> None:
        state["puback"] = reason

    def on_message(_c, _u, msg) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr is not None and corr != req.cmd_id.encode():
            return
        try:
            res = CommandResponse.model_validate_json(msg.payload)
        except ValidationError as exc:
            state.setdefault("bad", format_validation_error(exc))
            return
        if res.cmd_id == req.cmd_id:
            state["reply"] = res

    client.on_subscribe, client.on_publish, client.on_message = on_subscribe, on_publish, on_message
    deadline = time.monotonic() + timeout
    try:
        client.subscribe(topics.cmd_res, qos=1)
        while "suback" not in state and time.monotonic() < deadline:
            client.loop(0.1)
        if "suback" not in state or any(c.is_failure for c in state["suback"]):
            raise EdgecamError(f"{topics.cmd_res}: subscription refused ({state.get('suback')})")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.cmd_res
        props.CorrelationData = req.cmd_id.encode()
        props.MessageExpiryInterval = max(1, int(timeout))
        props.ContentType = "application/json"
        client.publish(topics.cmd_req, req.model_dump_json(), qos=1, properties=props)
        while "reply" not in state and time.monotonic() < deadline:
            client.loop(0.1)
            puback = state.get("puback")
            if puback is not None and puback.is_failure:
                raise EdgecamError(f"{topics.cmd_req}: the broker refused the request ({puback})")
        if "reply" not in state:
            extra = f"; an invalid reply came: {state['bad']}" if "bad" in state else ""
            raise EdgecamError(f"{topics.cmd_res}: no reply to {op} within {timeout:g}s{extra}")
        return state["reply"]
    finally:
        client.disconnect()
