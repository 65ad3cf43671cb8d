"""Unit tests of engine.market.bars: one test (or parametrized group) per bar-building rule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from datetime import date

import pytest
from loguru import logger

from engine.broker import HistoryBar
from engine.market.bars import (
    BarAggregator,
    BarError,
    BarEvent,
    BarSettings,
    BarSnapshot,
    BarStateError,
    InvalidReason,
)
from engine.market.instruments import InstrumentSpec, session_bounds
from engine.messages import Bar, BarGap, BarUpdate, Tick
from engine.runtime.clock import ist_epoch

SYM = "NIFTY30JAN2524000CE"
SESSION = session_bounds(date(2025, 1, 30), InstrumentSpec())
OPEN, CLOSE = SESSION


def at(hour: int, minute: int, second: float = 0.0) -> float:
    return ist_epoch(2025, 1, 30, hour, minute, second)


def tick(price: float, ets: float | None, volume: int | None = None, recv: float | None = None,
         symbol: str = SYM) -> Tick:
    if recv is None:
        assert ets is not None
        recv = ets + 0.1
    return Tick(symbol, "NFO", price, recv, ets, volume)


def make(**settings: float) -> BarAggregator:
    return BarAggregator(SYM, BarSettings(**settings), SESSION)


def feed(agg: BarAggregator, ticks: Iterable[Tick]) -> list[BarEvent]:
    out: list[BarEvent] = []
    for t in ticks:
        out.extend(agg.on_tick(t))
    return out


def only_bars(events: Sequence[BarEvent]) -> list[Bar]:
    return [e for e in events if isinstance(e, Bar)]


def only_gaps(events: Sequence[BarEvent]) -> list[BarGap]:
    return [e for e in events if isinstance(e, BarGap)]


def only_updates(events: Sequence[BarEvent]) -> list[BarUpdate]:
    return [e for e in events if isinstance(e, BarUpdate)]


@pytest.fixture
def logs() -> Iterable[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    yield lines
    logger.remove(sink)


# ---------------------------------------------------------------------------------------------
# settings and construction
# ---------------------------------------------------------------------------------------------


def test_settings_defaults_and_metadata() -> None:
    s = BarSettings()
    assert (s.grace_s, s.update_interval_s, s.invalid_log_interval_s) == (2.0, 0.25, 60.0)
    assert s.history_reads == 3
    assert s.no_trade_minutes == "gap"
    for f in fields(BarSettings):
        assert f.metadata["help"] and (f.metadata["choices"] or (
            f.metadata["min"] is not None and f.metadata["max"] is not None))


@pytest.mark.parametrize("session", [(CLOSE, OPEN), (OPEN + 1, CLOSE), (OPEN, math.inf)])
def test_bad_session_is_a_typed_error(session: tuple[float, float]) -> None:
    with pytest.raises(BarError):
        BarAggregator(SYM, BarSettings(), session)


# ---------------------------------------------------------------------------------------------
# bucketing, OHLC, closing
# ---------------------------------------------------------------------------------------------


def test_bucket_by_exchange_time_when_present() -> None:
    agg = make()
    # traded 09:20:59.9, received 09:21:01.0: belongs to 09:20, not 09:21.
    feed(agg, [tick(100.0, at(9, 20, 10)), tick(105.0, at(9, 20, 59.9), recv=at(9, 21, 1.0))])
    bars = only_bars(agg.on_time(at(9, 21, 2)))
    assert [(b.start, b.close, b.ticks) for b in bars] == [(at(9, 20), 105.0, 2)]


def test_bucket_by_receive_time_without_exchange_time() -> None:
    agg = make()
    feed(agg, [tick(100.0, None, recv=at(9, 20, 59.5)), tick(101.0, None, recv=at(9, 21, 0.5))])
    bars = only_bars(agg.on_time(at(9, 23)))
    assert [(b.start, b.open, b.ticks) for b in bars] == [(at(9, 20), 100.0, 1),
                                                         (at(9, 21), 101.0, 1)]


def test_ohlc_follows_exchange_time_not_arrival() -> None:
    agg = make()
    feed(agg, [
        tick(102.0, at(9, 20, 5), recv=at(9, 20, 6)),
        tick(100.0, at(9, 20, 1), recv=at(9, 20, 7)),    # first by exchange time, arrives 2nd
        tick(108.0, at(9, 20, 30), recv=at(9, 20, 31)),
        tick(97.0, at(9, 20, 40), recv=at(9, 20, 41)),
        tick(103.0, at(9, 20, 59), recv=at(9, 21, 1.5)),  # last by exchange time
        tick(99.0, at(9, 20, 50), recv=at(9, 21, 1.8)),   # arrives last, within grace
    ])
    [bar] = only_bars(agg.on_time(at(9, 21, 2)))
    assert (bar.open, bar.high, bar.low, bar.close, bar.ticks) == (100.0, 108.0, 97.0, 103.0, 6)
    assert bar.source == "live" and bar.symbol == SYM


def test_tie_in_exchange_time_keeps_arrival_order() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 1)), tick(101.0, at(9, 20, 59)), tick(102.0, at(9, 20, 59))])
    [bar] = only_bars(agg.on_time(at(9, 22)))
    assert bar.close == 102.0


def test_equal_exchange_stamps_order_by_cumulative_volume() -> None:
    # Two trades stamped the same millisecond arrive with their cumulative volumes reversed:
    # volume is monotone in true time, so this is not a feed reset and nothing is lost.
    agg = make()
    ts = at(10, 0, 5)
    events = feed(agg, [tick(100.0, at(10, 0, 1), 1000), tick(101.0, ts, 1300, recv=ts + 0.01),
                        tick(100.5, ts, 1200, recv=ts + 0.02), tick(102.0, at(10, 0, 9), 1400)])
    events = list(events) + list(agg.on_time(at(10, 1, 3)))
    (bar,) = only_bars(events)
    assert bar.volume == 400
    assert agg.stats().volume_resets == 0
    assert bar.close == 102.0


def test_bar_closed_by_clock_without_later_tick() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 10))])
    assert agg.next_close_at == at(9, 21, 2.0)
    assert not agg.on_time(at(9, 21, 1.99))
    [bar] = agg.on_time(at(9, 21, 2.0))
    assert isinstance(bar, Bar) and bar.start == at(9, 20)
    assert not agg.on_time(at(9, 21, 30))  # closed once


def test_grace_setting_moves_the_close() -> None:
    agg = make(grace_s=5.0)
    feed(agg, [tick(100.0, at(9, 20, 10))])
    assert not agg.on_time(at(9, 21, 4.9))
    assert only_bars(agg.on_time(at(9, 21, 5.0)))


def test_a_later_tick_closes_due_minutes_first() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 10))])
    events = agg.on_tick(tick(101.0, at(9, 21, 3)))
    assert isinstance(events[0], Bar) and events[0].start == at(9, 20)
    assert isinstance(events[-1], BarUpdate) and events[-1].start == at(9, 21)


def test_single_tick_minute_yields_a_bar() -> None:
    agg = make()
    feed(agg, [tick(55.5, at(9, 15, 0.0), volume=10)])
    [bar] = only_bars(agg.on_time(at(9, 17)))
    assert (bar.open, bar.high, bar.low, bar.close, bar.ticks, bar.volume) == (
        55.5, 55.5, 55.5, 55.5, 1, 0)


def test_gaps_recorded_once_and_only_after_first_bar() -> None:
    agg = make()
    events = list(agg.on_time(at(9, 19, 30)))  # minutes before any tick: no gaps
    events += feed(agg, [tick(100.0, at(9, 20, 5)), tick(101.0, at(9, 23, 5))])
    for second in range(0, 300, 7):
        events += agg.on_time(at(9, 23, 2) + second)
    gaps = only_gaps(events)
    assert [g.start for g in gaps] == [at(9, 21), at(9, 22), at(9, 24), at(9, 25), at(9, 26)]
    assert [b.start for b in only_bars(events)] == [at(9, 20), at(9, 23)]
    assert agg.stats().gaps == 5


def test_no_gap_before_the_first_bar_while_the_next_minute_is_open() -> None:
    agg = make()
    agg.on_time(at(9, 20, 30))
    agg.on_tick(tick(100.0, at(9, 21, 0.5)))    # 09:20 is still open (grace) and empty
    events = list(agg.on_time(at(9, 21, 2))) + list(agg.on_time(at(9, 22, 2)))
    assert [(type(e).__name__, e.start) for e in events] == [("Bar", at(9, 21))]


def test_no_gaps_after_session_close() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(15, 27, 5))])
    events = agg.on_time(at(15, 45))
    assert [b.start for b in only_bars(events)] == [at(15, 27)]
    assert [g.start for g in only_gaps(events)] == [at(15, 28), at(15, 29)]


def test_close_all_flushes_the_minute_in_progress_and_later_ticks_are_late() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(15, 28, 5)), tick(101.0, at(15, 29, 58))])  # closes 15:28
    events = agg.close_all()
    assert [(b.start, b.close) for b in only_bars(events)] == [(at(15, 29), 101.0)]
    assert not agg.on_tick(tick(102.0, at(15, 29, 59)))
    assert agg.stats().late == 1
    assert not agg.close_all()


# ---------------------------------------------------------------------------------------------
# volume and VWAP
# ---------------------------------------------------------------------------------------------


def test_volume_is_the_increase_of_cumulative_volume() -> None:
    agg = make()
    events = feed(agg, [
        tick(100.0, at(9, 20, 1), volume=1000),   # first tick of the day: sets the base
        tick(100.0, at(9, 20, 2), volume=1100),
        tick(100.0, at(9, 20, 3), volume=1250),
        tick(100.0, at(9, 21, 1), volume=1300),
        tick(100.0, at(9, 21, 2), volume=None),   # no volume (LTP mode): contributes 0
        tick(100.0, at(9, 21, 3), volume=1400),
    ])
    events += agg.on_time(at(9, 23))
    assert [b.volume for b in only_bars(events)] == [250, 150]


def test_volume_delta_follows_exchange_time_order() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 1), volume=1000),
               tick(100.0, at(9, 20, 3), volume=1200, recv=at(9, 20, 3.1)),
               tick(100.0, at(9, 20, 2), volume=1100, recv=at(9, 20, 3.2))])
    [bar] = only_bars(agg.on_time(at(9, 22)))
    assert bar.volume == 200 and agg.stats().volume_resets == 0


def test_cumulative_volume_drop_rebases_never_negative() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 1), volume=1000), tick(100.0, at(9, 20, 2), volume=1500),
               tick(100.0, at(9, 20, 3), volume=200),   # feed reset
               tick(100.0, at(9, 20, 4), volume=300)])
    [bar] = only_bars(agg.on_time(at(9, 22)))
    assert bar.volume == 600
    assert agg.stats().volume_resets == 1


def test_vwap_accumulates_price_times_traded_volume() -> None:
    agg = make()
    events = feed(agg, [
        tick(100.0, at(9, 20, 1), volume=1000),  # base
        tick(102.0, at(9, 20, 2), volume=1010),  # 10 @ 102
        tick(104.0, at(9, 20, 3), volume=1040),  # 30 @ 104
        tick(90.0, at(9, 21, 1), volume=1100),   # 60 @ 90
    ])
    events += agg.on_time(at(9, 23))
    first, second = only_bars(events)
    assert first.vwap == pytest.approx((10 * 102 + 30 * 104) / 40)
    assert second.vwap == pytest.approx((10 * 102 + 30 * 104 + 60 * 90) / 100)
    assert agg.vwap == pytest.approx(second.vwap)


def test_vwap_before_any_volume_is_typical_price() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 1)), tick(106.0, at(9, 20, 2)), tick(97.0, at(9, 20, 3)),
               tick(103.0, at(9, 20, 4))])
    [bar] = only_bars(agg.on_time(at(9, 22)))
    assert bar.vwap == pytest.approx((106.0 + 97.0 + 103.0) / 3)
    assert agg.vwap is None


# ---------------------------------------------------------------------------------------------
# late and invalid ticks
# ---------------------------------------------------------------------------------------------


def test_late_tick_is_counted_logged_and_not_applied(logs: list[str]) -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 10), volume=1000), tick(101.0, at(9, 20, 20), volume=1010)])
    [bar] = only_bars(agg.on_time(at(9, 21, 2)))
    late = tick(150.0, at(9, 20, 59), volume=1500, recv=at(9, 21, 2.5))
    assert not agg.on_tick(late)
    assert agg.stats().late == 1 and agg.stats().accepted == 2
    assert any("late" in line for line in logs)
    # not applied to any bar; its volume reaches the next bar through the next tick's delta.
    events = feed(agg, [tick(102.0, at(9, 21, 10), volume=1600)])
    events += agg.on_time(at(9, 23))
    [nxt] = only_bars(events)
    assert (bar.high, bar.close) == (101.0, 101.0)
    assert (nxt.start, nxt.high, nxt.volume) == (at(9, 21), 102.0, 590)


BAD_TICKS = [
    (InvalidReason.WRONG_SYMBOL, Tick("NIFTY30JAN2524000PE", "NFO", 100.0, at(9, 20, 1),
                                      at(9, 20, 1), 10)),
    (InvalidReason.PRICE_NOT_POSITIVE, tick(0.0, at(9, 20, 1))),
    (InvalidReason.PRICE_NOT_POSITIVE, tick(-5.0, at(9, 20, 1))),
    (InvalidReason.PRICE_NOT_FINITE, tick(math.nan, at(9, 20, 1))),
    (InvalidReason.PRICE_NOT_FINITE, tick(math.inf, at(9, 20, 1))),
    (InvalidReason.OUTSIDE_SESSION, tick(100.0, at(9, 14, 59.9))),
    (InvalidReason.OUTSIDE_SESSION, tick(100.0, at(15, 30, 0))),
    (InvalidReason.OUTSIDE_SESSION, tick(100.0, math.nan, recv=at(9, 20, 1))),
    (InvalidReason.OUTSIDE_SESSION, tick(100.0, None, recv=at(16, 0))),
    (InvalidReason.BAD_VOLUME, tick(100.0, at(9, 20, 1), volume=-1)),
    (InvalidReason.BAD_VOLUME, tick(100.0, at(9, 20, 1), volume=10.5)),  # type: ignore[arg-type]
    (InvalidReason.BAD_VOLUME, tick(100.0, at(9, 20, 1), volume=True)),
    (InvalidReason.MALFORMED, tick("100", at(9, 20, 1))),  # type: ignore[arg-type]
    (InvalidReason.MALFORMED, tick(100.0, "09:20:01", recv=at(9, 20, 1))),  # type: ignore[arg-type]
    (InvalidReason.MALFORMED, tick(100.0, at(9, 20, 1), recv=math.nan)),
    (InvalidReason.MALFORMED, tick(100.0, at(9, 20, 1), recv=math.inf)),
    # several faults: the first check in the module doc's order names it (a wrong type anywhere
    # is malformed, whatever else is wrong)
    (InvalidReason.MALFORMED, tick("100", at(9, 20, 1), recv=math.nan)),  # type: ignore[arg-type]
    (InvalidReason.WRONG_SYMBOL, tick(-5.0, at(16, 0), volume=-1, symbol="OTHER")),
    (InvalidReason.PRICE_NOT_FINITE, tick(math.nan, at(16, 0), volume=-1)),
    (InvalidReason.OUTSIDE_SESSION, tick(100.0, at(16, 0), volume=-1)),
]


@pytest.mark.parametrize(("reason", "bad"), BAD_TICKS, ids=[f"{r}-{i}" for i, (r, _) in
                                                             enumerate(BAD_TICKS)])
def test_invalid_tick_counted_by_reason_and_never_a_bar(reason: InvalidReason, bad: Tick) -> None:
    agg = make()
    assert not agg.on_tick(bad)
    stats = agg.stats()
    assert stats.invalid == {reason.value: 1} and stats.invalid_total == 1
    assert stats.accepted == 0
    assert not agg.on_time(at(15, 45))  # no bar, no gap


def test_zero_ltp_does_not_move_the_bar() -> None:
    agg = make()
    events = feed(agg, [tick(100.0, at(9, 20, 1)), tick(0.0, at(9, 20, 2)),
                        tick(0.0, at(9, 21, 59))])
    events += agg.on_time(at(9, 23))
    [bar] = only_bars(events)
    assert (bar.low, bar.close, bar.ticks) == (100.0, 100.0, 1)
    assert all(u.low == 100.0 for u in only_updates(events))
    assert agg.stats().invalid == {"price_not_positive": 2}


def test_invalid_log_is_throttled_per_reason(logs: list[str]) -> None:
    agg = make()
    for i in range(5):
        agg.on_tick(tick(0.0, at(9, 20, i)))
    agg.on_tick(tick(100.0, at(9, 14)))  # another reason: logged at once
    assert sum("price_not_positive" in line for line in logs) == 1
    assert sum("outside_session" in line for line in logs) == 1
    agg.on_tick(tick(0.0, at(9, 20, 59)))
    assert sum("price_not_positive" in line for line in logs) == 1
    agg.on_tick(tick(0.0, at(9, 21, 1)))  # 60 s of engine time after the first report
    reports = [line for line in logs if "price_not_positive" in line]
    assert len(reports) == 2 and "+5 more" in reports[1]
    assert agg.stats().invalid["price_not_positive"] == 7


# ---------------------------------------------------------------------------------------------
# BarUpdate
# ---------------------------------------------------------------------------------------------


def test_bar_update_immediate_on_new_extreme_otherwise_rate_limited() -> None:
    agg = make()
    t0 = at(9, 20, 10)

    def send(price: float, dt: float) -> list[BarUpdate]:
        return only_updates(agg.on_tick(tick(price, t0 + dt - 0.01, recv=t0 + dt)))

    first = send(100.0, 0.0)
    assert [(u.high, u.low, u.last, u.start, u.ts) for u in first] == [
        (100.0, 100.0, 100.0, at(9, 20), t0)]
    assert [(u.high, u.low) for u in send(101.0, 0.05)] == [(101.0, 100.0)]  # new high
    assert [(u.high, u.low) for u in send(99.0, 0.10)] == [(101.0, 99.0)]   # new low
    assert send(100.5, 0.15) == []                  # inside the range, 0.05 s after the last
    assert send(100.6, 0.34) == []                  # still < 0.25 s after the last
    [u] = send(100.7, 0.36)                         # >= 0.25 s after the last update
    assert (u.high, u.low, u.last) == (101.0, 99.0, 100.7)
    assert send(100.8, 0.40) == []
    [u] = send(101.5, 0.41)                         # new high beats the rate limit
    assert u.high == 101.5


def test_bar_update_last_is_by_exchange_time() -> None:
    agg = make()
    agg.on_tick(tick(100.0, at(9, 20, 10), recv=at(9, 20, 10.1)))
    # traded earlier, arrives later, makes a new low: published, but the last price stands
    [u] = only_updates(agg.on_tick(tick(95.0, at(9, 20, 5), recv=at(9, 20, 11))))
    assert (u.low, u.high, u.last) == (95.0, 100.0, 100.0)


def test_bar_update_interval_setting() -> None:
    agg = make(update_interval_s=1.0)
    t0 = at(9, 20, 10)
    agg.on_tick(tick(100.0, t0, recv=t0))
    assert len(only_updates(agg.on_tick(tick(99.0, t0 + 0.1, recv=t0 + 0.1)))) == 1  # new low
    assert only_updates(agg.on_tick(tick(99.5, t0 + 0.6, recv=t0 + 0.6))) == []
    assert len(only_updates(agg.on_tick(tick(99.5, t0 + 1.2, recv=t0 + 1.2)))) == 1


# ---------------------------------------------------------------------------------------------
# mid-session start from history
# ---------------------------------------------------------------------------------------------


def history(first: tuple[int, int], count: int, volume: int = 100) -> list[HistoryBar]:
    start = at(*first)
    return [HistoryBar(start + 60 * i, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, volume)
            for i in range(count)]


def test_history_seeding_no_duplicate_no_hole() -> None:
    agg = make()
    now = at(9, 30, 40)
    hist = history((9, 15), 16)                        # 09:15 .. 09:30; 09:30 is in progress
    seeded = agg.seed_from_history(reversed(hist), now)  # order of input does not matter
    assert [b.start for b in seeded] == [at(9, 15) + 60 * i for i in range(15)]
    assert all(isinstance(b, Bar) and b.source == "history" for b in seeded)
    hist_pv = sum((h.high + h.low + h.close) / 3 * h.volume for h in hist[:15])
    assert seeded[-1].vwap == pytest.approx(hist_pv / 1500)

    live = feed(agg, [
        tick(200.0, at(9, 29, 59.5), volume=1490, recv=at(9, 30, 40.1)),  # duplicate
        tick(114.0, at(9, 30, 41), volume=1550),   # cumulative continues from Σ history = 1500
        tick(116.0, at(9, 30, 50), volume=1600),
        tick(115.0, at(9, 31, 5), volume=1650),
    ])
    live += agg.on_time(at(9, 33))
    live_bars = only_bars(live)
    assert [b.start for b in live_bars] == [at(9, 30), at(9, 31)]
    assert [b.volume for b in live_bars] == [100, 50]
    assert live_bars[0].source == "live" and live_bars[0].high == 116.0
    assert not only_gaps(live)
    assert agg.stats().duplicate == 1
    all_starts = [b.start for b in seeded] + [b.start for b in live_bars]
    assert all_starts == [at(9, 15) + 60 * i for i in range(17)]
    expected = (hist_pv + 50 * 114.0 + 50 * 116.0 + 50 * 115.0) / 1650
    assert live_bars[-1].vwap == pytest.approx(expected)


def test_history_holes_become_gaps_and_bad_bars_are_skipped() -> None:
    agg = make()
    hist = history((9, 15), 6)
    del hist[2]                                              # 09:17 missing
    hist[3] = HistoryBar(hist[3].timestamp, 100.0, 90.0, 99.0, 95.0, 10)  # high < low: bad
    seeded = agg.seed_from_history(hist, at(9, 25))
    assert [(type(e).__name__, e.start) for e in seeded] == [
        ("Bar", at(9, 15)), ("Bar", at(9, 16)), ("BarGap", at(9, 17)), ("Bar", at(9, 18)),
        ("BarGap", at(9, 19)), ("Bar", at(9, 20))]
    assert agg.stats().bad_history_bars == 1 and agg.stats().history_bars == 4
    assert [g.start for g in only_gaps(agg.on_time(at(9, 25)))] == [at(9, 21), at(9, 22),
                                                                    at(9, 23)]


def test_history_after_the_clock_moved_is_still_taken() -> None:
    agg = make()
    agg.on_time(at(9, 30, 40))                  # a timer fired before the history came back
    seeded = agg.seed_from_history(history((9, 15), 15), at(9, 30, 40))
    assert len(only_bars(seeded)) == 15
    events = feed(agg, [tick(100.0, at(9, 30, 45), volume=1510)])
    events += agg.on_time(at(9, 32))
    [bar] = only_bars(events)
    assert (bar.start, bar.volume) == (at(9, 30), 10)


def test_history_replaces_live_ticks_of_covered_minutes() -> None:
    agg = make()
    feed(agg, [tick(300.0, at(9, 29, 58), volume=5, recv=at(9, 30, 0.5))])  # feed came up first
    agg.seed_from_history(history((9, 15), 15), at(9, 30, 1))
    assert agg.stats().duplicate == 1 and agg.stats().accepted == 0
    events = agg.on_time(at(9, 35))
    assert not only_bars(events) and len(only_gaps(events)) == 4   # 09:30 .. 09:33


def test_seed_and_restore_need_a_finite_now() -> None:
    with pytest.raises(BarError):
        make().seed_from_history(history((9, 15), 3), math.nan)
    with pytest.raises(BarError):
        make().restore(make().snapshot(), math.inf)


def test_seeding_after_a_live_bar_is_refused() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 1))])
    agg.on_time(at(9, 22))
    with pytest.raises(BarStateError):
        agg.seed_from_history(history((9, 15), 3), at(9, 22))


# ---------------------------------------------------------------------------------------------
# snapshot / restore
# ---------------------------------------------------------------------------------------------


def _day_ticks() -> list[Tick]:
    """Three ticks a minute from 09:15 to 09:24 with rising cumulative volume."""
    out = []
    volume = 1000
    for minute in range(10):
        for second in (5, 25, 45):
            volume += 10 * (minute + 1)
            out.append(tick(100.0 + minute + second / 100, at(9, 15 + minute, second), volume))
    return out


def test_snapshot_round_trips_as_plain_data() -> None:
    agg = make()
    feed(agg, _day_ticks()[:9])
    agg.on_time(at(9, 18, 2))
    snap = agg.snapshot()
    assert BarSnapshot(**asdict(snap)) == snap
    assert agg.snapshot_state() == asdict(snap) == snap.as_dict()  # what the builder persists
    assert snap.closed_through == at(9, 17) and snap.started and snap.volume_base == 1180


def _pv_and_volume(ticks: Iterable[Tick], base: int) -> tuple[float, int]:
    """Σ price × cumulative-volume delta and Σ delta of in-order ticks, from ``base``."""
    pv, volume = 0.0, 0
    for t in ticks:
        assert t.volume is not None and t.volume >= base
        pv += t.ltp * (t.volume - base)
        volume += t.volume - base
        base = t.volume
    return pv, volume


def test_restore_discards_the_interrupted_minute_records_a_gap_and_continues() -> None:
    ticks = _day_ticks()
    reference = make()
    ref_bars = {b.start: b for b in only_bars(feed(reference, ticks)
                                              + list(reference.on_time(at(9, 26))))}

    crashed = make()
    feed(crashed, [t for t in ticks if t.recv_ts < at(9, 20, 30)])
    snap = crashed.snapshot()               # last closed: 09:19; 09:20 half seen, then lost
    assert snap.closed_through == at(9, 19)

    restarted = make()
    restarted.restore(snap, now=at(9, 20, 40))
    after = [t for t in ticks if t.recv_ts >= at(9, 20, 40)]
    events = feed(restarted, after) + list(restarted.on_time(at(9, 26)))
    assert [g.start for g in only_gaps(events)] == [at(9, 20)]
    bars = only_bars(events)
    assert [b.start for b in bars] == [at(9, 21), at(9, 22), at(9, 23), at(9, 24)]
    for bar in bars:   # exact from the next minute: OHLC and volume as if never interrupted
        ref = ref_bars[bar.start]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.ticks) == (
            ref.open, ref.high, ref.low, ref.close, ref.volume, ref.ticks)
    # the VWAP continues from the snapshot's sums, without the interrupted minute's volume
    assert after[0].ts < at(9, 21) and after[0].volume is not None
    pv, volume = _pv_and_volume(after[1:], base=after[0].volume)
    assert bars[-1].vwap == pytest.approx((snap.pv_sum + pv) / (snap.volume_sum + volume))
    assert bars[-1].vwap != pytest.approx(ref_bars[at(9, 24)].vwap)
    assert restarted.stats().partial == 1


def test_first_tick_after_restore_rebases_when_the_partial_minute_had_none() -> None:
    ticks = _day_ticks()
    crashed = make()
    feed(crashed, [t for t in ticks if t.recv_ts < at(9, 20, 30)])
    snap = crashed.snapshot()
    restarted = make()
    restarted.restore(snap, now=at(9, 20, 50))
    nxt = [t for t in ticks if at(9, 21) <= t.ts < at(9, 22)]
    events = feed(restarted, nxt) + list(restarted.on_time(at(9, 23)))
    [bar] = only_bars(events)
    assert nxt[0].volume is not None and nxt[-1].volume is not None
    # the volume traded while down (09:20, and up to the first 09:21 tick) is not in the bar
    assert bar.volume == nxt[-1].volume - nxt[0].volume
    assert [g.start for g in only_gaps(events)] == [at(9, 20)]


def test_restore_then_history_fills_the_interrupted_minutes() -> None:
    ticks = _day_ticks()
    reference = make()
    ref_bars = {b.start: b for b in only_bars(feed(reference, ticks)
                                              + list(reference.on_time(at(9, 26))))}
    crashed = make()
    feed(crashed, [t for t in ticks if t.recv_ts < at(9, 20, 30)])
    snap = crashed.snapshot()
    assert snap.volume_base is not None

    restarted = make()
    restarted.restore(snap, now=at(9, 22, 10))
    hist = [HistoryBar(b.start, b.open, b.high, b.low, b.close, b.volume)
            for b in ref_bars.values()]
    seeded = only_bars(restarted.seed_from_history(hist, now=at(9, 22, 10)))
    assert [b.start for b in seeded] == [at(9, 20), at(9, 21)]   # only what was missed
    after = [t for t in ticks if t.recv_ts >= at(9, 22, 10)]
    events = feed(restarted, after) + list(restarted.on_time(at(9, 26)))
    assert not only_gaps(events)
    live = only_bars(events)
    assert [b.start for b in live] == [at(9, 22), at(9, 23), at(9, 24)]
    assert [b.volume for b in live] == [ref_bars[b.start].volume for b in live]
    assert live[0].open != ref_bars[at(9, 22)].open   # the minute in progress: partial OHLC
    ref = ref_bars[at(9, 23)]
    assert (live[1].open, live[1].high, live[1].low, live[1].close) == (
        ref.open, ref.high, ref.low, ref.close)
    # VWAP: snapshot sums + typical × volume of the history bars + the live ticks' deltas
    hist_pv = sum((b.high + b.low + b.close) / 3 * b.volume for b in seeded)
    hist_volume = sum(b.volume for b in seeded)
    pv, volume = _pv_and_volume(after, base=snap.volume_base + hist_volume)
    assert live[-1].vwap == pytest.approx(
        (snap.pv_sum + hist_pv + pv) / (snap.volume_sum + hist_volume + volume))


def test_history_would_add_only_completed_minutes_not_covered_yet() -> None:
    fresh = make()
    assert not fresh.history_would_add(OPEN - 1)          # nothing completed before the open
    assert not fresh.history_would_add(OPEN + 59.9)       # the first minute still in progress
    assert fresh.history_would_add(OPEN + 60)              # 09:15 complete, not covered
    assert fresh.history_would_add(CLOSE + 3600)           # after the close: the whole day

    crashed = make()
    feed(crashed, [t for t in _day_ticks() if t.recv_ts < at(9, 20, 30)])
    snap = crashed.snapshot()                              # closed through 09:19
    within = make()
    within.restore(snap, now=at(9, 20, 40))                # died and came back in 09:20
    assert not within.history_would_add(at(9, 20, 40))
    later = make()
    later.restore(snap, now=at(9, 21, 5))                  # 09:20 completed while it was down
    assert later.history_would_add(at(9, 21, 5))
    later.seed_from_history([HistoryBar(at(9, 20), 100, 101, 99, 100.5, 650)], now=at(9, 21, 5))
    assert not later.history_would_add(at(9, 21, 5))       # covered by history now


def test_a_start_inside_the_first_minute_records_its_empty_minutes_as_gaps() -> None:
    """Engine up at 09:15:40: too early for any history, and this option's ticks of 09:15 came
    before the feed was subscribed. 09:15 had no bar: it must be a gap, not a hole."""
    agg = make()
    agg.start_watching(at(9, 15, 40))
    events = list(agg.on_time(at(9, 16, 3)))
    assert [(type(e).__name__, e.start) for e in events] == [("BarGap", at(9, 15))]
    events = feed(agg, [tick(100.0, at(9, 16, 30))]) + list(agg.on_time(at(9, 18, 3)))
    assert [(type(e).__name__, e.start) for e in events if not isinstance(e, BarUpdate)] == [
        ("Bar", at(9, 16)), ("BarGap", at(9, 17))]


def test_a_start_before_the_open_records_no_gap_before_the_first_trade() -> None:
    agg = make()
    agg.start_watching(OPEN - 1)
    assert not agg.on_time(at(9, 18, 3))
    assert agg.stats().gaps == 0


def test_restore_needs_a_fresh_aggregator_of_the_same_symbol_and_session() -> None:
    agg = make()
    feed(agg, [tick(100.0, at(9, 20, 1))])
    snap = agg.snapshot()
    with pytest.raises(BarStateError):
        agg.restore(snap, at(9, 21))
    other = BarAggregator("NIFTY30JAN2524000PE", BarSettings(), SESSION)
    with pytest.raises(BarStateError):
        other.restore(snap, at(9, 21))
    tomorrow = BarAggregator(SYM, BarSettings(), (OPEN + 86400, CLOSE + 86400))
    with pytest.raises(BarStateError):
        tomorrow.restore(snap, at(9, 21))


# ---------------------------------------------------------------------------------------------
# minutes without a trade (issue 17, rule 5)
# ---------------------------------------------------------------------------------------------


def _quiet_day() -> list[Tick]:
    """09:15 and 09:17 trade; 09:16 has only quote refreshes (same price, same cumulative
    volume), as an illiquid option's Quote-mode feed sends them."""
    return [
        tick(100.0, at(9, 15, 1), volume=100), tick(101.0, at(9, 15, 30), volume=150),
        tick(101.0, at(9, 16, 5), volume=150), tick(101.0, at(9, 16, 40), volume=150),
        tick(99.0, at(9, 17, 10), volume=190),
    ]


@pytest.mark.parametrize("mode", ["gap", "bar"])
def test_a_minute_without_a_trade_is_a_gap_live_and_from_history(mode: str) -> None:
    """Live: the 09:16 minute whose cumulative volume did not move is a BarGap (by default), as
    on the broker's chart. History: the simulator's history endpoint, fed the same ticks, gives
    09:16 with volume 0; seeded from it a builder records the same bars and the same gap. With
    ``no_trade_minutes = "bar"`` both make the old flat bar of volume 0."""
    from engine.runtime.clock import VirtualClock
    from engine.sim.matching import SimulatedBroker

    live = make(no_trade_minutes=mode)  # type: ignore[arg-type]
    events = feed(live, _quiet_day()) + list(live.on_time(at(9, 18, 3)))
    clock = VirtualClock(at(9, 18, 3))
    sim = SimulatedBroker(clock, InstrumentSpec(), account="sim")
    sim.declare_symbol(SYM, "NFO")
    for t in _quiet_day():
        sim.on_tick(t)
    rows = sim.history(symbol=SYM, exchange="NFO", interval="1m", start_date="2025-01-30",
                       end_date="2025-01-30")
    seeded = make(no_trade_minutes=mode).seed_from_history(  # type: ignore[arg-type]
        rows, at(9, 18, 3))

    def shape(evs: Sequence[BarEvent]) -> list[tuple[str, float, float, float, int]]:
        return [("gap", e.start, 0.0, 0.0, 0) if isinstance(e, BarGap)
                else ("bar", e.start, e.high, e.low, e.volume) for e in evs
                if not isinstance(e, BarUpdate)]

    quiet = (("gap", at(9, 16), 0.0, 0.0, 0) if mode == "gap"
             else ("bar", at(9, 16), 101.0, 101.0, 0))
    expected = [("bar", at(9, 15), 101.0, 100.0, 50), quiet, ("bar", at(9, 17), 99.0, 99.0, 40)]
    assert shape(events) == expected
    assert shape(seeded) == expected
    assert live.stats().no_trade == (1 if mode == "gap" else 0)


def test_a_minute_that_cannot_tell_is_still_a_bar() -> None:
    """Ticks without volume (LTP mode) and the tick that only sets the day's base at a positive
    cumulative volume do not prove that nothing traded: those minutes stay bars."""
    agg = make()
    events = feed(agg, [tick(100.0, at(9, 15, 1), volume=500), tick(101.0, at(9, 16, 1))])
    events += agg.on_time(at(9, 17, 3))
    assert [b.start for b in only_bars(events)] == [at(9, 15), at(9, 16)]
    assert not only_gaps(events)


def test_an_index_has_no_traded_volume_so_its_quiet_minutes_stay_bars() -> None:
    """NIFTY's feed carries no traded volume (its cumulative volume stays 0): every minute with
    a tick is a candle on the broker's chart, live and from history. The no-trade rule must not
    turn the index's whole day into gaps."""
    from engine.runtime.clock import VirtualClock
    from engine.sim.matching import SimulatedBroker

    ticks = [Tick("NIFTY", "NSE_INDEX", 24000.0 + i, at(9, 15 + i, 5) + 0.1, at(9, 15 + i, 5), 0)
             for i in range(3)]
    live = BarAggregator("NIFTY", BarSettings(), SESSION, traded=False)
    events = feed(live, ticks) + list(live.on_time(at(9, 18, 3)))
    assert [b.start for b in only_bars(events)] == [at(9, 15), at(9, 16), at(9, 17)]
    assert not only_gaps(events) and live.stats().no_trade == 0
    clock = VirtualClock(at(9, 18, 3))
    sim = SimulatedBroker(clock, InstrumentSpec(), account="sim")
    sim.declare_symbol("NIFTY", "NSE_INDEX")
    for t in ticks:
        sim.on_tick(t)
    rows = sim.history(symbol="NIFTY", exchange="NSE_INDEX", interval="1m",
                       start_date="2025-01-30", end_date="2025-01-30")
    seeded = BarAggregator("NIFTY", BarSettings(), SESSION, traded=False).seed_from_history(
        rows, at(9, 18, 3))
    assert [b.start for b in only_bars(seeded)] == [at(9, 15), at(9, 16), at(9, 17)]
    # an option's quiet minutes are gaps (the rule), an index's are not
    option = BarAggregator(SYM, BarSettings(), SESSION)
    assert not only_bars(feed(option, [tick(100.0, at(9, 15, 5), volume=0),
                                       tick(100.0, at(9, 16, 5), volume=0)])
                         + list(option.on_time(at(9, 17, 3))))


def test_out_of_order_minute_with_an_unstamped_tick_is_built_in_true_order() -> None:
    """A minute whose ticks arrived out of exchange-time order is sorted before its bar is
    built; a tick without exchange time (bucketed by its receive time) or without volume sorts
    among the others by that time, the stamped ones by (exchange time, volume)."""
    agg = make(no_trade_minutes="bar")
    feed(agg, [tick(100.0, at(9, 20, 1), volume=1000),   # sets the base
               tick(104.0, at(9, 21, 40), volume=1400),
               tick(101.0, at(9, 21, 10), volume=1100),  # late within the minute
               tick(103.0, None, volume=1300, recv=at(9, 21, 30)),
               tick(102.0, at(9, 21, 20))])                # no volume
    [bar21] = [b for b in only_bars(agg.on_time(at(9, 22, 3))) if b.start == at(9, 21)]
    assert (bar21.open, bar21.high, bar21.low, bar21.close) == (101.0, 104.0, 101.0, 104.0)
    # deltas in exchange-time order: 100 at 101, 200 at 103, 100 at 104
    assert (bar21.volume, bar21.ticks) == (400, 4)
    # the day's first tick only set the base
    assert bar21.vwap == pytest.approx((101.0 * 100 + 103.0 * 200 + 104.0 * 100) / 400)
    # every tick with a volume, one without exchange time
    feed(agg, [tick(106.0, at(9, 22, 40), volume=1600),
               tick(105.0, None, volume=1500, recv=at(9, 22, 30)),
               tick(107.0, at(9, 22, 10), volume=1450)])
    [bar22] = only_bars(agg.on_time(at(9, 23, 3)))
    assert (bar22.open, bar22.close, bar22.volume) == (107.0, 106.0, 200)


def test_the_quality_table_always_shows_the_feeds_own_row() -> None:
    """``(feed)`` is not a symbol: it stays on its own line, first, even when more symbols
    than the table lists rejected more ticks (a loaded paper run books many late ones)."""
    from engine.market.bars import quality_table

    counts = {f"SYM{i:02d}": {"late": 100 + i} for i in range(12)}
    counts["(feed)"] = {"non_positive_price": 7}
    table = quality_table(counts, limit=10)
    rows = [line.split()[0] for line in table[2:]]
    assert rows[0] == "(feed)" and table[2].split()[1:] == ["0", "7"]
    assert rows[1:11] == [f"SYM{i:02d}" for i in range(11, 1, -1)]
    assert rows[11:] == ["(2", "total"]  # "(2 more)": SYM00 and SYM01
    assert table[-1].split()[1:] == [f"{sum(100 + i for i in range(12)):,}", "7"]
