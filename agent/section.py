"""The base of every config section: unknown keys are errors (a typo must not be silently ignored).

Its own module so the kind registries (``agent.sources.kinds``, ``agent.vision.delegates``) can define
their config classes without importing ``agent.config``, which builds its unions from them.
"""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
