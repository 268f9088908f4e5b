"""Over-the-air updates of the agent, its model and its config on The Update Framework (docs/OTA.md).

``manifest``: the signed ``custom`` fields every side agrees on (repository tools write them, the node reads
them); ``rollout``: the staged-rollout cohort rule. The node's updater lives beside them; nothing here imports
``tuf`` at module level, so ``edgecam run`` stays import-light.
"""
