"""The day's closed trades as interactive charts: R per trade and the equity curve.

Owns what those two charts show and how they are handed to the browser: ``r_payload`` (one bar
per closed trade, in the report's trade order, numbered 1..n: several trades can close in the
same second, so the chart's axis is the trade number) and ``equity_payload`` (the cumulative
closed-trade P&L stepped at each exit, and its drawdown from the running peak, on the IST clock
to the second; exits in the same second are one point, the last). ``static/trades.js`` draws
both with the same vendored lightweight-charts as the candles (``engine.report.candles``): zoom,
pan and a hover legend. No matplotlib: the day report is interactive throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.report.candles import GREEN, IST_OFFSET_S, RED
from engine.runtime.clock import fmt_ist
from engine.store.database import StoredTrade

DRAWING = "trades.js"


def r_payload(trades: Sequence[StoredTrade]) -> dict[str, Any]:
    """One bar per trade: ``time`` is its number (1..n), ``value`` its R; ``labels`` say which
    trade each number is, for the hover legend."""
    bars = [{"time": n, "value": round(t.r_multiple, 4), "color": GREEN if t.r_multiple >= 0
             else RED} for n, t in enumerate(trades, start=1)]
    labels = {str(n): f"#{n} {t.symbol} exit {fmt_ist(t.exit_ts)} {t.exit_reason}  "
              f"R {t.r_multiple:+.2f}  P&L {t.pnl:+,.2f}" for n, t in enumerate(trades, start=1)}
    return {"bars": bars, "labels": labels}


def equity_payload(trades: Sequence[StoredTrade]) -> dict[str, Any]:
    """The cumulative P&L after each exit (``equity``) and its drawdown from the running peak
    (``drawdown``, zero or below), from 0 at the first entry; times on the chart's IST clock."""
    if not trades:
        return {"equity": [], "drawdown": []}
    points: dict[int, tuple[float, float]] = {_second(min(t.entry_ts for t in trades)): (0, 0)}
    total = peak = 0.0
    for t in sorted(trades, key=lambda t: t.exit_ts):
        total += t.pnl
        peak = max(peak, total)
        points[_second(t.exit_ts)] = (round(total, 2), round(total - peak, 2))
    times = sorted(points)
    return {"equity": [{"time": s, "value": points[s][0]} for s in times],
            "drawdown": [{"time": s, "value": points[s][1]} for s in times]}


def _second(ts: float) -> int:
    return int(ts) + IST_OFFSET_S
