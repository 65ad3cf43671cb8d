"""The calendar the day lifecycle plans by: OpenAlgo's, cached in the database.

Owns ``DayCalendar``: the ``[instrument]`` calendar (weekends, configured holidays, session
hours) with what OpenAlgo's market endpoints add (``engine.openalgo.calendar``):

- ``refresh``: this year's and next year's holidays and special sessions
  (``market/holidays``), each year cached (``market_holidays``); when OpenAlgo cannot answer,
  the cached year, else the configured list;
- ``plan_next``: the next trading day's timetable, its hours confirmed by ``market/timings``
  for that date (cached per date, ``market_timings``): a special session (Muhurat evening, a
  budget-day Saturday) moves the whole timetable with its open, and a day the timings show
  closed is skipped. Without an answer or a cached one, the calendar's hours stand.

Rules: docs/operations/daily.md ("Calendar").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, time

from loguru import logger

from engine.broker import BrokerError
from engine.market.calendar import MarketCalendar, with_special
from engine.market.day_cycle import DayPlan, DayPlanner, DaySettings
from engine.openalgo.calendar import CLOSED, Hours, YearCalendar, calendar_with, fetch_timings
from engine.openalgo.calendar import fetch_year as fetch_openalgo_year
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.clock import to_ist
from engine.store.database import Database, StoredHolidays, StoredTimings, record


class DayCalendar:
    """OpenAlgo's calendar over the configured one, cached (see the module docstring)."""

    def __init__(self, configured: MarketCalendar, settings: DaySettings, db: Database,
                 broker: OpenAlgoClient, now: Callable[[], float]) -> None:
        self.configured = configured
        self.settings = settings
        self.db = db
        self.broker = broker
        self.now = now
        self.planner = DayPlanner(configured, settings)
        self._warned: set[object] = set()

    @property
    def calendar(self) -> MarketCalendar:
        return self.planner.calendar

    def refresh(self) -> None:
        """Holidays and special sessions of this year and the next (module docstring)."""
        year = to_ist(self.now()).year
        cal = self.configured
        for y in (year, year + 1):
            cal = calendar_with(cal, self._year(y))
        self.planner = DayPlanner(cal, self.settings)

    def plan_next(self) -> DayPlan:
        """The next day to run, its hours from ``market/timings`` (module docstring)."""
        for _ in range(366):
            plan = self.planner.next_day(self.now())
            hours = self._hours(plan.day)
            if hours is None or hours == self._calendar_hours(plan.day):
                return plan
            cal = self.calendar
            if hours == CLOSED:
                logger.info("calendar: OpenAlgo's timings show {} closed", plan.day)
                cal = replace(cal, holidays=cal.holidays | {plan.day},
                              special_sessions=frozenset(
                                  s for s in cal.special_sessions if s[0] != plan.day))
            else:
                logger.info("calendar: {} trades {}-{} (OpenAlgo's timings)", plan.day,
                            *(h.strftime("%H:%M") for h in hours))
                cal = with_special(cal, plan.day, *hours)
            self.planner = DayPlanner(cal, self.settings)
        raise ValueError("no trading day within a year: OpenAlgo's timings close every day")

    def _calendar_hours(self, day: date) -> Hours:
        cal = self.calendar
        return cal.special(day) or (cal.session_open, cal.session_close)

    def _year(self, year: int) -> YearCalendar:
        exchanges = self.configured.exchanges
        try:
            found = fetch_openalgo_year(self.broker, year, exchanges)
        except BrokerError as exc:
            stored = self.db.holidays(year)
            self._warn(year, f"calendar: OpenAlgo's {year} holidays not readable ({exc}); "
                       f"using {'the cached list' if stored else '[instrument]'}")
            if stored is None:
                return YearCalendar()
            return YearCalendar(frozenset(date.fromisoformat(d) for d in stored.holidays),
                                frozenset(_special(s) for s in stored.special_sessions))
        row = StoredHolidays(year, tuple(sorted(d.isoformat() for d in found.holidays)),
                             self.now(), tuple(sorted(
                                 f"{d.isoformat()} {a.isoformat()} {b.isoformat()}"
                                 for d, a, b in found.special_sessions)))
        self._store(row)
        return found

    def _hours(self, day: date) -> Hours | None:
        try:
            hours = fetch_timings(self.broker, day, self.configured.exchanges)
        except BrokerError as exc:
            stored = self.db.timings(day)
            self._warn(day, f"calendar: OpenAlgo's timings for {day} not readable ({exc}); "
                       f"using {'the cached ones' if stored else 'the calendar'}")
            if stored is None:
                return None
            if not stored.open:
                return CLOSED
            return time.fromisoformat(stored.open), time.fromisoformat(stored.close)
        closed = hours == CLOSED
        self._store(StoredTimings(day, "" if closed else hours[0].isoformat(),
                                  "" if closed else hours[1].isoformat(), self.now()))
        return hours

    def _store(self, row: StoredHolidays | StoredTimings) -> None:
        self.db.run_write(lambda tx: tx.apply(self.db.writes_for(record(row))))

    def _warn(self, key: object, message: str) -> None:
        if key not in self._warned:  # once per year or date: it is asked again every day
            self._warned.add(key)
            logger.warning(message)


def _special(text: str) -> tuple[date, time, time]:
    day, start, end = text.split()
    return date.fromisoformat(day), time.fromisoformat(start), time.fromisoformat(end)
