"""A small name -> builder registry, shared by models and datasets. No TensorFlow.

A registry can be *lazy*: it is given the modules whose import registers its builders, and imports them
only when a builder is needed. Until then its names, keyword options and flags are read from those
modules' source (`ast`), so that the CLI can validate `model.name` and `model.options` without importing
Keras and TensorFlow (2-3 s). `tests/models/test_models.py` checks that what is read from source equals what
importing registers.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
from collections.abc import Callable

from pipeline.core import errors

COMMON_ARGUMENTS = frozenset({"input_shape", "num_classes"})


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a registered builder declares: its keyword-only options and its flags
    (`builder.flag = constant` statements after it, e.g. `includes_preprocessing = True`)."""

    options: tuple[str, ...]
    flags: dict


class Registry:
    """Maps names to builder functions registered with a decorator.

    A duplicate name raises at import time; an unknown name raises `errors.UnknownNameError` (a UserError
    and a KeyError) listing the known ones.

    Args:
        kind: what is registered, for messages ("model", "dataset").
        modules: dotted names of the modules whose import registers the builders (lazy registry); empty
            when registration happens as the registry's own module is imported.
        decorator: the decorator's name as written in those modules, e.g. "register_model".
    """

    def __init__(self, kind: str, *, modules: tuple[str, ...] = (), decorator: str = "register"):
        self.kind = kind
        self.modules = tuple(modules)
        self.decorator = decorator
        self._builders: dict[str, Callable] = {}
        self._declared: dict[str, Declaration] | None = None

    def register(self, name: str | None = None):
        def decorator(builder: Callable) -> Callable:
            key = name or builder.__name__
            if key in self._builders:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered "
                    f"(by {self._builders[key].__module__}.{self._builders[key].__name__})"
                )
            self._builders[key] = builder
            return builder

        return decorator

    def load(self) -> None:
        """Imports the registering modules (this is where a lazy registry imports TensorFlow)."""
        for module in self.modules:
            importlib.import_module(module)

    def get(self, name: str) -> Callable:
        self.load()
        try:
            return self._builders[name]
        except KeyError:
            raise errors.UnknownNameError(
                f"unknown {self.kind} {name!r}{errors.did_you_mean(name, self.names())}. "
                f"Known: {', '.join(self.names())}"
            ) from None

    def declarations(self) -> dict[str, Declaration]:
        """name -> Declaration: those read from the registering modules' source (a lazy registry does not
        import them for this), updated with every builder registered so far (imported or registered at run
        time, e.g. by a test)."""
        if self._declared is None:
            self._declared = {}
            for module in self.modules:
                for name, declaration in _declared_in(module, self.decorator).items():
                    if name in self._declared:
                        raise ValueError(f"{self.kind} {name!r} is declared twice (again in {module})")
                    self._declared[name] = declaration
        declared = dict(self._declared)
        for name, builder in self._builders.items():
            declared[name] = Declaration(
                _keyword_options(inspect.signature(builder)),
                {k: v for k, v in vars(builder).items() if not k.startswith("_")},
            )
        return declared

    def options(self, name: str) -> list[str]:
        """Keyword-only options a builder accepts beyond the common ones (`input_shape`, `num_classes`)."""
        self._check_known(name)
        return list(self.declarations()[name].options)

    def flag(self, name: str, flag: str, default=None):
        """A flag the builder declares (`builder.<flag> = value`), e.g. includes_preprocessing."""
        self._check_known(name)
        return self.declarations()[name].flags.get(flag, default)

    def names(self) -> list[str]:
        return sorted(self.declarations())

    def __contains__(self, name: str) -> bool:
        return name in self.declarations()

    def _check_known(self, name: str) -> None:
        if name not in self:
            raise errors.UnknownNameError(
                f"unknown {self.kind} {name!r}{errors.did_you_mean(name, self.names())}. "
                f"Known: {', '.join(self.names())}"
            )


def _keyword_options(signature: inspect.Signature) -> tuple[str, ...]:
    return tuple(
        p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_ARGUMENTS
    )


def _declared_in(module: str, decorator: str) -> dict[str, Declaration]:
    """Builders a module registers with `@<decorator>()` / `@<decorator>("name")`, read from its source."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"registry module {module!r} not found")
    with open(spec.origin, encoding="utf-8") as file:
        tree = ast.parse(file.read(), filename=spec.origin)
    found, by_function = {}, {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for call in node.decorator_list:
                if not (isinstance(call, ast.Call) and _name_of(call.func) == decorator):
                    continue
                name = call.args[0].value if call.args else node.name
                options = tuple(arg.arg for arg in node.args.kwonlyargs if arg.arg not in COMMON_ARGUMENTS)
                found[name] = Declaration(options, {})
                by_function[node.name] = name
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id in by_function
                and isinstance(node.value, ast.Constant)
            ):
                found[by_function[target.value.id]].flags[target.attr] = node.value.value
    return found


def _name_of(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None
