"""The trading calendar: which days the exchange trades, and its session hours on those days.

Owns the day rule (docs/openalgo-protocol.md, "Market calendar"): Saturdays, Sundays and the
listed holidays are closed; every other day trades from ``session_open`` to ``session_close``,
IST wall-clock times; a special session (Muhurat trading on Diwali evening, a budget-day
Saturday) trades on its date at its own hours, weekend or holiday alike. Pure: no clock and
no I/O, so the simulator's ``market/holidays`` and ``market/timings`` replies and the engine's
own day handling read the same rule.

>>> cal = MarketCalendar(holidays=frozenset({date(2025, 2, 26)}))
>>> cal.is_trading_day(date(2025, 2, 26)), cal.is_trading_day(date(2025, 2, 27))
(False, True)
>>> budget = with_special(cal, date(2025, 2, 1), time(9, 15), time(15, 30))
>>> budget.is_trading_day(date(2025, 2, 1)), budget.is_trading_day(date(2025, 2, 2))
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time

from engine.runtime.clock import IST

#: The exchanges a configured holiday closes and the session hours apply to: the index options
#: the engine trades (NFO) and the cash market their index is computed from (NSE).
EXCHANGES = ("NSE", "NFO")


@dataclass(frozen=True, slots=True)
class MarketCalendar:
    """Weekends and ``holidays`` closed; ``session_open``–``session_close`` IST otherwise;
    ``special_sessions`` (date, open, close) trade at their own hours on their date."""

    holidays: frozenset[date] = field(default_factory=frozenset)
    session_open: time = time(9, 15)
    session_close: time = time(15, 30)
    exchanges: tuple[str, ...] = EXCHANGES
    special_sessions: frozenset[tuple[date, time, time]] = field(default_factory=frozenset)

    def special(self, day: date) -> tuple[time, time] | None:
        """``day``'s special session hours, if it has one."""
        for d, start, end in self.special_sessions:
            if d == day:
                return start, end
        return None

    def is_trading_day(self, day: date) -> bool:
        if self.special(day) is not None:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def session_bounds(self, day: date) -> tuple[float, float]:
        """Epoch seconds of ``day``'s open and close (whether or not the day trades)."""
        start, end = self.special(day) or (self.session_open, self.session_close)
        return (datetime.combine(day, start, IST).timestamp(),
                datetime.combine(day, end, IST).timestamp())

    def session(self, day: date) -> tuple[float, float] | None:
        """``day``'s open and close in epoch seconds; None on a closed day."""
        return self.session_bounds(day) if self.is_trading_day(day) else None

    def holidays_in(self, year: int) -> list[date]:
        """The listed holidays of ``year``, ascending (weekends are not listed)."""
        return sorted(d for d in self.holidays if d.year == year)


def with_special(calendar: MarketCalendar, day: date, start: time, end: time) -> MarketCalendar:
    """``calendar`` with ``day`` trading ``start``–``end`` (any earlier entry for it replaced)."""
    kept = frozenset(x for x in calendar.special_sessions if x[0] != day)
    return replace(calendar, special_sessions=kept | {(day, start, end)})
