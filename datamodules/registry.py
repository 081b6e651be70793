"""A name -> class registry: the one mechanism behind the project's variants found by name
(training strategies, selection rules, ...). It lives in the lowest layer so every package
can use it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, type[T]]):
    """Classes registered by name; ``kind`` names them in errors (e.g. ``selection rule``).

    ``@registry.register("name")`` sets ``cls.name`` and records the class;
    :meth:`check` returns a known name or raises one-line ``ValueError`` listing them;
    :meth:`create` instantiates the class registered under a name. It is a ``dict`` of
    name -> class otherwise.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` (twice: ``ValueError``)."""

        def add(cls: type[T]) -> type[T]:
            if name in self and self[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self[name] = cls
            return cls

        return add

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self)

    def check(self, name: object) -> str:
        """``name`` if a class is registered under it, else ``ValueError`` in one line
        listing the known names."""
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; accepted: "
                             f"{', '.join(self.names())}")
        return name

    def create(self, name: str) -> T:
        """A new instance of the class registered under ``name``."""
        return self[self.check(name)]()
