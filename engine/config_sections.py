"""The list of configuration sections: ``[name]`` in config.toml → the settings dataclass.

Owns only the registration. Each settings class lives beside the code it tunes; adding a section
here is what makes it configurable (and, by the completeness test, what requires its keys to be
documented in config.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.feed import MarketDataSettings
from actors.health import HealthSettings
from actors.order_manager import OrderSettings
from actors.position_monitor import PositionSettings
from actors.reconciler import ReconcileSettings
from actors.recorder import RecorderSettings
from engine.accounts import AccountsSettings
from engine.bars import BarSettings
from engine.config import EngineSettings, InstrumentSettings, LoggingSettings
from engine.control import ControlSettings
from engine.openalgo.feed import FeedSettings
from engine.openalgo.rest import RestSettings
from engine.replay import ReplaySettings
from engine.report import ReportSettings
from engine.risk import RiskSettings
from engine.session_file import SessionFileSettings
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorSettings
from engine.store import StoreSettings
from engine.supervisor import SupervisionSettings
from engine.swings import SwingSettings
from engine.synth import SynthSettings
from engine.synth import check_config as check_synth
from engine.universe import UniverseSettings
from strategies.baseline_v1 import BaselineSettings
from strategies.baseline_v1 import check_config as check_baseline
from strategies.vwap_cross import VwapCrossSettings

if TYPE_CHECKING:
    from engine.config import Config


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
    "swings": SwingSettings,
    "replay": ReplaySettings,
    "recorder": RecorderSettings,
    "orders": OrderSettings,
    "positions": PositionSettings,
    "risk": RiskSettings,
    "reconcile": ReconcileSettings,
    "accounts": AccountsSettings,
    "control": ControlSettings,
    "report": ReportSettings,
    "universe": UniverseSettings,
    "baseline_v1": BaselineSettings,
    "vwap_cross": VwapCrossSettings,
    "session_file": SessionFileSettings,
    "synth": SynthSettings,
    "simulator": SimulatorSettings,
    "matching": MatchingSettings,
}


def _risk_checks(cfg: Config) -> list[tuple[str, str]]:
    settings: RiskSettings = cfg.section("risk")
    return [(f"risk.{key}", problem) for key, problem in settings.problems()]


def _supervision_checks(cfg: Config) -> list[tuple[str, str]]:
    groups: SupervisionGroups = cfg.section("supervision")
    return [(f"supervision.{name}.{key}", problem)
            for name in ("root", "market_data", "strategy", "execution")
            for key, problem in getattr(groups, name).problems()]


# Checks that span several keys: each returns (dotted key, problem) pairs.
CROSS_CHECKS: list[Callable[[Config], list[tuple[str, str]]]] = [
    _supervision_checks,
    _risk_checks,
    check_synth,
    check_baseline,
]
