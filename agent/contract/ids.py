"""The node-id rule, shared by the node's config, the CA (certificate CN) and the centre.

A node id is the certificate CN, MQTT username and client id, and a topic level under ``edgecam/v1/``;
the broker ACL confines a node to ``edgecam/v1/%u/…``. So an id must be one plain level (no ``/``, ``+``,
``#``), and must not be a level that is not a node (``centre``), or that node would own that subtree.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from agent.contract.channels import non_node_levels

NODE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_NODE_ID = re.compile(NODE_ID_PATTERN)  # always fullmatch: ``$`` would accept a trailing newline

#: the literal first levels of the channel table (``centre``, ``enrol``, ``fleet``): no node may be named one
RESERVED_NODE_IDS = non_node_levels()


def identity_problem(name: str) -> str | None:
    """Why ``name`` cannot be a certificate CN / topic level, or None (centre names follow this rule too)."""
    if not _NODE_ID.fullmatch(name):
        return (f"{name!r} is not 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit "
                "(it becomes a topic level)")
    return None


def node_id_problem(name: str) -> str | None:
    """Why ``name`` cannot be a node id, or None."""
    if name in RESERVED_NODE_IDS:
        names = ", ".join(sorted(RESERVED_NODE_IDS))
        return f"{name!r} is reserved: a level under edgecam/v1/ that is not a node ({names})"
    return identity_problem(name)


def is_node_id(name: str) -> bool:
    return node_id_problem(name) is None


def _validate(name: str) -> str:
    problem = node_id_problem(name)
    if problem:
        raise PydanticCustomError("node_id", problem)
    return name


#: a pydantic field type for node ids; its JSON Schema states the rule
NodeId = Annotated[
    str,
    AfterValidator(_validate),
    WithJsonSchema({"type": "string", "pattern": f"^{NODE_ID_PATTERN}$", "not": {"enum": sorted(RESERVED_NODE_IDS)},
                    "description": "node id: certificate CN, MQTT username and client id, a topic level"}),
]
