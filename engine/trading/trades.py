"""The closed-trade table and the day summary of a strategy, from the store's ``trades`` rows.

Owns how a day's trades are shown and summed up: ``trade_table`` (one line per trade: symbol,
side, quantity, entry time and price, exit time and price, P&L, R, exit reason), ``summarize``
(trades, wins, losses, total R, P&L and the maximum drawdown of the closed-trade equity curve)
and ``store_summary`` / ``load_summary`` (the summary kept in the database as the
``strategy_state`` row ``summary.<strategy>.<account>.<YYYY-MM-DD>``).

Formatting is deterministic: trades are ordered by exit time, entry time, symbol and client ids,
numbers have fixed decimals and times are IST, so two replays of one session print byte-identical
tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Protocol

from engine.messages import StoreRecord
from engine.runtime.clock import to_ist
from engine.store.database import Database, StoredStrategyState, StoredTrade, record

SUMMARY_VERSION = 1

#: how each ``[risk] r_unit`` is named where R is shown
R_UNIT_NAMES = {"position": "own risk per trade", "fixed": "fixed R"}

_COLUMNS: tuple[tuple[str, int, str], ...] = (
    # (title, width, alignment)
    ("symbol", 20, "<"), ("side", 4, "<"), ("qty", 5, ">"), ("entry", 8, "<"),
    ("price", 9, ">"), ("exit", 8, "<"), ("price", 9, ">"), ("pnl", 11, ">"), ("R", 6, ">"),
    ("reason", 0, "<"),
)


class Sender(Protocol):
    """Anything that can tell a named actor (``Engine``, ``Registry``, an ``EngineActor``)."""

    def tell(self, name: str, message: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class TradeSummary:
    """The day in numbers. Drawdowns are positive amounts below the running peak (from 0)."""

    trades: int
    wins: int
    losses: int
    total_r: float
    pnl: float
    max_drawdown: float
    max_drawdown_r: float
    r_unit: str = ""  # the ``[risk] r_unit`` the R figures are in ("": not said)

    def line(self) -> str:
        unit = f" ({r_unit_name(self.r_unit)})" if self.r_unit else ""
        return (f"trades {self.trades} | wins {self.wins} | losses {self.losses} | "
                f"total R {self.total_r:+.2f}{unit} | P&L {_money(self.pnl)} | max drawdown "
                f"{_money(self.max_drawdown)} ({self.max_drawdown_r:.2f} R)")


def r_unit_name(r_unit: str) -> str:
    """What R means under ``[risk] r_unit``, for reports."""
    return R_UNIT_NAMES.get(r_unit, r_unit)


def ordered(trades: Iterable[StoredTrade]) -> list[StoredTrade]:
    """Trades in the one order every report uses."""
    return sorted(trades, key=lambda t: (t.exit_ts, t.entry_ts, t.symbol,
                                         t.entry_client_id or "", t.exit_client_id or ""))


def summarize(trades: Iterable[StoredTrade], r_unit: str = "") -> TradeSummary:
    """Counts, totals and the maximum drawdown of the equity curve of closed trades; ``r_unit``
    says which unit their R multiples are in (``[risk] r_unit``)."""
    rows = ordered(trades)
    equity = equity_r = peak = peak_r = 0.0
    drawdown = drawdown_r = 0.0
    for t in rows:
        equity += t.pnl
        equity_r += t.r_multiple
        peak = max(peak, equity)
        peak_r = max(peak_r, equity_r)
        drawdown = max(drawdown, peak - equity)
        drawdown_r = max(drawdown_r, peak_r - equity_r)
    wins = sum(1 for t in rows if t.pnl > 0)
    losses = sum(1 for t in rows if t.pnl < 0)
    return TradeSummary(trades=len(rows), wins=wins, losses=losses,
                        total_r=round(equity_r, 4), pnl=round(equity, 2),
                        max_drawdown=round(drawdown, 2), max_drawdown_r=round(drawdown_r, 4),
                        r_unit=r_unit)


def trade_table(trades: Iterable[StoredTrade], r_unit: str = "") -> str:
    """A fixed-width text table of ``trades`` followed by the summary line (which names the
    unit of R, ``r_unit``, when given)."""
    rows = ordered(trades)
    lines = [_row([title for title, _, _ in _COLUMNS])]
    lines.append("-" * len(lines[0]))
    for t in rows:
        lines.append(_row([
            t.symbol, t.action.value, str(t.quantity), _time(t.entry_ts), f"{t.entry_price:.2f}",
            _time(t.exit_ts), f"{t.exit_price:.2f}", f"{t.pnl:+.2f}", f"{t.r_multiple:+.2f}",
            t.exit_reason or "-",
        ]))
    if not rows:
        lines.append("(no closed trades)")
    lines.append(summarize(rows, r_unit).line())
    return "\n".join(lines)


def day_report(db: Database, strategy: str, day: date, account: str | None = None,
               r_unit: str = "") -> str:
    """The table and summary of one strategy's day, read from ``db``."""
    title = f"[TRADES] {strategy} {day.isoformat()}" + (f" ({account})" if account else "")
    trades = db.trades(strategy=strategy, trading_date=day, account=account)
    return f"{title}\n{trade_table(trades, r_unit)}"


def summary_name(strategy: str, account: str, day: date) -> str:
    """The ``strategy_state`` row a day's summary is kept in."""
    return f"summary.{strategy}.{account}.{day.isoformat()}"


def summary_record(summary: TradeSummary, *, strategy: str, account: str, day: date,
                   ts: float) -> StoreRecord:
    """The store message that persists ``summary`` (durable: committed before the writer
    answers)."""
    return record(StoredStrategyState(name=summary_name(strategy, account, day),
                                      version=SUMMARY_VERSION, state=asdict(summary),
                                      updated_ts=ts))


def store_summary(sender: Sender, trades: Sequence[StoredTrade], *, strategy: str, account: str,
                  day: date, ts: float, store: str = "store", r_unit: str = "") -> TradeSummary:
    """Summarize ``trades`` and send the summary to the store writer; returns the summary."""
    summary = summarize(trades, r_unit)
    sender.tell(store, summary_record(summary, strategy=strategy, account=account, day=day,
                                      ts=ts))
    return summary


def load_summary(db: Database, strategy: str, account: str, day: date) -> TradeSummary | None:
    """The stored summary of a day, or None when none was stored."""
    row = db.strategy_state(summary_name(strategy, account, day))
    if row is None:
        return None
    if row.version != SUMMARY_VERSION:
        raise ValueError(f"{row.name}: summary format version {row.version} is not "
                         f"{SUMMARY_VERSION}")
    return TradeSummary(**row.state)


def _row(cells: Sequence[str]) -> str:
    out = []
    for (_, width, align), cell in zip(_COLUMNS, cells, strict=True):
        out.append(f"{cell:{align}{width}}" if width else cell)
    return "  ".join(out).rstrip()


def _time(ts: float) -> str:
    return to_ist(ts).strftime("%H:%M:%S")


def _money(amount: float) -> str:
    sign = "-" if amount < 0 else ""
    return f"{sign}₹{abs(amount):,.2f}"
