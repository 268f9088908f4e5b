"""``edgecam centre command``: one MQTT 5 request/response round trip to a node.

The request goes to ``edgecam/v1/{node}/cmd/req`` with a response topic (the node's own ``cmd/res``,
the only reply topic its ACL lets it publish) and correlation data = ``cmd_id``; message expiry makes a
request the node never saw die in the broker instead of running late.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.config import format_validation_error
from agent.contract import BY_KEY, CommandRequest, CommandResponse, Topics, node_id_problem
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
    return exchange(opts, node_id, op, args, timeout).reply


@dataclass(frozen=True)
class Exchange:
    reply: CommandResponse
    #: the JPEG a ``snapshot`` reply names (``result.topic``), when it was asked for and arrived
    picture: bytes | None = None


#: the bound on the broker's CONNACK and SUBACK (at least): a loaded broker or client is slow, not gone, and the
#: ``timeout`` a user gives is for the node's reply
HANDSHAKE_S = 30.0


def _pump(client, opts: MqttOptions, done: Callable[[], bool], deadline: float) -> None:
    """Run the client's loop until ``done()`` or the deadline; a lost connection is its own one-line error
    (not a wait that runs out and blames the broker's answer)."""
    import paho.mqtt.client as mqtt

    while True:
        rc = client.loop(0.1)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise EdgecamError(f"{opts.url}: connection lost ({mqtt.error_string(rc)})")
        if done() or time.monotonic() >= deadline:
            return


def exchange(opts: MqttOptions, node_id: str, op: str, args: dict[str, Any], timeout: float = 10.0,
             picture: bool = False) -> Exchange:
    """``send_command``, and with ``picture`` also the JPEG an ok ``snapshot`` reply names.

    The node publishes the picture on ``thumbs/{id}`` through its outbox, so it may arrive before or after
    the reply: we subscribe to the node's ``thumbs/+`` before sending and keep what comes, then wait for
    the reply's topic until the same deadline. The picture must match the reply's ``sha256``."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    problem = node_id_problem(node_id)
    if problem:
        raise EdgecamError(f"node id: {problem}")
    req = build_request(op, args)
    topics = Topics(node_id)
    client = make_client(opts)
    handshake = max(timeout, HANDSHAKE_S)
    connect_blocking(client, opts, timeout=handshake)
    state: dict[str, Any] = {"subacks": []}
    pictures: dict[str, bytes] = {}
    thumbs = BY_KEY["thumbs"].filter(node_id=node_id)

    def on_subscribe(_c, _u, _mid, codes, _props) -> None:
        state["subacks"].append(codes)

    def on_publish(_c, _u, _mid, reason, _props) -> None:
        state["puback"] = reason

    def on_message(_c, _u, msg) -> None:
        if msg.topic != topics.cmd_res:
            pictures[msg.topic] = bytes(msg.payload)
            return
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
    wanted = [topics.cmd_res, *([thumbs] if picture else [])]
    try:
        for topic in wanted:
            client.subscribe(topic, qos=1)
        _pump(client, opts, lambda: len(state["subacks"]) >= len(wanted), time.monotonic() + handshake)
        if len(state["subacks"]) < len(wanted):
            raise EdgecamError(f"{', '.join(wanted)}: no SUBACK from the broker within {handshake:g}s")
        refused = [c for cs in state["subacks"] for c in cs if c.is_failure]
        if refused:
            raise EdgecamError(f"{', '.join(wanted)}: subscription refused ({', '.join(map(str, refused))})")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topics.cmd_res
        props.CorrelationData = req.cmd_id.encode()
        props.MessageExpiryInterval = max(1, int(timeout))
        props.ContentType = "application/json"
        client.publish(topics.cmd_req, req.model_dump_json(), qos=1, properties=props)
        deadline = time.monotonic() + timeout  # the reply's wait (and the picture's) starts with the request
        while "reply" not in state and time.monotonic() < deadline:
            _pump(client, opts, lambda: True, deadline)
            puback = state.get("puback")
            if puback is not None and puback.is_failure:
                raise EdgecamError(f"{topics.cmd_req}: the broker refused the request ({puback})")
        if "reply" not in state:
            extra = f"; an invalid reply came: {state['bad']}" if "bad" in state else ""
            raise EdgecamError(f"{topics.cmd_res}: no reply to {op} within {timeout:g}s{extra}")
        reply: CommandResponse = state["reply"]
        if not picture or reply.status != "ok":
            return Exchange(reply)
        ref = reply.result if isinstance(reply.result, dict) else {}
        topic = ref.get("topic")
        if not isinstance(topic, str) or BY_KEY["thumbs"].match(topic) is None:
            raise EdgecamError(f"{op}: the reply names no picture topic ({reply.result!r:.200})")
        _pump(client, opts, lambda: topic in pictures, deadline)
        if topic not in pictures:
            raise EdgecamError(f"{topic}: the picture did not arrive within {timeout:g}s")
        jpeg = pictures[topic]
        if ref.get("sha256") and hashlib.sha256(jpeg).hexdigest() != ref["sha256"]:
            raise EdgecamError(f"{topic}: the picture does not match the reply's sha256")
        return Exchange(reply, jpeg)
    finally:
        client.disconnect()
