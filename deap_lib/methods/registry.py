"""The ``METHODS`` registry: every method class registers itself by name with :func:`register_method`, in its
own file (the package imports each of its modules; a plugin file passed with ``--plugin`` does the same)."""
from __future__ import annotations

from typing import TypeVar

from ..registry import Registry

T = TypeVar("T", bound=type)

METHODS: Registry = Registry("method")


def register_method(cls: T) -> T:
    """Class decorator: register ``cls`` under ``cls.name`` (an error names a name registered twice)."""
    METHODS.register(cls.name, cls)
    return cls
