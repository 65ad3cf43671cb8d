"""A fill the broker shows before its price (Zerodha over OpenAlgo: a ``complete`` orderbook row
without ``average_price``, the tradebook still empty), end to end over REAL loopback sockets:
the simulator under the ``zerodha`` personality, the engine's REST client, a real store, order
manager, position monitor and a real strategy host.

Until the tradebook prices it, the position holds the quantity (its stop is placed, the held
quantity equals the broker's), marked at the last price, with no realized or unrealized P&L and
no R from a guess; then the fill is booked once, at the tradebook price. A restart in between
recovers the pending quantity from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.messages import (
    Action,
    CancelIntent,
    Fill,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PositionQuery,
    PriceType,
    StatusRequest,
)
from engine.sim.matching import MatchingSettings
from strategies.base import Strategy, StrategyContext
from tests.actors.exec_harness import CE, PE, Options, Stack


class Protector(Strategy):
    """Covers whatever short the host says it holds with a BUY stop-limit (at a fixed trigger:
    a stop never depends on the fill price)."""

    name = "protector"

    def __init__(self, ctx: StrategyContext, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self.covered = 0

    def _protect(self) -> None:
        short = -self.ctx.positions().get(CE, 0)
        if short > self.covered:
            self.ctx.place(symbol=CE, exchange="NFO", action=Action.BUY,
                           quantity=short - self.covered, pricetype=PriceType.SL, price=113.0,
                           trigger_price=110.0, purpose=OrderPurpose.STOP)
            self.covered = short

    def on_fill_pending(self, pending: PendingFill) -> None:
        self._protect()

    def on_fill(self, fill: Fill) -> None:
        self._protect()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, Options(sockets=True, risk=None,
                                matching=MatchingSettings(broker="zerodha"),
                                hosts={"s": Protector}))
    try:
        yield s
    finally:
        s.close()


def _empty_tradebook(method: Callable[..., Any], **kw: Any) -> list[Any]:
    return []  # OpenAlgo answers, the broker has not booked the trade yet


def _mark(stack: Stack) -> Any:
    [mark] = stack.ask("positions", PositionQuery(strategy="s"))
    return mark


def _stops_at_broker(stack: Stack) -> list[Any]:
    return [o for o in stack.broker_orders() if o.action == "BUY"]


def test_a_fill_without_its_price_is_held_and_protected_then_booked_at_the_tradebook_price(
        stack: Stack) -> None:
    stack.broker.read_hooks["tradebook"] = _empty_tradebook
    stack.order("s-e1", Action.SELL, 65, pricetype=PriceType.MARKET)  # sold at the bid
    stack.advance(2.0)  # polls: the row says complete, nothing says at what price
    [trade] = stack.trades()
    rows = {r.orderid: r for r in stack.client.orderbook()}  # type: ignore[union-attr]
    entry_row = rows[trade.orderid]
    assert (entry_row.status, entry_row.average_price, entry_row.filled_quantity) == \
        ("complete", None, None)
    assert stack.db.fills() == []  # no fill booked from a guess
    [pending] = stack.db.pending_fills()
    assert (pending.client_id, pending.cumulative_quantity, pending.action) == \
        ("s-e1", 65, Action.SELL)
    # the stop is at the broker before the price is known
    [stop] = _stops_at_broker(stack)
    assert (stop.quantity, stop.trigger_price, stop.status) == (65, 110.0, "trigger pending")
    stack.market(101.0)
    mark = _mark(stack)
    assert (mark.quantity, mark.price_pending, mark.ltp) == (-65, 65, 101.0)
    assert (mark.realized, mark.unrealized, mark.r_multiple) == (0.0, 0.0, 0.0)
    assert stack.broker_qty() == -65
    status = stack.ask("positions", StatusRequest())
    assert status["positions"][0]["price_pending"] == 65
    assert status["strategies"]["s"]["pnl"] == 0.0

    del stack.broker.read_hooks["tradebook"]
    stack.advance(1.5)
    [fill] = stack.db.fills()
    assert (fill.quantity, fill.price) == (65, trade.average_price)
    mark = _mark(stack)
    assert (mark.quantity, mark.price_pending, mark.average_price) == \
        (-65, 0, trade.average_price)
    assert mark.unrealized == pytest.approx((trade.average_price - 101.0) * 65)
    assert len(_stops_at_broker(stack)) == 1  # no second stop: the quantity was not re-added
    assert stack.held("s") == {("s", CE): -65}


def test_a_restart_while_the_price_is_pending_recovers_the_quantity(stack: Stack) -> None:
    stack.broker.read_hooks["tradebook"] = _empty_tradebook
    stack.order("s-e1", Action.SELL, 65, pricetype=PriceType.MARKET)
    stack.advance(2.0)
    assert len(_stops_at_broker(stack)) == 1
    stack.stop("positions")
    stack.stop("orders")
    stack.start_orders()
    stack.start_positions()
    stack.market(101.0)
    mark = _mark(stack)
    assert (mark.quantity, mark.price_pending, mark.realized, mark.unrealized) == \
        (-65, 65, 0.0, 0.0)
    stack.advance(2.0)
    assert len(stack.db.pending_fills()) == 1  # not booked again after the restart
    del stack.broker.read_hooks["tradebook"]
    stack.advance(1.5)
    [trade] = stack.trades(action="SELL")
    [fill] = stack.db.fills(client_id="s-e1")
    assert (fill.quantity, fill.price) == (65, trade.average_price)
    mark = _mark(stack)
    assert (mark.quantity, mark.price_pending) == (-65, 0)
    assert len(_stops_at_broker(stack)) == 1


# -- Zerodha's carry-over: an order really in an in-between state shows the row above's status --


@pytest.fixture
def zerodha(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def _make(**matching: Any) -> Stack:
        made.append(Stack(tmp_path, Options(
            sockets=True, risk=None, matching=MatchingSettings(broker="zerodha", **matching),
            hosts={"s": Protector})))
        return made[-1]

    yield _make
    for s in made:
        s.close()


def _shown_and_raw(stack: Stack, orderid: str) -> tuple[str, str]:
    shown = {r.orderid: r.status for r in stack.client.orderbook()}  # type: ignore[union-attr]
    raw = {r.orderid: r.status for r in stack.sim.raw_orderbook()}
    return shown[orderid], raw[orderid]


def _nothing_booked_nothing_protected(stack: Stack) -> None:
    assert stack.db.pending_fills() == [] and stack.db.fills(client_id="s-e1") == []
    assert _stops_at_broker(stack) == []  # no stop for a position that does not exist
    assert stack.held("s") == {}


def _carried_over_then_ended(stack: Stack, between: str, final: OrderStatus) -> None:
    """The entry ``s-e1`` is really ``between`` (for 3 s) under a completed row: it reads
    ``complete``, books nothing, places no stop, and ends ``final``, still without either."""
    stack.advance(1.0)
    [row] = [r for r in stack.sim.raw_orderbook() if r.symbol == CE and r.action == "SELL"]
    assert _shown_and_raw(stack, row.orderid) == ("complete", between)
    stack.advance(1.0)  # polls and status reads of a row that says "complete"
    _nothing_booked_nothing_protected(stack)
    stack.advance(2.0)  # the exchange answers
    assert _shown_and_raw(stack, row.orderid) == (final.value, final.value)
    stack.advance(1.0)
    [stored] = [r for r in stack.db.orders() if r.client_id == "s-e1"]
    assert stored.status is final
    _nothing_booked_nothing_protected(stack)


def test_an_order_open_pending_for_a_while_then_rejected_is_never_read_as_filled(
        zerodha: Callable[..., Stack]) -> None:
    stack = zerodha(latency_s=3.0)
    stack.direct("BUY", symbol=PE)  # the row above ours: it completes
    stack.advance(3.5)
    stack.sim.force_rejections(1, "RMS: margin exceeds")
    stack.order("s-e1", Action.SELL, 65, pricetype=PriceType.MARKET)
    _carried_over_then_ended(stack, "open pending", OrderStatus.REJECTED)


def test_an_entry_cancel_pending_for_a_while_then_cancelled_is_never_read_as_filled(
        zerodha: Callable[..., Stack]) -> None:
    stack = zerodha()
    stack.sim.personality.cancel_latency_s = 3.0  # type: ignore[misc]
    stack.direct("BUY", symbol=PE)  # the row above ours: complete
    stack.order("s-e1", Action.SELL, 65, pricetype=PriceType.LIMIT, price=150.0)  # rests
    stack.tell("orders", CancelIntent("s-e1", "switch"))
    _carried_over_then_ended(stack, "cancel pending", OrderStatus.CANCELLED)
