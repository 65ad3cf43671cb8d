"""What the dashboard shows: one JSON snapshot of the engine's day, and a symbol's candle chart.

Owns ``DashboardView``: the status the operator channel gives (``EngineOperator.status``, the
very answer ``run.py status`` prints, so the page and ``status`` agree) joined with the day as the
engine's database holds it (working orders, trades, alerts and risk events, the last heartbeat,
candles). A finished run has no engine to ask: ``DashboardView`` over a database alone derives the
status from what was stored (the positions and risk state as last written) and shows that day.

The snapshot (JSON types only; times epoch seconds, money rupees)::

    source    "paper" | "live" | "database"
    day       YYYY-MM-DD;  now: the engine clock (a finished run: its last stored event)
    status    engine.app.control.EngineStatus (positions carry ``r`` too)
    heartbeat the last stored heartbeat {ts, state, positions, data_live, data_total, stale,
              restarts} or null
    working   the orders still working, oldest first
    trades    the day's closed trades in exit order
    alerts    the day's alerts and risk events, newest first, at most ``MAX_ALERTS``
    symbols   what the chart can show (subscribed symbols; a finished run: those it traded,
              then NIFTY spot)
    version   a digest of everything above but ``now``: the page redraws when it changes
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from engine.market.instruments import INDEX_SYMBOL, trading_date
from engine.report.candles import chart_payload, read_symbol_day
from engine.report.data import latest_day, parse_day
from engine.runtime.clock import ist_epoch
from engine.store.database import Database

MAX_ALERTS = 200

StatusSource = Callable[[], dict[str, Any]]


class DashboardView:
    """Snapshots of one day of one engine database, with the running engine's status (or, with
    ``status=None``, the status as stored: a finished run)."""

    def __init__(self, db_path: Path, *, day: date | str | None = None,
                 status: StatusSource | None = None, source: str = "database",
                 symbols: Sequence[str] = (), now: Callable[[], float] | None = None) -> None:
        self.db = Database(db_path)
        self.day = parse_day(day) if day is not None else latest_day(self.db, db_path)
        self._status = status
        self.source = source
        self._symbols = tuple(symbols)
        self._now = now
        self._lock = threading.Lock()  # one reader of the database at a time

    def close(self) -> None:
        self.db.close()

    # -- the snapshot ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            body = self._body()
        version = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        last = max([0.0, *(t["exit_ts"] for t in body["trades"]),
                    *(a["ts"] for a in body["alerts"])])
        now = self._now() if self._now is not None else last
        return {**body, "now": now, "version": version[:16]}

    def _body(self) -> dict[str, Any]:
        db, day = self.db, self.day
        orders = db.orders(trading_date=day)
        trades = db.trades(trading_date=day)
        status = self._status() if self._status is not None else self._stored_status()
        start = ist_epoch(day.year, day.month, day.day, 0, 0)
        beats = db.heartbeats(since=start)
        alerts = [{"ts": a.ts, "kind": a.kind, "severity": a.severity.value,
                   "message": a.message} for a in db.alerts(since=start)]
        alerts += [{"ts": e.ts, "kind": f"risk {e.kind}", "severity": "warning",
                    "message": f"{e.strategy}: {e.action} ({e.value:,.2f} against "
                               f"{e.threshold:,.2f})"} for e in db.risk_events(trading_date=day)]
        alerts.sort(key=lambda a: a["ts"], reverse=True)
        traded = [*(t.symbol for t in trades), *(o.symbol for o in orders)]
        symbols = self._symbols or tuple(dict.fromkeys([*traded, INDEX_SYMBOL]))
        return {
            "source": self.source, "day": day.isoformat(), "status": status,
            "heartbeat": None if not beats else {
                "ts": beats[-1].ts, "state": beats[-1].state, "positions": beats[-1].positions,
                "data_live": beats[-1].data_live, "data_total": beats[-1].data_total,
                "stale": beats[-1].stale, "restarts": beats[-1].restarts},
            "working": [{"client_id": o.client_id, "strategy": o.strategy, "symbol": o.symbol,
                         "purpose": o.purpose.value, "action": o.action.value,
                         "quantity": o.quantity, "filled": o.filled_quantity,
                         "pricetype": o.pricetype.value, "price": o.price,
                         "trigger_price": o.trigger_price, "status": o.status.value,
                         "created_ts": o.created_ts}
                        for o in orders if not o.status.is_terminal],
            "trades": [{"strategy": t.strategy, "symbol": t.symbol, "action": t.action.value,
                        "quantity": t.quantity, "entry_ts": t.entry_ts,
                        "entry_price": t.entry_price, "exit_ts": t.exit_ts,
                        "exit_price": t.exit_price, "pnl": t.pnl, "r": t.r_multiple,
                        "exit_reason": t.exit_reason} for t in sorted(
                            trades, key=lambda t: (t.exit_ts, t.entry_ts))],
            "alerts": alerts[:MAX_ALERTS],
            "symbols": list(symbols),
        }

    def _stored_status(self) -> dict[str, Any]:
        """A finished run's status: its positions and risk state as the engine last stored
        them (the same keys as ``EngineStatus``; what cannot be known is left out)."""
        db, day = self.db, self.day
        marks = [m for m in db.positions(open_only=False) if trading_date(m.ts) == day]
        trades = db.trades(trading_date=day)
        owners = {(o.strategy, o.account) for o in [*db.orders(trading_date=day), *trades]}
        strategies: dict[str, Any] = {}
        for strategy, account in sorted(owners):
            stored = db.risk_state(strategy, account)
            strategies[strategy] = {
                "state": str(stored.state.value) if stored is not None else None,
                "halt_reason": stored.reason if stored is not None else "",
                "realized_pnl": round(sum(t.pnl for t in trades if t.strategy == strategy), 2),
                "realized_r": round(sum(t.r_multiple for t in trades
                                        if t.strategy == strategy), 2)}
        return {
            "connection": {"websocket": "finished run (database)"},
            "positions": [{"symbol": m.symbol, "strategy": m.strategy, "quantity": m.quantity,
                           "average_price": m.average_price, "ltp": m.ltp,
                           "pnl": round(m.unrealized + m.realized, 2),
                           "r": round(m.r_multiple, 2), "price_pending": m.price_pending}
                          for m in marks if m.quantity != 0],
            "risk": {"strategies": strategies,
                     "realized_pnl": round(sum(t.pnl for t in trades), 2)},
        }

    # -- the chart -------------------------------------------------------------------------------
    def candles(self, symbol: str) -> dict[str, Any]:
        """``symbol``'s chart of the day (``engine.report.candles.chart_payload``)."""
        with self._lock:
            orders = self.db.orders(trading_date=self.day)
            fills = self.db.fills(trading_date=self.day)
            return chart_payload(read_symbol_day(self.db, symbol, self.day, orders, fills))

