"""Which strategies the engine can run: a name → (module, class, config section) table.

Owns strategy lookup for the runtime and the CLI (``engine.strategy`` in config.toml, or
``--strategy``). Modules are imported only when their strategy is chosen. To add your own
strategy, write it under ``strategies/``, give it a settings section in
``engine/config_sections.py`` and add a row here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from strategies.base import Strategy, StrategyContext

#: name → (module, class name, config section)
STRATEGIES: dict[str, tuple[str, str, str]] = {
    "baseline_v1": ("strategies.baseline_v1", "BaselineV1", "baseline_v1"),
    "vwap_cross": ("strategies.vwap_cross", "VwapCross", "vwap_cross"),
}


def strategy_factory(name: str, cfg: Any) -> Callable[[StrategyContext], Strategy]:
    """A function that builds strategy ``name`` around a context, with its configured settings."""
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    module, cls_name, section = STRATEGIES[name]
    cls = getattr(importlib.import_module(module), cls_name)
    settings = cfg.section(section)
    return lambda ctx: cls(ctx, settings)
