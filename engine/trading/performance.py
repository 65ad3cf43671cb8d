"""A strategy's results over many days: ``DayResult`` per replayed day, ``combine`` over them.

Owns the research metrics (definitions in docs/research.md): days, trades, win rate, average
win and loss, expectancy and total R, gross P&L, charges, net P&L, maximum drawdown in rupees and
in R, Sharpe and Sortino ratios of daily net P&L, and the longest losing streak. Pure: results in,
numbers out; a ``DayResult`` is plain data (JSON-ready through ``as_dict``) so that a sweep can
cache it and any executor can return it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.store.database import StoredTrade
from engine.trading.charges import ChargeSettings, trade_charges
from engine.trading.trades import money, ordered

TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True, slots=True)
class TradeOutcome:
    """One closed trade as research sees it: gross P&L, charges and R."""

    symbol: str
    pnl: float
    charges: float
    r: float

    @property
    def net(self) -> float:
        return round(self.pnl - self.charges, 2)


@dataclass(frozen=True, slots=True)
class DayResult:
    """One replayed day of one strategy (the same for the same session and configuration)."""

    session: str  # the session file's name
    day: str  # YYYY-MM-DD
    trades: tuple[TradeOutcome, ...] = field(default_factory=tuple)
    ticks: int = 0
    stuck_steps: int = 0

    @property
    def gross(self) -> float:
        return round(sum(t.pnl for t in self.trades), 2)

    @property
    def charges(self) -> float:
        return round(sum(t.charges for t in self.trades), 2)

    @property
    def net(self) -> float:
        return round(self.gross - self.charges, 2)

    @property
    def total_r(self) -> float:
        return round(sum(t.r for t in self.trades), 4)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DayResult:
        return cls(session=data["session"], day=data["day"],
                   trades=tuple(TradeOutcome(**t) for t in data["trades"]),
                   ticks=data.get("ticks", 0), stuck_steps=data.get("stuck_steps", 0))


def day_result(session: str, day: str, trades: Sequence[StoredTrade],
               charges: ChargeSettings, *, ticks: int = 0, stuck_steps: int = 0) -> DayResult:
    """The ``DayResult`` of a day's closed trades (in the one report order)."""
    rows = ordered(trades)
    costs = trade_charges(rows, charges)
    return DayResult(session, day, tuple(TradeOutcome(t.symbol, round(t.pnl, 2), cost,
                                                      round(t.r_multiple, 4))
                                         for t, cost in zip(rows, costs, strict=True)),
                     ticks=ticks, stuck_steps=stuck_steps)


@dataclass(frozen=True, slots=True)
class Performance:
    """The combined numbers of many days (``combine``); ratios are None where undefined."""

    days: int
    trades: int
    wins: int
    losses: int
    win_rate: float | None
    avg_win: float | None
    avg_loss: float | None
    expectancy_r: float | None
    total_r: float
    gross: float
    charges: float
    net: float
    max_drawdown: float
    max_drawdown_r: float
    sharpe: float | None
    sortino: float | None
    longest_losing_streak: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        def num(value: float | None, fmt: str) -> str:
            return "n/a" if value is None else format(value, fmt)

        rate = None if self.win_rate is None else 100 * self.win_rate
        return [
            f"days {self.days} | trades {self.trades} | wins {self.wins} | losses "
            f"{self.losses} | win rate {num(rate, '.1f')}%"
            f" | avg win {_money(self.avg_win)} | avg loss {_money(self.avg_loss)}",
            f"expectancy {num(self.expectancy_r, '+.3f')} R | total R {self.total_r:+.2f} | "
            f"P&L gross {_money(self.gross)} | charges {_money(self.charges)} | net "
            f"{_money(self.net)}",
            f"max drawdown {_money(self.max_drawdown)} ({self.max_drawdown_r:.2f} R) | Sharpe "
            f"{num(self.sharpe, '.2f')} | Sortino {num(self.sortino, '.2f')} (daily net P&L, "
            f"annualised) | longest losing streak {self.longest_losing_streak}",
        ]


def combine(results: Sequence[DayResult]) -> Performance:
    """The performance of ``results`` taken in the given (date) order."""
    trades = [t for r in results for t in r.trades]
    wins = [t.net for t in trades if t.net > 0]
    losses = [t.net for t in trades if t.net < 0]
    equity = equity_r = peak = peak_r = drawdown = drawdown_r = 0.0
    streak = longest = 0
    for t in trades:
        equity += t.net
        equity_r += t.r
        peak, peak_r = max(peak, equity), max(peak_r, equity_r)
        drawdown, drawdown_r = max(drawdown, peak - equity), max(drawdown_r, peak_r - equity_r)
        streak = streak + 1 if t.net < 0 else 0
        longest = max(longest, streak)
    daily = [r.net for r in results]
    return Performance(
        days=len(results), trades=len(trades), wins=len(wins), losses=len(losses),
        win_rate=round(len(wins) / len(trades), 4) if trades else None,
        avg_win=round(sum(wins) / len(wins), 2) if wins else None,
        avg_loss=round(sum(losses) / len(losses), 2) if losses else None,
        expectancy_r=round(sum(t.r for t in trades) / len(trades), 4) if trades else None,
        total_r=round(sum(t.r for t in trades), 4),
        gross=round(sum(r.gross for r in results), 2),
        charges=round(sum(r.charges for r in results), 2),
        net=round(sum(r.net for r in results), 2),
        max_drawdown=round(drawdown, 2), max_drawdown_r=round(drawdown_r, 4),
        sharpe=sharpe(daily), sortino=sortino(daily), longest_losing_streak=longest)


def sharpe(daily: Sequence[float]) -> float | None:
    """Mean over sample standard deviation of daily P&L, times √252 (None: < 2 days or flat)."""
    if len(daily) < 2:
        return None
    mean = sum(daily) / len(daily)
    sd = math.sqrt(sum((x - mean) ** 2 for x in daily) / (len(daily) - 1))
    return round(mean / sd * math.sqrt(TRADING_DAYS_PER_YEAR), 4) if sd > 0 else None


def sortino(daily: Sequence[float]) -> float | None:
    """Mean over downside deviation (root mean square of the losing days' P&L over all days),
    times √252 (None: < 2 days or no losing day)."""
    if len(daily) < 2:
        return None
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in daily) / len(daily))
    mean = sum(daily) / len(daily)
    return round(mean / downside * math.sqrt(TRADING_DAYS_PER_YEAR), 4) if downside > 0 else None



def _money(amount: float | None) -> str:
    return "n/a" if amount is None else money(amount)
