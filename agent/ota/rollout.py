"""Staged rollout: which nodes take a release at a given percent.

A node is in when ``int(sha256(node_id ‖ seed)) mod 100 < percent``. The node's bucket depends only on its id
and the release's seed, so for one seed the set of nodes at ``p`` is a subset of the set at any ``q > p``:
raising the percent never removes a node that already took the release. A new release brings a new seed, so
the same nodes are not always first.
"""

from __future__ import annotations

import hashlib

#: separates id and seed in the hashed string, so ("ab", "c…") and ("a", "bc…") never collide
SEP = "\x1f"


def bucket(node_id: str, seed: str) -> int:
    """The node's bucket 0..99 for this seed."""
    digest = hashlib.sha256(f"{node_id}{SEP}{seed}".encode()).digest()
    return int.from_bytes(digest, "big") % 100


def in_rollout(node_id: str, seed: str, percent: int) -> bool:
    """Whether the node takes a release rolled out to ``percent`` (0..100) with ``seed``."""
    return bucket(node_id, seed) < percent
