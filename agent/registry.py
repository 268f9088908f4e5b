"""A registry per pluggable kind (frame sources, interpreter delegates, model formats).

Two shapes share one table (``Table``: unique names, a one-line "not registered (known: …)" error):

* ``Registry``: kinds chosen by a config *section* (``source``, ``model.delegate``). A kind is registered with
  its pydantic config class (whose ``kind`` field is a one-value ``Literal``), a lazy ``"module:attribute"``
  target and optional traits; the config's discriminated union is built from the registry.
* ``NamedRegistry``: kinds chosen by a *name* with no section of their own (``model.format = "yolo"``), so
  there is no config class to key on or union to build; a kind is a name, one or more lazy targets by role
  (a format's shape probe and decoder) and optional traits.

Either way adding a kind is one module plus one ``register`` call, and loading a config never imports the
implementation (which may pull in cv2, PyAV, picamera2 or numpy): a target is imported when it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar, Union, get_args

from pydantic import BaseModel, Field

C = TypeVar("C", bound=BaseModel)
E = TypeVar("E")


def load_target(target: str) -> Any:
    """``"package.module:attribute"`` → the attribute (the module is imported now)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class Table(Generic[E]):
    """Entries by kind name, in registration order."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, E] = {}

    def _add(self, kind: str, entry: E) -> None:
        if kind in self._entries:
            raise ValueError(f"{self.what} kind {kind!r} registered twice")
        self._entries[kind] = entry

    def __getitem__(self, kind: str) -> E:
        try:
            return self._entries[kind]
        except KeyError:
            raise KeyError(f"{self.what} kind {kind!r} is not registered (known: {', '.join(self.kinds)})") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    @property
    def kinds(self) -> list[str]:
        return list(self._entries)


@dataclass(frozen=True)
class Entry(Generic[C]):
    kind: str
    config: type[C]
    target: str
    traits: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The implementation (imported now, not at registration)."""
        return load_target(self.target)


class Registry(Table[Entry[C]]):
    def register(self, config: type[C], target: str, **traits: Any) -> type[C]:
        """Add ``config``'s kind (read from its ``kind: Literal[...]`` field); returns the class."""
        (kind,) = get_args(config.model_fields["kind"].annotation)
        self._add(kind, Entry(kind, config, target, traits))
        return config

    def union(self) -> Any:
        """The pydantic discriminated union of every registered config class (for a config field)."""
        classes = tuple(e.config for e in self._entries.values())
        return Annotated[Union[classes], Field(discriminator="kind")]  # noqa: UP007 - built at run time


@dataclass(frozen=True)
class Named:
    kind: str
    #: role → ``"module:attribute"``
    targets: dict[str, str]
    traits: dict[str, Any] = field(default_factory=dict)

    def load(self, role: str) -> Any:
        """The implementation of ``role`` (imported now, not at registration)."""
        return load_target(self.targets[role])


class NamedRegistry(Table[Named]):
    def __init__(self, what: str, roles: tuple[str, ...]) -> None:
        super().__init__(what)
        self.roles = roles

    def register(self, kind: str, targets: dict[str, str], **traits: Any) -> None:
        """Add ``kind`` with one ``"module:attribute"`` target per role of this registry."""
        if set(targets) != set(self.roles):
            raise ValueError(f"{self.what} kind {kind!r} needs targets for {', '.join(self.roles)}")
        self._add(kind, Named(kind, dict(targets), traits))
