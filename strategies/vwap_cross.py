"""vwap_cross: a small, complete example strategy. Read it top to bottom to write your own.

The idea: buy an option when its one-minute close crosses above its session VWAP, protect the
position with a fixed stop, and sell whatever is left at the end of the day. It shows every
part a strategy has: a settings dataclass (its ``[vwap_cross]`` config section), the hooks the
host calls, orders through ``self.ctx``, a protective stop per fill, a timer, a snapshot for
restarts and ``record_trade`` for the trade table.

Setting ``name`` registers it (the engine finds every strategy of this package, of the folders in
``[engine] strategy_paths`` and of installed entry points); run it with ``run.py replay
--strategy vwap_cross``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from engine.market.instruments import (
    INDEX_SYMBOL,
    OPTION_EXCHANGE,
    atm_strike,
    next_expiry,
    option_symbol,
    round_to_tick,
    trading_date,
)
from engine.messages import Action, Bar, Fill, OrderPurpose, PriceType, TimerFired
from engine.runtime.clock import IST, to_ist
from engine.settings import setting
from strategies.base import Strategy, StrategyContext


# 1. Tunables: one frozen dataclass; every field has a default, a one-line help and a range.
@dataclass(frozen=True, slots=True)
class VwapCrossSettings:
    symbol: str = setting("", "option to trade; empty: the at-the-money call of the nearest "
                          "expiry, picked from the first NIFTY index bar")
    lots: int = setting(1, "lots bought per entry", min=1, max=100)
    stop_points: float = setting(10.0, "stop trigger this many rupees below the fill price",
                                 min=0.05, max=1000.0)
    stop_slippage: float = setting(2.0, "stop limit this many rupees below its trigger",
                                   min=0.0, max=1000.0)
    max_trades: int = setting(3, "most entries per day", min=1, max=100)
    exit_time: str = setting("15:15", "end-of-day exit (and no entries after), IST HH:MM")


class VwapCross(Strategy):
    name = "vwap_cross"
    settings_class = VwapCrossSettings

    def __init__(self, ctx: StrategyContext, settings: VwapCrossSettings | None = None) -> None:
        super().__init__(ctx, settings or VwapCrossSettings())
        self.cfg: VwapCrossSettings = self.settings
        self.exit_at = time.fromisoformat(self.cfg.exit_time)
        # 2. State: plain values only, so snapshot() can return them as JSON.
        self.state: dict[str, Any] = {
            "symbol": self.cfg.symbol, "above": None, "entry_id": None, "stops": [],
            "qty": 0, "entry_price": 0.0, "entry_ts": 0.0, "sold_value": 0.0, "sold_qty": 0,
            "trades": 0, "day_over": False}

    # 3. Restarts: the host persists snapshot() after every hook and hands it back on restart.
    def snapshot(self) -> dict[str, Any]:
        return dict(self.state)

    def restore(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)

    # 4. Timers are not restored: schedule what you need in on_start (engine time, IST).
    def on_start(self) -> None:
        day = trading_date(self.ctx.now())
        self.ctx.schedule_at(datetime.combine(day, self.exit_at, IST).timestamp(), "exit")

    # 5. Market data. Bars of every subscribed symbol arrive here, history backfill included.
    def on_bar(self, bar: Bar) -> None:
        s = self.state
        if not s["symbol"] and bar.symbol == INDEX_SYMBOL:
            expiry = next_expiry(trading_date(bar.start), self.ctx.instrument)
            strike = atm_strike(bar.close, self.ctx.instrument.strike_step)
            s["symbol"] = option_symbol(INDEX_SYMBOL, expiry, strike, "CE")
        if bar.symbol != s["symbol"] or bar.source != "live":
            return  # not ours, or backfill (never trade on history)
        above = bar.close > bar.vwap
        crossed_up = s["above"] is False and above
        s["above"] = above
        late = to_ist(self.ctx.now()).time() >= self.exit_at
        if (crossed_up and s["qty"] == 0 and s["entry_id"] is None and not s["day_over"]
                and s["trades"] < self.cfg.max_trades and not late
                # can_trade is False until startup reconciliation and while paused
                and self.ctx.can_trade):
            # 6. Orders: emit an intent; the order manager executes it. Never block, never
            #    assume it worked: the outcome comes back as on_order_event / on_fill.
            s["entry_id"] = self.ctx.place(
                symbol=bar.symbol, exchange=OPTION_EXCHANGE, action=Action.BUY,
                quantity=self.cfg.lots * self.ctx.instrument.lot_size,
                pricetype=PriceType.MARKET, purpose=OrderPurpose.ENTRY,
                reason=f"close {bar.close} crossed above VWAP {bar.vwap:.2f}")
            s["trades"] += 1

    # 7. Fills: each arrives exactly once. Cover every entry fill with a stop right away.
    def on_fill(self, fill: Fill) -> None:
        s = self.state
        if fill.client_id == s["entry_id"]:
            if s["qty"] == 0:
                s["entry_ts"], s["sold_value"], s["sold_qty"] = fill.ts, 0.0, 0
            s["entry_price"] = (s["entry_price"] * s["qty"] + fill.price * fill.quantity) / (
                s["qty"] + fill.quantity)
            s["qty"] += fill.quantity
            tick = self.ctx.instrument.tick_size
            trigger = round_to_tick(fill.price - self.cfg.stop_points, tick)
            s["stops"].append(self.ctx.place(
                symbol=fill.symbol, exchange=fill.exchange, action=Action.SELL,
                quantity=fill.quantity, pricetype=PriceType.SL, trigger_price=trigger,
                price=max(tick, round_to_tick(trigger - self.cfg.stop_slippage, tick)),
                purpose=OrderPurpose.STOP, parent_id=fill.client_id, reason="fixed stop"))
            if s["qty"] >= self.cfg.lots * self.ctx.instrument.lot_size:
                s["entry_id"] = None
            return
        if fill.action is Action.SELL and s["qty"] > 0:  # a stop or the day's exit
            s["qty"] -= fill.quantity
            s["sold_value"] += fill.price * fill.quantity
            s["sold_qty"] += fill.quantity
            if s["qty"] == 0:
                exit_price = s["sold_value"] / s["sold_qty"]
                pnl = (exit_price - s["entry_price"]) * s["sold_qty"]
                risk = self.cfg.stop_points * s["sold_qty"]
                # 8. Closed trades go to the trades table (engine.trading.trades prints them).
                self.ctx.record_trade(
                    symbol=fill.symbol, action=Action.BUY, quantity=s["sold_qty"],
                    entry_ts=s["entry_ts"], entry_price=s["entry_price"], exit_ts=fill.ts,
                    exit_price=round(exit_price, 4), pnl=round(pnl, 2),
                    r_multiple=round(pnl / risk, 4), exit_client_id=fill.client_id,
                    exit_reason="stop" if fill.purpose is OrderPurpose.STOP else "eod")
                s["stops"], s["entry_price"] = [], 0.0

    # 9. The day's exit: ask the engine's exit coordinator (the one exit path): it cancels the
    #    working entry, then replaces each resting stop by a market sell only once the broker
    #    confirms the stop cancelled, so a stop that already filled is never sold twice. (The
    #    risk manager also exits every strategy at its own [risk] eod_exit.)
    def on_timer(self, timer: TimerFired) -> None:
        if timer.name != "exit":
            return
        self.state["day_over"] = True
        self.ctx.exit_all("eod")

    # 10. When any exit starts (a risk limit, the day's end, an operator flatten), stop trading.
    def on_exit(self, reason: str) -> None:
        self.state["day_over"] = True
