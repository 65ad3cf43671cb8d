"""The page of a parameter sweep: parameter sets ranked by a metric, and a heat map.

Owns ``SweepPage`` (what the page shows: the grid's keys and values, each parameter set's
``Performance``, best first) and ``write_sweep_report``. A grid of exactly two keys also gets a
heat map of the metric over them. Built from the day report's pieces (``engine.report.page``,
``engine.report.charts``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.report.page import document, esc, html_table, sign_class, write_page
from engine.trading.performance import Performance


@dataclass(frozen=True, slots=True)
class SweepPage:
    title: str
    metric: str
    axes: tuple[tuple[str, tuple[str, ...]], ...]  # (section.key, its values) in grid order
    ranked: tuple[tuple[dict[str, str], Performance], ...]  # best first
    note: str = ""
    width_in: float = 9.0
    dpi: int = 100


def render_sweep(page: SweepPage) -> str:
    keys = [k for k, _ in page.axes]
    headers = ("rank", *keys, page.metric, "days", "trades", "win rate", "total R",
               "net P&L", "max drawdown", "Sharpe")
    rows = []
    for rank, (params, p) in enumerate(page.ranked, start=1):
        value = getattr(p, page.metric)
        rows.append([("num", str(rank)), *(("", esc(params[k])) for k in keys),
                     (f"num {sign_class(value or 0.0)}", _fmt(value)),
                     ("num", str(p.days)), ("num", str(p.trades)),
                     ("num", "n/a" if p.win_rate is None else f"{100 * p.win_rate:.1f}%"),
                     (f"num {sign_class(p.total_r)}", f"{p.total_r:+.2f}"),
                     (f"num {sign_class(p.net)}", esc(f"{p.net:+,.2f}")),
                     ("num", esc(f"{p.max_drawdown:,.2f}")), ("num", _fmt(p.sharpe))])
    parts = [f"<h1>{esc(page.title)}</h1>"]
    if page.note:
        parts.append(f"<p class=\"note\">{esc(page.note)}</p>")
    parts += [f"<h2>Parameter sets ranked by {esc(page.metric)}</h2>",
              html_table(headers, rows, "ranking")]
    if len(page.axes) == 2:
        from engine.report.charts import png

        encoded = base64.b64encode(png(_draw_heat_map, page, page.width_in, 5.0, page.dpi))
        parts += [f"<h2>Heat map of {esc(page.metric)}</h2>",
                  f"<img class=\"chart\" alt=\"heat map of {esc(page.metric)}\" "
                  f"src=\"data:image/png;base64,{encoded.decode('ascii')}\">"]
    return document(page.title, "\n".join(parts))


def write_sweep_report(out: Path, page: SweepPage) -> Path:
    return write_page(out, render_sweep(page))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.4g}" if abs(value) < 100 else f"{value:,.2f}"


def _draw_heat_map(fig: Any, page: SweepPage) -> None:
    import numpy as np

    (row_key, row_values), (col_key, col_values) = page.axes
    grid = np.full((len(row_values), len(col_values)), np.nan)
    for params, p in page.ranked:
        value = getattr(p, page.metric)
        if value is not None:
            grid[row_values.index(params[row_key]), col_values.index(params[col_key])] = value
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdYlGn", aspect="auto")
    fig.colorbar(image, ax=ax, label=page.metric)
    ax.set_xticks(range(len(col_values)), col_values)
    ax.set_yticks(range(len(row_values)), row_values)
    ax.set_xlabel(col_key)
    ax.set_ylabel(row_key)
    for i in range(len(row_values)):
        for j in range(len(col_values)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, _fmt(float(grid[i, j])), ha="center", va="center", fontsize=8)
