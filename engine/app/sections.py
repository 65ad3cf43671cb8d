"""The application's configuration: which ``[section]`` holds which settings, and its loader.

Owns the table of sections. Each settings class lives beside the code it tunes; listing it here
is what makes it configurable (and, by the completeness test, what requires its keys to be
documented in config.toml). Strategies bring their own sections: every strategy the registry
finds (built-in, in ``[engine] strategy_paths``, or installed) adds ``[its name]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.feed import MarketDataSettings
from actors.health import HealthSettings
from actors.order_manager import OrderSettings
from actors.position_monitor import PositionSettings
from actors.reconciler import ReconcileSettings
from actors.recorder import RecorderSettings
from engine.app.accounts import AccountsSettings
from engine.app.control_settings import ControlSettings
from engine.app.dashboard.settings import DashboardSettings
from engine.app.replay import ReplaySettings
from engine.config import Config, ConfigError, EngineSettings, Problem, Sections
from engine.config import describe_defaults as _describe
from engine.config import load_config as _load
from engine.market.bars import BarSettings
from engine.market.day_cycle import DaySettings
from engine.market.instruments import InstrumentSettings, parse_hhmm
from engine.market.session_file import SessionFileSettings
from engine.market.swings import SwingSettings
from engine.market.synth_settings import SynthSettings
from engine.market.universe import UniverseSettings
from engine.openalgo.feed import FeedSettings
from engine.openalgo.rest import RestSettings
from engine.report.data import ReportSettings
from engine.runtime.logs import LoggingSettings
from engine.runtime.notify import NotifySettings
from engine.runtime.supervisor import SupervisionSettings
from engine.sim.matching import MatchingSettings
from engine.sim.settings import SimulatorSettings
from engine.store.database import StoreSettings
from engine.trading.charges import ChargeSettings
from engine.trading.risk import RiskSettings
from strategies.registry import StrategyError, discover


@dataclass(frozen=True, slots=True)
class SupervisionGroups:
    """Supervision settings per group of the supervisor tree."""

    root: SupervisionSettings = field(default_factory=SupervisionSettings)
    market_data: SupervisionSettings = field(default_factory=SupervisionSettings)
    strategy: SupervisionSettings = field(default_factory=SupervisionSettings)
    # broker calls block the order manager legitimately (a 10 s timeout, retries): a hang is
    # only a hang well past that
    execution: SupervisionSettings = field(default_factory=lambda: SupervisionSettings(
        liveness_timeout=60.0))

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        return [(tuple(f"{name}.{key}" for key in keys), problem)
                for name in ("root", "market_data", "strategy", "execution")
                for keys, problem in getattr(self, name).problems()]


#: The engine's own sections, in config.toml's order; strategies' sections follow.
SECTIONS: dict[str, type[Any]] = {
    "engine": EngineSettings,
    "logging": LoggingSettings,
    "instrument": InstrumentSettings,
    "supervision": SupervisionGroups,
    "store": StoreSettings,
    "openalgo": RestSettings,
    "feed": FeedSettings,
    "market_data": MarketDataSettings,
    "bars": BarSettings,
    "health": HealthSettings,
    "notify": NotifySettings,
    "swings": SwingSettings,
    "replay": ReplaySettings,
    "recorder": RecorderSettings,
    "orders": OrderSettings,
    "positions": PositionSettings,
    "risk": RiskSettings,
    "charges": ChargeSettings,
    "reconcile": ReconcileSettings,
    "accounts": AccountsSettings,
    "control": ControlSettings,
    "dashboard": DashboardSettings,
    "report": ReportSettings,
    "universe": UniverseSettings,
    "day": DaySettings,
    "session_file": SessionFileSettings,
    "synth": SynthSettings,
    "simulator": SimulatorSettings,
    "matching": MatchingSettings,
}


def catalog(engine: EngineSettings) -> Sections:
    """Every section for these engine settings: the engine's own, then one per strategy found.
    The configured strategy must be one of them."""
    try:
        found = discover(engine.strategy_paths)
    except StrategyError as exc:
        raise ConfigError(str(exc), key="engine.strategy_paths") from None
    except OSError as exc:  # a folder that cannot be listed (a name too long, no permission)
        raise ConfigError(f"cannot read {_short(str(exc.filename))}: {exc.strerror}",
                          key="engine.strategy_paths") from None
    if engine.strategy not in found:
        raise ConfigError(f"unknown strategy {engine.strategy!r}; known: "
                          f"{', '.join(sorted(found))}", key="engine.strategy")
    sections = dict(SECTIONS)
    for name, entry in found.items():
        if entry.settings_class is None:
            continue
        if name in sections:
            raise ConfigError(f"strategy {name!r} ({entry.origin}) takes the name of an engine "
                              f"section", key="engine.strategy_paths")
        sections[name] = entry.settings_class
    return sections


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def cross_section_problems(cfg: Config) -> list[Problem]:
    """Checks between sections (each section's own are its ``problems()``): the end-of-day
    exit must fall inside the instrument's session, or it never fires."""
    spec = cfg.instrument.spec()
    eod = parse_hhmm(cfg.risk.eod_exit)
    if not spec.session_open < eod < spec.session_close:
        return [(("risk.eod_exit", "instrument.session_close", "instrument.session_open"),
                 f"{cfg.risk.eod_exit} is not inside the session "
                 f"({spec.session_open:%H:%M}-{spec.session_close:%H:%M}, [instrument]): "
                 f"the end-of-day exit would never fire")]
    return []


def load_config(path: str | os.PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, str] | None = None) -> Config:
    """The application's configuration from ``path`` (None: defaults), the environment and
    ``overrides`` (``section.key`` → text)."""
    return _load(path, catalog, env=env, overrides=overrides, checks=cross_section_problems)


def describe_defaults(engine: EngineSettings | None = None) -> list[tuple[str, str, Any, str]]:
    """(section, key, default, help) for every setting of ``catalog(engine)``."""
    return _describe(catalog(engine or EngineSettings()))
