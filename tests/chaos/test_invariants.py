"""The chaos run's invariants on hand-made facts: each one passes on a sound run and fails on the
fault it exists to catch (so a chaos run that passes means something)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from engine.broker import OrderRow, PositionRow, TradeRow
from engine.messages import (
    Action,
    Bar,
    BarGap,
    Fill,
    OrderPurpose,
    OrderStatus,
    PriceType,
    Product,
)
from engine.runtime.clock import ist_epoch
from engine.sim.matching import fmt_timestamp
from engine.store.database import StoredOrder, StoredTrade
from tests.chaos.invariants import (
    RunFacts,
    bars_complete,
    broker_realized,
    crashes_recovered,
    fill_prices_match,
    memory_flat,
    no_duplicate_orders,
    positions_match,
    realized_pnl_matches,
    stops_within_1s,
    trades_match,
)

T0 = ist_epoch(2025, 1, 30, 9, 20)
SPEED = 20.0
SYM = "NIFTY04FEB2524000PE"


def stored(client_id: str, oid: str | None, purpose: OrderPurpose, created: float,
           action: Action = Action.SELL, status: OrderStatus = OrderStatus.COMPLETE,
           quantity: int = 65) -> StoredOrder:
    return StoredOrder(client_id, "baseline_v1", "paper", SYM, "NFO", action, quantity,
                       PriceType.SL, Product.MIS, 100.0, 100.0, purpose, None, oid, status,
                       quantity if status is OrderStatus.COMPLETE else 0, 100.0, created,
                       created, date(2025, 1, 30), "")


def row(oid: str, action: str, status: str, placed: float, quantity: int = 65) -> OrderRow:
    return OrderRow(oid, SYM, "NFO", action, quantity, 100.0, 100.0, "SL", "MIS", status,
                    timestamp=fmt_timestamp(placed))


def trade(oid: str, action: str, price: float, at: float, quantity: int = 65) -> TradeRow:
    return TradeRow(oid, SYM, "NFO", action, quantity, price, "MIS", fmt_timestamp(at))


def fill(client_id: str, oid: str, ts: float, price: float = 100.0,
         purpose: OrderPurpose = OrderPurpose.ENTRY, action: Action = Action.SELL) -> Fill:
    return Fill(client_id, oid, "baseline_v1", "paper", SYM, "NFO", action, 65, price, 65, ts,
                purpose)


def sound(**changes: Any) -> RunFacts:
    """A short entered at T0 and protected 0.5 market seconds later, still open."""
    facts = RunFacts(
        speed=SPEED, market_origin=(T0, 1000.0), db_locked=(),
        status={"positions": [{"symbol": SYM, "quantity": -65}],
                "risk": {"realized_pnl": 0.0}, "supervisor": {"state": "running"}},
        broker_positions_live=[PositionRow(SYM, "NFO", "MIS", -65, 100.0)],
        broker_orders=[row("1", "SELL", "complete", T0 - 30), row("2", "BUY", "trigger pending",
                                                                   T0 + 1)],
        broker_trades=[trade("1", "SELL", 100.0, T0)],
        broker_positions=[PositionRow(SYM, "NFO", "MIS", -65, 100.0)],
        orders=[stored("e-1", "1", OrderPurpose.ENTRY, T0 - 30),
                stored("s-1", "2", OrderPurpose.STOP, T0 + 0.5, Action.BUY,
                       OrderStatus.TRIGGER_PENDING)],
        fills=[fill("e-1", "1", T0)], trades=[],
        bars={SYM: [Bar(SYM, T0, 1, 1, 1, 1, 1, 1, 1.0)]},
        gaps={SYM: [BarGap(SYM, T0 + 60)]}, session_minutes={SYM: {T0, T0 + 60}},
        closed_through=T0 + 120, restarts={"feed": 1}, crashes=[("feed", True)],
        crashes_planned=1, engine_exit=0)
    return replace(facts, **changes)


def test_a_sound_run_passes_every_check() -> None:
    facts = sound()
    for check in (no_duplicate_orders, stops_within_1s, trades_match, fill_prices_match,
                  positions_match, realized_pnl_matches, bars_complete, crashes_recovered):
        result = check(facts)
        assert result.passed, result.line()


def test_an_order_the_engine_does_not_know_is_a_duplicate() -> None:
    facts = sound(broker_orders=[*sound().broker_orders, row("3", "SELL", "open", T0 + 5)])
    check = no_duplicate_orders(facts)
    assert not check.passed and "the engine does not know: ['3']" in check.detail
    facts = sound(orders=[*sound().orders, stored("e-2", None, OrderPurpose.ENTRY, T0,
                                                  status=OrderStatus.UNKNOWN)])
    assert "unresolved engine orders: ['e-2']" in no_duplicate_orders(facts).detail


def test_a_stop_later_than_1_s_fails_unless_the_database_was_locked() -> None:
    late = stored("s-1", "2", OrderPurpose.STOP, T0 + 1.2 * SPEED, Action.BUY,
                  OrderStatus.TRIGGER_PENDING)
    facts = sound(orders=[sound().orders[0], late])
    check = stops_within_1s(facts)
    assert not check.passed and "stop 1.20 s after the fill" in check.detail
    held = sound(orders=[sound().orders[0], late], db_locked=[(999.5, 1000.5)])
    assert stops_within_1s(held).passed  # due 1 s after the lock's release at 1000.5
    assert "1 seen while the database was locked" in stops_within_1s(held).detail


def test_a_short_without_its_resting_stop_fails() -> None:
    facts = sound(broker_orders=[row("1", "SELL", "complete", T0 - 30),
                                 row("2", "BUY", "cancelled", T0 + 1)])
    check = stops_within_1s(facts)
    assert not check.passed and f"{SYM}: short -65 with resting BUY orders []" in check.detail


def test_fills_that_differ_from_the_tradebook_fail() -> None:
    check = trades_match(sound(fills=[fill("e-1", "1", T0, price=100.5)]))
    assert not check.passed and "broker average 100.00, engine 100.50" in check.detail
    assert not trades_match(sound(fills=[])).passed


def test_each_fill_price_must_be_the_tradebooks_for_its_part_of_the_order() -> None:
    """Two partial fills whose prices are swapped keep the order's average (trades_match
    passes) but not each fill's price; a MARKET fill booked at 0 fails."""
    trades = [trade("1", "SELL", 100.0, T0, 65), trade("1", "SELL", 101.0, T0 + 1, 65)]
    first = fill("e-1", "1", T0, price=101.0)
    second = replace(fill("e-1", "1", T0 + 1, price=100.0), cumulative_quantity=130)
    swapped = sound(broker_trades=trades, fills=[first, second])
    assert trades_match(swapped).passed and not fill_prices_match(swapped).passed
    right = sound(broker_trades=trades, fills=[replace(first, price=100.0),
                                               replace(second, price=101.0)])
    assert fill_prices_match(right).passed
    assert not fill_prices_match(sound(fills=[fill("e-1", "1", T0, price=0.0)])).passed


def test_positions_must_equal_the_brokers() -> None:
    check = positions_match(sound(status={"positions": [], "supervisor": {"state": "running"}}))
    assert not check.passed and "engine {} != broker" in check.detail


@pytest.mark.parametrize(("trades", "realized"), [
    ([("SELL", 100.0, 65), ("BUY", 90.0, 65)], 650.0),  # a short covered lower
    ([("SELL", 100.0, 130), ("BUY", 110.0, 65)], -650.0),  # half covered higher
    ([("SELL", 100.0, 65), ("SELL", 110.0, 65), ("BUY", 100.0, 130)], 650.0),  # average cost
    ([("BUY", 50.0, 65), ("SELL", 60.0, 130), ("BUY", 55.0, 65)], 975.0),  # through zero
])
def test_broker_realized_pnl_is_average_cost(trades: list[tuple[str, float, int]],
                                             realized: float) -> None:
    rows = [trade(str(i), a, p, T0 + i, q) for i, (a, p, q) in enumerate(trades)]
    assert broker_realized(rows) == pytest.approx(realized)


def test_realized_pnl_must_agree_three_ways() -> None:
    covered = [trade("1", "SELL", 100.0, T0), trade("2", "BUY", 90.0, T0 + 60)]
    closed = StoredTrade("baseline_v1", "paper", SYM, date(2025, 1, 30), Action.SELL, 65, T0,
                         100.0, T0 + 60, 90.0, 650.0, 1.0)
    good = sound(broker_trades=covered, trades=[closed],
                 status={**sound().status, "risk": {"realized_pnl": 650.0}})
    assert realized_pnl_matches(good).passed
    assert not realized_pnl_matches(replace(good, trades=[])).passed


def test_a_session_minute_with_neither_bar_nor_gap_fails() -> None:
    check = bars_complete(sound(gaps={SYM: []}))
    assert not check.passed and f"'{SYM}': 1" in check.detail


def test_a_crash_without_its_restart_fails() -> None:
    assert not crashes_recovered(sound(restarts={})).passed
    assert not crashes_recovered(sound(engine_exit=1)).passed
    assert not crashes_recovered(sound(status={**sound().status,
                                               "supervisor": {"state": "safe_stopped"}})).passed


def test_memory_is_judged_on_medians_after_the_warm_up() -> None:
    flat = [(float(t), 100_000 + (50_000 if t < 10 else 0)) for t in range(100)]
    check = memory_flat(sound(rss_kb=flat, warmup_s=10.0, max_rss_growth=0.10))
    assert check is not None and check.passed
    growing = [(float(t), 100_000 + 300 * t) for t in range(100)]
    check = memory_flat(sound(rss_kb=growing, warmup_s=10.0, max_rss_growth=0.10))
    assert check is not None and not check.passed and "limit +10%" in check.detail
