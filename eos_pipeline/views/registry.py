"""Which views exist: the built-in ones plus those of user modules. A user module exposes
`VIEWS`, a sequence of definitions; modules are named by `--views-module pkg.mod` (repeatable)
or by EOS_VIEWS_MODULES (comma-separated)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

from ..errors import ConfigError, UnknownView
from .builtin import BUILTIN_VIEWS
from .definitions import IncrementalView, MaterializedView, ViewDefinition

VIEWS_MODULES_ENV = "EOS_VIEWS_MODULES"


class ViewRegistry:
    """Known view definitions by name, in declaration order; names are unique."""

    def __init__(self, views: Iterable[ViewDefinition]) -> None:
        self._views: dict[str, ViewDefinition] = {}
        for view in views:
            if view.name in self._views:
                raise ConfigError(f"view {view.name!r} is declared twice")
            self._views[view.name] = view

    def get(self, name: str) -> ViewDefinition:
        try:
            return self._views[name]
        except KeyError:
            known = ", ".join(self._views) or "none"
            raise UnknownView(f"unknown view {name!r} (known: {known})") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._views)

    def materialized(self) -> tuple[MaterializedView, ...]:
        return tuple(v for v in self._views.values() if isinstance(v, MaterializedView))

    def incremental(self) -> tuple[IncrementalView, ...]:
        return tuple(v for v in self._views.values() if isinstance(v, IncrementalView))

    def __iter__(self) -> Iterator[ViewDefinition]:
        return iter(self._views.values())

    def __len__(self) -> int:
        return len(self._views)


def views_from_module(module_name: str) -> tuple[ViewDefinition, ...]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import views module {module_name!r}: {exc}") from None
    views = getattr(module, "VIEWS", None)
    if views is None:
        raise ConfigError(f"views module {module_name!r} has no VIEWS")
    if isinstance(views, str | bytes) or not isinstance(views, Sequence):
        raise ConfigError(f"{module_name}.VIEWS must be a sequence of view definitions")
    for view in views:
        if not isinstance(view, MaterializedView | IncrementalView):
            raise ConfigError(f"{module_name}.VIEWS holds {view!r}, not a view definition")
    return tuple(views)


def modules_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The modules named by EOS_VIEWS_MODULES, the one place this package reads the env."""
    value = (os.environ if env is None else env).get(VIEWS_MODULES_ENV, "")
    return tuple(name.strip() for name in value.split(",") if name.strip())


def load_registry(modules: Sequence[str] = ()) -> ViewRegistry:
    """The built-in views followed by each module's VIEWS, in the order given."""
    views: list[ViewDefinition] = list(BUILTIN_VIEWS)
    for module_name in dict.fromkeys(modules):
        views.extend(views_from_module(module_name))
    return ViewRegistry(views)
