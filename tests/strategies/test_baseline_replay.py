"""baseline_v1 through the real actors in a replay: bar builders → swing detector → strategy host
→ order manager → the simulated broker, on the virtual clock, with a real SQLite store.

A handcrafted session forces one trade: heavy early volume near 180 holds the VWAP down; a swing
low at 200 (09:20, its bar's high 211) is confirmed at 09:23; the highest high from the swing
bar on is 211 (stop 212, 12 points: 8 lots); at 09:24:30 the price trades through 199.95 (the
entry fills at 199.90), and at 09:26:40 it reaches 212.50 (the protective stop fills). A
generated session checks that two replays produce identical orders."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

from actors.order_manager import OrderSettings
from engine.app.replay import ReplayDriver, ReplaySummary
from engine.app.sections import load_config
from engine.app.tree import EngineParts
from engine.config import Config
from engine.market.session_file import SessionWriter, SymbolInfo
from engine.market.synth import small_session
from engine.messages import Action, OrderPurpose, OrderStatus, PriceType, SwingKind, Tick
from engine.runtime.clock import ist_epoch
from engine.store.database import Database
from engine.trading.trades import trade_table
from strategies.baseline_v1 import BaselineSettings

DAY = date(2025, 1, 30)
CE = "NIFTY30JAN2524000CE"
START = ist_epoch(2025, 1, 30, 9, 15)
# one minute each from 09:15: price anchors (second, price) joined by straight lines; volume
PLAN: list[tuple[list[tuple[int, float]], int]] = [
    ([(0, 180), (15, 181), (30, 179), (58, 180)], 100_000),
    ([(0, 180), (15, 181), (30, 179), (58, 180)], 100_000),
    ([(0, 180), (15, 181), (30, 179), (58, 180.5)], 100_000),
    ([(0, 181), (10, 180.5), (40, 206), (58, 205)], 1_000),
    ([(0, 205), (10, 204), (40, 212), (58, 210)], 1_000),
    ([(0, 210), (10, 211), (40, 200), (58, 202)], 1_000),  # 09:20: the swing low, 200
    ([(0, 202), (10, 201), (40, 208), (58, 207)], 1_000),
    ([(0, 207), (10, 209), (40, 203), (58, 208.5)], 1_000),
    ([(0, 208.5), (10, 205), (40, 209), (58, 208.9)], 1_000),  # 09:23: confirms it
    ([(0, 208.9), (10, 209), (20, 208), (30, 199.9), (40, 198), (58, 199)], 1_000),  # break
    ([(0, 199), (10, 198.5), (40, 205), (58, 204)], 1_000),
    ([(0, 204), (10, 203.5), (40, 212.5), (58, 210.5)], 1_000),  # 09:26: through the stop
    ([(0, 210.5), (10, 211), (40, 209), (58, 210)], 1_000),
]


def planned_ticks() -> Iterator[Tick]:
    cumulative = 0
    for minute, (anchors, volume) in enumerate(PLAN):
        for second in range(0, 60, 2):
            price = anchors[-1][1]
            for (s0, p0), (s1, p1) in pairwise(anchors):
                if s0 <= second <= s1:
                    price = p0 + (p1 - p0) * (second - s0) / (s1 - s0)
                    break
            cumulative += volume // 30
            ts = START + 60 * minute + second
            yield Tick(CE, "NFO", round(round(price / 0.05) * 0.05, 2), ts, ts, cumulative)


def handcrafted_session(path: Path) -> Path:
    with SessionWriter(path, symbols=[SymbolInfo.for_symbol(CE, "NFO")],
                       meta={"purpose": "baseline_v1 replay test"}) as writer:
        writer.extend(planned_ticks())
    return path


#: filters opened wide, so a short generated session makes many orders, switches and trades
BUSY = BaselineSettings(vwap_premium_min=-1.0, sl_pct_min=0.0, sl_pct_max=0.5, price_min=1.0,
                        price_max=10_000.0)


def config(strategy: BaselineSettings) -> Config:
    return load_config(None).replace(orders=OrderSettings(), baseline_v1=strategy)


def trade_baseline(parts: EngineParts) -> None:
    parts.strategies = ("baseline_v1",)
    parts.open_gate_at_start = True


def replay(session: Path, db_path: Path,
           strategy: BaselineSettings | None = None) -> ReplaySummary:
    driver = ReplayDriver(config(strategy or BaselineSettings()), session, db_path=db_path,
                          progress=False, parts_hook=trade_baseline)
    return driver.run()


def orders_and_fills(db_path: Path, strategy: str = "baseline_v1",
                     day: date = DAY) -> tuple[list[Any], list[Any], str]:
    """Every order of the day (with its final state), every fill and the trade table."""
    with Database(db_path) as db:
        orders = [(o.client_id, o.symbol, o.action, o.quantity, o.pricetype, o.price,
                   o.trigger_price, o.purpose, o.status, o.filled_quantity, o.average_price,
                   o.created_ts) for o in db.orders(trading_date=day)]
        fills = [(f.client_id, f.quantity, f.price, f.cumulative_quantity, f.ts)
                 for f in db.fills(trading_date=day)]
        table = trade_table(db.trades(strategy=strategy, trading_date=day))
    return orders, fills, table


def test_a_swing_break_is_traded_and_stopped_out(tmp_path: Path) -> None:
    session = handcrafted_session(tmp_path / "session.sqlite")
    summary = replay(session, tmp_path / "engine.db")
    assert summary.stuck_steps == 0 and summary.restarts == 0
    with Database(tmp_path / "engine.db") as db:
        entry, stop = db.orders(trading_date=DAY)
        assert (entry.client_id, entry.action, entry.pricetype, entry.quantity,
                entry.trigger_price, entry.price, entry.purpose) == (
            "baseline_v1-250130-00001", Action.SELL, PriceType.SL, 520, 199.95, 196.95,
            OrderPurpose.ENTRY)
        assert (entry.status, entry.filled_quantity, entry.average_price) == (
            OrderStatus.COMPLETE, 520, 199.9)
        assert entry.created_ts == ist_epoch(2025, 1, 30, 9, 24, 2.5)  # first evaluation
        assert (stop.client_id, stop.action, stop.pricetype, stop.quantity, stop.trigger_price,
                stop.price, stop.purpose, stop.parent_id) == (
            "baseline_v1-250130-00002", Action.BUY, PriceType.SL, 520, 212.0, 215.0,
            OrderPurpose.STOP, entry.client_id)
        assert (stop.status, stop.average_price) == (OrderStatus.COMPLETE, 212.5)
        assert [(f.client_id, f.quantity, f.price) for f in db.fills(trading_date=DAY)] == [
            (entry.client_id, 520, 199.9), (stop.client_id, 520, 212.5)]
        [trade] = db.trades(strategy="baseline_v1", trading_date=DAY)
        assert (trade.symbol, trade.action, trade.quantity, trade.entry_price, trade.exit_price,
                trade.pnl, trade.r_multiple, trade.exit_reason) == (
            CE, Action.SELL, 520, 199.9, 212.5, -6552.0, -1.05, "stop")
        assert trade.entry_ts == ist_epoch(2025, 1, 30, 9, 24, 30)
        # R in the default unit, the position's own risk: 520 x 12 = 6,240
        assert db.realized_r("baseline_v1", DAY) == -1.05
        lows = [s for s in db.swings(CE, DAY) if s.kind is SwingKind.LOW]
        assert (lows[1].price, lows[1].bar_start) == (200.0, START + 300)
        assert any(b.price == 200.0 and b.by == "tick" for b in db.swing_breaks(CE, DAY))
        state = db.strategy_state("strategy.baseline_v1")
        assert state is not None and state.state["seq"] == 2
        assert state.state["strategy"]["traded"] == [CE]


def test_two_replays_give_identical_orders_fills_and_trades(tmp_path: Path) -> None:
    session = handcrafted_session(tmp_path / "session.sqlite")
    replay(session, tmp_path / "one.db")
    replay(session, tmp_path / "two.db")
    one, two = orders_and_fills(tmp_path / "one.db"), orders_and_fills(tmp_path / "two.db")
    assert one == two
    assert len(one[0]) == 2 and "-6552.00" in one[2]


def test_a_generated_session_replays_identically(tmp_path: Path) -> None:
    """Ten options and the index for 20 minutes: bars of many symbols close together, entries
    are placed, cancelled and filled, stops are hit."""
    session = tmp_path / "synth.sqlite"
    small_session(session, date=DAY, seed=1, symbols=2, minutes=20, start="09:15")
    replay(session, tmp_path / "one.db", BUSY)
    replay(session, tmp_path / "two.db", BUSY)
    one, two = orders_and_fills(tmp_path / "one.db"), orders_and_fills(tmp_path / "two.db")
    orders, fills, table = one
    assert len(orders) >= 8 and len(fills) >= 4 and "stop" in table
    assert {o[7] for o in orders} == {OrderPurpose.ENTRY, OrderPurpose.STOP}
    assert one == two
