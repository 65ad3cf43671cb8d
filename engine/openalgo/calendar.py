"""The exchange calendar as OpenAlgo serves it: the year's holidays and special sessions, and
each day's session timings.

Owns the reading of OpenAlgo's two market endpoints (its ``services/market_calendar_service``):

- ``fetch_year`` (``/api/v1/market/holidays``): the days that close the exchanges the engine
  trades (NSE and NFO; a holiday that leaves them open is not one) and the ``SPECIAL_SESSION``
  rows that open them (Muhurat trading, a budget-day Saturday) with their hours, from the rows'
  ``open_exchanges`` (epoch milliseconds);
- ``fetch_timings`` (``/api/v1/market/timings``): one date's sessions, ``[{"exchange",
  "start_time", "end_time"}]`` in epoch milliseconds; an empty list (or only other exchanges,
  such as crypto on a weekend) means the day is closed for the engine;
- ``calendar_with``: the ``[instrument]`` calendar with those days added.

The day lifecycle reads both daily and caches them in the database, so the configured list is
only the offline fallback. Times are read as IST wall-clock times.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time

from engine.market.calendar import MarketCalendar
from engine.openalgo.rest import OpenAlgoClient
from engine.openalgo.wire import Fields
from engine.runtime.clock import IST

Hours = tuple[time, time]
#: ``fetch_timings`` for a day none of the engine's exchanges trades
CLOSED: Hours = (time(0), time(0))


@dataclass(frozen=True, slots=True)
class YearCalendar:
    """One year as OpenAlgo lists it: closed days, and special sessions with their hours."""

    holidays: frozenset[date] = field(default_factory=frozenset)
    special_sessions: frozenset[tuple[date, time, time]] = field(default_factory=frozenset)


def _ist(ms: float) -> time:
    return datetime.fromtimestamp(ms / 1000.0, IST).time().replace(microsecond=0)


def _window(rows: list[Fields], exchanges: tuple[str, ...]) -> Hours | None:
    """The hours every listed exchange of ours trades (the latest open, the earliest close)."""
    ours = [r for r in rows if r.text("exchange", "") in exchanges
            and r.has("start_time") and r.has("end_time")]
    if not ours:
        return None
    return (max(_ist(r.number("start_time")) for r in ours),
            min(_ist(r.number("end_time")) for r in ours))


def _year(body: Fields, exchanges: tuple[str, ...]) -> YearCalendar:
    holidays, specials = set(), set()
    for row in body.objects("data"):
        day = date.fromisoformat(row.text("date")[:10])
        if row.text("holiday_type", "") == "SPECIAL_SESSION":
            hours = _window(row.objects("open_exchanges"), exchanges) \
                if row.has("open_exchanges") else None
            if hours is not None:
                specials.add((day, *hours))
            continue
        closed = {str(x) for x in row.values("closed_exchanges", [])}
        if closed & set(exchanges):
            holidays.add(day)
    return YearCalendar(frozenset(holidays), frozenset(specials))


def fetch_year(client: OpenAlgoClient, year: int, exchanges: tuple[str, ...]) -> YearCalendar:
    """``year``'s holidays that close any of ``exchanges`` and its special sessions that open
    them (raises ``BrokerError``)."""
    return client.request("market/holidays", {"year": year},
                          lambda body: _year(body, exchanges))


def fetch_timings(client: OpenAlgoClient, day: date, exchanges: tuple[str, ...]) -> Hours:
    """``day``'s session hours for ``exchanges``; ``CLOSED`` when none of them trades
    (raises ``BrokerError``)."""
    return client.request("market/timings", {"date": day.isoformat()},
                          lambda body: _window(body.objects("data"), exchanges) or CLOSED)


def calendar_with(calendar: MarketCalendar, year: YearCalendar) -> MarketCalendar:
    return replace(calendar, holidays=calendar.holidays | year.holidays,
                   special_sessions=calendar.special_sessions | year.special_sessions)
