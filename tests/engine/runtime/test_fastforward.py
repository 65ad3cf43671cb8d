"""FastForwardClock: market time jumps over skips, timers wait the right real time, a periodic
timer resumes after a jump instead of firing for every skipped slot; and the day plan."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

from engine.market.calendar import MarketCalendar
from engine.market.day_cycle import DayPlanner, DaySettings
from engine.runtime.clock import ist_epoch
from engine.runtime.fastforward import FastForwardClock
from engine.sim.days import idle_skips


def test_a_jump_does_not_replay_every_missed_slot_of_a_periodic_timer() -> None:
    clock = FastForwardClock(0.0, 100.0, [(1.0, 10_001.0)])
    fired: list[float] = []
    clock.call_every(0.5, lambda: fired.append(clock.time()))
    one_shot = threading.Event()
    clock.call_at(10_002.0, one_shot.set)
    try:
        assert one_shot.wait(5.0)  # ~0.02 s of real time, not 100 s
        time.sleep(0.05)
    finally:
        clock.stop()
    # a handful of firings (before and after the jump), not 20 000
    assert 2 <= len(fired) < 20
    assert any(t >= 10_001.0 for t in fired)


def test_base_and_market_time_round_trip() -> None:
    clock = FastForwardClock(5_000.0, 1.0, [(10.0, 20.0), (30.0, 4_000.0)], paused=True)
    try:
        assert clock.time() == 5_000.0
        assert clock.market_at(clock.base_time()) == 5_000.0
        attached = FastForwardClock(clock.base_time(), 1.0, clock.skips, paused=True, base=True)
        assert attached.time() == clock.time()
        attached.stop()
    finally:
        clock.stop()


def test_idle_skips_leave_the_closing_and_the_pre_open() -> None:
    d1 = (ist_epoch(2026, 1, 5, 9, 15), ist_epoch(2026, 1, 5, 15, 30))
    d2 = (ist_epoch(2026, 1, 8, 9, 15), ist_epoch(2026, 1, 8, 15, 30))
    [(a, b)] = idle_skips([d1, d2])
    assert a == ist_epoch(2026, 1, 5, 15, 35) and b == ist_epoch(2026, 1, 8, 8, 55)
    # a short session: its quiet afternoon is jumped too, the night starts after the close
    short = (d1[0], ist_epoch(2026, 1, 5, 9, 45))
    closes = [ist_epoch(2026, 1, 5, 15, 30), ist_epoch(2026, 1, 8, 15, 30)]
    assert idle_skips([short, d2], closes) == [
        (ist_epoch(2026, 1, 5, 9, 50), ist_epoch(2026, 1, 5, 15, 10)),
        (ist_epoch(2026, 1, 5, 15, 35), ist_epoch(2026, 1, 8, 8, 55))]


def test_the_next_day_skips_weekends_and_holidays_and_selects_after_the_open() -> None:
    planner = DayPlanner(MarketCalendar(holidays=frozenset({date(2026, 1, 7)})), DaySettings())
    after_close = ist_epoch(2026, 1, 6, 15, 40)
    plan = planner.next_day(after_close)
    assert plan.day == date(2026, 1, 8)  # Wednesday the 7th is a holiday
    assert plan.select_ts == ist_epoch(2026, 1, 8, 9, 16)
    assert planner.next_day(ist_epoch(2026, 1, 9, 16, 0)).day == date(2026, 1, 12)  # Monday
    assert planner.next_day(ist_epoch(2026, 1, 8, 11, 0)).day == date(2026, 1, 8)  # mid-day


def test_an_attached_engine_shares_the_simulators_jumps(tmp_path: Path) -> None:
    from engine.app.sections import load_config
    from engine.app.venues import attached_venue, write_simulator_file

    sim_clock = FastForwardClock(1_000.0, 50.0, [(1_010.0, 90_000.0)])
    write_simulator_file(tmp_path, rest_url="http://x", ws_url="ws://x", clock=sim_clock)
    (tmp_path / "simulator.key").write_text("k\n")
    venue = attached_venue(load_config(None, env={}), tmp_path)
    try:
        assert isinstance(venue.clock, FastForwardClock)
        assert abs(venue.clock.time() - sim_clock.time()) < 0.5  # 10 ms of real time at 50x
        time.sleep(0.3)  # both jump at 1 010
        assert venue.clock.time() > 90_000.0 and abs(venue.clock.time() - sim_clock.time()) < 0.5
    finally:
        venue.clock.stop()
        sim_clock.stop()
