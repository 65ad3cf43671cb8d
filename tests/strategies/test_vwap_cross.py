"""The vwap_cross example strategy against a fake context."""

from __future__ import annotations

from collections.abc import Mapping

from engine.messages import (
    Action,
    Bar,
    Fill,
    OrderPurpose,
    OrderStatus,
    PriceType,
    TimerFired,
)
from engine.runtime.clock import ist_epoch
from strategies.base import OrderView
from strategies.vwap_cross import VwapCross, VwapCrossSettings
from tests.strategies.test_baseline_v1 import FakeContext

T = ist_epoch(2025, 1, 27, 9, 20)  # a Monday: the nearest expiry is Tuesday 28 Jan
ATM_CE = "NIFTY28JAN2524050CE"


class Context(FakeContext):
    """Reports every order it placed as working (what the exit needs to see)."""

    def orders(self, *, working_only: bool = True) -> Mapping[str, OrderView]:
        return {p["client_id"]: OrderView(
            p["client_id"], p["symbol"], p["action"], p["quantity"], p["pricetype"],
            p.get("price", 0.0), p.get("trigger_price", 0.0), p["purpose"],
            OrderStatus.TRIGGER_PENDING) for p in self.placed}


def make(**overrides: object) -> tuple[VwapCross, Context]:
    ctx = Context(T)
    strat = VwapCross(ctx, VwapCrossSettings(**overrides))  # type: ignore[arg-type]
    strat.on_start()
    strat.on_bar(Bar("NIFTY", T - 60, 24_000, 24_040, 23_990, 24_030, 0, 50, 24_020))
    return strat, ctx


def option_bar(strat: VwapCross, k: int, close: float, vwap: float,
               source: str = "live") -> None:
    strat.on_bar(Bar(ATM_CE, T + 60 * k, close, close + 1, close - 1, close, 100, 10, vwap,
                     source))


def test_picks_the_atm_call_and_schedules_the_exit() -> None:
    strat, ctx = make()
    assert strat.snapshot()["symbol"] == ATM_CE
    assert ctx.timers == [(ist_epoch(2025, 1, 27, 15, 15), "exit")]


def test_buys_when_the_close_crosses_above_vwap() -> None:
    strat, ctx = make()
    option_bar(strat, 0, 100.0, 101.0, "history")
    option_bar(strat, 1, 102.0, 101.0, "history")  # a cross in the backfill: not traded
    option_bar(strat, 2, 100.0, 101.0)
    assert ctx.placed == []
    option_bar(strat, 3, 101.5, 101.0)
    [entry] = ctx.placed
    assert (entry["symbol"], entry["action"], entry["pricetype"], entry["quantity"]) == (
        ATM_CE, Action.BUY, PriceType.MARKET, 65)


def test_each_fill_gets_a_stop_and_the_stop_closes_the_trade() -> None:
    strat, ctx = make(stop_points=10.0, stop_slippage=2.0)
    option_bar(strat, 0, 100.0, 101.0)
    option_bar(strat, 1, 102.0, 101.0)
    [entry] = ctx.placed
    strat.on_fill(Fill(entry["client_id"], "B1", "vwap_cross", "acct", ATM_CE, "NFO",
                       Action.BUY, 65, 102.5, 65, T + 121, OrderPurpose.ENTRY))
    stop = ctx.placed[-1]
    assert (stop["action"], stop["pricetype"], stop["trigger_price"], stop["price"],
            stop["quantity"]) == (Action.SELL, PriceType.SL, 92.5, 90.5, 65)
    strat.on_fill(Fill(stop["client_id"], "B2", "vwap_cross", "acct", ATM_CE, "NFO",
                       Action.SELL, 65, 92.0, 65, T + 600, OrderPurpose.STOP))
    [trade] = ctx.trades
    assert (trade["pnl"], trade["r_multiple"], trade["exit_reason"]) == (-682.5, -1.05, "stop")


def test_the_day_exit_goes_to_the_exit_coordinator() -> None:
    strat, ctx = make()
    option_bar(strat, 0, 100.0, 101.0)
    option_bar(strat, 1, 102.0, 101.0)
    [entry] = ctx.placed
    strat.on_fill(Fill(entry["client_id"], "B1", "vwap_cross", "acct", ATM_CE, "NFO",
                       Action.BUY, 65, 102.5, 65, T + 121, OrderPurpose.ENTRY))
    assert ctx.placed[-1]["purpose"] is OrderPurpose.STOP
    strat.on_timer(TimerFired("exit", ist_epoch(2025, 1, 27, 15, 15)))
    assert ctx.exits == ["eod"] and ctx.replaces == [] and ctx.cancels == []
    option_bar(strat, 2, 100.0, 101.0)
    option_bar(strat, 3, 102.0, 101.0)
    assert len(ctx.placed) == 2  # no entry after the exit


def test_no_entry_while_the_context_cannot_trade() -> None:
    strat, ctx = make()
    ctx.trading = False
    option_bar(strat, 0, 100.0, 101.0)
    option_bar(strat, 1, 102.0, 101.0)
    assert ctx.placed == []
