"""What the day report shows, read from an engine database: ``DayData`` and ``load_day``.

Owns the reading side of the report (``run.py report``) and its settings (section ``[report]``).
The database is opened like any engine database (WAL; an older schema is migrated first) and only
read. A missing, foreign or unreadable database and a bad date raise ``ReportError`` with a
one-line message.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from engine.market.instruments import INDEX_SYMBOL
from engine.market.instruments import trading_date as ist_trading_date
from engine.messages import (
    Bar,
    Fill,
    OrderEvent,
    RiskEvent,
    Swing,
    SwingBroken,
)
from engine.report.candles import SymbolDay, read_symbol_day
from engine.settings import setting
from engine.store.database import Correction, Database, StoredOrder, StoredTrade, StoreError
from engine.trading.charges import ChargeSettings
from engine.trading.trades import TradeSummary, ordered, summarize


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Section ``[report]``: the size of the backtest report's static (PNG) charts."""

    dpi: int = setting(100, "chart resolution in dots per inch", min=50, max=300)
    chart_width_in: float = setting(11.0, "chart width in inches", min=4.0, max=30.0)


class ReportError(Exception):
    """The report cannot be made: the database is missing or unreadable, or the date is bad."""


@dataclass(frozen=True, slots=True)
class DayData:
    """Everything one report shows, read from the database in one go."""

    db_path: Path
    day: date
    strategy: str | None  # the one asked for; None: every strategy
    strategies: tuple[str, ...]  # the strategies with orders or trades that day
    accounts: tuple[str, ...]
    trades: tuple[StoredTrade, ...]  # in ``engine.trading.trades.ordered`` order
    symbol: str | None  # the symbol charted as candles
    bars: tuple[Bar, ...]
    swings: tuple[Swing, ...]
    breaks: tuple[SwingBroken, ...]
    orders: tuple[StoredOrder, ...]  # of ``symbol``
    fills: tuple[Fill, ...]  # of ``symbol``
    risk_events: tuple[RiskEvent, ...]
    corrections: tuple[Correction, ...]
    charges: ChargeSettings | None = None  # ``[charges]``: net P&L beside gross (None: gross)
    # every traded symbol (``symbol`` first), then NIFTY spot: the interactive candle charts
    charts: tuple[SymbolDay, ...] = ()
    # the order log: every order of the day (any symbol) with its recorded state changes
    order_log: tuple[tuple[StoredOrder, tuple[OrderEvent, ...]], ...] = ()

    @property
    def summary(self) -> TradeSummary:
        return summarize(self.trades, self.charges)


# ---------------------------------------------------------------------------------------------
# Reading the day
# ---------------------------------------------------------------------------------------------


def load_day(db_path: str | os.PathLike[str], *, trading_date: date | str | None = None,
             symbol: str | None = None, strategy: str | None = None,
             charges: ChargeSettings | None = None) -> DayData:
    """Read what the report of one day shows; the day defaults to the latest one recorded.
    ``charges``: the rates its net P&L is computed with."""
    path = Path(db_path)
    if not path.is_file():
        raise ReportError(f"{path}: no such database file")
    day = parse_day(trading_date) if trading_date is not None else None
    try:
        with Database(path) as db:
            return _read(db, path, day, symbol or None, strategy or None, charges)
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    except DBAPIError as exc:
        raise ReportError(f"{path}: cannot be read: {exc.orig}") from None
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: cannot be read: {exc}") from None


def parse_day(value: date | str) -> date:
    """A trading date given as a ``date`` or ``YYYY-MM-DD``; ``ReportError`` otherwise."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportError(f"bad date {value!r}: expected YYYY-MM-DD") from None


def _read(db: Database, path: Path, day: date | None, symbol: str | None,
          strategy: str | None, charges: ChargeSettings | None = None) -> DayData:
    if day is None:
        day = latest_day(db, path, strategy)
    trades = tuple(ordered(db.trades(strategy=strategy, trading_date=day)))
    orders = db.orders(trading_date=day, strategy=strategy)
    fills = db.fills(strategy=strategy, trading_date=day)
    if symbol is None:
        symbol = _most_traded(trades, fills, orders)
    owners = [*trades, *orders]
    charted = dict.fromkeys([*([symbol] if symbol else []), *(t.symbol for t in trades),
                             *(f.symbol for f in fills), INDEX_SYMBOL])
    return DayData(
        db_path=path, day=day, strategy=strategy,
        strategies=tuple(sorted({o.strategy for o in owners})),
        accounts=tuple(sorted({o.account for o in owners})),
        trades=trades, symbol=symbol, charges=charges,
        bars=tuple(db.bars(symbol, day)) if symbol else (),
        swings=tuple(db.swings(symbol, day)) if symbol else (),
        breaks=tuple(db.swing_breaks(symbol, day)) if symbol else (),
        orders=tuple(o for o in orders if o.symbol == symbol),
        fills=tuple(f for f in fills if f.symbol == symbol),
        risk_events=tuple(db.risk_events(strategy=strategy, trading_date=day)),
        corrections=tuple(db.corrections(trading_date=day, strategy=strategy)),
        charts=tuple(read_symbol_day(db, name, day, orders, fills) for name in charted),
        order_log=tuple((o, tuple(db.order_events(o.client_id))) for o in orders),
    )


def latest_day(db: Database, path: Path, strategy: str | None = None) -> date:
    """The latest trading day with orders, fills, trades, risk events or corrections in ``db``
    (``ReportError`` when there is none)."""
    days = {t.trading_date for t in db.trades(strategy=strategy)}
    days |= {o.trading_date for o in db.orders(strategy=strategy)}
    days |= {ist_trading_date(f.ts) for f in db.fills(strategy=strategy)}
    days |= {ist_trading_date(e.ts) for e in db.risk_events(strategy=strategy)}
    days |= {c.trading_date for c in db.corrections(strategy=strategy)}
    if not days:
        whose = f" of strategy {strategy!r}" if strategy else ""
        raise ReportError(f"{path}: no trading day recorded{whose} (no orders, fills, trades, "
                          f"risk events or corrections); pass --date")
    return max(days)


def _most_traded(trades: Sequence[StoredTrade], fills: Sequence[Fill],
                 orders: Sequence[StoredOrder]) -> str | None:
    """The symbol with the most trades, else the most fills, else the most orders (on a tie,
    the one that came first: trades by exit time, fills and orders as recorded)."""
    for rows in (trades, fills, orders):
        counts = Counter(r.symbol for r in rows)
        if counts:
            return counts.most_common(1)[0][0]
    return None


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
