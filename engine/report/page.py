"""The day report as one self-contained HTML file (``run.py report``).

Owns ``build_report`` / ``write_report``: a header (date, strategies, accounts), the day summary
and trade table (``engine.trading.trades``), each trade with its MAE and MFE
(``engine.report.excursions``), the R of each trade and the closed-trade equity curve with its
drawdown (``engine.report.trade_charts``), candle charts of every traded symbol (the chosen or
most traded one first) and of NIFTY spot with swings, entries, stops and exits
(``engine.report.candles``), the order log behind the trades (every order with its state
changes), and the day's risk events and reconciliation corrections. Every chart is interactive
(zoom, pan, hover) and drawn by the vendored lightweight-charts; the CSS and scripts are inline,
so the file opens offline. Every text from the database is HTML-escaped (and JSON for the
scripts has ``<`` escaped). A day without trades still renders and says so.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

from engine.messages import (
    OrderEvent,
    RiskEvent,
)
from engine.report import candles as interactive
from engine.report import trade_charts
from engine.report.data import (
    DayData,
    ReportError,
    load_day,
)
from engine.report.excursions import excursion
from engine.runtime.clock import to_ist
from engine.store.database import Correction, StoredOrder
from engine.trading.charges import ChargeSettings, trade_charges
from engine.trading.trades import r_unit_name, trade_table


def build_report(db_path: str | os.PathLike[str], *, trading_date: date | str | None = None,
                 symbol: str | None = None, strategy: str | None = None,
                 charges: ChargeSettings | None = None) -> str:
    """The HTML text of one day's report (see the module docstring)."""
    data = load_day(db_path, trading_date=trading_date, symbol=symbol, strategy=strategy,
                    charges=charges)
    return render(data)


def write_report(db_path: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None,
                 *, trading_date: date | str | None = None, symbol: str | None = None,
                 strategy: str | None = None,
                 charges: ChargeSettings | None = None) -> Path:
    """Write the report; returns its path (default: ``<db stem>-report-<date>.html`` beside the
    database). The file is replaced whole: a reader never sees half a report."""
    data = load_day(db_path, trading_date=trading_date, symbol=symbol, strategy=strategy,
                    charges=charges)
    out = Path(out_path) if out_path is not None else default_out_path(data.db_path, data.day)
    return write_page(out, render(data))


def write_page(out: Path, text: str) -> Path:
    """Write an HTML page whole (through a partial file renamed into place); returns ``out``."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        partial.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise ReportError(f"{out}: cannot write the report: {exc.strerror or exc}") from None
    return out


def default_out_path(db_path: Path, day: date) -> Path:
    """``<db stem>-report-<YYYY-MM-DD>.html`` in the database's directory."""
    return db_path.with_name(f"{db_path.stem}-report-{day.isoformat()}.html")


def render(data: DayData) -> str:
    """The whole HTML page of ``data``."""
    title = f"Day report {data.day.isoformat()}"
    parts = [
        f"<h1>{esc(title)}</h1>",
        _header(data),
        "<h2>Summary</h2>",
        _summary(data),
        "<h2>Trades</h2>",
        _trade_rows(data),
    ]
    if data.trades:
        parts += ["<h2>R per trade</h2>",
                  "<div class=\"chart\" id=\"r-chart\"></div>",
                  "<h2>Equity and drawdown</h2>",
                  "<div class=\"chart\" id=\"equity-chart\"></div>"]
    parts += [f"<h2>Candles{': ' + esc(data.symbol) if data.symbol else ''}</h2>",
              _candles(data),
              "<h2>Order log</h2>", _order_log(data.order_log),
              "<h2>Risk events</h2>", _risk_events(data.risk_events),
              "<h2>Reconciliation corrections</h2>", _corrections(data.corrections),
              "<h2>Plain-text trade table</h2>",
              f"<pre class=\"plain\">{esc(trade_table(data.trades, data.charges))}"
              f"</pre>"]
    return document(title, "\n".join(parts), scripts=_scripts(data))


def document(title: str, body: str, scripts: str = "") -> str:
    """A whole HTML page: ``title`` (escaped here), the report's CSS, ``body`` (HTML) and then
    ``scripts`` (HTML ``<script>`` elements)."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
            f"{scripts}</body>\n</html>\n")


def script_json(value: object) -> str:
    """``value`` as JSON safe inside an HTML ``<script>`` (no ``</script>`` can appear)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _scripts(data: DayData) -> str:
    charts = [interactive.chart_payload(c) for c in data.charts if c.bars]
    if not charts and not data.trades:
        return ""
    out = [f"<script>{interactive.static_text(interactive.LIBRARY)}</script>\n",
           f"<script>{interactive.static_text(interactive.DRAWING)}</script>\n"]
    if data.trades:
        trades = {"r": trade_charts.r_payload(data.trades),
                  "equity": trade_charts.equity_payload(data.trades)}
        out += [f"<script>{interactive.static_text(trade_charts.DRAWING)}</script>\n",
                f"<script>const TRADE_CHARTS = {script_json(trades)};\n"
                "NiftyTrades.drawR(document.getElementById('r-chart'), TRADE_CHARTS.r);\n"
                "NiftyTrades.drawEquity(document.getElementById('equity-chart'), "
                "TRADE_CHARTS.equity);</script>\n"]
    if charts:
        out += [f"<script>const CHARTS = {script_json(charts)};\n"
                "CHARTS.forEach(function (p, i) {\n"
                "  NiftyCandles.draw(document.getElementById('candles-' + i), p); });</script>\n"]
    return "".join(out)


_CSS = interactive.static_text("report.css")  # shared with the dashboard


def esc(text: object) -> str:
    """HTML-escaped text (every value from the database goes through here)."""
    return html.escape(str(text), quote=True)


def money(amount: float) -> str:
    sign = "-" if amount < 0 else ""
    return f"{sign}₹{abs(amount):,.2f}"


def sign_class(value: float) -> str:
    return "pos" if value > 0 else "neg" if value < 0 else ""


def _time(ts: float) -> str:
    return to_ist(ts).strftime("%H:%M:%S")


def html_table(headers: Sequence[str], rows: Iterable[Sequence[tuple[str, str]]],
           table_id: str) -> str:
    """An HTML table; each cell is (css class, already-escaped text)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    lines = ["".join(f"<td class=\"{cls}\">{text}</td>" if cls else f"<td>{text}</td>"
                     for cls, text in row) for row in rows]
    body = "\n".join(f"<tr>{line}</tr>" for line in lines)
    return f"<table id=\"{table_id}\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n" \
           f"</tbody>\n</table>"


def _header(data: DayData) -> str:
    strategy = data.strategy or (", ".join(data.strategies) if data.strategies else "(none)")
    rows = [("Date", data.day.isoformat()), ("Strategy", strategy),
            ("Account", ", ".join(data.accounts) or "(none)"), ("Database", str(data.db_path))]
    cells = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table id=\"header\">\n{cells}\n</table>"


def _summary(data: DayData) -> str:
    s = data.summary
    cards = [("Trades", str(s.trades), ""), ("Wins", str(s.wins), ""),
             ("Losses", str(s.losses), ""),
             ("Total R" + (f" ({r_unit_name(s.r_unit)})" if s.r_unit else ""),
              f"{s.total_r:+.2f}", sign_class(s.total_r)),
             ("P&L" if s.charges is None else "Gross P&L", money(s.pnl), sign_class(s.pnl)),
             *([] if s.charges is None else [
                 ("Charges", money(s.charges), ""),
                 ("Net P&L", money(s.net_pnl), sign_class(s.net_pnl))]),
             ("Max drawdown", f"{money(s.max_drawdown)} ({s.max_drawdown_r:.2f} R)", "")]
    note = "" if data.trades else f"<p class=\"note\">No trades on {esc(data.day.isoformat())}.</p>"
    return cards_html(cards, "summary") + note


def cards_html(cards: Sequence[tuple[str, str, str]], element_id: str) -> str:
    """A row of summary cards, each (label, value, css class of the value); escaped here."""
    html_cards = "".join(f"<div class=\"card\"><div class=\"label\">{esc(label)}</div>"
                         f"<div class=\"value {cls}\">{esc(value)}</div></div>"
                         for label, value, cls in cards)
    return f"<div class=\"cards\" id=\"{element_id}\">{html_cards}</div>"


def _trade_rows(data: DayData) -> str:
    trades = data.trades
    if not trades:
        return "<p class=\"note\">No trades.</p>"
    charged = data.charges is not None
    costs = trade_charges(trades, data.charges) if data.charges is not None else []
    headers = ("#", "strategy", "account", "symbol", "side", "qty", "entry (IST)", "entry price",
               "exit (IST)", "exit price", *(("gross P&L", "charges", "net P&L") if charged
                                             else ("P&L",)), "R", "MAE", "MFE", "exit reason")
    bars = {c.symbol: c.bars for c in data.charts}
    rows = []
    for i, t in enumerate(trades, start=1):
        move = excursion(t, bars.get(t.symbol, ()))
        money = [(f"num {sign_class(t.pnl)}", esc(f"{t.pnl:+,.2f}"))]
        if charged:
            net = t.pnl - costs[i - 1]
            money += [("num", f"{costs[i - 1]:,.2f}"), (f"num {sign_class(net)}",
                                                        esc(f"{net:+,.2f}"))]
        rows.append([("num", str(i)), ("", esc(t.strategy)), ("", esc(t.account)),
                     ("", esc(t.symbol)), ("", esc(t.action.value)), ("num", str(t.quantity)),
                     ("", _time(t.entry_ts)), ("num", f"{t.entry_price:.2f}"),
                     ("", _time(t.exit_ts)), ("num", f"{t.exit_price:.2f}"), *money,
                     (f"num {sign_class(t.r_multiple)}", f"{t.r_multiple:+.2f}"),
                     ("num neg", _excursion(move.mae_points, move.mae_r)),
                     ("num pos", _excursion(move.mfe_points, move.mfe_r)),
                     ("", esc(t.exit_reason or "-"))])
    return html_table(headers, rows, "trades")


def _excursion(points: float, r: float | None) -> str:
    """An excursion cell: price points per unit, and R when the trade has one."""
    return f"{points:+.2f}" + ("" if r is None else f" ({r:+.2f} R)")


def _risk_events(events: Sequence[RiskEvent]) -> str:
    if not events:
        return "<p class=\"note\">No risk events.</p>"
    headers = ("time (IST)", "strategy", "account", "kind", "threshold", "value", "action",
               "orders")
    rows = [[("", _time(e.ts)), ("", esc(e.strategy)), ("", esc(e.account or "-")),
             ("", esc(e.kind)), ("num", f"{e.threshold:,.2f}"), ("num", f"{e.value:,.2f}"),
             ("", esc(e.action)), ("", esc(", ".join(e.order_ids) or "-"))] for e in events]
    return html_table(headers, rows, "risk-events")


def _corrections(corrections: Sequence[Correction]) -> str:
    if not corrections:
        return "<p class=\"note\">No reconciliation corrections.</p>"
    headers = ("time (IST)", "strategy", "account", "symbol", "kind", "action", "engine qty",
               "broker qty", "order", "detail")

    def qty(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = [[("", _time(c.ts)), ("", esc(c.strategy)), ("", esc(c.account)), ("", esc(c.symbol)),
             ("", esc(c.kind)), ("", esc(c.action)), ("num", qty(c.engine_quantity)),
             ("num", qty(c.broker_quantity)),
             ("", esc(c.client_id or c.broker_order_id or "-")), ("", esc(c.detail or "-"))]
            for c in corrections]
    return html_table(headers, rows, "corrections")


def _candles(data: DayData) -> str:
    """A chart holder per charted symbol (drawn by the scripts at the end of the page)."""
    if data.symbol is None:
        note = ("<p class=\"note\">No symbol was traded or ordered that day; pass --symbol to "
                "chart one.</p>")
    elif not data.bars:
        note = (f"<p class=\"note\">No 1-minute bars stored for {esc(data.symbol)} on "
                f"{esc(data.day.isoformat())}.</p>")
    else:
        note = ""
    drawn = [c for c in data.charts if c.bars]
    if not drawn:
        return note
    legend = ("Interactive: scroll to zoom, drag to pan, hover for the minute's OHLC. Green/red "
              "candles: up/down minutes. Blue ↑ swing lows and orange ↓ swing highs, with their "
              "levels dashed until broken. Entry fills ●, exit fills ■ (green buy, red sell); "
              "stop triggers dotted red while working.")
    holders = "\n".join(f"<h3>{esc(c.symbol)}</h3><div class=\"candles\" id=\"candles-{i}\" "
                        f"data-symbol=\"{esc(c.symbol)}\"></div>" for i, c in enumerate(drawn))
    return f"{note}<p class=\"note\">{esc(legend)}</p>\n{holders}"


def _order_log(log: Sequence[tuple[StoredOrder, Sequence[OrderEvent]]]) -> str:
    if not log:
        return "<p class=\"note\">No orders.</p>"
    headers = ("created (IST)", "order", "strategy", "symbol", "purpose", "side", "qty", "type",
               "price", "trigger", "status", "filled", "avg price", "history")
    rows = []
    for o, events in log:
        history = " → ".join(f"{_time(e.ts)} {e.status.value}" + (f" ({e.reason})" if e.reason
                                                                  else "") for e in events)
        rows.append([("", _time(o.created_ts)), ("", esc(o.client_id)), ("", esc(o.strategy)),
                     ("", esc(o.symbol)), ("", esc(o.purpose.value)), ("", esc(o.action.value)),
                     ("num", str(o.quantity)), ("", esc(o.pricetype.value)),
                     ("num", f"{o.price:.2f}"), ("num", f"{o.trigger_price:.2f}"),
                     ("", esc(o.status.value)), ("num", str(o.filled_quantity)),
                     ("num", f"{o.average_price:.2f}"), ("", esc(history or "-"))])
    return html_table(headers, rows, "order-log")

