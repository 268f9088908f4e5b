"""Size of an MQTT 5 PUBLISH packet on the wire: what the broker's Maximum Packet Size is compared with.

One computation for the node (drop or shrink what the broker would refuse) and the bench's byte meter
(what the node's uplink carries). Fixed header + topic + packet id (QoS > 0) + properties + payload;
TCP and TLS framing are not part of the packet.
"""

from __future__ import annotations

from typing import Any


def varint_len(n: int) -> int:
    """Bytes of MQTT's variable byte integer for ``n``."""
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


def publish_packet_size(topic: str, payload_len: int, qos: int = 1, properties: Any = None) -> int:
    """``properties``: paho ``Properties`` (their ``pack()`` includes the length prefix) or None (no
    properties still cost MQTT 5 a one-byte property length)."""
    props_len = len(properties.pack()) if properties is not None else varint_len(0)
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + props_len + payload_len
    return 1 + varint_len(remaining) + remaining
