"""A registry per pluggable kind (frame sources, interpreter delegates, model formats).

A kind is registered with its pydantic config class (whose ``kind`` field is a one-value ``Literal``), a
lazy ``"module:attribute"`` target and optional traits. The config model's discriminated union is built
from the registry, so adding a kind is one module plus one ``register`` call, and loading a config never
imports the implementation (which may pull in cv2, PyAV or picamera2): the target is imported when built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar, Union, get_args

from pydantic import BaseModel, Field

C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class Entry(Generic[C]):
    kind: str
    config: type[C]
    target: str
    traits: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The implementation (imported now, not at registration)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


class Registry(Generic[C]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, Entry[C]] = {}

    def register(self, config: type[C], target: str, **traits: Any) -> type[C]:
        """Add ``config``'s kind (read from its ``kind: Literal[...]`` field); returns the class."""
        (kind,) = get_args(config.model_fields["kind"].annotation)
        if kind in self._entries:
            raise ValueError(f"{self.what} kind {kind!r} registered twice")
        self._entries[kind] = Entry(kind, config, target, traits)
        return config

    def __getitem__(self, kind: str) -> Entry[C]:
        try:
            return self._entries[kind]
        except KeyError:
            raise KeyError(f"{self.what} kind {kind!r} is not registered (known: {', '.join(self.kinds)})") from None

    def __iter__(self):
        return iter(self._entries.values())

    @property
    def kinds(self) -> list[str]:
        return list(self._entries)

    def union(self) -> Any:
        """The pydantic discriminated union of every registered config class (for a config field)."""
        classes = tuple(e.config for e in self._entries.values())
        return Annotated[Union[classes], Field(discriminator="kind")]  # noqa: UP007 - built at run time
