"""The day report's charts: matplotlib figures (Agg, no pyplot state) rendered to PNG bytes.

Owns the drawing of the static charts of ``engine.report.page``: R per trade and the closed-trade
equity curve with its drawdown (the candles are interactive: ``engine.report.candles``).
It is a module of its own so that matplotlib (a large import) is loaded only by the process that
writes a report, never by a running engine, which reads ``ReportSettings`` through
``engine.report.data`` when it loads its configuration.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from engine.runtime.clock import to_ist

if TYPE_CHECKING:
    from engine.report.data import DayData

matplotlib.use("Agg")  # files only, never a window

GREEN = "#1a7f37"
RED = "#cf222e"
BLUE = "#0969da"
ORANGE = "#bc4c00"
GREY = "#57606a"


def r_per_trade(data: DayData, width_in: float, dpi: int) -> bytes:
    """PNG of the R multiple of each closed trade, in exit order."""
    return png(_draw_r, data, width_in, 3.0, dpi)


def equity(data: DayData, width_in: float, dpi: int) -> bytes:
    """PNG of the cumulative closed-trade P&L above its drawdown."""
    return png(_draw_equity, data, width_in, 4.2, dpi)


def png(draw: Callable[[Figure, Any], None], data: Any, width_in: float,
        height_in: float, dpi: int) -> bytes:
    """PNG bytes of a figure of ``width_in`` × ``height_in`` that ``draw(fig, data)`` fills."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    draw(fig, data)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _x(ts: float) -> float:
    """An epoch time as a matplotlib date number on the IST wall clock."""
    return float(mdates.date2num(to_ist(ts).replace(tzinfo=None)))


def _time_axis(ax: Axes, span_s: float) -> None:
    """Clock-time ticks for an axis of ``_x`` values spanning ``span_s`` seconds."""
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=14))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if span_s < 900 else "%H:%M"))
    ax.grid(True, alpha=0.3)


def _draw_r(fig: Figure, data: DayData) -> None:
    ax = fig.subplots()
    numbers = list(range(1, len(data.trades) + 1))
    values = [t.r_multiple for t in data.trades]
    bars = ax.bar(numbers, values, color=[GREEN if v >= 0 else RED for v in values])
    if len(values) <= 30:
        ax.bar_label(bars, fmt="%+.2f", fontsize=7, padding=2)
        ax.set_xticks(numbers)
    ax.axhline(0, color=GREY, linewidth=0.8)
    ax.set_xlim(0.3, max(len(values), 10) + 0.7)
    ax.margins(y=0.15)
    ax.set_xlabel("trade # (by exit time)")
    ax.set_ylabel("R")
    ax.grid(True, axis="y", alpha=0.3)


def _draw_equity(fig: Figure, data: DayData) -> None:
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    xs = [_x(data.trades[0].entry_ts)]
    equity = [0.0]
    drawdown = [0.0]
    peak = 0.0
    for t in data.trades:
        xs.append(_x(t.exit_ts))
        equity.append(equity[-1] + t.pnl)
        peak = max(peak, equity[-1])
        drawdown.append(equity[-1] - peak)
    span_s = data.trades[-1].exit_ts - data.trades[0].entry_ts
    xs.append(_x(data.trades[-1].exit_ts + max(span_s * 0.03, 10.0)))  # the last level, visible
    equity.append(equity[-1])
    drawdown.append(drawdown[-1])
    top.step(xs, equity, where="post", color=BLUE, linewidth=1.5)
    top.plot(xs[1:-1], equity[1:-1], "o", color=BLUE, markersize=3)
    top.axhline(0, color=GREY, linewidth=0.8)
    top.set_ylabel("P&L (Rs)")
    bottom.fill_between(xs, drawdown, 0, step="post", color=RED, alpha=0.35)
    bottom.step(xs, drawdown, where="post", color=RED, linewidth=1)
    bottom.set_ylabel("drawdown (Rs)")
    bottom.set_xlabel("exit time (IST)")
    _time_axis(top, span_s)
    _time_axis(bottom, span_s)
