"""Instrument facts: option symbols, ticks, ATM, expiries, session bounds, the universe."""

from __future__ import annotations

from datetime import date

import pytest

from engine.market.instruments import (
    InstrumentSpec,
    atm_strike,
    ceil_to_tick,
    floor_to_tick,
    minute_start,
    next_expiry,
    option_symbol,
    parse_option_symbol,
    round_to_tick,
    session_bounds,
    trading_date,
    universe_symbols,
)
from engine.runtime.clock import ist_epoch, to_ist


def test_option_symbol_format_matches_openalgo() -> None:
    assert option_symbol("NIFTY", date(2025, 1, 30), 24000, "CE") == "NIFTY30JAN2524000CE"
    parsed = parse_option_symbol("NIFTY30JAN2524000CE")
    assert (parsed.root, parsed.expiry, parsed.strike, parsed.kind) == (
        "NIFTY", date(2025, 1, 30), 24000, "CE")
    assert str(parsed) == "NIFTY30JAN2524000CE"


@pytest.mark.parametrize("bad", ["NIFTY", "NIFTY30XYZ2524000CE", "NIFTY30JAN2524000XX", ""])
def test_parse_rejects_non_options(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_option_symbol(bad)


def test_option_type_checked() -> None:
    with pytest.raises(ValueError):
        option_symbol("NIFTY", date(2025, 1, 30), 24000, "XX")


def test_tick_rounding() -> None:
    assert round_to_tick(123.456) == 123.45
    assert round_to_tick(123.476) == 123.5
    assert floor_to_tick(100.04) == 100.0
    assert ceil_to_tick(100.01) == 100.05
    assert ceil_to_tick(100.05) == 100.05
    assert floor_to_tick(99.95) == 99.95
    with pytest.raises(ValueError):
        round_to_tick(float("nan"))


def test_atm_rounds_to_nearest_hundred() -> None:
    assert atm_strike(24049.9) == 24000
    assert atm_strike(24050.0) == 24100
    assert atm_strike(23951) == 24000


def test_next_expiry_weekday_and_holiday() -> None:
    spec = InstrumentSpec(expiry_weekday=1)  # Tuesday
    assert next_expiry(date(2026, 1, 5), spec) == date(2026, 1, 6)   # Monday -> Tuesday
    assert next_expiry(date(2026, 1, 6), spec) == date(2026, 1, 6)   # expiry day itself
    assert next_expiry(date(2026, 1, 7), spec) == date(2026, 1, 13)
    holiday = InstrumentSpec(expiry_weekday=1, holidays=frozenset({date(2026, 1, 13)}))
    assert next_expiry(date(2026, 1, 7), holiday) == date(2026, 1, 12)  # moved a day earlier


def test_session_bounds_and_minutes_in_ist() -> None:
    spec = InstrumentSpec()
    open_, close = session_bounds(date(2026, 1, 6), spec)
    assert to_ist(open_).strftime("%H:%M") == "09:15"
    assert to_ist(close).strftime("%H:%M") == "15:30"
    assert close - open_ == 6 * 3600 + 15 * 60
    ts = ist_epoch(2026, 1, 6, 10, 31, 59.9)
    assert minute_start(ts) == ist_epoch(2026, 1, 6, 10, 31)
    assert trading_date(ts) == date(2026, 1, 6)


def test_universe_is_82_symbols_around_atm() -> None:
    spec = InstrumentSpec()
    syms = universe_symbols(24000, date(2026, 1, 6), spec)
    assert len(syms) == 82 and len(set(syms)) == 82
    strikes = sorted({parse_option_symbol(s).strike for s in syms})
    assert strikes[0] == 23000 and strikes[-1] == 25000 and len(strikes) == 41
    assert {parse_option_symbol(s).kind for s in syms} == {"CE", "PE"}
