"""The closed-trade table and the day summary of a strategy, from the store's ``trades`` rows.

Owns how a day's trades are shown and summed up: ``trade_table`` (one line per trade: symbol,
side, quantity, entry time and price, exit time and price, P&L, with ``[charges]`` given also
the charges and net P&L, R, exit reason), ``summarize`` (trades, wins, losses, total R, gross
P&L, charges, net P&L and the maximum drawdown of the closed-trade equity curve)
and ``store_summary`` / ``load_summary`` (the summary kept in the database as the
``strategy_state`` row ``summary.<strategy>.<account>.<YYYY-MM-DD>``).

The unit of R is the one each trade row recorded (``StoredTrade.r_unit``), never the setting
in force when the table is made: the summary names it, and a day whose trades were measured in
different units (the setting changed) shows each trade's unit in a column of its own.

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
from engine.trading.charges import ChargeSettings, trade_charges

SUMMARY_VERSION = 1
MIXED = "mixed"  # a day whose trades recorded different units

#: how each ``[risk] r_unit`` is named where R is shown
R_UNIT_NAMES = {"position": "own risk per trade", "fixed": "fixed R", MIXED: "mixed units",
                "": "unit not recorded"}

_COLUMNS: tuple[tuple[str, int, str], ...] = (
    # (title, width, alignment)
    ("symbol", 20, "<"), ("side", 4, "<"), ("qty", 5, ">"), ("entry", 8, "<"),
    ("price", 9, ">"), ("exit", 8, "<"), ("price", 9, ">"), ("pnl", 11, ">"), ("R", 6, ">"),
    ("reason", 0, "<"),
)
_UNIT = ("R unit", 18, "<")  # only on a day of mixed units
#: with charges: gross P&L, charges and net P&L where ``pnl`` stands
_CHARGED_COLUMNS: tuple[tuple[str, int, str], ...] = (
    *_COLUMNS[:7], ("gross", 11, ">"), ("charges", 8, ">"), ("net", 11, ">"), *_COLUMNS[8:])


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
    r_unit: str = ""  # what the R figures are in: the trades' recorded unit, or MIXED
    charges: float | None = None  # brokerage, taxes and fees (None: not counted)

    @property
    def net_pnl(self) -> float:
        """P&L after charges (gross when they were not counted)."""
        return round(self.pnl - (self.charges or 0.0), 2)

    def line(self) -> str:
        unit = f" ({r_unit_name(self.r_unit)})" if self.r_unit else ""
        pnl = (f"P&L {money(self.pnl)}" if self.charges is None else
               f"P&L gross {money(self.pnl)} | charges {money(self.charges)} | net "
               f"{money(self.net_pnl)}")
        return (f"trades {self.trades} | wins {self.wins} | losses {self.losses} | "
                f"total R {self.total_r:+.2f}{unit} | {pnl} | max drawdown "
                f"{money(self.max_drawdown)} ({self.max_drawdown_r:.2f} R)")


def r_unit_name(r_unit: str) -> str:
    """What R means under ``[risk] r_unit``, for reports."""
    return R_UNIT_NAMES.get(r_unit, r_unit)


def r_unit_of(trades: Iterable[StoredTrade]) -> str:
    """The unit the R of ``trades`` is in: the one their rows recorded, ``MIXED`` when they
    differ, "" when there are none or none recorded one."""
    units = {t.r_unit for t in trades}
    if len(units) > 1:
        return MIXED
    return units.pop() if units else ""


def ordered(trades: Iterable[StoredTrade]) -> list[StoredTrade]:
    """Trades in the one order every report uses."""
    return sorted(trades, key=lambda t: (t.exit_ts, t.entry_ts, t.symbol,
                                         t.entry_client_id or "", t.exit_client_id or ""))


def summarize(trades: Iterable[StoredTrade],
              charges: ChargeSettings | None = None) -> TradeSummary:
    """Counts, totals and the maximum drawdown of the equity curve of closed trades, and the
    unit their R multiples were recorded in; with ``charges`` the summary also holds what they
    cost (net P&L)."""
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
                        r_unit=r_unit_of(rows),
                        charges=None if charges is None else round(
                            sum(trade_charges(rows, charges)), 2))


def trade_table(trades: Iterable[StoredTrade], charges: ChargeSettings | None = None) -> str:
    """A fixed-width text table of ``trades`` followed by the summary line, which names the
    unit of R (when the trades' units differ, each row names its own); with ``charges``, gross,
    charges and net P&L columns."""
    rows = ordered(trades)
    summary = summarize(rows, charges)
    columns = _COLUMNS if charges is None else _CHARGED_COLUMNS
    mixed = summary.r_unit == MIXED
    if mixed:
        columns = (*columns[:-1], _UNIT, columns[-1])
    lines = [_row(columns, [title for title, _, _ in columns])]
    lines.append("-" * len(lines[0]))
    costs = trade_charges(rows, charges) if charges is not None else [None] * len(rows)
    for t, cost in zip(rows, costs, strict=True):
        money = [f"{t.pnl:+.2f}"] if cost is None else [
            f"{t.pnl:+.2f}", f"{cost:.2f}", f"{t.pnl - cost:+.2f}"]
        cells = [t.symbol, t.action.value, str(t.quantity), _time(t.entry_ts),
                 f"{t.entry_price:.2f}", _time(t.exit_ts), f"{t.exit_price:.2f}", *money,
                 f"{t.r_multiple:+.2f}", t.exit_reason or "-"]
        if mixed:
            cells.insert(-1, r_unit_name(t.r_unit))
        lines.append(_row(columns, cells))
    if not rows:
        lines.append("(no closed trades)")
    lines.append(summary.line())
    return "\n".join(lines)


def day_report(db: Database, strategy: str, day: date, account: str | None = None,
               charges: ChargeSettings | None = None) -> str:
    """The table and summary of one strategy's day, read from ``db``."""
    title = f"[TRADES] {strategy} {day.isoformat()}" + (f" ({account})" if account else "")
    trades = db.trades(strategy=strategy, trading_date=day, account=account)
    return f"{title}\n{trade_table(trades, charges)}"


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
                  day: date, ts: float, store: str = "store") -> TradeSummary:
    """Summarize ``trades`` and send the summary to the store writer; returns the summary."""
    summary = summarize(trades)
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


def _row(columns: Sequence[tuple[str, int, str]], cells: Sequence[str]) -> str:
    out = []
    for (_, width, align), cell in zip(columns, cells, strict=True):
        out.append(f"{cell:{align}{width}}" if width else cell)
    return "  ".join(out).rstrip()


def _time(ts: float) -> str:
    return to_ist(ts).strftime("%H:%M:%S")


def money(amount: float) -> str:
    """Rupees with a sign and thousands separators: -₹1,234.50."""
    sign = "-" if amount < 0 else ""
    return f"{sign}₹{abs(amount):,.2f}"
