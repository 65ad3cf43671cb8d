"""Broker personalities: what OpenAlgo returns in front of each broker.

``personality(name)`` gives one of ``NAMES``: ``ideal`` (every field, the tidiest answers),
``zerodha``, ``angel``, ``sandbox`` (OpenAlgo's analyzer). Each lives in its own module holding
only its differences from ``ideal`` (``base``); docs/broker-personalities.md lists the quirks.

>>> personality("zerodha").rate_limits.default
10
"""

from __future__ import annotations

from engine.sim.personalities.angel import Angel
from engine.sim.personalities.base import (
    CANCEL_PENDING,
    OPEN_PENDING,
    MarketFacts,
    Personality,
    RateLimits,
)
from engine.sim.personalities.ideal import Ideal
from engine.sim.personalities.sandbox import Sandbox
from engine.sim.personalities.zerodha import Zerodha

__all__ = ["CANCEL_PENDING", "NAMES", "OPEN_PENDING", "MarketFacts", "Personality", "RateLimits",
           "personality"]

_ALL: dict[str, type[Personality]] = {"zerodha": Zerodha, "angel": Angel, "sandbox": Sandbox,
                                      "ideal": Ideal}
NAMES = tuple(_ALL)


def personality(name: str) -> Personality:
    """The personality called ``name``; ValueError naming the choices otherwise."""
    try:
        return _ALL[name]()
    except KeyError:
        raise ValueError(f"unknown broker personality {name!r}; choose one of "
                         f"{', '.join(NAMES)}") from None
