"""The day report's charts: matplotlib figures (Agg, no pyplot state) rendered to PNG bytes.

Owns the drawing of the three charts of ``engine.report.page``: R per trade, the closed-trade equity
curve with its drawdown, and one symbol's 1-minute candles with swings, entries, stops and exits.
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

from engine.messages import Action, OrderPurpose, SwingKind
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


def candles(data: DayData, width_in: float, dpi: int) -> bytes:
    """PNG of ``data.symbol``'s 1-minute candles with swings, orders and fills marked."""
    return png(_draw_candles, data, width_in, 5.5, dpi)


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


def _mid(bar_start: float) -> float:
    """Where a minute's candle stands: its middle, so a fill at 09:24:30 lands on 09:24."""
    return _x(bar_start + 30)


def _time_axis(ax: Axes, span_s: float) -> None:
    """Clock-time ticks for an axis of ``_x`` values spanning ``span_s`` seconds."""
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=14))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if span_s < 900 else "%H:%M"))
    ax.grid(True, alpha=0.3)


def _minute_axis(ax: Axes, span_s: float) -> None:
    """Whole-minute ticks (at most about 14) for an axis of one-minute candles."""
    step = next((m for m in (1, 2, 5, 10, 15, 30) if span_s / 60 / m <= 14), 60)
    ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, step)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
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


def _draw_candles(fig: Figure, data: DayData) -> None:
    ax = fig.subplots()
    minute = 1 / (24 * 60)
    span = max(b.high for b in data.bars) - min(b.low for b in data.bars)
    thin = max(span * 0.002, 0.01)
    xs = [_mid(b.start) for b in data.bars]
    colors = [GREEN if b.close >= b.open else RED for b in data.bars]
    ax.vlines(xs, [b.low for b in data.bars], [b.high for b in data.bars], colors=colors,
              linewidth=0.8)
    ax.bar(xs, [max(abs(b.close - b.open), thin) for b in data.bars],
           bottom=[min(b.open, b.close) for b in data.bars], width=0.7 * minute, color=colors)
    day_end = data.bars[-1].start + 60
    _draw_swings(ax, data, day_end)
    _draw_orders(ax, data, day_end)
    ax.set_xlim(xs[0] - minute, _x(day_end) + minute)
    ax.set_ylabel("price")
    ax.set_xlabel("time (IST)")
    _minute_axis(ax, day_end - data.bars[0].start)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside upper center", ncols=5, fontsize=8, frameon=False)


def _draw_swings(ax: Axes, data: DayData, day_end: float) -> None:
    broken = {(b.kind, b.price, b.bar_start): b.broken_ts for b in data.breaks}
    for kind, color, marker in ((SwingKind.LOW, BLUE, "^"), (SwingKind.HIGH, ORANGE, "v")):
        swings = [s for s in data.swings if s.kind is kind]
        if not swings:
            continue
        ends = [broken.get((s.kind, s.price, s.bar_start), day_end) for s in swings]
        ax.hlines([s.price for s in swings], [_mid(s.bar_start) for s in swings],
                  [_x(end) for end in ends], colors=color, linestyles="dashed", linewidth=0.8)
        ax.scatter([_mid(s.bar_start) for s in swings], [s.price for s in swings], marker=marker,
                   color=color, s=40, zorder=3, label=f"swing {kind.value.lower()}")
        breaks = [(s, end) for s, end in zip(swings, ends, strict=True) if end != day_end]
        if breaks:
            ax.scatter([_x(end) for _, end in breaks], [s.price for s, _ in breaks], marker="x",
                       color=color, s=30, zorder=3)


def _draw_orders(ax: Axes, data: DayData, day_end: float) -> None:
    stops = [o for o in data.orders if o.purpose is OrderPurpose.STOP and o.trigger_price > 0]
    if stops:
        ax.hlines([o.trigger_price for o in stops], [_x(o.created_ts) for o in stops],
                  [_x(o.updated_ts if o.status.is_terminal else day_end) for o in stops],
                  colors=RED, linestyles="dotted", linewidth=1.5, label="stop trigger")
    entries = [f for f in data.fills if f.purpose is OrderPurpose.ENTRY]
    exits = [f for f in data.fills if f.purpose is not OrderPurpose.ENTRY]
    for fills, marker, label in ((entries, "D", "entry"), (exits, "s", "exit")):
        if fills:
            ax.scatter([_x(f.ts) for f in fills], [f.price for f in fills], marker=marker,
                       s=55, zorder=4, edgecolors="black", label=f"{label} fill",
                       color=[GREEN if f.action is Action.BUY else RED for f in fills])


