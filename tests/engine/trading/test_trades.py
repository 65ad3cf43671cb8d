"""The trade table and day summary: numbers, deterministic formatting, persistence."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date
from pathlib import Path

from actors.store import StoreWriter
from engine.messages import Action, Ping
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.store.database import Database, StoredTrade, record
from engine.trading.trades import (
    TradeSummary,
    day_report,
    load_summary,
    store_summary,
    summarize,
    trade_table,
)

DAY = date(2025, 1, 30)
T = ist_epoch(2025, 1, 30, 9, 30)


def trade(k: int, pnl: float, symbol: str = "NIFTY30JAN2524000CE") -> StoredTrade:
    return StoredTrade(strategy="baseline_v1", account="acct", symbol=symbol, trading_date=DAY,
                       action=Action.SELL, quantity=650, entry_ts=T + 600 * k,
                       entry_price=200.0, exit_ts=T + 600 * k + 300,
                       exit_price=200.0 - pnl / 650, pnl=pnl, r_multiple=pnl / 6500,
                       entry_client_id=f"e{k}", exit_client_id=f"x{k}", exit_reason="stop")


TRADES = [trade(0, 3250.0), trade(1, -6500.0), trade(2, -1300.0), trade(3, 9750.0),
          trade(4, 0.0, "NIFTY30JAN2524000PE")]


def test_summary_numbers() -> None:
    s = summarize(TRADES)
    assert s == TradeSummary(trades=5, wins=2, losses=2, total_r=0.8, pnl=5200.0,
                             max_drawdown=7800.0, max_drawdown_r=1.2)
    assert summarize([]) == TradeSummary(0, 0, 0, 0.0, 0.0, 0.0, 0.0)


def test_drawdown_is_measured_from_zero() -> None:
    assert summarize([trade(0, -1000.0), trade(1, 500.0)]).max_drawdown == 1000.0


def test_table_is_deterministic_whatever_the_input_order() -> None:
    table = trade_table(TRADES)
    shuffled = TRADES[:]
    random.Random(7).shuffle(shuffled)
    assert trade_table(shuffled) == table
    lines = table.splitlines()
    assert lines[0].split() == ["symbol", "side", "qty", "entry", "price", "exit", "price",
                                "pnl", "R", "reason"]
    assert lines[2].split() == ["NIFTY30JAN2524000CE", "SELL", "650", "09:30:00", "200.00",
                                "09:35:00", "195.00", "+3250.00", "+0.50", "stop"]
    assert lines[-1] == ("trades 5 | wins 2 | losses 2 | total R +0.80 | P&L ₹5,200.00 | "
                         "max drawdown ₹7,800.00 (1.20 R)")
    assert len(lines) == 2 + 5 + 1


def test_empty_table() -> None:
    assert "(no closed trades)" in trade_table([])


def test_summary_and_report_round_trip_through_the_store(tmp_path: Path) -> None:
    clock = VirtualClock(T)
    registry = Registry(clock)
    db = Database(tmp_path / "engine.db")
    ref = StoreWriter.start(db, name="store", clock=clock)
    registry.declare("store")
    registry.register("store", ref)
    try:
        for t in TRADES:
            registry.tell("store", record(t))
        summary = store_summary(registry, TRADES, strategy="baseline_v1", account="acct",
                                day=DAY, ts=T + 7200)
        registry.ask("store", Ping(0), timeout=10)
        assert load_summary(db, "baseline_v1", "acct", DAY) == summary
        assert load_summary(db, "baseline_v1", "acct", date(2025, 1, 31)) is None
        report = day_report(db, "baseline_v1", DAY)
        assert report.splitlines()[0] == "[TRADES] baseline_v1 2025-01-30"
        assert report.splitlines()[1:] == trade_table(TRADES).splitlines()
    finally:
        ref.stop(timeout=10)
        db.close()


def test_the_summary_names_the_unit_the_trades_recorded() -> None:
    own = [replace(t, r_unit="position") for t in TRADES]
    assert summarize(own).r_unit == "position"
    table = trade_table(own).splitlines()
    assert len(table[0].split()) == 10  # one unit: no unit column
    assert table[-1].startswith("trades 5 |") and "total R +0.80 (own risk per trade)" in table[-1]
    mixed = [*own[:4], replace(own[4], r_unit="fixed")]
    assert summarize(mixed).r_unit == "mixed"
    table = trade_table(mixed).splitlines()
    assert table[0].split()[-3:] == ["R", "unit", "reason"]
    assert table[6].split()[-4:] == ["+0.00", "fixed", "R", "stop"]
    assert "(mixed units)" in table[-1]
    assert summarize([*TRADES[:1], own[1]]).r_unit == "mixed"  # an old row says nothing
