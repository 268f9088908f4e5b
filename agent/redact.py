"""The one rule for showing a value that may carry a secret: credentials in URLs become ``***``.

Where it applies: ``SecretUrl`` is the config type of every URL that can hold credentials (``mqtt.url``,
``source.url``); it renders redacted in ``str``, ``repr``, f-strings, logs and every pydantic dump
(``get_config``, ``describe()``, errors), and only ``reveal()`` gives the real URL, to the code that
connects (paho's ``username_pw_set``, FFmpeg's RTSP open). ``redact_text`` applies the same rule to
free text that may quote a URL (log lines, ``config/reported`` errors, CLI errors). Only the owner of a
config dump that must round-trip (the config owner's layering) asks for the real values, with ``REVEAL``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic_core import core_schema

MASK = "***"
_REVEAL_KEY = "reveal_secrets"
#: ``model_dump(context=REVEAL)``: the real URLs, for the config owner's layering only
REVEAL = {_REVEAL_KEY: True}

#: query or path parameters that carry a secret (``?password=…``, cameras' ``/user=admin&password=…``)
_SECRET_PARAM = re.compile(r"(?i)(?<![A-Za-z0-9_])((?:pass(?:word|wd)?|pwd|token|secret|api_?key|auth|sig(?:nature)?)=)"
                           r"[^&;/#\s]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_url(url: str) -> str:
    """``rtsp://user:pass@host/…`` → ``rtsp://***@host/…``; secret parameters → ``password=***``.

    The host starts after the *last* ``@`` before the path, as FFmpeg parses it: a password typed with an
    unencoded ``@`` works, so its tail must not leak. An ``@`` only after the host (a password with ``/`` in
    it) hides up to that ``@``: over-redacting an odd path beats logging a secret.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        host_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, host_end)
        if at < 0:
            at = rest.rfind("@")
        rest = f"{MASK}@{rest[at + 1:]}"
    return f"{scheme}://{_SECRET_PARAM.sub(lambda m: m.group(1) + MASK, rest)}"


def redact_text(text: str) -> str:
    """``redact_url`` on every ``scheme://…`` in ``text`` (an error or log line that quotes a URL)."""
    return _URL.sub(lambda m: redact_url(m.group()), text) if "://" in text else text


class SecretUrl:
    """A URL that may carry credentials: every rendering is redacted, ``reveal()`` is the real URL.

    Not a ``str`` subclass on purpose: ``json.dumps`` or a C library would read a str's real characters
    whatever ``__str__`` says, so a forgotten ``reveal()`` fails loudly instead of leaking quietly.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        self._url = url

    def reveal(self) -> str:
        return self._url

    def __str__(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"SecretUrl({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> core_schema.CoreSchema:
        from pydantic_core import core_schema  # lazily: the CLI and the URL parser load this module too

        as_str = core_schema.no_info_before_validator_function(
            lambda v: v.reveal() if isinstance(v, SecretUrl) else v, core_schema.str_schema())
        return core_schema.no_info_after_validator_function(
            cls, as_str, serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize, info_arg=True, return_schema=core_schema.str_schema()))

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: Any, _handler: Any) -> dict[str, Any]:
        return {"type": "string", "format": "uri",
                "description": "may hold user:password@ (percent-encoded or not); shown redacted everywhere"}


def _serialize(value: SecretUrl, info: core_schema.SerializationInfo) -> str:
    return value.reveal() if (info.context or {}).get(_REVEAL_KEY) else str(value)
