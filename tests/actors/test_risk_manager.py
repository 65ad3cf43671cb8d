"""The RiskManager actor and its exit coordinator with real actors on a virtual clock: a real
store (SQLite in tmp_path), a real OrderManager and PositionMonitor against the simulated broker,
in-process and over real loopback sockets (SimulatorServer + OpenAlgoClient).

- limits fire on fresh prices at their thresholds (max loss, trailing stop from the entry,
  daily R with the strategy's R), halt the strategy, close its gate and exit everything;
- stale prices never fire a limit, and say so once per ``stale_alert_s``;
- HALTED is persisted and survives a restart (gate closed again) until ``unhalt``;
- an exit racing a stop that has just filled sends no second BUY (never a naked long);
- an unreadable positionbook keeps the positions unknown (stops stay, retried, then closed);
- entries are cancelled first, shorts are covered before longs are sold, rejected exits are
  retried (verified at the broker each time) and then alerted; done only when flat.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.broker import PositionRow
from engine.market.instruments import trading_date
from engine.messages import (
    Action,
    Command,
    ExitAll,
    OrderStatus,
    PriceType,
    RiskState,
    Severity,
    StrategyPnl,
    WorkingOrdersQuery,
)
from tests.actors.exec_harness import ACCOUNT, CE, PE, R_UNIT, RISK, T0, Options, Stack

S = OrderStatus
DAY = trading_date(T0)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def build(**kw: Any) -> Stack:
        stack = Stack(tmp_path, Options(**kw))
        made.append(stack)
        return stack

    yield build
    for stack in made:
        stack.close()


def flatten(st: Stack, strategy: str = "s") -> None:
    st.tell("risk", Command("flatten", (("strategy", strategy),)))


def market_orders(st: Stack) -> list[dict[str, Any]]:
    """The MARKET orders the order manager placed at the broker (entries and exits), in order."""
    return [kw for kw in st.broker.placed() if kw.get("pricetype") == "MARKET"]


def working(st: Stack, strategy: str = "s") -> dict[str, Any]:
    return {w.intent.client_id: w for w in st.ask("orders", WorkingOrdersQuery(strategy))}


# ---------------------------------------------------------------------------------------------
# Limits on fresh prices
# ---------------------------------------------------------------------------------------------


def test_max_loss_fires_at_the_threshold_halts_and_exits_everything(
        make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, max_loss=650.0))
    st.short_with_stop(trigger=130.0)  # sold at the bid, 99.95
    st.order("t-e1", Action.SELL, strategy="t", symbol=PE)  # another strategy, not involved
    st.market(109.9)  # (99.95 - 109.9) x 65 = -646.75: just inside
    assert st.risk_status()["state"] == "ACTIVE"
    assert st.db.risk_events("s") == []
    st.market(110.0)  # -653.25
    assert st.risk_status()["state"] == "HALTED"
    [event] = st.db.risk_events("s")
    assert (event.kind, event.threshold, event.value, event.action, event.account) == (
        "max_loss", -650.0, pytest.approx(-653.25), "exit_all", ACCOUNT)
    stored = st.db.risk_state("s", ACCOUNT)
    assert stored is not None
    assert (stored.state, stored.reason, stored.trading_date) == (RiskState.HALTED,
                                                                   "max_loss", DAY)
    assert st.critical("risk_max_loss")
    assert [m.reason for m in st.seen("strategy.s", ExitAll)] == ["max_loss"]
    assert not st.gate("s").entries and st.gate("s").exits
    assert st.gate("t").entries
    st.advance(1.0)
    assert st.broker_qty(CE) == 0
    assert st.held() == {("t", PE): -65}  # strategy t keeps its position
    [cover] = market_orders(st)[2:]  # after the two entries
    assert (cover["action"], cover["quantity"], cover["symbol"]) == ("BUY", 65, CE)
    assert [o.status for o in st.broker_orders(CE) if o.pricetype == "SL"] == ["cancelled"]
    assert st.alerts("exit_done")
    assert st.risk_status()["exit"] is None


def test_the_trailing_stop_ratchets_up_and_fires_at_its_level(make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, trail=500.0))
    st.short_with_stop(trigger=130.0)
    st.market(100.0)  # cycle -3.25: stop -500
    st.market(95.0)  # cycle +321.75: the peak moves the stop to -178.25
    status = st.risk_status()
    assert (status["trail_peak"], status["trail_stop"]) == (321.75, pytest.approx(-178.25))
    st.market(97.0)  # pullback: the stop stays
    assert st.risk_status()["trail_stop"] == pytest.approx(-178.25)
    st.market(102.6)  # -172.25: just above
    assert st.risk_status()["state"] == "ACTIVE"
    st.market(102.7)  # -178.75
    assert st.risk_status()["state"] == "HALTED"
    [event] = st.db.risk_events("s")
    assert (event.kind, event.threshold, event.value) == (
        "trailing_stop", pytest.approx(-178.25), pytest.approx(-178.75))
    stored = st.db.risk_state("s", ACCOUNT)
    assert stored is not None and (stored.peak, stored.stop_level) == (
        pytest.approx(321.75), pytest.approx(-178.25))
    st.advance(1.0)
    assert st.broker_qty(CE) == 0
    assert st.risk_status()["trail_stop"] is None  # flat: the cycle's ratchet is reset


def test_the_trail_counts_the_move_before_the_first_fresh_price(
        make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, trail=500.0))
    st.short_with_stop(trigger=130.0)  # its P&L is stale: no price reached the monitor yet
    assert st.risk_status()["state"] == "ACTIVE"
    st.market(108.0)  # the first fresh price: the cycle is already -523.25
    assert st.risk_status()["state"] == "HALTED"
    assert [e.kind for e in st.db.risk_events("s")] == ["trailing_stop"]


def test_daily_r_uses_the_strategys_r(make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, daily_r_target=5.0, daily_r_stop=5.0))
    st.order("s-e1", Action.SELL)  # 99.95; -5 R is -32,500 rupees: (99.95 - 600) x 65
    st.market(599.9)  # -32,496.75
    assert st.risk_status()["state"] == "ACTIVE"
    assert st.risk_status()["r"] == pytest.approx(-32_496.75 / R_UNIT, abs=1e-4)
    st.market(600.0)
    [event] = st.db.risk_events("s")
    assert (event.kind, event.threshold) == ("daily_r", -5.0)
    assert event.value == pytest.approx(-32_503.25 / R_UNIT)


# ---------------------------------------------------------------------------------------------
# Stale prices
# ---------------------------------------------------------------------------------------------


def test_stale_prices_never_fire_and_alert_once_per_interval(make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, max_loss=650.0, stale_alert_s=20.0))

    def pnl(fresh: bool) -> StrategyPnl:
        return StrategyPnl("s", ACCOUNT, realized=0.0, unrealized=-5000.0, open_positions=1,
                           fresh=fresh, ts=st.clock.time(), stale=() if fresh else (CE,))

    st.tell("risk", pnl(False))
    st.tell("risk", pnl(False))
    st.advance(12.0, step=1.0)  # the backstop timer re-evaluates twice: still stale
    assert st.risk_status()["state"] == "ACTIVE"
    assert st.db.risk_events("s") == []
    [alert] = st.alerts("prices_unreliable")
    assert CE in alert.message and alert.severity is Severity.WARNING
    st.advance(10.0, step=1.0)  # stale_alert_s later: one more alert, still no trigger
    assert len(st.alerts("prices_unreliable")) == 2
    assert st.risk_status()["state"] == "ACTIVE"
    st.tell("risk", pnl(True))  # the same numbers, fresh
    assert st.risk_status()["state"] == "HALTED"
    assert [e.kind for e in st.db.risk_events("s")] == ["max_loss"]


def test_a_position_going_stale_in_the_monitor_stops_the_checks(
        make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, trail=500.0, stale_alert_s=1.0), monitor_quotes=False)
    st.order("s-e1", Action.SELL)
    st.market(100.0)
    assert st.risk_status()["fresh"] is True
    alerts = len(st.alerts("prices_unreliable"))
    st.advance(6.0, step=0.5)  # no tick for longer than stale_after_s (5 s)
    assert st.risk_status()["fresh"] is False
    assert len(st.alerts("prices_unreliable")) == alerts + 1
    st.market(120.0)  # fresh again, and far through the stop
    assert st.risk_status()["state"] == "HALTED"


def test_an_entry_just_filled_is_priced_by_its_fill_no_stale_alert(
        make: Callable[..., Stack]) -> None:
    """Issue 20: an entry filled before the feed's first tick of its symbol reached the position
    monitor made the risk manager say "prices unreliable" at once; the fill's price is the
    symbol's price until a tick comes (and the position still goes stale without ticks)."""
    st = make(risk=replace(RISK, trail=500.0, stale_alert_s=1.0), monitor_quotes=False)
    st.order("s-e1", Action.SELL)  # sold at 99.95; no tick of CE has reached the monitor
    assert st.held() == {("s", CE): -65}
    assert st.alerts("prices_unreliable") == []
    assert st.risk_status()["fresh"] is True
    st.advance(6.0, step=0.5)  # still no tick, longer than stale_after_s (5 s)
    assert st.risk_status()["fresh"] is False
    assert len(st.alerts("prices_unreliable")) == 1


# ---------------------------------------------------------------------------------------------
# HALTED across a restart
# ---------------------------------------------------------------------------------------------


def test_halted_survives_a_restart_until_an_operator_unhalts(make: Callable[..., Stack]) -> None:
    st = make(risk=replace(RISK, trail=500.0))
    st.order("s-e1", Action.SELL)
    st.market(108.0)
    st.advance(1.0)
    assert st.broker_qty(CE) == 0 and st.risk_status()["state"] == "HALTED"
    stored = st.db.risk_state("s", ACCOUNT)
    assert stored is not None and stored.state is RiskState.HALTED
    st.stop("risk")
    st.stop("orders")  # a fresh order manager knows nothing of the halt ...
    st.start_orders()
    assert st.gate("s").entries
    st.start_risk()  # ... until the restarted risk manager closes the gate again
    status = st.risk_status()
    assert (status["state"], status["reason"]) == ("HALTED", "trailing_stop")
    assert not st.gate("s").entries and st.gate("s").exits
    assert st.gate("t").entries
    st.order("s-e2", Action.SELL)  # refused: no new exposure while halted
    assert st.db.order("s-e2") is None and st.broker_qty(CE) == 0
    answer = st.ask("risk", Command("unhalt", (("strategy", "s"),)))
    assert answer == {"ok": True, "states": {"s": "ACTIVE"}}
    st.settle()
    assert st.gate("s").entries
    stored = st.db.risk_state("s", ACCOUNT)
    assert stored is not None and (stored.state, stored.reason) == (RiskState.ACTIVE,
                                                                     "operator unhalt")
    assert [c.name for c in st.commands("s")][-1] == "unhalt"
    assert [e.kind for e in st.db.risk_events("s")] == ["trailing_stop"]
    st.order("s-e3", Action.SELL)  # a new cycle: its own trailing stop, nothing fires
    st.market(100.0)
    assert st.broker_qty(CE) == -65 and st.risk_status()["state"] == "ACTIVE"


def test_a_restarted_risk_manager_knows_the_days_realized_pnl_at_once(
        make: Callable[..., Stack]) -> None:
    """Found by the multi-day soak: the risk manager restarted after the day's last position
    closed showed realized 0 (no price moves a flat day, so no P&L came by itself)."""
    st = make()
    st.order("s-e1", Action.SELL)
    st.market(90.0)
    st.order("s-x1", Action.BUY)  # closed: a realized gain, nothing open
    st.settle()
    assert st.broker_qty(CE) == 0
    realized = st.risk_status()["realized"]
    assert realized and realized > 0
    st.stop("risk")
    st.start_risk()
    st.settle()
    assert st.risk_status()["realized"] == realized


# ---------------------------------------------------------------------------------------------
# An exit racing a stop that has just filled
# ---------------------------------------------------------------------------------------------


def assert_one_buy_and_flat(st: Stack) -> None:
    """The stop's BUY is the only one at the broker; flat there and, after polling, here."""
    buys = st.trades(CE, "BUY")
    assert len(buys) == 1 and buys[0].quantity == 65
    assert [o.pricetype for o in st.broker_orders(CE) if o.action == "BUY"] == ["SL"]
    assert st.broker_qty(CE) == 0
    st.advance(2.5, step=0.25)
    assert st.held() == {}
    assert st.broker_qty(CE) == 0 and len(st.trades(CE, "BUY")) == 1
    assert st.alerts("exit_done") and st.risk_status()["exit"] is None


@pytest.mark.parametrize("when", ["before_exit", "after_positionbook_read", "during_cancel"])
def test_an_exit_racing_a_filled_stop_sends_no_extra_buy_in_process(
        make: Callable[..., Stack], when: str) -> None:
    st = make(orders=replace(Options().orders, poll_interval_s=2.0),
              stream=when == "during_cancel")
    st.short_with_stop(trigger=110.0)
    st.market(100.0)

    def through() -> None:  # the market crosses the stop's trigger: it fills at the broker
        st.market(110.0, engine=False)

    if when == "before_exit":  # filled at the broker, not heard by the engine yet
        through()
    elif when == "after_positionbook_read":
        def read_then_fill(method: Callable[..., list[PositionRow]]) -> list[PositionRow]:
            rows = method()
            st.risk_broker.hooks.clear()
            through()
            return rows

        st.risk_broker.hooks["positionbook"] = read_then_fill
    else:
        def fill_then_cancel(method: Callable[..., str], **kw: Any) -> str:
            st.broker.hooks.clear()
            through()  # the stream reports the fill while the cancel is on its way
            return method(**kw)

        st.broker.hooks["cancel_order"] = fill_then_cancel
    flatten(st)
    st.advance(0.5)
    assert_one_buy_and_flat(st)
    if when != "before_exit":
        assert "cancel_order" in st.broker.names()
        assert any(a.kind == "replace_refused" for a in st.alerts())


@pytest.mark.parametrize("when", ["before_exit", "after_positionbook_read", "during_cancel"])
def test_an_exit_racing_a_filled_stop_sends_no_extra_buy_over_sockets(
        make: Callable[..., Stack], when: str) -> None:
    st = make(sockets=True, orders=replace(Options().orders, poll_interval_s=2.0))
    assert st.server is not None
    st.short_with_stop(trigger=110.0)
    st.market(100.0)

    def through() -> None:  # published to the server: the stop fills there
        st.market(110.0, engine=False)

    if when == "before_exit":
        through()
        flatten(st)
        st.advance(0.5)
    elif when == "after_positionbook_read":
        def read_then_fill(method: Callable[..., list[PositionRow]]) -> list[PositionRow]:
            rows = method()  # over HTTP
            st.risk_broker.hooks.clear()
            through()
            return rows

        st.risk_broker.hooks["positionbook"] = read_then_fill
        flatten(st)
        st.advance(0.5)
    else:  # the cancel request is held at the server while the stop fills
        st.server.faults.stall(1.0, endpoints="cancelorder")
        st.registry.tell("risk", Command("flatten", (("strategy", "s"),)))
        deadline = time.monotonic() + 10
        while st.server.rest_calls("cancelorder") == 0 and time.monotonic() < deadline:
            st.clock.advance_to(st.clock.time() + 0.05)  # the next request slot, no settling
            time.sleep(0.01)
        assert st.server.rest_calls("cancelorder") == 1
        through()
        st.advance(0.5)
    assert_one_buy_and_flat(st)
    assert st.server.rest_calls("placeorder") == 2  # the entry and the stop, nothing more


# ---------------------------------------------------------------------------------------------
# Positions unknown while the positionbook cannot be read
# ---------------------------------------------------------------------------------------------


def test_an_unreadable_positionbook_keeps_positions_unknown_and_the_stops_in_place(
        make: Callable[..., Stack]) -> None:
    st = make(sockets=True)
    assert st.server is not None
    st.short_with_stop(trigger=130.0)
    st.market(100.0)
    st.server.faults.http_error(503, count=1000, endpoints="positionbook")
    placed = len(st.broker.placed())
    flatten(st)
    st.advance(1.0)
    unknown = st.critical("positions_unknown")
    assert unknown and "UNKNOWN (not flat)" in unknown[0].message
    assert st.risk_status()["exit"] is not None  # not done
    assert st.alerts("exit_done") == []
    assert len(st.broker.placed()) == placed and "cancel_order" not in st.broker.names()
    [stop] = [o for o in st.broker_orders(CE) if o.pricetype == "SL"]
    assert stop.status == "trigger pending"
    assert working(st)["s-st1"].status is S.TRIGGER_PENDING
    reads = [t for name, _, t in st.risk_broker.calls if name == "positionbook"]
    # at once, then every exit_check_s (0.25 s; the clock moves in 0.05 s steps here)
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert len(reads) >= 4 and all(0.25 - 1e-6 <= gap <= 0.30 + 1e-6 for gap in gaps)
    assert st.broker_qty(CE) == -65
    st.server.faults.clear()  # readable again: the exit goes on
    st.advance(1.0)
    assert st.broker_qty(CE) == 0
    assert [o.status for o in st.broker_orders(CE) if o.pricetype == "SL"] == ["cancelled"]
    assert st.alerts("exit_done") and st.risk_status()["exit"] is None
    assert st.held() == {}


# ---------------------------------------------------------------------------------------------
# The exit procedure
# ---------------------------------------------------------------------------------------------


def test_working_entries_are_cancelled_before_anything_is_closed(
        make: Callable[..., Stack]) -> None:
    st = make()
    st.order("s-e1", Action.SELL)
    st.order("s-e2", Action.SELL, pricetype=PriceType.LIMIT, price=120.0)  # rests above
    st.order("s-t2", Action.SELL, strategy="t", pricetype=PriceType.LIMIT, price=120.0)
    st.market(100.0)
    n = len(st.broker.calls)
    flatten(st)
    st.advance(1.0)
    calls = [(name, kw) for name, kw, _ in st.broker.calls[n:]
             if name in ("cancel_order", "place_order")]
    entry = st.db.order("s-e2")
    assert entry is not None and entry.status is S.CANCELLED
    assert calls[0] == ("cancel_order", {"strategy": "s", "orderid": entry.broker_order_id})
    assert [kw["action"] for name, kw in calls if name == "place_order"] == ["BUY"]
    assert st.broker_qty(CE) == 0
    other = st.db.order("s-t2")
    assert other is not None and other.status is S.OPEN  # strategy t's entry is not touched


@pytest.mark.parametrize("short_stop_confirmed_late", [False, True])
def test_shorts_are_covered_before_longs_are_sold(make: Callable[..., Stack],
                                                  short_stop_confirmed_late: bool) -> None:
    st = make()
    st.short_with_stop(trigger=130.0)
    st.order("s-l1", Action.BUY, symbol=PE)  # a long without a stop
    st.market(100.0)
    st.market(100.0, PE)
    if short_stop_confirmed_late:  # the broker takes a moment to confirm the stop's cancel
        def cancel_later(method: Callable[..., str], **kw: Any) -> str:
            st.broker.hooks.clear()
            st.clock.call_later(0.3, lambda: st.sim.cancel_order(**kw))
            return str(kw["orderid"])

        st.broker.hooks["cancel_order"] = cancel_later
    n = len(st.broker.placed())
    flatten(st)
    st.advance(2.0)
    sides = [(kw["action"], kw["symbol"]) for kw in st.broker.placed()[n:]]
    assert sides == [("BUY", CE), ("SELL", PE)]
    assert (st.broker_qty(CE), st.broker_qty(PE)) == (0, 0)
    assert st.held() == {}
    assert st.alerts("exit_done")


def test_a_rejected_exit_is_retried_verified_then_alerted_and_never_called_done(
        make: Callable[..., Stack]) -> None:
    st = make()
    st.order("s-e1", Action.SELL)
    st.market(100.0)
    st.sim.force_rejections(3, "RMS: margin shortfall")
    n = len(st.risk_broker.calls)
    flatten(st)
    st.advance(3.0)
    exits = [kw for kw in st.broker.placed() if kw["action"] == "BUY"]
    assert len(exits) == RISK.exit_retries == 3
    assert [o.status for o in st.broker_orders(CE) if o.action == "BUY"] == ["rejected"] * 3
    # each attempt follows a fresh read of the broker's positions
    names = [name for name, _, _ in st.risk_broker.calls[n:]]
    assert names.count("positionbook") >= 4
    [failed] = st.critical("exit_failed")
    assert "after 3 exit attempts" in failed.message
    assert st.broker_qty(CE) == -65
    assert st.alerts("exit_done") == [] and st.risk_status()["exit"]["gave_up"] == [CE]
    st.advance(2.0)
    assert len([kw for kw in st.broker.placed() if kw["action"] == "BUY"]) == 3  # no more
    assert len(st.critical("exit_failed")) == 1
    st.direct("BUY")  # the operator closes it by hand
    st.advance(0.5)
    assert st.alerts("exit_done")
    assert "flat" in st.alerts("exit_done")[0].message


def test_a_rejected_exit_succeeds_on_a_later_attempt(make: Callable[..., Stack]) -> None:
    st = make()
    st.order("s-e1", Action.SELL)
    st.market(100.0)
    st.sim.force_rejections(2, "RMS: try later")
    flatten(st)
    st.advance(3.0)
    statuses = [o.status for o in st.broker_orders(CE) if o.action == "BUY"]
    assert statuses == ["rejected", "rejected", "complete"]
    assert st.broker_qty(CE) == 0 and st.held() == {}
    assert st.critical("exit_failed") == []
    assert st.alerts("exit_done")


def test_an_exit_all_from_the_strategy_halts_and_exits(make: Callable[..., Stack]) -> None:
    st = make()
    st.short_with_stop(trigger=130.0)
    st.market(100.0)
    st.tell("risk", ExitAll("s", "strategy: done for the day", st.clock.time(), ACCOUNT))
    st.advance(1.0)
    assert st.broker_qty(CE) == 0
    assert st.risk_status()["state"] == "HALTED"
    assert [e.kind for e in st.db.risk_events("s")] == ["strategy: done for the day"]
    assert st.alerts("exit_done")
