"""The day lifecycle's calendar (engine/app/day_calendar.py) read from the simulator over real
sockets: OpenAlgo's special sessions (a budget-day Saturday, a Muhurat evening on a holiday)
and its market timings plan the day, and the cached replies plan it when OpenAlgo is gone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, time
from pathlib import Path

import pytest

from engine.app.day_calendar import DayCalendar
from engine.app.sections import load_config
from engine.market.calendar import MarketCalendar
from engine.market.day_cycle import DayPlan, DaySettings
from engine.market.instruments import InstrumentSpec
from engine.openalgo.calendar import fetch_timings
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.clock import IST, VirtualClock
from engine.sim.server import SimulatorServer
from engine.store.database import Database, StoreSettings
from tests.engine.sim.conftest import API_KEY, BASE_SETTINGS

CFG = load_config(None, env={})
BUDGET = date(2025, 2, 1)  # a Saturday
DIWALI = date(2025, 10, 21)  # a holiday with a Muhurat session in the afternoon
MONDAY = date(2025, 2, 3)


def at(day: date, hh: int, mm: int) -> float:
    return datetime.combine(day, time(hh, mm), IST).timestamp()


@pytest.fixture
def openalgo() -> Iterator[tuple[SimulatorServer, VirtualClock]]:
    clock = VirtualClock(at(date(2025, 1, 31), 16, 0))
    # OpenAlgo's regular hours edited to close at 15:00 (its admin page's market timings): only
    # market/timings says so
    spec = InstrumentSpec(session_close=time(15, 0), holidays=frozenset({DIWALI}),
                          special_sessions=frozenset({(BUDGET, time(9, 15), time(15, 30)),
                                                      (DIWALI, time(13, 45), time(14, 45))}))
    sim = SimulatorServer(BASE_SETTINGS, api_key=API_KEY, clock=clock, instrument=spec).start()
    yield sim, clock
    sim.stop()


def client(url: str, clock: VirtualClock) -> OpenAlgoClient:
    return OpenAlgoClient(replace(CFG.openalgo, host=url, retries=1, timeout_s=2.0),
                          api_key=API_KEY, clock=clock, account="paper")


def calendar(db: Database, broker: OpenAlgoClient, clock: VirtualClock) -> DayCalendar:
    # the engine's own calendar knows none of it: weekends closed, 09:15-15:30
    cal = DayCalendar(MarketCalendar(), DaySettings(), db, broker, clock.time)
    cal.refresh()
    return cal


def hours(plan: DayPlan) -> tuple[str, ...]:
    return tuple(datetime.fromtimestamp(ts, IST).strftime("%H:%M") for ts in (
        plan.pre_open_ts, plan.login_deadline_ts, plan.select_ts, plan.open_ts, plan.close_ts,
        plan.closing_ts))


def test_special_sessions_plan_the_day_and_are_cached(
        openalgo: tuple[SimulatorServer, VirtualClock], tmp_path: Path) -> None:
    sim, clock = openalgo
    db = Database(tmp_path / "engine.db", StoreSettings())
    broker = client(sim.rest_url, clock)
    try:
        # OpenAlgo's timings reply, as its services/market_calendar_service shapes it
        assert fetch_timings(broker, BUDGET, ("NSE", "NFO")) == (time(9, 15), time(15, 30))
        assert fetch_timings(broker, date(2025, 2, 2), ("NSE", "NFO")) == (time(0), time(0))
        cal = calendar(db, broker, clock)
        # Friday after the close: the next day is the budget-day Saturday, a regular timetable
        plan = cal.plan_next()
        assert plan.day == BUDGET
        assert hours(plan) == ("09:00", "09:14", "09:16", "09:15", "15:30", "15:31")
        # Monday closes at 15:00 by the timings (the holidays list says nothing of the hours)
        clock.advance_to(at(date(2025, 2, 2), 12, 0))
        plan = cal.plan_next()
        assert plan.day == MONDAY and hours(plan)[3:] == ("09:15", "15:00", "15:01")
        # Diwali: a holiday, but its Muhurat session trades; the timetable moves with the open
        clock.advance_to(at(date(2025, 10, 20), 16, 0))
        cal.refresh()
        plan = cal.plan_next()
        assert plan.day == DIWALI
        assert hours(plan) == ("13:30", "13:44", "13:46", "13:45", "14:45", "14:46")
        assert db.timings(DIWALI) is not None and db.holidays(2025) is not None
        assert db.holidays(2025).special_sessions == (  # type: ignore[union-attr]
            "2025-02-01 09:15:00 15:30:00", "2025-10-21 13:45:00 14:45:00")
    finally:
        broker.close()
    # OpenAlgo gone: the cached year and the cached timings plan the same day
    sim.stop()
    gone = client(sim.rest_url, clock)
    try:
        plan = calendar(db, gone, clock).plan_next()
        assert plan.day == DIWALI and hours(plan)[3:5] == ("13:45", "14:45")
    finally:
        gone.close()
        db.close()
