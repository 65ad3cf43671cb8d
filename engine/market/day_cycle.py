"""The trading-day lifecycle's rule: its states, and when each transition of a day is due.

Owns ``DayState`` (sleeping → pre_open → waiting_for_broker → selecting → trading → closing →
closed → sleeping), ``DaySettings`` (``[day]``) and ``DayPlanner``, which answers, for any engine
time, which trading day comes next and the moments of its transitions, from the market calendar
(engine/market/calendar.py). Pure: no clock, no I/O; ``engine.app.daily`` runs it. The rules
are in docs/operations/daily.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from engine.market.calendar import MarketCalendar
from engine.market.instruments import parse_hhmm
from engine.runtime.clock import IST, to_ist
from engine.settings import setting


class DayState(StrEnum):
    SLEEPING = "sleeping"
    PRE_OPEN = "pre_open"
    WAITING_FOR_BROKER = "waiting_for_broker"
    SELECTING = "selecting"
    TRADING = "trading"
    CLOSING = "closing"
    CLOSED = "closed"


def _hhmm(text: str) -> time | None:
    try:
        return parse_hhmm(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DaySettings:
    """The trading day's timetable and the broker-session wait (IST wall-clock times)."""

    pre_open: str = setting("09:00", "wake up and start checking the broker session (HH:MM)")
    select_at: str = setting("09:16", "choose the day's universe, expiry and instrument facts "
                             "at or after this time (HH:MM)")
    close_delay_s: float = setting(60.0, "closing starts this long after the session close",
                                   min=0.0, max=3600.0)
    login_deadline: str = setting("09:14", "a second alert if the broker session is still not "
                                  "usable at this time (HH:MM)")
    probe_backoff_s: float = setting(5.0, "first pause between broker-session probes; doubles",
                                     min=0.1, max=600.0)
    probe_backoff_max_s: float = setting(60.0, "longest pause between broker-session probes",
                                         min=0.1, max=3600.0)
    session_check_s: float = setting(30.0, "while trading, probe the broker session this often",
                                     min=1.0, max=3600.0)
    retention_days: int = setting(30, "day reports and session files older than this many days "
                                  "are deleted at closing (0: keep all)", min=0, max=36500)

    def problems(self) -> list[tuple[str, str]]:
        return [(key, f"{getattr(self, key)!r} is not a time HH:MM")
                for key in ("pre_open", "select_at", "login_deadline")
                if _hhmm(getattr(self, key)) is None]


@dataclass(frozen=True, slots=True)
class DayPlan:
    """One trading day's transition moments, epoch seconds."""

    day: date
    pre_open_ts: float
    login_deadline_ts: float
    select_ts: float
    open_ts: float
    close_ts: float
    closing_ts: float

    def next_transition(self, state: DayState) -> tuple[DayState, float] | None:
        """The state that follows ``state`` on this day's timetable and its due time (None
        where the next step waits on an event: the broker, a selection, the closing work)."""
        due = {DayState.SLEEPING: (DayState.PRE_OPEN, self.pre_open_ts),
               DayState.PRE_OPEN: (DayState.WAITING_FOR_BROKER, self.pre_open_ts),
               DayState.WAITING_FOR_BROKER: (DayState.SELECTING, self.select_ts),
               DayState.SELECTING: (DayState.TRADING, self.select_ts),
               DayState.TRADING: (DayState.CLOSING, self.closing_ts)}
        return due.get(state)


class DayPlanner:
    """Which trading day comes next, and its timetable."""

    def __init__(self, calendar: MarketCalendar, settings: DaySettings) -> None:
        self.calendar = calendar
        self.settings = settings

    def _at(self, day: date, text: str) -> float:
        return datetime.combine(day, parse_hhmm(text), IST).timestamp()

    def plan(self, day: date) -> DayPlan:
        """``day``'s timetable. The settings' times are for the regular open; a special session
        (another open, e.g. a Muhurat evening) moves them with its open."""
        open_ts, close_ts = self.calendar.session_bounds(day)
        s = self.settings
        shift = open_ts - datetime.combine(day, self.calendar.session_open, IST).timestamp()
        select_ts = max(self._at(day, s.select_at) + shift, open_ts)
        return DayPlan(day, min(self._at(day, s.pre_open) + shift, open_ts),
                       self._at(day, s.login_deadline) + shift, select_ts, open_ts, close_ts,
                       close_ts + s.close_delay_s)

    def next_day(self, now: float) -> DayPlan:
        """The day to run next at ``now``: today while its closing is still ahead, else the
        next trading day (weekends and holidays skipped)."""
        day = to_ist(now).date()
        for _ in range(3660):
            if self.calendar.is_trading_day(day):
                plan = self.plan(day)
                if now < plan.closing_ts:
                    return plan
            day += timedelta(days=1)
        raise ValueError(f"no trading day within ten years of {day}")
