"""A small name -> builder registry, shared by models and datasets."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable


class Registry:
    """Maps names to builder functions registered with a decorator.

    A duplicate name raises at import time; an unknown name raises `KeyError` listing the known ones.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable] = {}

    def register(self, name: str | None = None):
        def decorator(builder: Callable) -> Callable:
            key = name or builder.__name__
            if key in self._builders:
                raise ValueError(f"{self.kind} {key!r} is already registered "
                                 f"(by {self._builders[key].__module__}.{self._builders[key].__name__})")
            self._builders[key] = builder
            return builder
        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._builders[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint}. Known: {', '.join(self.names())}") from None

    def options(self, name: str) -> list[str]:
        """Keyword-only options a builder accepts beyond the common ones."""
        common = {"input_shape", "num_classes"}
        parameters = inspect.signature(self.get(name)).parameters.values()
        return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in common]

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
