"""How a component declares its tunables: a frozen dataclass whose fields use ``setting()``.

Each component owns one settings dataclass next to its code (``SupervisionSettings``,
``SimulatorSettings``, ...). ``engine.config`` assembles them into the whole configuration, maps
each to a ``[section]`` of ``config.toml`` and validates every value against the metadata given
here (type from the annotation, range, choices). Keeping the declaration beside the code means a
new tunable cannot be added without its default, range and one-line help.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            choices: tuple[Any, ...] | None = None, secret: bool = False) -> Any:
    """A dataclass field carrying validation metadata for the config loader.

    ``min``/``max`` are inclusive bounds for numbers (and for the length of lists);
    ``choices`` restricts the value to a set; ``secret`` marks a value that may only come from the
    environment, never from a TOML file.
    """
    meta = {"help": help, "min": min, "max": max, "choices": choices, "secret": secret}
    if isinstance(default, (list, dict, set)):
        frozen_default = tuple(default) if not isinstance(default, dict) else dict(default)
        return field(default_factory=lambda: frozen_default, metadata=meta)
    return field(default=default, metadata=meta)
