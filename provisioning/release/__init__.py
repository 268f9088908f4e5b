"""The OTA release repository: a TUF repository any TUF client reads (``edgecam release …``, docs/OTA.md).

``keys``: the offline and online signing keys (kept outside ``REPO``); ``repo``: metadata and targets on
``tuf.api.metadata``; ``bundle``: packing a model folder or agent bundle into one target file; ``server``: a
static HTTP(S) server with byte ranges for tests and small sites.
"""
