"""A name-keyed registry of components (detectors, task formulations, ...).

Registration is explicit (a function call, not an import side effect), rejects bad or
duplicate names, and a registry can be copied so tests can extend one without touching the
shared instance.
"""

from __future__ import annotations

import re
from typing import Callable, Generic, Iterator, TypeVar

from lorascan.errors import UsageError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T]) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = factory

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (for a component registered as its class: the
        class, whose class-level facts can be read without building one)."""
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UsageError(f"unknown {self.kind} '{name}' (known: {known})")
        return self._items[name]

    def create(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def copy(self) -> "Registry[T]":
        new = Registry[T](self.kind)
        new._items = dict(self._items)
        return new
