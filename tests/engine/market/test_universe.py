"""The day's universe: ATM from spot, nearest expiry, 82 symbols, overrides and bad input."""

from __future__ import annotations

from datetime import date

import pytest

from engine.market.instruments import InstrumentSpec, parse_option_symbol
from engine.market.universe import UniverseError, UniverseSettings, select_universe, universe_pairs

SPEC = InstrumentSpec()  # weekly expiry on Tuesday
MONDAY = date(2025, 1, 27)


def test_82_symbols_around_the_spot_rounded_to_100() -> None:
    symbols = select_universe(24_049.9, MONDAY, SPEC)
    assert len(symbols) == 82 == len(set(symbols))
    options = [parse_option_symbol(s) for s in symbols]
    strikes = sorted({o.strike for o in options})
    assert strikes[0] == 23_000 and strikes[-1] == 25_000 and len(strikes) == 41
    assert {o.expiry for o in options} == {date(2025, 1, 28)}  # the nearest Tuesday
    assert symbols[:2] == ["NIFTY28JAN2523000CE", "NIFTY28JAN2523000PE"]


@pytest.mark.parametrize(("spot", "atm"), [(24_049.99, 24_000), (24_050.0, 24_100),
                                           (23_951.0, 24_000)])
def test_atm_rounding(spot: float, atm: int) -> None:
    symbols = select_universe(spot, MONDAY, SPEC, width=0)
    assert [parse_option_symbol(s).strike for s in symbols] == [atm, atm]


def test_expiry_day_itself_is_the_nearest_expiry() -> None:
    tuesday = date(2025, 1, 28)
    assert parse_option_symbol(select_universe(24_000, tuesday, SPEC)[0]).expiry == tuesday


def test_holiday_moves_the_expiry_back() -> None:
    spec = InstrumentSpec(holidays=frozenset({date(2025, 1, 28)}))
    assert parse_option_symbol(select_universe(24_000, MONDAY, spec)[0]).expiry == MONDAY


def test_user_expiry_and_atm_override() -> None:
    symbols = select_universe(None, MONDAY, SPEC, expiry=date(2025, 2, 4), atm=23_500, width=1)
    assert symbols == ["NIFTY04FEB2523450CE", "NIFTY04FEB2523450PE", "NIFTY04FEB2523500CE",
                       "NIFTY04FEB2523500PE", "NIFTY04FEB2523550CE", "NIFTY04FEB2523550PE"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"spot": None}, "give --atm"),
    ({"spot": -5.0}, "give --atm"),
    ({"spot": float("nan")}, "give --atm"),
    ({"spot": 24_000, "atm": 24_025}, "strike step"),
    ({"spot": 24_000, "expiry": date(2025, 1, 21)}, "expired"),
    ({"spot": 24_000, "expiry": date(2025, 2, 1)}, "not a trading day"),
    ({"spot": 24_000, "width": -1}, "width"),
    ({"spot": 500, "width": 20}, "at or below zero"),
])
def test_bad_input_is_refused(kwargs: dict[str, object], message: str) -> None:
    spot = kwargs.pop("spot")
    with pytest.raises(UniverseError, match=message):
        select_universe(spot, MONDAY, SPEC, **kwargs)  # type: ignore[arg-type]


def test_pairs_put_options_on_nfo_and_add_the_index() -> None:
    pairs = universe_pairs(select_universe(24_000, MONDAY, SPEC, width=0))
    assert pairs == [("NIFTY28JAN2524000CE", "NFO"), ("NIFTY28JAN2524000PE", "NFO"),
                     ("NIFTY", "NSE_INDEX")]
    assert universe_pairs(["X"], include_index=False) == [("X", "NFO")]


def test_settings_defaults_match_the_spec() -> None:
    settings = UniverseSettings()
    assert (settings.atm_rounding, settings.width) == (100, 20)
