"""The end of a paper or live run: its end-of-session checks, and a safe stop's entry cancels.

Owns what a run must verify before it may report success (docs/operations.md, "End of a run"):

- ``check_session`` (while the engine still runs, after the market closed or a stop): the
  engine's positions equal the broker's, symbol by symbol (an orphan, a phantom or a mismatch
  that persists over a few reads fails); no order is left ``unknown``; no exit coordinator gave
  up on an order; with the day over (the session ended, not a stop by signal), nothing is left
  open at the broker (an exit that could not complete);
- ``check_dead_letters`` (after the engine stopped): no trading message (an intent, a cancel, an
  order event, a fill, a gate, an exit, a correction) became a dead letter;
- ``cancel_entries_at_safe_stop``: at a safe stop (the supervisor gave up), working ENTRY orders
  are read from the database and cancelled through a fresh broker client, each verified by its
  order status; stops and exits stay at the broker.

A check never raises: a part that cannot be read is itself a failed check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from loguru import logger

from engine.broker import Broker, BrokerError
from engine.messages import OrderPurpose, OrderStatus, PositionMark, PositionQuery, StatusRequest
from engine.runtime.registry import Registry
from engine.store.database import Database
from engine.trading.orders import BROKER_STATUSES

#: message types whose dead letter means a trading fact or request was lost
TRADING_MESSAGES = frozenset({"OrderIntent", "CancelIntent", "OrderEvent", "Fill",
                              "BrokerOrderUpdate", "TradingGate", "ExitAll",
                              "PositionCorrection", "RiskEvent"})
#: terminal broker statuses a verified cancel may end in (filled meanwhile counts as ended)
_ENDED = {OrderStatus.CANCELLED, OrderStatus.COMPLETE, OrderStatus.REJECTED,
          OrderStatus.EXPIRED}


@dataclass
class SessionChecks:
    """What failed at the end of a run (empty: every check passed) and what was done."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        if self.ok:
            return ["[CHECKS] end of session: all passed", *(f"  {n}" for n in self.notes)]
        return [f"[CHECKS] end of session: {len(self.failures)} FAILED",
                *(f"  FAILED {f}" for f in self.failures), *(f"  {n}" for n in self.notes)]


def check_session(checks: SessionChecks, *, registry: Registry, db: Database,
                  broker: Broker, account: str, day_over: bool, trading_day: date | None = None,
                  attempts: int = 3, pause_s: float = 0.5) -> None:
    """The checks that need the running engine (see the module docstring). ``trading_day``:
    the fills compared with the broker's tradebook are that day's (the broker's tradebook is
    the day's own: a process that runs for days has yesterday's fills in its database)."""
    divergent = _positions(registry, broker, account, attempts, pause_s, checks)
    for symbol, (mine, theirs) in sorted(divergent.items()):
        kind = "phantom" if theirs == 0 else "orphan" if mine == 0 else "mismatch"
        checks.failures.append(f"{kind} position on {symbol}: engine {mine}, broker {theirs}")
    _fills(db, broker, account, checks, trading_day)
    unknown = [o.client_id for o in db.open_orders(account=account)
               if o.status is OrderStatus.UNKNOWN]
    if unknown:
        checks.failures.append(f"{len(unknown)} order(s) in unknown state: "
                               f"{', '.join(unknown)}")
    try:
        risk = registry.ask("risk", StatusRequest(), timeout=30.0)
    except Exception as exc:  # a check never raises
        checks.failures.append(f"the risk manager did not answer ({type(exc).__name__})")
        risk = {}
    for name, book in sorted(risk.get("strategies", {}).items()):
        job = book.get("exit")
        if job and job.get("gave_up"):
            checks.failures.append(f"{name}: the exit ({job['reason']}) gave up on "
                                   f"{', '.join(job['gave_up'])}")
    if day_over:
        try:
            held = {r.symbol: int(r.quantity) for r in broker.positionbook() if r.quantity}
        except BrokerError as exc:
            checks.failures.append(f"the broker's positions cannot be read: {exc}")
        else:
            for symbol, qty in sorted(held.items()):
                checks.failures.append(f"exit not completed: {qty} of {symbol} still open at "
                                       f"the broker after the session")


def _fills(db: Database, broker: Broker, account: str, checks: SessionChecks,
           trading_day: date | None) -> None:
    """Every quantity the broker's tradebook shows for an order the engine placed is an
    engine fill (a lost fill fails), and the engine has no fill the broker does not."""
    try:
        trades = broker.tradebook()
    except BrokerError as exc:
        checks.failures.append(f"fills not compared: the tradebook cannot be read: {exc}")
        return
    mine: dict[str, int] = {}
    for fill in db.fills(account=account, trading_date=trading_day):
        mine[fill.broker_order_id] = mine.get(fill.broker_order_id, 0) + fill.quantity
    known = {o.broker_order_id for o in db.orders(account=account, trading_date=trading_day)
             if o.broker_order_id}
    theirs: dict[str, int] = {}
    for trade in trades:
        if trade.orderid in known:
            theirs[trade.orderid] = theirs.get(trade.orderid, 0) + int(trade.quantity)
    for oid in sorted(mine.keys() | theirs.keys()):
        if mine.get(oid, 0) != theirs.get(oid, 0):
            checks.failures.append(f"fills of broker order {oid}: engine {mine.get(oid, 0)}, "
                                   f"broker tradebook {theirs.get(oid, 0)}")


def _positions(registry: Registry, broker: Broker, account: str, attempts: int,
               pause_s: float, checks: SessionChecks) -> dict[str, tuple[int, int]]:
    """Symbols where the engine and the broker disagree on every one of ``attempts`` reads
    (a fill in flight settles between reads)."""
    divergent: dict[str, tuple[int, int]] | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        try:
            marks: tuple[PositionMark, ...] = registry.ask(
                "positions", PositionQuery(account=account), timeout=30.0)
            rows = broker.positionbook()
        except Exception as exc:  # a check never raises
            checks.failures.append(f"positions not compared: {type(exc).__name__}: {exc}")
            return {}
        mine: dict[str, int] = {}
        for mark in marks:
            mine[mark.symbol] = mine.get(mark.symbol, 0) + mark.quantity
        theirs: dict[str, int] = {}
        for row in rows:
            theirs[row.symbol] = theirs.get(row.symbol, 0) + int(row.quantity)
        now = {s: (mine.get(s, 0), theirs.get(s, 0)) for s in mine.keys() | theirs.keys()
               if mine.get(s, 0) != theirs.get(s, 0)}
        divergent = now if divergent is None else {s: now[s] for s in divergent if s in now}
        if not divergent:
            return {}
    return divergent or {}


def check_dead_letters(checks: SessionChecks, registry: Registry) -> None:
    """Trading messages that became dead letters (the registry keeps the recent ones)."""
    lost: dict[tuple[str, str], int] = {}
    for letter in registry.dead_letters():
        if letter.message_type in TRADING_MESSAGES:
            key = (letter.message_type, letter.name)
            lost[key] = lost.get(key, 0) + 1
    for (what, name), n in sorted(lost.items()):
        checks.failures.append(f"{n} {what} message(s) to {name} became dead letters")
    total = registry.dead_letter_count
    if total:
        checks.notes.append(f"dead letters: {total} in all (market data and records "
                            f"included)")


def cancel_entries_at_safe_stop(db: Database, connect: Callable[[], Any], account: str,
                                checks: SessionChecks, *, attempts: int = 5,
                                pause_s: float = 0.5) -> None:
    """Cancel the working ENTRY orders in ``db`` through a fresh broker client (``connect``)
    and verify each; stops and exits stay. What could not be verified is a failed check."""
    entries = [o for o in db.open_orders(account=account)
               if o.purpose is OrderPurpose.ENTRY and o.broker_order_id]
    if not entries:
        checks.notes.append("safe stop: no working entry order to cancel")
        return
    try:
        broker = connect()
    except Exception as exc:  # the run is ending: say it, never raise
        checks.failures.append(f"safe stop: {len(entries)} working entry order(s) NOT "
                               f"cancelled: no broker client ({type(exc).__name__}: {exc})")
        return
    try:
        for order in entries:
            oid = str(order.broker_order_id)
            try:
                broker.cancel_order(strategy=order.strategy, orderid=oid)
            except BrokerError as exc:
                logger.warning("safe stop: cancel of {} ({}) answered: {}", order.client_id,
                               oid, exc)
            status = _verified(broker, order.strategy, oid, attempts, pause_s)
            if status in _ENDED:
                checks.notes.append(f"safe stop: entry {order.client_id} ({oid}) ended "
                                    f"{status.value}")
            else:
                checks.failures.append(f"safe stop: entry {order.client_id} ({oid}) not "
                                       f"confirmed cancelled (status "
                                       f"{status.value if status else 'unreadable'})")
    finally:
        close = getattr(broker, "close", None)
        if close is not None:
            close()


def _verified(broker: Broker, strategy: str, orderid: str, attempts: int,
              pause_s: float) -> OrderStatus | None:
    status: OrderStatus | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        try:
            row = broker.order_status(strategy=strategy, orderid=orderid)
            status = BROKER_STATUSES.get(row.status.strip().lower())
        except BrokerError:
            status = None
            continue
        if status in _ENDED:
            return status
    return status
