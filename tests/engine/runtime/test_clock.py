"""The engine clock: virtual time and timers, wall and scaled clocks, IST helpers."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest

from engine.runtime.clock import (
    IST,
    ScaledClock,
    VirtualClock,
    WallClock,
    fmt_ist,
    ist_epoch,
    to_ist,
)


def test_ist_helpers_round_trip() -> None:
    ts = ist_epoch(2026, 1, 6, 9, 15, 30.5)
    dt = to_ist(ts)
    assert (dt.hour, dt.minute, dt.second, dt.microsecond) == (9, 15, 30, 500000)
    assert dt.utcoffset().total_seconds() == 5.5 * 3600
    assert dt.tzinfo is IST
    assert fmt_ist(ts) == "09:15:30 IST"
    assert dt.date() == date(2026, 1, 6)


def test_virtual_clock_fires_due_timers_in_order_at_their_due_time() -> None:
    clock = VirtualClock(start=100.0)
    seen: list[tuple[str, float]] = []
    clock.call_at(105.0, lambda: seen.append(("b", clock.time())), "b")
    clock.call_at(102.0, lambda: seen.append(("a", clock.time())), "a")
    clock.call_at(120.0, lambda: seen.append(("late", clock.time())), "late")
    assert clock.advance_to(110.0) == 2
    assert seen == [("a", 102.0), ("b", 105.0)]
    assert clock.time() == 110.0
    assert clock.next_due() == 120.0


def test_virtual_clock_equal_due_times_fire_in_scheduling_order() -> None:
    clock = VirtualClock(start=0.0)
    seen: list[int] = []
    for i in range(5):
        clock.call_at(1.0, lambda i=i: seen.append(i))
    clock.advance_to(1.0)
    assert seen == [0, 1, 2, 3, 4]


def test_virtual_clock_periodic_timer_and_cancel() -> None:
    clock = VirtualClock(start=0.0)
    fired: list[float] = []
    handle = clock.call_every(5.0, lambda: fired.append(clock.time()))
    clock.advance_to(17.0)
    assert fired == [5.0, 10.0, 15.0]
    handle.cancel()
    clock.advance_to(40.0)
    assert fired == [5.0, 10.0, 15.0]
    assert clock.pending_timers() == 0


def test_virtual_clock_timer_scheduled_by_a_timer_fires_in_the_same_advance() -> None:
    clock = VirtualClock(start=0.0)
    seen: list[float] = []

    def first() -> None:
        seen.append(clock.time())
        clock.call_later(1.0, lambda: seen.append(clock.time()))

    clock.call_at(2.0, first)
    clock.advance_to(10.0)
    assert seen == [2.0, 3.0]


def test_virtual_clock_never_goes_backwards() -> None:
    clock = VirtualClock(start=50.0)
    assert clock.advance_to(40.0) == 0
    assert clock.time() == 50.0


def test_a_failing_timer_does_not_stop_the_others(log_capture) -> None:
    clock = VirtualClock(start=0.0)
    seen: list[str] = []

    def boom() -> None:
        raise RuntimeError("timer failure")

    clock.call_at(1.0, boom, "boom")
    clock.call_at(2.0, lambda: seen.append("ok"))
    clock.advance_to(3.0)
    assert seen == ["ok"]
    assert "timer failure" in log_capture.getvalue()


def test_periodic_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        VirtualClock().call_every(0, lambda: None)


def test_wall_clock_fires_a_timer_on_its_thread() -> None:
    clock = WallClock()
    done = threading.Event()
    fired_on: list[str] = []

    def cb() -> None:
        fired_on.append(threading.current_thread().name)
        done.set()

    start = time.monotonic()
    clock.call_later(0.05, cb)
    assert done.wait(2.0)
    assert time.monotonic() - start >= 0.045
    assert fired_on and fired_on[0] != threading.current_thread().name
    clock.stop()


def test_wall_clock_cancelled_timer_does_not_fire() -> None:
    clock = WallClock()
    fired = threading.Event()
    handle = clock.call_later(0.05, fired.set)
    handle.cancel()
    assert not fired.wait(0.2)
    clock.stop()


def test_scaled_clock_runs_faster_than_real_time() -> None:
    start = ist_epoch(2026, 1, 6, 9, 15)
    clock = ScaledClock(start=start, speed=600.0)
    done = threading.Event()
    fired_at: list[float] = []

    def cb() -> None:
        fired_at.append(clock.time())
        done.set()

    t0 = time.monotonic()
    clock.call_at(start + 60.0, cb)  # one engine minute = 0.1 real seconds at 600x
    assert done.wait(3.0)
    real = time.monotonic() - t0
    assert fired_at[0] >= start + 60.0
    assert real < 60.0  # far less than an engine minute of real time
    assert clock.speed == 600.0
    clock.stop()


def test_scaled_clock_rejects_non_positive_speed() -> None:
    with pytest.raises(ValueError):
        ScaledClock(start=0.0, speed=0)


def test_a_leashed_scaled_clock_stands_still_and_goes_on_without_a_jump() -> None:
    """Paper on a machine that cannot keep up: market time waits at the leash, timers beyond
    it do not fire, and once let go time goes on from the leash (no burst of timers)."""
    start = ist_epoch(2026, 1, 6, 9, 15)
    clock = ScaledClock(start=start, speed=600.0, paused=True)
    fired: list[float] = []
    try:
        clock.hold_at(start + 1.0)
        clock.resume()
        clock.call_at(start + 30.0, lambda: fired.append(clock.time()))
        time.sleep(0.1)  # 60 engine seconds unheld
        assert clock.time() == start + 1.0
        assert fired == []
        assert clock.held_s > 50.0
        clock.hold_at(start - 100.0)  # a leash behind the present never moves time back
        assert clock.time() == start + 1.0
        clock.hold_at(float("inf"))
        after = clock.time()
        assert start + 1.0 <= after < start + 10.0  # from the leash, not from 60 s on
        deadline = time.monotonic() + 3.0
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired and fired[0] >= start + 30.0
    finally:
        clock.stop()
