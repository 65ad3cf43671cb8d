"""Unit tests of engine.market.swings: hand-built bar sequences, one rule per test.

Bars are written as (high, low, close) rows, one per minute from 09:15 IST; bar *n* of a
sequence is index *n* of the day. The comments walk through the watch counts the spec's
procedure produces (lw[j] = low_watch[j], hw[j] = high_watch[j]).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

import pytest

from engine.market.swings import (
    SwingError,
    SwingEvent,
    SwingRecord,
    SwingSettings,
    SwingSnapshot,
    SwingSnapshotError,
    SwingStatePieces,
    SwingTracker,
)
from engine.messages import Bar, BarUpdate, Swing, SwingBroken, SwingKind
from engine.runtime.clock import ist_epoch

SYM = "NIFTY30JAN2524000CE"
OPEN = ist_epoch(2025, 1, 30, 9, 15)
NEXT_DAY_OPEN = ist_epoch(2025, 1, 31, 9, 15)
LOW, HIGH = SwingKind.LOW, SwingKind.HIGH

Row = tuple[float, float, float]

# First swing is a Low at bar 1 (price 7):
#   bar 1: j=0 high 11>10, close 10>9            -> lw[0]=1
#   bar 2: j=0 high 12>10, close 11>9            -> lw[0]=2 -> Low at lowest low of 0..2 = bar 1
FIRST_LOW: list[Row] = [(10, 8, 9), (11, 7, 10), (12, 9, 11)]


def minute(n: int, day_open: float = OPEN) -> float:
    return day_open + 60.0 * n


def bar(n: int, row: Row, vwap: float | None = None, source: str = "live",
        day_open: float = OPEN) -> Bar:
    high, low, close = row
    return Bar(SYM, minute(n, day_open), close, high, low, close, 100, 5,
               100.0 + n if vwap is None else vwap, source)


def update(n: int, high: float, low: float, ts: float | None = None) -> BarUpdate:
    return BarUpdate(SYM, minute(n), high, low, low, minute(n) + 30.0 if ts is None else ts)


def make(watch_count: int = 2) -> SwingTracker:
    return SwingTracker(SYM, SwingSettings(watch_count=watch_count))


def run(tracker: SwingTracker, rows: Sequence[Row], first: int = 0,
        source: str = "live") -> list[SwingEvent]:
    events: list[SwingEvent] = []
    for n, row in enumerate(rows, start=first):
        events.extend(tracker.on_bar(bar(n, row, source=source)))
    return events


def swings_of(events: Sequence[SwingEvent]) -> list[Swing]:
    return [e for e in events if isinstance(e, Swing)]


def breaks_of(events: Sequence[SwingEvent]) -> list[SwingBroken]:
    return [e for e in events if isinstance(e, SwingBroken)]


# -- detection ----------------------------------------------------------------------------------


def test_first_swing_low() -> None:
    tracker = make()
    assert run(tracker, FIRST_LOW[:2]) == []
    events = tracker.on_bar(bar(2, FIRST_LOW[2]))
    assert events == (Swing(SYM, LOW, 7, minute(1), 1, vwap=101.0),)
    assert tracker.current == events[0]
    # creating clears both watch maps
    assert tracker.snapshot().low_watch == () and tracker.snapshot().high_watch == ()


def test_first_swing_high() -> None:
    # bar 1: j=0 low 7<8, close 8<9 -> hw[0]=1 (low-watch: high 11>10 but close 8<9: no)
    # bar 2: j=0 low 6<8, close 7<9 -> hw[0]=2 -> High at highest high of 0..2 = bar 1 (11)
    events = run(make(), [(10, 8, 9), (11, 7, 8), (9.5, 6, 7)])
    assert events == [Swing(SYM, HIGH, 11, minute(1), 1, vwap=101.0)]


def test_first_swing_is_whichever_fires_first_in_j_order() -> None:
    # bar 1: j=0 low 5<10, close 6<15                  -> hw[0]=1
    # bar 2: j=0 nothing (low 11 not < 10); j=1 high 13>12, close 12>6 -> lw[1]=1
    # bar 3: j=0 low 9<10, close 11<15 -> hw[0]=2 -> High (stop). j=1 would have made
    #        lw[1]=2 (high 14>12, close 11>6) and a Low, but j=0 comes first.
    tracker = make()
    events = run(tracker, [(20, 10, 15), (12, 5, 6), (13, 11, 12), (14, 9, 11)])
    assert swings_of(events) == [Swing(SYM, HIGH, 20, minute(0), 0, vwap=100.0)]
    snap = tracker.snapshot()
    assert snap.low_watch == () and snap.high_watch == ()


def test_first_swing_low_when_its_j_comes_first() -> None:
    # The mirror of the test above: j=0 holds the low-watch count, j=1 the high-watch count.
    # bar 1: j=0 high 25>20, close 24>15 -> lw[0]=1
    # bar 2: j=0 nothing (high 19); j=1 low 18<19, close 19<24 -> hw[1]=1
    # bar 3: j=0 high 21>20, close 16>15 -> lw[0]=2 -> Low at lowest low of 0..3 = bar 0 (10)
    events = run(make(), [(20, 10, 15), (25, 19, 24), (19, 18, 19), (21, 12, 16)])
    assert swings_of(events) == [Swing(SYM, LOW, 10, minute(0), 0, vwap=100.0)]


def test_strict_inequalities_equal_highs_lows_and_closes_do_not_count() -> None:
    # bar 1: high 10 == 10 -> no low-watch; low 8.5 not < 8 -> no high-watch
    # bar 2: j=0 close 9 == 9 -> no low-watch; j=1 close 9 < 9.5 but high 11 > 10 -> no;
    #        high-watch: low 8.7 not below 8 or 8.5
    # bar 3: first real increments: lw[0]=lw[1]=lw[2]=1 (had equality counted, lw[0] would
    #        have reached 2 at bar 2 and made a Low)
    tracker = make()
    events = run(tracker, [(10, 8, 9), (10, 8.5, 9.5), (11, 8.7, 9), (12, 8.8, 10)])
    assert events == []
    assert tracker.snapshot().low_watch == ((0, 1), (1, 1), (2, 1))
    # equal lows: bar 4 low 8.8 == bar 3's low with a lower close -> no hw[3]; the lows of
    # bars 0..2 are below 8.8 and its high 10 is above none of theirs -> nothing at all
    assert tracker.on_bar(bar(4, (10, 8.8, 8.9))) == ()
    assert tracker.snapshot().high_watch == ()


def test_earliest_bar_wins_on_equal_extremes() -> None:
    # bars 0 and 1 share the lowest low 7; lw[0] reaches 2 at bar 2 -> Low at bar 0
    low = run(make(), [(10, 7, 9), (11, 7, 10), (12, 9, 11)])
    assert swings_of(low) == [Swing(SYM, LOW, 7, minute(0), 0, vwap=100.0)]
    # mirror: bars 0 and 1 share the highest high 12; hw[0] reaches 2 at bar 2 -> High at bar 0
    high = run(make(), [(12, 8, 9), (12, 7, 8), (10, 6, 7)])
    assert swings_of(high) == [Swing(SYM, HIGH, 12, minute(0), 0, vwap=100.0)]


@pytest.mark.parametrize("vwap", [0.0, -3.0, math.nan, math.inf])
def test_swing_vwap_falls_back_to_close_when_the_bar_has_none(vwap: float) -> None:
    tracker = make()
    tracker.on_bar(bar(0, FIRST_LOW[0]))
    tracker.on_bar(bar(1, FIRST_LOW[1], vwap=vwap))  # the swing bar, close 10
    events = tracker.on_bar(bar(2, FIRST_LOW[2], vwap=55.0))
    assert swings_of(events)[0].vwap == 10.0


def test_alternation_low_high_low_and_every_unbroken_low_is_live() -> None:
    # FIRST_LOW: Low at bar 1 (7), maps cleared, s=1.
    # bar 3: j=2 low 8.5<9, close 9<11 -> hw[2]=1
    # bar 4: j=2 low 8<9, close 8.5<11 -> hw[2]=2 -> High at highest high of 2..4 = bar 3 (13)
    # bar 5: j=4 high 11>10, close 10>8.5 -> lw[4]=1
    # bar 6: j=4 high 12>10, close 11>8.5 -> lw[4]=2 -> Low at lowest low of 4..6 = bar 4 (8)
    tracker = make()
    rows = [*FIRST_LOW, (13, 8.5, 9), (10, 8, 8.5), (11, 8.2, 10), (12, 9.5, 11)]
    events = run(tracker, rows)
    assert [(s.kind, s.price, s.index, s.updated) for s in swings_of(events)] == [
        (LOW, 7, 1, False), (HIGH, 13, 3, False), (LOW, 8, 4, False)]
    assert breaks_of(events) == []
    # both Lows are unbroken (a higher low leaves the older Low live)
    assert [(s.price, s.index) for s in tracker.unbroken_lows()] == [(7, 1), (8, 4)]
    first_low = tracker.unbroken_lows()[0]
    assert tracker.highest_high_since(first_low) == 13  # bars 2..6
    assert tracker.highest_high_since(tracker.unbroken_lows()[1]) == 12  # bars 5..6
    tracker.on_bar_update(update(7, high=14, low=10))
    assert tracker.highest_high_since(first_low) == 14  # the bar in progress counts


def test_after_a_low_a_second_low_watch_hit_without_a_lower_low_makes_nothing() -> None:
    # Last swing is a Low at 7 (index 1): reaching lw >= 2 cannot create another Low, it can
    # only update this one, and only to a lower low.
    # bar 3: j=2 high 13>12, close 12>11 -> lw[2]=1
    # bar 4: j=2 -> lw[2]=2, lowest low of 2..4 is 8, not < 7 -> no update, loop goes on;
    #        j=3 high 14>13, close 13>12 -> lw[3]=1
    tracker = make()
    events = run(tracker, [*FIRST_LOW, (13, 8, 12), (14, 9.5, 13)])
    assert swings_of(events) == [Swing(SYM, LOW, 7, minute(1), 1, vwap=101.0)]
    assert tracker.snapshot().low_watch == ((2, 2), (3, 1))


def test_low_updated_with_vwap_frozen_and_counts_only_for_reached_j() -> None:
    # FIRST_LOW: Low at bar 1 (7, vwap 101), s=1.
    # bar 3: breaks the Low (6 < 7); j=2 low 6<9, close 8<11 -> hw[2]=1
    # bar 4: j=2 high 13>12, close 12>11 -> lw[2]=1; j=3 high 13>11.5, close 12>8 -> lw[3]=1
    # bar 5: j=2 high 14>12, close 13>11 -> lw[2]=2, lowest low of 2..5 = bar 3 (6) < 7
    #        -> update the Low to bar 3 and stop: j=3 (would be lw 2) and j=4 (would be lw 1)
    #        are not reached. An update does not clear the maps (hw[2]=1 stays).
    tracker = make()
    events = run(tracker, [*FIRST_LOW, (11.5, 6, 8), (13, 7.5, 12), (14, 10, 13)])
    assert breaks_of(events) == [SwingBroken(SYM, LOW, 7, minute(1), minute(3) + 60, "bar")]
    assert swings_of(events)[-1] == Swing(SYM, LOW, 6, minute(3), 3, vwap=101.0, updated=True)
    snap = tracker.snapshot()
    assert snap.low_watch == ((2, 2), (3, 1))
    assert snap.high_watch == ((2, 1),)
    assert tracker.current == swings_of(events)[-1]
    assert tracker.unbroken_lows() == (swings_of(events)[-1],)


def test_a_count_past_the_threshold_fires_again_when_incremented_again() -> None:
    # FIRST_LOW: Low at 7 (index 1), s=1.
    # bar 3: j=2 high 13>12, close 12>11 -> lw[2]=1
    # bar 4: j=2 high 13>12, close 11.5>11 -> lw[2]=2 but the lowest low of 2..4 (8) is not
    #        < 7 -> nothing; j=3: high 13 == 13 -> no count
    # bar 5: low 6.5 breaks the Low; only high-watch counts move: hw[2]=hw[3]=hw[4]=1
    # bar 6: j=2 high 15>12, close 14.5>11 -> lw[2]=3 >= 2 and the lowest low of 2..6 = bar 5
    #        (6.5) < 7 -> update at j=2. No other j is at 2 here: a "== 2" test would miss it.
    tracker = make()
    rows = [*FIRST_LOW, (13, 8, 12), (13, 9.5, 11.5), (13.5, 6.5, 7), (15, 12, 14.5)]
    events = run(tracker, rows)
    assert swings_of(events)[-1] == Swing(SYM, LOW, 6.5, minute(5), 5, vwap=101.0, updated=True)
    assert tracker.snapshot().low_watch == ((2, 3),)


def test_high_updated_to_a_higher_high() -> None:
    # First High at bar 1 (11, see test_first_swing_high), maps cleared, s=1.
    # bar 3: j=2 low 5<6, close 6.5<7 -> hw[2]=1 (and high 12 > 11 breaks the High)
    # bar 4: j=2 low 4<6, close 5<7 -> hw[2]=2, highest high of 2..4 = bar 3 (12) > 11 -> update
    tracker = make()
    events = run(tracker, [(10, 8, 9), (11, 7, 8), (9.5, 6, 7), (12, 5, 6.5), (8, 4, 5)])
    assert breaks_of(events) == [SwingBroken(SYM, HIGH, 11, minute(1), minute(3) + 60, "bar")]
    assert swings_of(events)[-1] == Swing(SYM, HIGH, 12, minute(3), 3, vwap=101.0, updated=True)


def test_watch_count_setting_is_the_threshold() -> None:
    # with watch_count=1 the first low-watch hit (bar 1, j=0) already confirms the Low
    events = run(make(watch_count=1), FIRST_LOW[:2])
    assert swings_of(events) == [Swing(SYM, LOW, 7, minute(1), 1, vwap=101.0)]


# -- breaks -------------------------------------------------------------------------------------


def test_tick_break_at_the_swing_price_exactly() -> None:
    tracker = make()
    low = swings_of(run(tracker, FIRST_LOW))[0]
    assert tracker.on_bar_update(update(3, high=12, low=7.05)) == ()
    events = tracker.on_bar_update(update(3, high=12, low=7.0, ts=minute(3) + 41))
    assert events == (SwingBroken(SYM, LOW, 7, low.bar_start, minute(3) + 41, "tick"),)
    record = tracker.swings()[0]
    assert record.broken and record.broken_by == "tick" and record.swing.tradable
    # breaks once: lower prices and the completed bar below it report nothing more
    assert tracker.on_bar_update(update(3, high=12, low=6.0)) == ()
    assert breaks_of(tracker.on_bar(bar(3, (12, 6.0, 11)))) == []
    assert tracker.stats().broken == 1


def test_high_tick_break_at_or_above() -> None:
    tracker = make()
    high = swings_of(run(tracker, [(10, 8, 9), (11, 7, 8), (9.5, 6, 7)]))[0]
    assert tracker.on_bar_update(update(3, high=10.95, low=6.5)) == ()
    assert tracker.on_bar_update(update(3, high=11, low=6.5, ts=minute(3) + 5)) == (
        SwingBroken(SYM, HIGH, 11, high.bar_start, minute(3) + 5, "tick"),)


def test_bar_break_needs_a_low_strictly_below() -> None:
    # FIRST_LOW: Low at 7 (index 1). Bars 3 and 4 move no low-watch count to 2 (highs stay
    # under 12), so only the break is at stake.
    tracker = make()
    run(tracker, FIRST_LOW)
    # a completed bar touching 7 exactly is not a break (bars break strictly below)
    assert tracker.on_bar(bar(3, (11.5, 7.0, 11.2))) == ()
    assert tracker.on_bar(bar(4, (11.8, 6.95, 11.1))) == (
        SwingBroken(SYM, LOW, 7, minute(1), minute(4) + 60, "bar"),)
    assert tracker.swings()[0].broken_by == "bar"


def test_a_broken_swing_is_never_live_again() -> None:
    tracker = make()
    run(tracker, FIRST_LOW)
    tracker.on_bar_update(update(3, high=12, low=6.9))
    assert tracker.unbroken_lows() == ()
    # price comes back above 7. The rally confirms the lower low 6.9 (bar 3): at bar 5
    # lw[2] reaches 2 and the Low is updated to a new level, 6.9. The level 7 stays broken.
    events = run(tracker, [(12, 6.9, 11.5), (13, 11, 12.5), (14, 12, 13.5)], first=3)
    assert events == [Swing(SYM, LOW, 6.9, minute(3), 3, vwap=101.0, updated=True)]
    # trading at 7.0 again: nothing for the broken level, and 6.9 is not touched
    assert tracker.on_bar_update(update(6, high=15, low=7.0)) == ()
    assert [s.price for s in tracker.unbroken_lows()] == [6.9]
    assert [(r.swing.price, r.broken) for r in tracker.swings()] == [(7, True), (6.9, False)]


def test_bar_breaks_before_the_same_bar_updates_the_low() -> None:
    # FIRST_LOW: Low at 7 (index 1), s=1.
    # bar 3: j=2 high 12.5>12, close 11.5>11 -> lw[2]=1
    # bar 4: low 6 < 7 -> break reported first; then j=2 -> lw[2]=2 and the lowest low of
    #        2..4 is bar 4 itself (6 < 7) -> update to bar 4. The new level is unbroken.
    tracker = make()
    run(tracker, [*FIRST_LOW, (12.5, 9, 11.5)])
    events = tracker.on_bar(bar(4, (13, 6, 12)))
    assert events == (
        SwingBroken(SYM, LOW, 7, minute(1), minute(4) + 60, "bar"),
        Swing(SYM, LOW, 6, minute(4), 4, vwap=101.0, updated=True),
    )
    assert tracker.unbroken_lows() == (events[1],)
    assert tracker.highest_high_since(events[1]) is None  # nothing traded after bar 4 yet


def test_new_swing_already_traded_through_by_the_next_minute_breaks_at_once() -> None:
    # The bar builder can publish updates of minute 5 before bar 4 closes (grace). The update
    # (low 5.9) breaks the Low at 7 by tick; then bar 4 updates the Low to 6, which the same
    # in-progress minute already traded through: it breaks by tick right after it is made.
    tracker = make()
    run(tracker, [*FIRST_LOW, (12.5, 9, 11.5)])
    early = tracker.on_bar_update(update(5, high=12, low=5.9, ts=minute(5) + 1))
    assert early == (SwingBroken(SYM, LOW, 7, minute(1), minute(5) + 1, "tick"),)
    events = tracker.on_bar(bar(4, (13, 6, 12)))
    assert events == (
        Swing(SYM, LOW, 6, minute(4), 4, vwap=101.0, updated=True),
        SwingBroken(SYM, LOW, 6, minute(4), minute(5) + 1, "tick"),
    )
    assert tracker.unbroken_lows() == ()


def test_stale_update_of_a_closed_minute_is_ignored() -> None:
    tracker = make()
    run(tracker, FIRST_LOW)
    assert tracker.on_bar_update(update(2, high=12, low=1.0)) == ()
    assert tracker.stats().stale_updates == 1
    assert tracker.unbroken_lows()[0].price == 7


# -- history ------------------------------------------------------------------------------------


def test_history_broken_swing_untradable_intact_history_swing_stays_tradable() -> None:
    # the same bars as test_bar_breaks_before_the_same_bar_updates_the_low, from history:
    # the Low at 7 breaks inside history -> tradable=False; its update to 6 is still intact
    # when live data takes over -> tradable. A live bar then breaks it: simply broken.
    tracker = make()
    events = run(tracker, [*FIRST_LOW, (12.5, 9, 11.5), (13, 6, 12)], source="history")
    assert [type(e).__name__ for e in events] == ["Swing", "SwingBroken", "Swing"]
    assert events[0].tradable  # when it was made it had not broken yet
    old, new = tracker.swings()
    assert old.broken and not old.swing.tradable and old.from_history
    assert not new.broken and new.swing.tradable and new.from_history
    assert tracker.unbroken_lows() == (new.swing,)
    live = tracker.on_bar(bar(5, (12, 5.5, 6)))
    assert live == (SwingBroken(SYM, LOW, 6, minute(4), minute(5) + 60, "bar"),)
    assert tracker.swings()[1].broken and tracker.swings()[1].swing.tradable


def test_history_and_live_detect_the_same_swings() -> None:
    rows = [*FIRST_LOW, (13, 8.5, 9), (10, 8, 8.5), (11, 8.2, 10), (12, 9.5, 11)]
    live, history = make(), make()
    run(live, rows)
    run(history, rows, source="history")
    assert live.swings() == tuple(
        SwingRecord(r.swing, False, r.broken_by, r.broken_ts) for r in history.swings())


# -- input hygiene, day boundaries --------------------------------------------------------------


def test_out_of_order_and_duplicate_bars_are_rejected_and_change_nothing() -> None:
    tracker = make()
    run(tracker, FIRST_LOW)
    before = tracker.snapshot()
    assert tracker.on_bar(bar(2, (50, 1, 2))) == ()  # duplicate minute, other prices
    assert tracker.on_bar(bar(0, (10, 8, 9), source="history")) == ()  # older
    assert tracker.snapshot() == before
    stats = tracker.stats()
    assert (stats.rejected_bars, stats.bars) == (2, 3)
    # the stream goes on normally afterwards
    assert tracker.on_bar(bar(3, (12, 6.5, 11))) == (
        SwingBroken(SYM, LOW, 7, minute(1), minute(3) + 60, "bar"),)


@pytest.mark.parametrize("fields", [
    {"high": math.nan}, {"low": 0.0}, {"close": math.inf}, {"low": 13.0},
    {"close": 20.0}, {"source": "backfill"}, {"vwap": None},
])
def test_invalid_bar_is_counted_and_skipped(fields: dict[str, object]) -> None:
    tracker = make()
    run(tracker, FIRST_LOW[:2])
    good = bar(2, FIRST_LOW[2])
    values = {"symbol": good.symbol, "start": good.start, "open": good.open, "high": good.high,
              "low": good.low, "close": good.close, "volume": good.volume, "ticks": good.ticks,
              "vwap": good.vwap, "source": good.source, **fields}
    assert tracker.on_bar(Bar(**values)) == ()  # type: ignore[arg-type]
    assert tracker.stats().invalid_bars == 1 and tracker.bar_count == 2
    assert swings_of(tracker.on_bar(good))[0].price == 7  # the valid bar still counts


def test_invalid_update_is_counted_and_ignored() -> None:
    tracker = make()
    run(tracker, FIRST_LOW)
    bad = BarUpdate(SYM, minute(3), math.nan, 1.0, 1.0, minute(3) + 1)
    assert tracker.on_bar_update(bad) == ()
    assert tracker.stats().invalid_updates == 1 and tracker.unbroken_lows()


def test_other_symbols_data_is_a_wiring_error() -> None:
    tracker = make()
    with pytest.raises(SwingError, match="NIFTY30JAN2524100PE"):
        tracker.on_bar(Bar("NIFTY30JAN2524100PE", OPEN, 1, 1, 1, 1, 0, 1, 1))
    with pytest.raises(SwingError):
        tracker.on_bar_update(BarUpdate("NIFTY30JAN2524100PE", OPEN, 1, 1, 1, OPEN))
    assert tracker.bar_count == 0


def test_highest_high_since_rejects_an_unknown_swing() -> None:
    tracker = make()
    low = swings_of(run(tracker, FIRST_LOW))[0]
    with pytest.raises(SwingError):
        tracker.highest_high_since(Swing(SYM, LOW, 7, minute(1) + 60, 1, 101.0))
    with pytest.raises(SwingError):
        tracker.highest_high_since(Swing(SYM, LOW, 7, minute(1), 9, 101.0))
    assert tracker.highest_high_since(low) == 12


def test_daily_reset_on_the_first_bar_of_a_new_trading_date() -> None:
    tracker = make()
    run(tracker, FIRST_LOW)
    assert tracker.unbroken_lows()
    # an update of the new day before its first bar does not break yesterday's Low
    next_day = BarUpdate(SYM, NEXT_DAY_OPEN, 3.0, 1.0, 1.0, NEXT_DAY_OPEN + 1)
    assert tracker.on_bar_update(next_day) == ()
    assert tracker.on_bar(bar(0, (10, 8, 9), day_open=NEXT_DAY_OPEN)) == ()
    assert tracker.current is None and tracker.swings() == () and tracker.bar_count == 1
    assert tracker.snapshot().low_watch == ()
    assert tracker.stats().daily_resets == 1
    # the new day builds from index 0 again
    events = [*tracker.on_bar(bar(1, FIRST_LOW[1], day_open=NEXT_DAY_OPEN)),
              *tracker.on_bar(bar(2, FIRST_LOW[2], day_open=NEXT_DAY_OPEN))]
    assert events == [Swing(SYM, LOW, 7, minute(1, NEXT_DAY_OPEN), 1, vwap=101.0)]


def test_yesterdays_bar_after_today_started_is_rejected() -> None:
    tracker = make()
    tracker.on_bar(bar(0, (10, 8, 9), day_open=NEXT_DAY_OPEN))
    assert tracker.on_bar(bar(5, (10, 8, 9))) == ()
    assert tracker.stats().rejected_bars == 1 and tracker.stats().daily_resets == 0


# -- snapshot / restore -------------------------------------------------------------------------

ROWS = [*FIRST_LOW, (13, 8.5, 9), (10, 8, 8.5), (11, 8.2, 10), (12, 9.5, 11), (12.5, 7.5, 8),
        (11, 6.5, 7), (13, 9, 12.5), (14, 10, 13.5), (12, 5, 6)]


def test_snapshot_round_trips_through_json_and_continues_identically() -> None:
    original = make()
    run(original, ROWS[:8], source="history")
    original.on_bar_update(update(8, high=12, low=7.0))  # a tick break inside the snapshot
    data = json.loads(json.dumps(original.snapshot().as_dict()))
    restored = make()
    restored.restore(SwingSnapshot.from_dict(data))
    assert restored.snapshot() == original.snapshot()
    assert restored.swings() == original.swings()
    rest_a = run(original, ROWS[8:], first=8)
    rest_b = run(restored, ROWS[8:], first=8)
    assert rest_a == rest_b and rest_a
    assert restored.swings() == original.swings()
    assert restored.on_bar(bar(3, ROWS[3])) == ()  # restored knows where it stands


def test_snapshot_in_the_older_row_per_bar_form_still_restores() -> None:
    """A state written before the bars were packed (a restart right after an upgrade)."""
    original = make()
    run(original, ROWS[:8])
    data = original.snapshot().as_dict()
    data["bars"] = [list(row) for row in original.snapshot().bars]
    restored = make()
    restored.restore(SwingSnapshot.from_dict(json.loads(json.dumps(data))))
    assert restored.snapshot() == original.snapshot()
    assert run(restored, ROWS[8:], first=8) == run(original, ROWS[8:], first=8)


def test_snapshot_bars_are_packed_columns() -> None:
    tracker = make()
    run(tracker, ROWS[:6])
    snap = tracker.snapshot()
    bars = snap.as_dict()["bars"]
    assert sorted(bars) == ["close", "high", "low", "start", "vwap"]
    assert all(isinstance(text, str) for text in bars.values())
    assert SwingSnapshot.from_dict(snap.as_dict()).bars == snap.bars
    assert len(snap.bars) == 6 and snap.bars[0][0] == snap.starts[0]


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("bars"),
    lambda d: d.update(symbol=5),
    lambda d: d["bars"].pop("vwap"),
    lambda d: d["bars"].update(high="not base64!"),
    lambda d: d["bars"].update(low=17),
    lambda d: d["bars"].update(close=d["bars"]["close"][:-12]),  # a column one bar short
    lambda d: d.update(bars=[[1.0, 2.0, 1.0, 1.5]]),  # the older form, a field missing
    lambda d: d.update(bars=[[1.0, 2.0, 1.0, "1.5", 1.2]]),
    lambda d: d["low_watch"].append([1.5, 1]),
    lambda d: d["swings"][0].__setitem__(3, "1"),
    lambda d: d["swings"][0].__setitem__(5, "no"),
])
def test_malformed_snapshot_dict_is_a_typed_error(mutate: object) -> None:
    tracker = make()
    run(tracker, ROWS[:6])
    data = tracker.snapshot().as_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(SwingSnapshotError):
        SwingSnapshot.from_dict(data)


@pytest.mark.parametrize("problem", [
    "symbol", "kind", "index", "price", "order", "break", "watch", "dates", "types",
])
def test_inconsistent_snapshot_is_refused_and_nothing_changes(problem: str) -> None:
    source = make()
    run(source, ROWS[:6])
    snap = source.snapshot()
    swing = list(snap.swings[0])
    bars = list(snap.bars)
    low_watch = snap.low_watch
    if problem == "kind":
        swing[0] = "MIDDLE"
    elif problem == "index":
        swing[3] = 2  # bar 2's start differs from the swing's
    elif problem == "price":
        swing[1] = 7.5
    elif problem == "order":
        bars[3], bars[4] = bars[4], bars[3]
    elif problem == "break":
        swing[8] = "bar"  # broken_by without broken_ts
    elif problem == "watch":
        low_watch = ((99, 1),)
    elif problem == "dates":
        bars.append((NEXT_DAY_OPEN, 12.0, 9.0, 11.0, 100.0))
    elif problem == "types":
        bars[0] = (OPEN, "12", 9.0, 11.0, 100.0)  # type: ignore[assignment]
    target = make()
    run(target, FIRST_LOW)
    before = target.snapshot()
    with pytest.raises(SwingSnapshotError):  # "types": already making the snapshot fails
        target.restore(SwingSnapshot.of_bars(
            "NIFTY30JAN2524100PE" if problem == "symbol" else SYM, bars, low_watch,
            snap.high_watch, (tuple(swing), *snap.swings[1:])))  # type: ignore[arg-type]
    assert target.snapshot() == before


def test_settings_validation() -> None:
    with pytest.raises(SwingError):
        SwingTracker(SYM, SwingSettings(watch_count=0))
    with pytest.raises(SwingError):
        SwingTracker("", SwingSettings())


def _walk(n: int, seed: int, first: int = 0, day_open: float = OPEN) -> list[Bar]:
    """A random walk of ``n`` bars: swings form, get updated and break."""
    rng = random.Random(seed)
    price, bars = 100.0, []
    for k in range(first, first + n):
        price = max(5.0, price + rng.uniform(-3, 3))
        high, low = price + rng.uniform(0, 2), price - rng.uniform(0, 2)
        bars.append(bar(k, (high, low, rng.uniform(low, high)), day_open=day_open))
    return bars


def _apply(stored: dict[str, dict], head: dict, pieces: list) -> None:
    """What the store holds after a write (through JSON, as it is written)."""
    for name, piece in pieces:
        stored[name] = json.loads(json.dumps(piece))
    stored["head"] = json.loads(json.dumps(head))


def test_split_snapshot_hands_out_only_changed_pieces_and_joins_back() -> None:
    tracker, pieces, stored = make(), SwingStatePieces(size=8), {}
    sent_bars = []
    for b in [*_walk(200, seed=3), *_walk(40, seed=4, day_open=OPEN + 86_400)]:
        tracker.on_bar(b)
        tracker.on_bar_update(update(int((b.start - OPEN) // 60) + 1, b.high + 0.5, b.low - 0.5)
                              if b.start < OPEN + 86_400 else
                              BarUpdate(SYM, b.start + 60, b.high, b.low, b.low, b.start + 90))
        head, changed = pieces.changed(tracker)
        sent_bars.append(sum(1 for name, _ in changed if name.startswith("bars.")))
        _apply(stored, head, changed)
        joined = SwingStatePieces.join(stored["head"], stored)
        assert joined == tracker.snapshot()
    assert tracker.stats().daily_resets == 1 and tracker.stats().broken > 3
    # a bar piece goes out once, when it fills: the head carries the bars after it
    assert set(sent_bars) == {0, 1} and sum(sent_bars) == 200 // 8 + 40 // 8
    restored = make()
    restored.restore(SwingStatePieces.join(stored["head"], stored))
    assert restored.snapshot() == tracker.snapshot()


def test_split_snapshot_refuses_a_piece_of_another_write() -> None:
    tracker, pieces, stored = make(), SwingStatePieces(size=4), {}
    for b in _walk(11, seed=5):
        tracker.on_bar(b)
        head, changed = pieces.changed(tracker)
        _apply(stored, head, changed)
    older = dict(stored)  # the pieces as they were; then one more bar fills bars.2
    tracker.on_bar(_walk(1, seed=6, first=11)[0])
    head, changed = pieces.changed(tracker)
    with pytest.raises(SwingSnapshotError, match=r"bars\.2 is missing or of another write"):
        SwingStatePieces.join(head, older)  # the head written, its new piece not (yet)
    _apply(stored, head, changed)
    assert SwingStatePieces.join(stored["head"], stored) == tracker.snapshot()
    del stored["swings.0"]
    with pytest.raises(SwingSnapshotError):
        SwingStatePieces.join(stored["head"], stored)


def test_a_head_of_the_previous_layout_still_joins() -> None:
    """State version 2 named its pieces' writes in one ``pieces`` dict; such rows, written by
    the previous release, restore as before."""
    tracker, pieces, stored = make(), SwingStatePieces(size=4), {}
    for b in _walk(30, seed=7):
        tracker.on_bar(b)
        head, changed = pieces.changed(tracker)
        _apply(stored, head, changed)
    head = dict(stored["head"])
    bar_writes, swing_writes = head.pop("bar_pieces"), head.pop("swing_pieces")
    assert len(bar_writes) == 30 // 4 and swing_writes
    head["pieces"] = {**{f"bars.{k}": w for k, w in enumerate(bar_writes)},
                      **{f"swings.{k}": w for k, w in enumerate(swing_writes)}}
    assert SwingStatePieces.join(head, stored) == tracker.snapshot()
    head["pieces"]["bars.2"] += 1  # still refuses a piece of another write
    with pytest.raises(SwingSnapshotError, match=r"bars\.2 is missing or of another write"):
        SwingStatePieces.join(head, stored)


def test_debug_lines_of_a_swing_and_its_break() -> None:
    """The creation and break lines (built lazily, only when debug is logged) read as before."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG",
                      filter="engine.market.swings")
    try:
        tracker = make()
        run(tracker, FIRST_LOW)
        tracker.on_bar_update(update(3, 9.0, 7.0, ts=minute(3) + 5))
    finally:
        logger.remove(sink)
    assert lines == [
        f"{SYM}: swing LOW 7.0 at 09:16:00 IST (bar 1, vwap 101.00)",
        f"{SYM}: swing LOW 7.0 from 09:16:00 IST broken by tick at 09:18:05 IST",
    ]
