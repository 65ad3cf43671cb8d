"""The Reconciler actor with real actors on a virtual clock: a real store (SQLite in tmp_path), a
real OrderManager (fail-closed: entries wait for the startup pass) and PositionMonitor against the
simulated broker, in-process and over real loopback sockets for the unreadable broker.

- phantom (the engine holds what the broker does not: a fill behind the engine's back), orphan
  (alert only, or adopted) and quantity mismatch are corrected as documented: the monitor's
  positions change, a ``reconciliation`` row is written, exactly one alert per finding;
- an unreadable broker is never flat: nothing is corrected, the pass fails, and at startup the
  gate stays closed until a pass succeeds;
- a short without a stop: its strategy is asked to protect it, and on the next pass the
  reconciler places a fallback stop itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from actors.reconciler import ReconcileSettings
from engine.broker import BrokerUnavailable
from engine.market.instruments import trading_date
from engine.messages import (
    Action,
    CancelIntent,
    Command,
    FeedStatus,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PositionQuery,
    PriceType,
    Severity,
    StatusRequest,
    TradingGate,
    WorkingOrdersQuery,
)
from tests.actors.exec_harness import ACCOUNT, CE, ORDERS, PE, T0, Options, Stack

S = OrderStatus
DAY = trading_date(T0)
RECONCILE = ReconcileSettings(interval_s=5.0, startup_retry_s=1.0, fallback_stop_pct=10.0,
                              stop_limit_offset=3.0)
CLOSED = replace(ORDERS, start_open=False)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def build(**kw: Any) -> Stack:
        kw.setdefault("orders", CLOSED)
        kw.setdefault("risk", None)
        kw.setdefault("reconcile", RECONCILE)
        stack = Stack(tmp_path, Options(**kw))
        made.append(stack)
        return stack

    yield build
    for stack in made:
        stack.close()


def started(st: Stack) -> Stack:
    """Run the startup pass (due at once) and check that it opened the entries."""
    st.advance(0.1)
    assert status(st)["ready"] and st.gate("s").entries
    return st


def status(st: Stack) -> dict[str, Any]:
    return st.ask("reconciler", StatusRequest())  # type: ignore[no-any-return]


def next_pass(st: Stack) -> None:
    st.advance(RECONCILE.interval_s, step=0.5)


def rows(st: Stack, kind: str) -> list[Any]:
    return [c for c in st.db.corrections(trading_date=DAY) if c.kind == kind]


def protects(st: Stack) -> list[Command]:
    return [c for c in st.commands("s") if c.name == "protect"]


def broker_stops(st: Stack) -> list[Any]:
    return [o for o in st.broker_orders(CE) if o.pricetype == "SL"]


# ---------------------------------------------------------------------------------------------
# Startup: fail-closed
# ---------------------------------------------------------------------------------------------


def test_entries_stay_closed_until_a_startup_pass_succeeds(make: Callable[..., Stack]) -> None:
    st = make(sockets=True)
    assert st.server is not None
    st.server.faults.http_error(503, count=1000, endpoints="positionbook")
    assert not st.gate("s").entries
    st.advance(3.2, step=0.2)  # the startup pass and its retries (every 1 s) all fail
    info = status(st)
    assert not info["ready"] and info["failures"] >= 3 and "unreadable" in info["last_error"]
    failed = st.critical("reconcile_failed")
    assert len(failed) == info["failures"] and "entries stay closed" in failed[0].message
    assert not st.gate("s").entries and not st.gate("t").entries
    st.order("s-e1", Action.SELL)  # refused: no order before reconciliation
    [refused] = [m for m in st.seen("strategy.s", OrderEvent) if m.client_id == "s-e1"]
    assert refused.status is S.REJECTED and "entries are closed globally" in refused.reason
    assert st.broker_qty(CE) == 0
    st.server.faults.clear()
    st.advance(1.0, step=0.2)
    info = status(st)
    assert info["ready"] and info["last_error"] == ""
    assert st.gate("s").entries and st.gate("t").entries
    assert [g.entries for g in st.seen("strategy.s", TradingGate)] == [True]


def test_at_startup_a_short_without_a_stop_is_protected_before_entries_open(
        make: Callable[..., Stack]) -> None:
    st = started(make())
    st.order("s-e1", Action.SELL)
    st.market(100.0)
    for name in ("reconciler", "positions", "orders"):  # the engine restarts
        st.stop(name)
    st.start_orders()
    st.start_positions()  # the short comes back from the stored fills
    assert st.held() == {("s", CE): -65}
    assert not st.gate("s").entries
    st.got["strategy.s"].clear()
    st.start_reconciler()
    st.advance(0.1)
    assert status(st)["ready"] and st.gate("s").entries
    seen = [m for m in st.got["strategy.s"] if isinstance(m, (Command, TradingGate))]
    assert isinstance(seen[0], Command) and seen[0].name == "protect"
    assert dict(seen[0].args) == {"symbol": CE, "strategy": "s"}
    assert isinstance(seen[1], TradingGate) and seen[1].entries


def test_an_entry_a_kill_left_unknown_is_settled_before_the_startup_pass(
        make: Callable[..., Stack]) -> None:
    """Issue 21 (the kill/restart flake: "engine {24000PE: -520} != broker {24000PE: -520,
    23950PE: -195}"). The engine was killed after an entry's intent was stored and its request
    had left, before the broker's order id was stored; the entry filled while the engine was
    down. The restarted order manager reads the orderbook before it answers anyone, so the
    startup reconciliation (and whoever reads the positions once it reports ready) already
    sees the fill: no orphan, the engine holds what the broker holds."""
    st = started(make())
    for name in ("reconciler", "positions", "orders"):
        st.stop(name)
    st.listen(False)  # nobody streams while the engine is down
    st.ask("store", OrderIntent(
        client_id="s-e1", strategy="s", account=ACCOUNT, symbol=CE, exchange="NFO",
        action=Action.SELL, quantity=65, pricetype=PriceType.MARKET, price=0.0,
        trigger_price=0.0, purpose=OrderPurpose.ENTRY, created_ts=st.clock.time()))
    st.sim.place_order(strategy="s", symbol=CE, exchange="NFO", action="SELL", quantity=65,
                       pricetype="MARKET")  # the request that left; it filled at once
    assert st.broker_qty(CE) == -65
    st.listen()
    st.start_orders()
    st.start_positions()
    st.start_reconciler()
    st.advance(0.1)  # the startup pass is due at once; the orderbook poll only at 0.5 s
    assert status(st)["ready"]
    assert st.held() == {("s", CE): -65}
    assert not st.alerts("reconcile_orphan")
    assert [f.client_id for f in st.db.fills(trading_date=DAY)] == ["s-e1"]


# ---------------------------------------------------------------------------------------------
# Phantom, orphan, mismatch
# ---------------------------------------------------------------------------------------------


def test_a_phantom_is_closed_at_the_brokers_fill_price_with_one_alert(
        make: Callable[..., Stack]) -> None:
    st = started(make())
    st.order("s-e1", Action.SELL)  # filled at the bid, 99.95
    st.market(104.0)
    st.direct("BUY")  # a stop filled where the engine did not see it: at the ask, 104.05
    assert st.broker_qty(CE) == 0 and st.held() == {("s", CE): -65}
    next_pass(st)
    assert st.held() == {}
    [flat] = st.ask("positions", PositionQuery(strategy="s", include_flat=True))
    assert flat.realized == pytest.approx((99.95 - 104.05) * 65)
    [row] = rows(st, "phantom")
    assert (row.strategy, row.account, row.symbol, row.action) == ("s", ACCOUNT, CE,
                                                                   "corrected")
    assert (row.engine_quantity, row.broker_quantity) == (-65, 0)
    assert "closed at 104.05" in row.detail
    assert len(st.critical("reconcile_phantom")) == 1
    assert any(a.kind == "position_corrected" for a in st.alerts())
    next_pass(st)
    st.tell("reconciler", FeedStatus("connected", st.clock.time()))  # a reconnect pass too
    assert len(rows(st, "phantom")) == 1 and len(st.alerts("reconcile_phantom")) == 1
    # nothing is protected that does not exist: no stop request, no fallback stop
    assert protects(st) == [] and broker_stops(st) == []
    assert status(st)["findings"] == {"phantom": 1}


@pytest.mark.parametrize("adopt", [False, True])
def test_an_orphan_is_alerted_once_and_adopted_only_when_configured(
        make: Callable[..., Stack], adopt: bool) -> None:
    st = started(make(reconcile=replace(RECONCILE, adopt_orphans=adopt)))
    st.direct("SELL")  # a position the engine never had
    next_pass(st)
    [first] = rows(st, "orphan")
    assert (first.engine_quantity, first.broker_quantity) == (0, -65)
    [alert] = st.alerts("reconcile_orphan")
    assert alert.severity is Severity.CRITICAL
    if adopt:
        assert first.action == "corrected" and first.detail == "adopted"
        assert first.strategy == "adopted"
        assert st.held() == {("adopted", CE): -65}
    else:
        assert first.action == "alert only (adopt_orphans off)"
        assert st.held() == {}
    next_pass(st)
    assert len(st.alerts("reconcile_orphan")) == 1
    assert st.broker_qty(CE) == -65  # the reconciler never trades an orphan away
    if not adopt:
        assert st.held() == {} and broker_stops(st) == []
        return
    # adopted, it is the engine's short: no strategy owns it to ask, so it gets a stop at once
    [stop] = broker_stops(st)
    assert (stop.action, stop.quantity, stop.status) == ("BUY", 65, "trigger pending")


def test_a_quantity_mismatch_takes_the_brokers_quantity_with_one_alert(
        make: Callable[..., Stack]) -> None:
    st = started(make())
    st.order("s-e1", Action.SELL, 130)
    st.order("s-st1", Action.BUY, 130, purpose=OrderPurpose.STOP, pricetype=PriceType.SL,
             price=133.0, trigger=130.0)
    st.market(100.0)
    st.tell("orders", CancelIntent("s-st1", "test"))  # else the symbol is busy: left alone
    st.advance(0.2)
    st.direct("BUY")  # half of it closed behind the engine's back
    assert (st.broker_qty(CE), st.held()) == (-65, {("s", CE): -130})
    next_pass(st)
    assert st.held() == {("s", CE): -65}
    [row] = rows(st, "mismatch")
    assert (row.strategy, row.engine_quantity, row.broker_quantity, row.action) == (
        "s", -130, -65, "corrected")
    assert "set to the broker's -65" in row.detail
    [alert] = st.alerts("reconcile_mismatch")
    assert alert.severity is Severity.WARNING
    next_pass(st)
    st.tell("reconciler", FeedStatus("connected", st.clock.time()))
    assert len(rows(st, "mismatch")) == 1 and len(st.alerts("reconcile_mismatch")) == 1


def test_a_protected_short_closed_by_hand_is_closed_at_the_trade_price_and_its_stop_cancelled(
        make: Callable[..., Stack]) -> None:
    """Issue 16, why 1: a short with a resting stop used to be skipped (``symbol in busy``)
    forever; over real sockets it is now compared, booked at the hand trade's price, and its
    stop (which would open a long) is cancelled and verified at the broker."""
    st = started(make(sockets=True))
    st.short_with_stop(trigger=130.0)  # sold at the bid, 99.95; the stop rests at the broker
    st.market(102.0, engine=False)
    assert st.sim.close_by_hand() is not None  # bought back at the ask, 102.05
    assert st.broker_qty(CE) == 0 and st.held() == {("s", CE): -65}
    next_pass(st)
    st.advance(1.0)
    assert st.held() == {}
    [flat] = st.ask("positions", PositionQuery(strategy="s", include_flat=True))
    assert flat.realized == pytest.approx((99.95 - 102.05) * 65)
    [row] = rows(st, "phantom")
    assert "closed at 102.05" in row.detail
    assert len(st.critical("reconcile_phantom")) == 1
    assert [o.status for o in broker_stops(st)] == ["cancelled"]  # verified at the broker
    assert st.ask("orders", WorkingOrdersQuery()) == ()
    assert st.critical("reconcile_orphan_stop")
    next_pass(st)
    assert len(rows(st, "phantom")) == 1 and len(st.alerts("reconcile_phantom")) == 1
    assert status(st)["divergent"] == {} and status(st)["hold"] is None
    assert st.gate("s").entries


def test_a_broker_that_lost_its_state_halts_entries_with_one_alert_until_the_operator(
        make: Callable[..., Stack]) -> None:
    """Issue 16, why 2: the broker restarted with empty books. The engine's stop is unknown
    to the broker: entries halt, one critical alert, nothing is booked at a guessed price;
    the operator's unhalt accepts the broker's (flat) position at the last price."""
    st = started(make(sockets=True))
    st.short_with_stop(trigger=130.0)
    lost = st.sim.lose_state()
    assert len(lost["orders"]) == 2 and st.sim.orderbook() == []
    next_pass(st)
    [alert] = st.critical("broker_state_loss")
    assert "s-st1" in alert.message
    assert not st.gate("s").entries and st.gate("s").exits
    assert st.held() == {("s", CE): -65}  # no broker trade prices it: not booked
    state = status(st)
    assert state["hold"] and state["lost_orders"] == 1
    assert state["divergent"] == {CE: {"engine": -65, "broker": 0}}
    assert st.ask("orders", WorkingOrdersQuery()) == ()  # the lost stop ended (expired)
    assert broker_stops(st) == []  # and no fallback stop for a short the broker does not hold
    next_pass(st)
    assert len(st.alerts("broker_state_loss")) == 1 and not st.gate("s").entries
    st.tell("reconciler", Command("unhalt", (), st.clock.time()))
    st.advance(0.5)
    assert st.held() == {} and st.gate("s").entries
    assert status(st)["hold"] is None and status(st)["divergent"] == {}
    [row] = [r for r in rows(st, "phantom") if r.action == "corrected"]
    assert "accepted by the operator" in row.detail


def unknown_stop(st: Stack, client_id: str = "s-st1") -> None:
    """A BUY stop-limit for the short on CE whose placement is answered HTTP 500 by the
    simulator (outcome unknown); the clock does not move, so no poll has looked for it yet."""
    st.server.faults.http_error(500, endpoints="placeorder")  # type: ignore[union-attr]
    st.tell("orders", OrderIntent(
        client_id=client_id, strategy="s", account=ACCOUNT, symbol=CE, exchange="NFO",
        action=Action.BUY, quantity=65, pricetype=PriceType.SL, price=133.0,
        trigger_price=130.0, purpose=OrderPurpose.STOP, created_ts=st.clock.time()))
    assert events(st, client_id)[-1].status is S.UNKNOWN


def events(st: Stack, client_id: str) -> list[OrderEvent]:
    return [e for e in st.seen("strategy.s", OrderEvent) if e.client_id == client_id]


def ce_buys_sent(st: Stack) -> int:
    return sum(1 for kw in st.broker.placed() if kw["symbol"] == CE and kw["action"] == "BUY")


def test_a_stop_of_unknown_outcome_is_not_resent_after_a_broker_state_loss(
        make: Callable[..., Stack]) -> None:
    """Issue 15 (the angel run's long 260): the short's stop got an HTTP 500, then the broker
    lost its state and a pass declared it; the stop, absent from the orderbook, must not be
    re-sent (it would buy on a broker holding nothing): it ends rejected with one alert."""
    st = started(make(sockets=True))
    st.short_with_stop(symbol=PE, trigger=130.0, tag="2")  # the resting order the loss loses
    st.order("s-e1", Action.SELL)  # the short on CE
    assert st.broker_qty(CE) == -65
    unknown_stop(st)
    st.server.faults.lose_state()  # type: ignore[union-attr]
    assert st.sim.orderbook() == [] and st.broker_qty(CE) == 0
    st.tell("reconciler", FeedStatus("connected", st.clock.time()))  # the pass that finds it
    assert len(st.critical("broker_state_loss")) == 1
    st.advance(1.0)  # polls: the stop is verified absent; the re-send moment
    assert ce_buys_sent(st) == 1  # only the attempt answered 500
    assert st.broker_orders(CE) == []
    [alert] = st.critical("protective_not_resent")
    assert "s-st1" in alert.message and "state loss" in alert.message
    assert events(st, "s-st1")[-1].status is S.REJECTED
    assert all(o.intent.client_id != "s-st1" for o in st.ask("orders", WorkingOrdersQuery()))
    st.market(140.0, CE)  # above the stop's trigger: nothing at the broker buys
    next_pass(st)
    assert st.broker_qty(CE) == 0 and ce_buys_sent(st) == 1
    assert len(st.alerts("protective_not_resent")) == 1


def test_a_stop_of_unknown_outcome_is_not_resent_for_a_position_the_broker_does_not_show(
        make: Callable[..., Stack]) -> None:
    """No state loss declared (nothing working was lost): the positionbook, read before the
    re-send, shows no short on the symbol, so the stop would open a long: not re-sent."""
    st = started(make(sockets=True))
    st.order("s-e1", Action.SELL)
    unknown_stop(st)
    st.server.faults.lose_state()  # type: ignore[union-attr]
    st.advance(1.0)
    assert not st.alerts("broker_state_loss")  # no working order was lost: nothing declared
    assert ce_buys_sent(st) == 1 and st.broker_orders(CE) == []
    [alert] = st.critical("protective_not_resent")
    assert "positionbook shows 0" in alert.message
    assert events(st, "s-st1")[-1].status is S.REJECTED


def test_a_stop_of_unknown_outcome_is_resent_while_the_broker_shows_the_short(
        make: Callable[..., Stack]) -> None:
    """The usual case: the short is at the broker, the stop is absent: re-sent once, and it
    rests. An unreadable positionbook only delays the re-send (positions unknown, not flat)."""
    st = started(make(sockets=True))
    st.order("s-e1", Action.SELL)
    unknown_stop(st)

    def down(method: Any, **kw: Any) -> Any:
        raise BrokerUnavailable("connection refused (test)", endpoint="positionbook")

    st.broker.read_hooks["positionbook"] = down
    st.advance(1.0)
    assert ce_buys_sent(st) == 1 and events(st, "s-st1")[-1].status is S.UNKNOWN
    st.broker.read_hooks.clear()
    st.advance(1.0)
    assert ce_buys_sent(st) == 2 and not st.alerts("protective_not_resent")
    assert [o.status for o in broker_stops(st)] == ["trigger pending"]
    assert events(st, "s-st1")[-1].status is S.TRIGGER_PENDING


# ---------------------------------------------------------------------------------------------
# The broker cannot be read
# ---------------------------------------------------------------------------------------------


def test_an_unreadable_broker_is_never_flat(make: Callable[..., Stack]) -> None:
    st = started(make(sockets=True))
    assert st.server is not None
    st.order("s-e1", Action.SELL)
    st.order("s-st1", Action.BUY, purpose=OrderPurpose.STOP, pricetype=PriceType.SL,
             price=133.0, trigger=130.0)
    st.market(100.0)
    st.tell("orders", CancelIntent("s-st1", "test"))
    st.advance(0.2)
    st.direct("BUY")  # the broker is flat now, but cannot say so
    st.server.faults.http_error(503, count=1000, endpoints="positionbook")
    failures = status(st)["failures"]
    next_pass(st)
    next_pass(st)
    assert status(st)["failures"] == failures + 2
    assert st.held() == {("s", CE): -65}  # not corrected to flat
    assert rows(st, "phantom") == []
    failed = st.alerts("reconcile_failed")
    assert len(failed) == 2 and all(a.severity is Severity.WARNING for a in failed)
    assert st.gate("s").entries  # after startup, a failed pass does not close the entries
    st.server.faults.clear()
    next_pass(st)
    assert st.held() == {} and len(rows(st, "phantom")) == 1
    assert broker_stops(st)[-1].status == "cancelled"  # no fallback stop for a phantom


# ---------------------------------------------------------------------------------------------
# Missing stops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy_protects", [False, True])
def test_a_short_without_a_stop_is_protected(make: Callable[..., Stack],
                                             strategy_protects: bool) -> None:
    st = started(make())
    st.order("s-e1", Action.SELL)  # 99.95
    st.market(100.0)
    next_pass(st)
    [ask] = protects(st)
    assert dict(ask.args) == {"symbol": CE, "strategy": "s"}
    [row] = rows(st, "missing_stop")
    assert row.action == "strategy asked to re-place its stop"
    assert broker_stops(st) == []
    if strategy_protects:
        st.order("s-st1", Action.BUY, purpose=OrderPurpose.STOP, pricetype=PriceType.SL,
                 price=123.0, trigger=120.0)
    next_pass(st)
    stops = broker_stops(st)
    if strategy_protects:
        assert [(o.trigger_price, o.status) for o in stops] == [(120.0, "trigger pending")]
        assert len(rows(st, "missing_stop")) == 1
        return
    [stop] = stops  # 10 % above the higher of average and last price (100), limit + 3
    assert (stop.action, stop.quantity, stop.trigger_price, stop.price, stop.status) == (
        "BUY", 65, 110.0, 113.0, "trigger pending")
    [mine] = st.ask("orders", WorkingOrdersQuery("s"))
    assert mine.intent.purpose is OrderPurpose.STOP
    assert mine.intent.reason == "reconciler: missing stop"
    assert [r.action for r in rows(st, "missing_stop")] == [
        "strategy asked to re-place its stop", "fallback stop placed"]
    [placed] = st.critical("reconcile_fallback_stop")
    assert "BUY SL trigger 110.0 limit 113.0" in placed.message
    next_pass(st)  # covered now: nothing more
    assert len(broker_stops(st)) == 1 and len(protects(st)) == 1
    st.market(110.0)  # and it protects: the short is closed at the broker and here
    st.advance(1.0)
    assert st.broker_qty(CE) == 0 and st.held() == {}


def test_a_fallback_stop_is_sized_on_the_brokers_quantity(make: Callable[..., Stack]) -> None:
    st = started(make())
    st.order("s-e1", Action.SELL, 130)
    st.market(100.0)
    next_pass(st)
    assert len(protects(st)) == 1  # asked; the strategy does nothing
    st.direct("BUY")  # meanwhile half is closed behind the engine's back
    next_pass(st)  # the mismatch is corrected; no stop is sized on the old 130
    assert st.held() == {("s", CE): -65} and broker_stops(st) == []
    next_pass(st)
    [stop] = broker_stops(st)
    assert (stop.action, stop.quantity) == ("BUY", 65)
    st.market(110.0)  # the stop fills: flat, never long
    st.advance(1.0)
    assert st.broker_qty(CE) == 0 and st.held() == {}
