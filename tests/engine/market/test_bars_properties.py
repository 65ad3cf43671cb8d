"""Property tests of engine.market.bars: arrival order within the grace does not change bars, volume
is conserved, and every bar is well formed whatever the ticks."""

from __future__ import annotations

import math
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.bars import BarAggregator, BarEvent, BarSettings
from engine.market.instruments import InstrumentSpec, session_bounds
from engine.messages import Bar, BarGap, BarUpdate, Tick

SYM = "NIFTY30JAN2524000CE"
SESSION = session_bounds(date(2025, 1, 30), InstrumentSpec())
OPEN, CLOSE = SESSION
GRACE_MS = 2000


@st.composite
def trades(draw: st.DrawFn, with_volume: bool = False) -> list[tuple[float, float, int | None]]:
    """(exchange time, price, cumulative volume) with strictly increasing exchange times on a
    millisecond grid inside the session and non-decreasing cumulative volume."""
    count = draw(st.integers(1, 150))
    t_ms = draw(st.integers(0, 3_600_000))
    volume = draw(st.integers(0, 10**6))
    out: list[tuple[float, float, int | None]] = []
    for _ in range(count):
        t_ms += draw(st.integers(1, 45_000))
        price = draw(st.integers(1, 8000)) * 0.05
        volume += draw(st.integers(0, 500))
        has_volume = with_volume or draw(st.booleans()) or not out
        out.append((OPEN + t_ms / 1000.0, price, volume if has_volume else None))
    return out


def run(ticks: list[Tick], time_calls: list[bool]) -> list[BarEvent]:
    """Deliver ``ticks`` in list order, calling on_time at a tick's arrival first when its flag
    says so, then let the clock run past the end and close the session."""
    agg = BarAggregator(SYM, BarSettings(), SESSION)
    events: list[BarEvent] = []
    for t, call in zip(ticks, time_calls, strict=True):
        if call:
            events.extend(agg.on_time(t.recv_ts))
        events.extend(agg.on_tick(t))
    events.extend(agg.on_time(ticks[-1].recv_ts + 120.0))
    events.extend(agg.close_all())
    assert agg.stats().late == 0 and agg.stats().invalid_total == 0
    return events


def closed(events: list[BarEvent]) -> list[Bar | BarGap]:
    return [e for e in events if isinstance(e, (Bar, BarGap))]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rows=trades())
def test_shuffled_within_grace_gives_the_same_bars(data: st.DataObject,
                                                   rows: list[tuple[float, float, int | None]]
                                                   ) -> None:
    ordered = [Tick(SYM, "NFO", price, ets, ets, volume) for ets, price, volume in rows]
    delays = data.draw(st.lists(st.integers(0, GRACE_MS - 100), min_size=len(rows),
                                max_size=len(rows)))
    shuffled = sorted(
        (Tick(SYM, "NFO", price, ets + delay / 1000.0, ets, volume)
         for (ets, price, volume), delay in zip(rows, delays, strict=True)),
        key=lambda t: t.recv_ts)
    calls = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    expected = closed(run(ordered, [True] * len(rows)))
    assert closed(run(shuffled, calls)) == expected
    # every minute with a tick closed, as a bar or (nothing traded in it) as a gap
    assert len(expected) >= 1


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rows=trades(with_volume=True))
def test_bar_volumes_sum_to_the_cumulative_increase(data: st.DataObject,
                                                    rows: list[tuple[float, float, int | None]]
                                                    ) -> None:
    delays = data.draw(st.lists(st.integers(0, GRACE_MS - 100), min_size=len(rows),
                                max_size=len(rows)))
    ticks = sorted((Tick(SYM, "NFO", price, ets + delay / 1000.0, ets, volume)
                    for (ets, price, volume), delay in zip(rows, delays, strict=True)),
                   key=lambda t: t.recv_ts)
    bars = [e for e in run(ticks, [True] * len(ticks)) if isinstance(e, Bar)]
    first, last = rows[0][2], rows[-1][2]
    assert first is not None and last is not None
    assert sum(b.volume for b in bars) == last - first


ANY_PRICE = st.one_of(st.floats(-10.0, 500.0), st.sampled_from([0.0, math.nan, math.inf]))
ANY_VOLUME = st.one_of(st.none(), st.integers(-5, 5000))


@st.composite
def messy_ticks(draw: st.DrawFn) -> list[Tick]:
    """Anything: bad prices, volume resets and negatives, missing ltt, late arrivals, ticks
    outside the session, delivered in arrival order."""
    count = draw(st.integers(1, 150))
    base = OPEN + draw(st.integers(-120, 3600))
    out: list[Tick] = []
    for _ in range(count):
        ets = base + draw(st.floats(0.0, 2400.0))
        recv = ets + draw(st.floats(0.0, 8.0))
        out.append(Tick(SYM, "NFO", draw(ANY_PRICE), recv,
                        draw(st.sampled_from([ets, None])), draw(ANY_VOLUME)))
    return sorted(out, key=lambda t: t.recv_ts)


@settings(max_examples=200, deadline=None)
@given(ticks=messy_ticks(), calls=st.lists(st.booleans(), min_size=150, max_size=150))
def test_every_bar_is_well_formed(ticks: list[Tick], calls: list[bool]) -> None:
    agg = BarAggregator(SYM, BarSettings(), SESSION)
    events: list[BarEvent] = []
    for t, call in zip(ticks, calls, strict=False):
        if call:
            events.extend(agg.on_time(t.recv_ts))
        events.extend(agg.on_tick(t))
    events.extend(agg.close_all())
    starts: list[float] = []
    for e in events:
        if isinstance(e, Bar):
            assert e.low <= e.open <= e.high and e.low <= e.close <= e.high
            assert e.low > 0 and e.volume >= 0 and e.ticks >= 1
            assert math.isfinite(e.vwap) and e.vwap > 0
            starts.append(e.start)
        elif isinstance(e, BarGap):
            starts.append(e.start)
        else:
            assert isinstance(e, BarUpdate)
            assert 0 < e.low <= e.last <= e.high
    assert starts == sorted(set(starts))            # each minute closes once, in order
    assert all(OPEN <= s < CLOSE and s % 60 == 0 for s in starts)
    stats = agg.stats()
    assert stats.bars == sum(isinstance(e, Bar) for e in events)
    assert stats.accepted + stats.late + stats.invalid_total == len(ticks)
