"""User-facing errors: each carries one line that names the problem (file, field path, topic).

The CLI prints ``str(error)`` and exits non-zero; nothing below the CLI prints tracebacks for these.
"""


class EdgecamError(Exception):
    """An error the user can fix; its message is one line naming what is wrong."""

    exit_code = 2


class ConfigError(EdgecamError):
    """Invalid configuration (file, env or CLI override)."""


class ModelError(EdgecamError):
    """A model file, manifest or label file that cannot be used."""


class SourceError(EdgecamError):
    """A frame source that cannot be opened or read."""
