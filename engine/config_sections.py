"""The list of configuration sections: ``[name]`` in config.toml → the settings dataclass.

Owns only the registration. Each settings class lives beside the code it tunes; adding a section
here is what makes it configurable (and, by the completeness test, what requires its keys to be
documented in config.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.config import EngineSettings, InstrumentSettings, LoggingSettings

if TYPE_CHECKING:
    from engine.config import Config

SECTIONS: dict[str, type[Any]] = {
    "engine": EngineSettings,
    "logging": LoggingSettings,
    "instrument": InstrumentSettings,
}

# Checks that span several keys: each returns (dotted key, problem) pairs.
CROSS_CHECKS: list[Callable[[Config], list[tuple[str, str]]]] = []
