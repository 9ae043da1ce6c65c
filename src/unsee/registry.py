"""One registry shape for methods, attacks and what comes next: a config dataclass and one function, by name.

A config class learns its registered ``name`` (so it serialises its own type), ``make_config``
refuses settings the class does not have, and ``config_from_dict`` rebuilds a config from its
``to_dict()`` JSON (lists back to tuples), as peft's configs do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar

C = TypeVar("C")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[C, F]):
    """Named ``(config class, function)`` pairs of one kind ("method", "attack")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[type[C], F]] = {}

    def register(self, name: str, config_cls: type[C]) -> Callable[[F], F]:
        """Decorator: register ``fn`` under ``name`` with its config class."""

        def deco(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            config_cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = (config_cls, fn)
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def config_class(self, name: str) -> type[C]:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._entries[name][0]

    def function(self, name: str) -> F:
        self.config_class(name)
        return self._entries[name][1]

    def make_config(self, name: str, **overrides: Any) -> C:
        cls = self.config_class(name)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"{name} has no setting {', '.join(sorted(bad))}; settings: {', '.join(sorted(known))}")
        return cls(**overrides)

    def config_from_dict(self, d: dict[str, Any]) -> C:
        d = dict(d)
        name = d.pop(self.kind)
        return self.make_config(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
