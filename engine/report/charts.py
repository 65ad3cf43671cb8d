"""Static charts: matplotlib figures (Agg, no pyplot state) rendered to PNG bytes.

Owns ``png`` and the palette of the static charts of the backtest and sweep reports
(``engine.report.backtest``, ``engine.report.sweep``); the day report's charts are interactive
(``engine.report.candles``, ``engine.report.trade_charts``). It is a module of its own so that
matplotlib (a large import) is loaded only by the process that writes such a report, never by a
running engine, which reads ``ReportSettings`` through ``engine.report.data`` when it loads its
configuration.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.figure import Figure

matplotlib.use("Agg")  # files only, never a window

GREEN = "#1a7f37"
RED = "#cf222e"
BLUE = "#0969da"
ORANGE = "#bc4c00"
GREY = "#57606a"


def png(draw: Callable[[Figure, Any], None], data: Any, width_in: float,
        height_in: float, dpi: int) -> bytes:
    """PNG bytes of a figure of ``width_in`` × ``height_in`` that ``draw(fig, data)`` fills."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    draw(fig, data)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
