"""The day's tradable universe: which option symbols the engine subscribes to and trades.

Owns the rule of baseline-v1.md, "Universe": read the NIFTY spot, round it to the nearest
``atm_rounding`` (100) for the ATM strike, take the nearest weekly expiry (or the ``--expiry`` /
``--atm`` the user gave), and list ATM − width×step … ATM + width×step, CE and PE for each strike:
with the defaults 41 strikes × 2 = 82 symbols, fixed for the day. ``UniverseSettings`` (section
``[universe]``) holds the two numbers; the strike step and the expiries come from the
``InstrumentSpec`` (the broker's listed expiries when it was asked, else the weekday rule).

Used by the CLI for live, paper and record; replay takes its symbols from the session file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    OPTION_EXCHANGE,
    InstrumentSpec,
    atm_strike,
    is_trading_day,
    next_expiry,
    universe_symbols,
)
from engine.settings import setting


@dataclass(frozen=True, slots=True)
class UniverseSettings:
    """Section ``[universe]``: how the day's option symbols are chosen."""

    atm_rounding: int = setting(100, "the spot is rounded to the nearest multiple of this for "
                                "the ATM strike", min=1, max=10_000)
    width: int = setting(20, "strikes on each side of ATM (41 strikes x CE/PE = 82 symbols)",
                         min=0, max=200)


class UniverseError(ValueError):
    """The universe cannot be built from what was given (bad spot, strike or expiry)."""


def select_universe(spot: float | None, day: date, spec: InstrumentSpec, expiry: date | None = None,
                    atm: int | None = None, width: int = 20, rounding: int = 100) -> list[str]:
    """The option symbols to trade on ``day``, in strike order (CE then PE per strike).

    ``atm`` overrides the strike taken from ``spot`` (then ``spot`` may be None); ``expiry``
    overrides the nearest weekly expiry on or after ``day``. Raises ``UniverseError`` for a spot
    that is not a positive number, an ATM strike off the strike grid, an expiry before ``day``
    or on a non-trading day, or a negative width.
    """
    if width < 0:
        raise UniverseError(f"width must be >= 0, got {width}")
    if rounding <= 0:
        raise UniverseError(f"ATM rounding must be positive, got {rounding}")
    if atm is None:
        if spot is None or not math.isfinite(spot) or spot <= 0:
            raise UniverseError(f"cannot pick the ATM strike from spot {spot!r}; give --atm")
        atm = atm_strike(spot, rounding)
    if atm <= 0 or atm % spec.strike_step:
        raise UniverseError(f"ATM strike {atm} is not a positive multiple of the strike step "
                            f"{spec.strike_step}")
    if atm - width * spec.strike_step <= 0:
        raise UniverseError(f"ATM {atm} with width {width} reaches strikes at or below zero")
    if expiry is None:
        expiry = next_expiry(day, spec)
    elif expiry < day:
        raise UniverseError(f"expiry {expiry} is before the trading day {day} (an expired "
                            f"contract cannot be traded)")
    elif spec.expiries and expiry not in spec.expiries:
        raise UniverseError(f"expiry {expiry} is not one the broker lists (next: "
                            f"{', '.join(str(d) for d in spec.expiries[:3])})")
    elif not spec.expiries and not is_trading_day(expiry, spec):
        raise UniverseError(f"expiry {expiry} is not a trading day")
    return universe_symbols(atm, expiry, spec, width=width)


def universe_pairs(symbols: list[str], include_index: bool = True) -> list[tuple[str, str]]:
    """``(symbol, exchange)`` pairs to subscribe: the options on NFO, then the NIFTY index."""
    pairs = [(symbol, OPTION_EXCHANGE) for symbol in symbols]
    if include_index:
        pairs.append((INDEX_SYMBOL, INDEX_EXCHANGE))
    return pairs
