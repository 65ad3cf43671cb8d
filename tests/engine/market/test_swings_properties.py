"""Property tests of engine.market.swings on random bar sequences (small price grid, so ties between
highs, lows and closes are frequent): the tracker agrees with a literal transcription of the
spec's procedure, swings alternate and sit at their window's extreme, bar breaks happen exactly
when a later bar goes beyond the level, and snapshots or duplicate bars change nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.swings import SwingEvent, SwingSettings, SwingSnapshot, SwingTracker
from engine.messages import Bar, Swing, SwingBroken, SwingKind
from engine.runtime.clock import ist_epoch

SYM = "NIFTY30JAN2524000CE"
OPEN = ist_epoch(2025, 1, 30, 9, 15)
LOW, HIGH = SwingKind.LOW, SwingKind.HIGH


@st.composite
def bar_lists(draw: st.DrawFn, max_bars: int = 60) -> list[Bar]:
    """Consecutive one-minute bars on a 0.5 grid; vwap sometimes missing (0 or NaN)."""
    count = draw(st.integers(0, max_bars))
    out: list[Bar] = []
    for n in range(count):
        low = draw(st.integers(2, 24)) / 2
        high = low + draw(st.integers(0, 6)) / 2
        close = draw(st.sampled_from(sorted({low, high, (low + high) / 2})))
        vwap = draw(st.sampled_from([0.0, math.nan, 7.5, low, high]))
        out.append(Bar(SYM, OPEN + 60.0 * n, close, high, low, close, 10, 3, vwap))
    return out


@dataclass
class _RefSwing:
    kind: SwingKind
    price: float
    index: int
    vwap: float
    updated: bool


def reference(bars: list[Bar], threshold: int = 2) -> list[_RefSwing]:
    """The spec's procedure, transcribed as literally as possible (no shortcuts)."""
    low_watch: dict[int, int] = {}
    high_watch: dict[int, int] = {}
    swings: list[_RefSwing] = []

    def vwap_of(k: int) -> float:
        v = bars[k].vwap
        return v if v > 0 and math.isfinite(v) else bars[k].close

    def lowest(a: int, b: int) -> int:
        return min(range(a, b + 1), key=lambda k: bars[k].low)

    def highest(a: int, b: int) -> int:
        return max(range(a, b + 1), key=lambda k: (bars[k].high, -k))

    def create(kind: SwingKind, k: int) -> None:
        price = bars[k].low if kind is LOW else bars[k].high
        swings.append(_RefSwing(kind, price, k, vwap_of(k), False))
        low_watch.clear()
        high_watch.clear()

    def low_cond(i: int, j: int) -> bool:
        return bars[i].high > bars[j].high and bars[i].close > bars[j].close

    def high_cond(i: int, j: int) -> bool:
        return bars[i].low < bars[j].low and bars[i].close < bars[j].close

    for i in range(1, len(bars)):
        last = swings[-1] if swings else None
        if last is None:
            for j in range(i):
                if low_cond(i, j):
                    low_watch[j] = low_watch.get(j, 0) + 1
                    if low_watch[j] >= threshold:
                        create(LOW, lowest(0, i))
                        break
                if high_cond(i, j):
                    high_watch[j] = high_watch.get(j, 0) + 1
                    if high_watch[j] >= threshold:
                        create(HIGH, highest(0, i))
                        break
        elif last.kind is LOW:
            s = last.index
            for j in range(s + 1, i):
                if high_cond(i, j):
                    high_watch[j] = high_watch.get(j, 0) + 1
                    if high_watch[j] >= threshold:
                        create(HIGH, highest(s + 1, i))
                        break
                if low_cond(i, j):
                    low_watch[j] = low_watch.get(j, 0) + 1
                    k = lowest(s + 1, i)
                    if low_watch[j] >= threshold and bars[k].low < last.price:
                        swings.append(_RefSwing(LOW, bars[k].low, k, last.vwap, True))
                        break
        else:
            s = last.index
            for j in range(s + 1, i):
                if low_cond(i, j):
                    low_watch[j] = low_watch.get(j, 0) + 1
                    if low_watch[j] >= threshold:
                        create(LOW, lowest(s + 1, i))
                        break
                if high_cond(i, j):
                    high_watch[j] = high_watch.get(j, 0) + 1
                    k = highest(s + 1, i)
                    if high_watch[j] >= threshold and bars[k].high > last.price:
                        swings.append(_RefSwing(HIGH, bars[k].high, k, last.vwap, True))
                        break
    return swings


def feed(tracker: SwingTracker, bars: list[Bar]) -> list[tuple[int, SwingEvent]]:
    """(index of the bar that produced it, event) for every event."""
    return [(n, e) for n, b in enumerate(bars) for e in tracker.on_bar(b)]


def make(threshold: int = 2) -> SwingTracker:
    return SwingTracker(SYM, SwingSettings(watch_count=threshold))


@settings(max_examples=300, deadline=None)
@given(bars=bar_lists(), threshold=st.integers(1, 3))
def test_tracker_matches_the_literal_procedure(bars: list[Bar], threshold: int) -> None:
    events = feed(make(threshold), bars)
    got = [(s.kind, s.price, s.index, s.vwap, s.updated)
           for _, s in events if isinstance(s, Swing)]
    want = [(r.kind, r.price, r.index, r.vwap, r.updated) for r in reference(bars, threshold)]
    assert got == want


@settings(max_examples=300, deadline=None)
@given(bars=bar_lists())
def test_swings_alternate_and_sit_at_their_windows_extreme(bars: list[Bar]) -> None:
    made = [(n, s) for n, s in feed(make(), bars) if isinstance(s, Swing)]
    previous: Swing | None = None
    for confirmed_at, swing in made:
        if previous is None:
            assert not swing.updated
            first = 0
        elif swing.updated:
            assert swing.kind is previous.kind and swing.vwap == previous.vwap
            beyond = swing.price < previous.price if swing.kind is LOW else \
                swing.price > previous.price
            assert beyond
            first = previous.index + 1
        else:
            assert swing.kind is not previous.kind  # after a Low only a High, and back
            first = previous.index + 1
        window = bars[first:confirmed_at + 1]
        values = [b.low if swing.kind is LOW else b.high for b in window]
        extreme = min(values) if swing.kind is LOW else max(values)
        assert swing.price == extreme
        assert swing.index == first + values.index(extreme)  # earliest on ties
        assert swing.bar_start == bars[swing.index].start
        previous = swing


@settings(max_examples=300, deadline=None)
@given(bars=bar_lists())
def test_bar_breaks_happen_exactly_when_a_later_bar_goes_beyond(bars: list[Bar]) -> None:
    events = feed(make(), bars)
    breaks = {(e.kind, e.bar_start): (n, e) for n, e in events if isinstance(e, SwingBroken)}
    assert len(breaks) == sum(isinstance(e, SwingBroken) for _, e in events)  # once each
    for confirmed_at, swing in ((n, e) for n, e in events if isinstance(e, Swing)):
        later = [m for m in range(confirmed_at + 1, len(bars))
                 if (bars[m].low < swing.price if swing.kind is LOW
                     else bars[m].high > swing.price)]
        if later:
            at, broken = breaks[(swing.kind, swing.bar_start)]
            assert at == later[0] and broken.by == "bar"
            assert broken.broken_ts == bars[later[0]].start + 60
        else:
            assert (swing.kind, swing.bar_start) not in breaks


@settings(max_examples=200, deadline=None)
@given(bars=bar_lists(), data=st.data())
def test_snapshot_restore_and_duplicates_change_nothing(bars: list[Bar],
                                                         data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(bars)))
    straight = make()
    expected = [e for b in bars for e in straight.on_bar(b)]

    first = make()
    got = [e for b in bars[:cut] for e in first.on_bar(b)]
    second = make()
    second.restore(SwingSnapshot.from_dict(first.snapshot().as_dict()))
    for n, b in enumerate(bars[cut:], start=cut):
        got.extend(second.on_bar(b))
        if n and data.draw(st.booleans()):  # an old bar again (duplicate / out of order)
            assert second.on_bar(bars[data.draw(st.integers(0, n))]) == ()
    assert got == expected
    assert second.swings() == straight.swings()
