"""How much thumbnail data one node can make the centre hold: the limits ``edgecam centre listen`` enforces.

A node publishes each thumbnail just before its event (``agent/transport/facade.py`` ``submit_many``), so
an honest node's unmatched ("pending") thumbnails are a handful for a few milliseconds; a compromised
node publishing on its own ``thumbs/<uuid>`` could otherwise park unbounded bytes. The store refuses
(and counts, per node) a thumbnail over ``max_bytes``, and a pending one that would take its node over
``pending_node_bytes`` or all nodes over ``pending_total_bytes``; a pending thumbnail whose event has not
come within ``pending_window_s`` is dropped (counted as ``expired``).

Sizes line up along the path: the node's ``thumbnails.max_bytes`` (default 24,000) ≤ ``max_bytes``
(default 64 KiB) < the broker's ``max_packet_size`` (``BrokerLimits``, 256 KiB). Raise ``max_bytes``
with a node's ``thumbnails.max_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class ThumbLimits:
    """Per-thumbnail size and the bounds of the pending buffer (shared by every receiver of one store).

    A plain dataclass, so ``edgecam centre listen`` can show the defaults without importing pydantic;
    the CLI options bound the values (``min=``).
    """

    max_bytes: int = 64 * KIB
    """largest thumbnail stored or parked"""
    pending_window_s: float = 300.0
    """how long a thumbnail waits for its event"""
    pending_node_bytes: int = 1 * MIB
    """pending bytes one node may park"""
    pending_total_bytes: int = 16 * MIB
    """pending bytes all nodes together may park"""


#: why a thumbnail was not kept; the store counts each per node (``thumb_refusals``)
REFUSED = ("too_big", "node_pending_full", "total_pending_full")
EXPIRED = "expired"
