"""The combined report of a multi-day backtest, one self-contained HTML page.

Owns ``BacktestData`` (what the page shows) and ``write_backtest_report``: the combined summary
cards (``engine.trading.performance``), net equity and drawdown across days, daily R bars, the
distribution of trade R, and a per-day table linking to each day's report. It is built from
the day report's pieces (``engine.report.page``: page, cards, tables, escaping;
``engine.report.charts``: PNG rendering), so both pages look and behave alike.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.report.page import cards_html, document, esc, html_table, money, sign_class, write_page
from engine.trading.performance import DayResult, Performance
from engine.trading.trades import r_unit_name


@dataclass(frozen=True, slots=True)
class DayLink:
    """One day of the backtest and the file name of its day report (None: none written)."""

    result: DayResult
    report: str | None


@dataclass(frozen=True, slots=True)
class BacktestData:
    title: str
    strategy: str
    performance: Performance
    days: tuple[DayLink, ...]
    r_unit: str = ""
    width_in: float = 11.0
    dpi: int = 100


def render_backtest(data: BacktestData) -> str:
    """The whole HTML page of ``data``."""
    p = data.performance
    parts = [f"<h1>{esc(data.title)}</h1>", "<h2>Summary</h2>",
             cards_html(performance_cards(p, data.r_unit), "summary")]
    if data.days:
        parts += ["<h2>Equity and drawdown (net, across days)</h2>",
                  _image(_draw_equity, data, 4.2, "net equity and drawdown by day"),
                  "<h2>R per day</h2>", _image(_draw_daily_r, data, 3.0, "total R per day")]
    if p.trades:
        parts += ["<h2>Distribution of trade R</h2>",
                  _image(_draw_r_histogram, data, 3.0, "histogram of trade R")]
    parts += ["<h2>Days</h2>", _day_rows(data)]
    return document(data.title, "\n".join(parts))


def write_backtest_report(out: Path, data: BacktestData) -> Path:
    """Write the page whole; returns its path."""
    return write_page(out, render_backtest(data))


def performance_cards(p: Performance, r_unit: str = "") -> list[tuple[str, str, str]]:
    """The summary cards of a ``Performance`` (label, value, css class)."""
    def opt(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    unit = f" ({r_unit_name(r_unit)})" if r_unit else ""
    return [
        ("Days", str(p.days), ""), ("Trades", str(p.trades), ""),
        ("Win rate", "n/a" if p.win_rate is None else f"{100 * p.win_rate:.1f}%", ""),
        ("Avg win", "n/a" if p.avg_win is None else money(p.avg_win), "pos"),
        ("Avg loss", "n/a" if p.avg_loss is None else money(p.avg_loss), "neg"),
        ("Expectancy", f"{opt(p.expectancy_r, '+.3f')} R", sign_class(p.expectancy_r or 0.0)),
        ("Total R" + unit, f"{p.total_r:+.2f}", sign_class(p.total_r)),
        ("Gross P&L", money(p.gross), sign_class(p.gross)),
        ("Charges", money(p.charges), ""),
        ("Net P&L", money(p.net), sign_class(p.net)),
        ("Max drawdown", f"{money(p.max_drawdown)} ({p.max_drawdown_r:.2f} R)", ""),
        ("Sharpe (daily)", opt(p.sharpe, ".2f"), ""),
        ("Sortino (daily)", opt(p.sortino, ".2f"), ""),
        ("Longest losing streak", str(p.longest_losing_streak), ""),
    ]


def _day_rows(data: BacktestData) -> str:
    if not data.days:
        return "<p class=\"note\">No days.</p>"
    headers = ("#", "day", "session", "trades", "gross P&L", "charges", "net P&L", "R",
               "report")
    rows = []
    for i, link in enumerate(data.days, start=1):
        r = link.result
        report = (f"<a href=\"days/{esc(link.report)}\">day report</a>" if link.report
                  else "-")
        rows.append([("num", str(i)), ("", esc(r.day)), ("", esc(r.session)),
                     ("num", str(len(r.trades))),
                     (f"num {sign_class(r.gross)}", esc(f"{r.gross:+,.2f}")),
                     ("num", esc(f"{r.charges:,.2f}")),
                     (f"num {sign_class(r.net)}", esc(f"{r.net:+,.2f}")),
                     (f"num {sign_class(r.total_r)}", f"{r.total_r:+.2f}"), ("", report)])
    return html_table(headers, rows, "days")


def _image(draw: Callable[[Any, BacktestData], None], data: BacktestData, height_in: float,
           alt: str) -> str:
    from engine.report.charts import png

    encoded = base64.b64encode(png(draw, data, data.width_in, height_in, data.dpi))
    return (f"<img class=\"chart\" alt=\"{esc(alt)}\" "
            f"src=\"data:image/png;base64,{encoded.decode('ascii')}\">")


def _day_labels(ax: Any, data: BacktestData) -> None:
    labels = [d.result.day[5:] for d in data.days]
    step = max(1, len(labels) // 20)
    ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45, fontsize=7)
    ax.grid(True, alpha=0.3)


def _draw_equity(fig: Any, data: BacktestData) -> None:
    from engine.report.charts import BLUE, GREY, RED

    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    equity, drawdown, peak, total = [], [], 0.0, 0.0
    for link in data.days:
        total += link.result.net
        peak = max(peak, total)
        equity.append(total)
        drawdown.append(total - peak)
    xs = list(range(len(equity)))
    top.plot(xs, equity, "o-", color=BLUE, markersize=3, linewidth=1.5)
    top.axhline(0, color=GREY, linewidth=0.8)
    top.set_ylabel("net P&L (Rs)")
    bottom.fill_between(xs, drawdown, 0, color=RED, alpha=0.35)
    bottom.plot(xs, drawdown, color=RED, linewidth=1)
    bottom.set_ylabel("drawdown (Rs)")
    _day_labels(top, data)
    _day_labels(bottom, data)


def _draw_daily_r(fig: Any, data: BacktestData) -> None:
    from engine.report.charts import GREEN, GREY, RED

    ax = fig.subplots()
    values = [d.result.total_r for d in data.days]
    ax.bar(range(len(values)), values, color=[GREEN if v >= 0 else RED for v in values])
    ax.axhline(0, color=GREY, linewidth=0.8)
    ax.set_ylabel("R")
    _day_labels(ax, data)


def _draw_r_histogram(fig: Any, data: BacktestData) -> None:
    from engine.report.charts import BLUE, GREY

    ax = fig.subplots()
    values = [t.r for d in data.days for t in d.result.trades]
    ax.hist(values, bins=max(5, min(40, len(values))), color=BLUE, alpha=0.8)
    ax.axvline(0, color=GREY, linewidth=0.8)
    ax.set_xlabel("R per trade")
    ax.set_ylabel("trades")
    ax.grid(True, alpha=0.3)
