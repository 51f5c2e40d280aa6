"""Small name -> object registries with helpful unknown-name errors (fast-reid style)."""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named objects (models, datasets, losses, methods, presets).

    ``get`` of an unknown name raises a ``KeyError`` whose message lists every valid name, so a
    typo in a config or on the command line is fixed from the error alone.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str, obj: Optional[T] = None, *, override: bool = False):
        """Register ``obj`` under ``name``; without ``obj`` this is a decorator."""

        def _add(o: T) -> T:
            if name in self._items and not override:
                raise KeyError(f"{self.kind} '{name}' is already registered; pass override=True to replace it")
            self._items[name] = o
            return o

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise KeyError(f"unknown {self.kind} '{name}'; valid names: {valid}") from None

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
