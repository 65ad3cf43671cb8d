"""The trading calendar: weekends and listed holidays closed, the session hours otherwise."""

from __future__ import annotations

from datetime import date, time

from engine.market.calendar import MarketCalendar
from engine.market.instruments import InstrumentSpec, is_trading_day, session_bounds
from engine.runtime.clock import ist_epoch

HOLI = date(2025, 3, 14)
CAL = MarketCalendar(holidays=frozenset({HOLI, date(2026, 1, 26), date(2025, 2, 26)}),
                     session_open=time(9, 15), session_close=time(15, 30))


def test_weekends_and_holidays_are_closed() -> None:
    assert CAL.is_trading_day(date(2025, 3, 13))
    assert not CAL.is_trading_day(HOLI)
    assert not CAL.is_trading_day(date(2025, 3, 15)) and not CAL.is_trading_day(date(2025, 3, 16))


def test_session_of_a_trading_day_and_none_on_a_closed_one() -> None:
    assert CAL.session(date(2025, 3, 13)) == (ist_epoch(2025, 3, 13, 9, 15),
                                              ist_epoch(2025, 3, 13, 15, 30))
    assert CAL.session(HOLI) is None and CAL.session(date(2025, 3, 15)) is None
    assert CAL.session_bounds(HOLI) == (ist_epoch(2025, 3, 14, 9, 15),
                                       ist_epoch(2025, 3, 14, 15, 30))


def test_holidays_of_a_year_ascending() -> None:
    assert CAL.holidays_in(2025) == [date(2025, 2, 26), HOLI]
    assert CAL.holidays_in(2024) == []


def test_the_instrument_spec_reads_the_same_calendar() -> None:
    spec = InstrumentSpec(holidays=frozenset({HOLI}), session_close=time(15, 40))
    assert spec.calendar.holidays == frozenset({HOLI})
    assert not is_trading_day(HOLI, spec) and is_trading_day(date(2025, 3, 13), spec)
    assert session_bounds(date(2025, 3, 13), spec)[1] == ist_epoch(2025, 3, 13, 15, 40)
