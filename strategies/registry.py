"""Which strategies the engine can run: found, not listed.

Owns strategy discovery and construction. A strategy registers itself by being a ``Strategy``
subclass that sets ``name`` (its config section is ``[name]``, holding ``settings_class``). The
engine looks in three places, in this order:

1. the built-in modules of this package;
2. every ``*.py`` file (not ``_*`` or ``test_*``) in the folders of ``[engine] strategy_paths``;
3. installed packages declaring an entry point in the group ``nifty_engine.strategies``
   (``name = "package.module:ClassName"``, or a module, which is searched).

Two strategies with one name, a folder that does not exist or a module that fails to import are a
``StrategyError`` with one line naming the place. docs/strategies/writing.md has the details.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from strategies.base import Strategy, StrategyContext

ENTRY_POINT_GROUP = "nifty_engine.strategies"
_BUILT_IN = "strategies"
_NOT_STRATEGIES = frozenset({"base", "registry", "template"})


class StrategyError(Exception):
    """A strategy cannot be found or loaded; the message is one line naming where."""


@dataclass(frozen=True, slots=True)
class StrategyEntry:
    """One strategy the engine can run, and where it was found."""

    name: str
    cls: type[Strategy]
    origin: str

    @property
    def settings_class(self) -> type | None:
        return self.cls.settings_class


def discover(strategy_paths: Sequence[str] = ()) -> dict[str, StrategyEntry]:
    """Every strategy by name: built-in, then the folders, then installed entry points."""
    found: dict[str, StrategyEntry] = {}
    for module, origin in _built_in():
        _add(found, _strategies_in(module), origin)
    for folder in strategy_paths:
        for module, origin in _folder(Path(folder).expanduser()):
            _add(found, _strategies_in(module), origin)
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {point.name} = {point.value}"
        _add(found, _from_entry_point(point, origin), origin)
    return found


def strategy_factory(name: str, cfg: Any) -> Callable[[StrategyContext], Strategy]:
    """A function that builds strategy ``name`` around a context, with its configured settings."""
    known = discover(cfg.engine.strategy_paths)
    if name not in known:
        raise StrategyError(f"unknown strategy {name!r}; known: {', '.join(sorted(known))}")
    cls = known[name].cls
    settings = cfg.section(name) if cls.settings_class is not None else None
    return lambda ctx: cls(ctx, settings)


# ---------------------------------------------------------------------------------------------


def _add(found: dict[str, StrategyEntry], classes: Iterable[type[Strategy]], origin: str) -> None:
    for cls in classes:
        if cls.name in found and found[cls.name].cls is not cls:
            raise StrategyError(f"two strategies named {cls.name!r}: {found[cls.name].origin} "
                                f"and {origin}")
        found[cls.name] = StrategyEntry(cls.name, cls, origin)


def _strategies_in(module: ModuleType) -> list[type[Strategy]]:
    """The strategies a module defines itself (not those it imports)."""
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Strategy) and cls.__module__ == module.__name__
            and "name" in cls.__dict__]


def _built_in() -> Iterable[tuple[ModuleType, str]]:
    package = importlib.import_module(_BUILT_IN)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in _NOT_STRATEGIES or info.name.startswith("_"):
            continue
        name = f"{_BUILT_IN}.{info.name}"
        yield importlib.import_module(name), f"built-in {name}"


def _folder(folder: Path) -> Iterable[tuple[ModuleType, str]]:
    if not folder.is_dir():
        raise StrategyError(f"engine.strategy_paths: {folder} is not a folder")
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith(("_", "test_")):
            continue
        yield _load_file(path), f"{path}"


def _load_file(path: Path) -> ModuleType:
    """Import one strategy file under a name unique to its path (so two folders may both hold a
    ``my_strategy.py``); importing the same file again returns the module already loaded."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"nifty_engine_plugin_{digest}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise StrategyError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise StrategyError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from None
    return module


def _from_entry_point(point: metadata.EntryPoint, origin: str) -> list[type[Strategy]]:
    try:
        loaded = point.load()
    except Exception as exc:
        raise StrategyError(f"{origin}: failed to load: {type(exc).__name__}: {exc}") from None
    if isinstance(loaded, ModuleType):
        return _strategies_in(loaded)
    if inspect.isclass(loaded) and issubclass(loaded, Strategy) and "name" in loaded.__dict__:
        return [loaded]
    raise StrategyError(f"{origin}: not a Strategy subclass with a name, nor a module")
