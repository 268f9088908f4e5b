"""Events: track lifecycle → contract events, thumbnails, ids and the persisted ``seq``."""

from agent.events.engine import EventEngine, Outgoing
from agent.events.ids import SeqStore, new_boot_id, uuid7

__all__ = ["EventEngine", "Outgoing", "SeqStore", "new_boot_id", "uuid7"]
