"""One symbol's day as an interactive candle chart: ``SymbolDay`` and ``chart_payload``.

Owns what the interactive candle chart shows and how it is handed to the browser: the 1-minute
candles, swing lows and highs (their levels drawn until broken), entry and exit fills, and each
stop's trigger while it worked. ``chart_payload`` turns a ``SymbolDay`` into a JSON-ready dict that
``static/candles.js`` draws with TradingView's lightweight-charts (``static/NOTICE.txt``). The
day report embeds it (``engine.report.page``); the live dashboard serves it
(``engine.app.dashboard``), so both draw the same chart from the same figures.

Times are shifted to IST wall-clock seconds (lightweight-charts shows UTC) and every marker sits
on the minute it happened in, since the chart's time scale has one slot per candle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from engine.messages import Action, Bar, Fill, OrderPurpose, Swing, SwingBroken, SwingKind
from engine.store.database import Database, StoredOrder

IST_OFFSET_S = 19800  # +05:30: the chart's clock reads IST
GREEN = "#1a7f37"
RED = "#cf222e"
BLUE = "#0969da"
ORANGE = "#bc4c00"


@dataclass(frozen=True, slots=True)
class SymbolDay:
    """One symbol's market and trading on one day, as stored."""

    symbol: str
    bars: tuple[Bar, ...]
    swings: tuple[Swing, ...] = ()
    breaks: tuple[SwingBroken, ...] = ()
    orders: tuple[StoredOrder, ...] = ()
    fills: tuple[Fill, ...] = ()


def read_symbol_day(db: Database, symbol: str, day: Any, orders: Sequence[StoredOrder],
                    fills: Sequence[Fill]) -> SymbolDay:
    """``symbol``'s bars and swings of ``day`` from ``db``; its orders and fills picked from
    the day's ``orders`` and ``fills``."""
    return SymbolDay(symbol, tuple(db.bars(symbol, day)), tuple(db.swings(symbol, day)),
                     tuple(db.swing_breaks(symbol, day)),
                     tuple(o for o in orders if o.symbol == symbol),
                     tuple(f for f in fills if f.symbol == symbol))


def chart_time(ts: float) -> int:
    """Epoch seconds as the chart's IST clock, on the start of their minute."""
    return int(ts // 60 * 60) + IST_OFFSET_S


def chart_payload(day: SymbolDay) -> dict[str, Any]:
    """The JSON-ready chart of ``day`` (the shape ``static/candles.js`` draws)."""
    if not day.bars:
        return {"symbol": day.symbol, "candles": [], "markers": [], "segments": []}
    first, day_end = day.bars[0].start, day.bars[-1].start + 60
    candles = [{"time": chart_time(b.start), "open": b.open, "high": b.high, "low": b.low,
                "close": b.close} for b in day.bars]
    markers: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    broken = {(b.kind, b.price, b.bar_start): b.broken_ts for b in day.breaks}
    for s in day.swings:
        low = s.kind is SwingKind.LOW
        color = BLUE if low else ORANGE
        markers.append({"time": chart_time(s.bar_start), "position": "belowBar" if low
                        else "aboveBar", "color": color, "shape": "arrowUp" if low
                        else "arrowDown", "text": f"swing {s.kind.value.lower()} {s.price:.2f}"})
        end = broken.get((s.kind, s.price, s.bar_start))
        segments.append(_segment(s.bar_start, end if end is not None else day_end - 60,
                                 s.price, color, 2, f"swing {s.kind.value.lower()}"))
    for o in day.orders:
        if o.purpose is OrderPurpose.STOP and o.trigger_price > 0:
            end = o.updated_ts if o.status.is_terminal else day_end - 60
            segments.append(_segment(max(o.created_ts, first), max(end, first), o.trigger_price,
                                     RED, 1, f"stop {o.trigger_price:.2f}"))
    for f in day.fills:
        entry = f.purpose is OrderPurpose.ENTRY
        buy = f.action is Action.BUY
        markers.append({"time": chart_time(max(f.ts, first)),
                        "position": "belowBar" if buy else "aboveBar",
                        "color": GREEN if buy else RED,
                        "shape": "circle" if entry else "square",
                        "text": f"{'entry' if entry else f.purpose.value} {f.action.value} "
                                f"{f.quantity} @ {f.price:.2f}"})
    markers.sort(key=lambda m: m["time"])
    return {"symbol": day.symbol, "candles": candles, "markers": markers, "segments": segments}


def _segment(start: float, end: float, price: float, color: str, style: int,
             title: str) -> dict[str, Any]:
    """A level drawn from ``start`` to ``end`` (lightweight-charts line style: 1 dotted,
    2 dashed)."""
    t0, t1 = chart_time(start), chart_time(max(start, end))
    points = [{"time": t0, "value": price}] + ([{"time": t1, "value": price}] if t1 > t0 else [])
    return {"points": points, "color": color, "style": style, "title": title}


def static_text(name: str) -> str:
    """The text of ``static/<name>``: the vendored lightweight-charts, ``candles.js``, or
    ``report.css`` (the report's style, which the dashboard's page uses too)."""
    return files("engine.report").joinpath("static", name).read_text(encoding="utf-8")


LIBRARY = "lightweight-charts.standalone.js"
DRAWING = "candles.js"
