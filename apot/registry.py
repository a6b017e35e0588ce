"""Entries registered by name (the schemes, the datasets): what the registries share."""
from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    name: str


Entry = TypeVar("Entry", bound=Named)


class Registry(dict, Generic[Entry]):
    """name -> entry, in registration order. ``kind`` names an entry in messages; a name in
    ``reserved`` (or registered already) cannot be registered."""

    def __init__(self, kind: str, reserved: tuple[str, ...] = ()):
        super().__init__()
        self.kind, self.reserved = kind, reserved

    def register(self, entry: Entry) -> Entry:
        if entry.name in self or entry.name in self.reserved:
            raise ValueError(f"{self.kind} {entry.name!r} is already registered")
        self[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy one clean up with this)."""
        del self[name]

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; ValueError naming the registered ones if there is none."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of "
                             f"{', '.join(self)}") from None
