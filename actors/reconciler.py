"""The Reconciler actor (registry name ``reconciler``): the engine's positions against the broker's.

Owns (execution-and-risk.md, "Reconciler"):

- **When**: at start (fail-closed: the global trading gate stays closed — no new entry for any
  strategy — until one startup pass has succeeded; failed passes are retried every
  ``startup_retry_s`` with an alert), every ``interval_s``, and after every feed reconnect
  (``FeedStatus`` from the feed).
- **What**: the position monitor's positions (summed per symbol over the account's strategies)
  against the broker's positionbook, with the orderbook as evidence. A symbol on which the
  engine has a working order is left for this pass (a fill the order manager has not reported
  yet would otherwise be counted twice); it is compared on the next.
  * phantom (engine holds, broker flat, e.g. a stop filled unseen): closed internally at the
    price of the broker's last complete order on the closing side (else the last price);
  * orphan (broker holds, engine flat): alerted; adopted into ``adopt_strategy`` only when
    ``adopt_orphans`` is set;
  * quantity mismatch: the broker is the truth; the difference is booked on the strategy that
    holds the most of the symbol.
  Each finding is a ``reconciliation`` row, a ``PositionCorrection`` to the monitor and ONE
  alert per distinct finding (the same mismatch seen again is not alerted again).
- **Missing stops**: a short with less stop quantity working than it holds (and no exit
  working) is a missing stop. Its strategy is asked to protect it at once (``Command``
  ``protect``); if it is still missing on the next pass, the reconciler places a stop-limit BUY
  itself (``fallback_stop_pct`` above the higher of the average and the last price) with a
  critical alert. At startup this happens before the gate opens.
- An unreadable broker is never treated as flat: the pass fails, nothing is corrected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from engine.broker import Broker, BrokerError, OrderRow
from engine.market.instruments import InstrumentSpec, ceil_to_tick, round_to_tick, trading_date
from engine.messages import (
    Action,
    Command,
    FeedStatus,
    OrderIntent,
    OrderPurpose,
    PositionCorrection,
    PositionMark,
    PositionQuery,
    PriceType,
    Severity,
    StatusRequest,
    TimerFired,
    TradingGate,
    WorkingOrder,
    WorkingOrdersQuery,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.settings import setting
from engine.store.database import Correction, record

RUN_TIMER = "reconcile.run"
HEALTH = "health"


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    """Section ``[reconcile]``."""

    interval_s: float = setting(60.0, "seconds between reconciliations (also after every feed "
                                "reconnect and at start)", min=1.0, max=3600.0)
    startup_retry_s: float = setting(5.0, "a failed startup reconciliation is retried after "
                                     "this many seconds (entries stay closed meanwhile)",
                                     min=0.1, max=600.0)
    adopt_orphans: bool = setting(False, "adopt positions the broker has and the engine does "
                                  "not (otherwise only alert)")
    adopt_strategy: str = setting("adopted", "strategy name adopted positions are booked on")
    fallback_stop_pct: float = setting(10.0, "a missing stop the strategy did not re-place is "
                                       "placed this % above the higher of average and last "
                                       "price", min=0.5, max=100.0)
    stop_limit_offset: float = setting(3.0, "limit of a fallback stop = trigger + this (rupees)",
                                       min=0.0, max=100.0)
    timeout_s: float = setting(15.0, "wait for the order manager's and the position monitor's "
                               "answers, seconds", min=0.5, max=120.0)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # phantom | orphan | mismatch | missing_stop
    symbol: str
    engine_quantity: int
    broker_quantity: int


class Reconciler(EngineActor):
    """Registry name ``reconciler``; see the module docstring."""

    def __init__(self, supervision: Supervision | None = None, *, account: str,
                 settings: ReconcileSettings, instrument: InstrumentSpec, broker: Broker,
                 strategies: Sequence[str], exchanges: Mapping[str, str] | None = None,
                 orders: str = "orders", positions: str = "positions",
                 store: str | None = "store", **kw: Any) -> None:
        if supervision is None:
            kw.setdefault("name", "reconciler")
        super().__init__(supervision, **kw)
        if self.clock is None:
            raise ValueError("Reconciler needs an engine clock")
        self.account = account
        self.settings = settings
        self.instrument = instrument
        self.broker = broker
        self.strategies = tuple(strategies)
        self.exchanges = dict(exchanges or {})
        self.orders = orders
        self.positions = positions
        self.store = store
        self.ready = False
        self.passes = 0
        self.failures = 0
        self.last_error = ""
        self.last_ok_ts: float | None = None
        self._alerted: set[Finding] = set()
        self._recorded: set[tuple[Finding, str]] = set()  # a finding that only alerts: once
        self._asked_protect: set[tuple[str, str]] = set()
        self._fallback_seq = 0
        self._counts: dict[str, int] = {}

    def on_start(self) -> None:
        now = self.now()
        self.schedule_at(now, RUN_TIMER, payload="startup")

    # -- triggers ------------------------------------------------------------------------------
    @handles(TimerFired)
    def _on_timer(self, timer: TimerFired) -> None:
        if timer.name == RUN_TIMER:
            self._run(str(timer.payload or "periodic"))

    @handles(FeedStatus)
    def _on_feed(self, status: FeedStatus) -> None:
        if status.state == "connected":
            self._run("feed reconnect")

    @handles(StatusRequest)
    def _on_status(self, _: StatusRequest) -> dict[str, Any]:
        return {"ready": self.ready, "passes": self.passes, "failures": self.failures,
                "last_ok_ts": self.last_ok_ts, "last_error": self.last_error,
                "findings": dict(sorted(self._counts.items()))}

    # -- one pass ------------------------------------------------------------------------------
    def _run(self, why: str) -> None:
        now = self.now()
        startup = not self.ready
        try:
            ok = self._reconcile(why, now)
        except Exception as exc:  # a failed pass must never look like a good one
            ok, self.last_error = False, f"{type(exc).__name__}: {exc}"
            logger.exception("reconciler[{}]: pass failed", self.account)
        self.passes += 1
        if not ok:
            self.failures += 1
            self._alert("reconcile_failed", f"reconciliation ({why}) failed: {self.last_error}"
                        + ("; entries stay closed" if startup else ""),
                        Severity.CRITICAL if startup else Severity.WARNING)
        else:
            self.last_ok_ts, self.last_error = now, ""
            if startup:
                self.ready = True
                logger.info("reconciler[{}]: startup reconciliation done; entries open",
                            self.account)
                self.tell(self.orders, TradingGate(entries=True, exits=True,
                                                   reason="startup reconciliation done"))
        if why in ("startup", "periodic"):
            delay = self.settings.interval_s if self.ready else self.settings.startup_retry_s
            self.schedule_at(now + delay, RUN_TIMER,
                             payload="periodic" if self.ready else "startup")

    def _reconcile(self, why: str, now: float) -> bool:
        try:
            broker_rows = self.broker.positionbook()
            book = self.broker.orderbook()
        except BrokerError as exc:
            self.last_error = f"broker unreadable: {exc}"
            return False
        assert self.registry is not None
        timeout = self.settings.timeout_s
        marks: tuple[PositionMark, ...] = self.registry.ask(
            self.positions, PositionQuery(account=self.account), timeout=timeout)
        working: tuple[WorkingOrder, ...] = self.registry.ask(
            self.orders, WorkingOrdersQuery(), timeout=timeout)
        at_broker: dict[str, int] = {}
        for row in broker_rows:
            at_broker[row.symbol] = at_broker.get(row.symbol, 0) + int(row.quantity)
            self.exchanges.setdefault(row.symbol, row.exchange)
        engine: dict[str, int] = {}
        holders: dict[str, list[PositionMark]] = {}
        for mark in marks:
            engine[mark.symbol] = engine.get(mark.symbol, 0) + mark.quantity
            holders.setdefault(mark.symbol, []).append(mark)
        busy = {o.intent.symbol for o in working}
        corrected: set[str] = set()
        for symbol in sorted(engine.keys() | at_broker.keys()):
            mine, theirs = engine.get(symbol, 0), at_broker.get(symbol, 0)
            if mine == theirs or symbol in busy:
                continue
            finding = Finding("phantom" if theirs == 0 else "orphan" if mine == 0
                              else "mismatch", symbol, mine, theirs)
            self._correct(finding, holders.get(symbol, []), book, now)
            corrected.add(symbol)
        # the marks of a symbol just corrected are wrong: its stops are checked next pass
        # (a stop sized on them could open a position the broker does not hold)
        self._check_stops(tuple(m for m in marks if m.symbol not in corrected), working, now)
        logger.debug("reconciler[{}]: pass ({}) ok: {} engine symbol(s), {} at the broker",
                     self.account, why, len(engine), len(at_broker))
        return True

    # -- corrections ---------------------------------------------------------------------------
    def _correct(self, f: Finding, holders: list[PositionMark], book: list[OrderRow],
                 now: float) -> None:
        diff = f.broker_quantity - f.engine_quantity
        if f.kind == "orphan" and not self.settings.adopt_orphans:
            self._finding(f, self.settings.adopt_strategy, "alert only (adopt_orphans off)",
                          now, "")
            return
        if f.kind == "orphan":
            strategy = self.settings.adopt_strategy
            target, price = f.broker_quantity, 0.0
            detail = "adopted"
        else:
            holder = max(holders, key=lambda m: (abs(m.quantity), m.strategy))
            strategy, target = holder.strategy, holder.quantity + diff
            side = "BUY" if diff > 0 else "SELL"
            price = _last_complete_price(book, f.symbol, side) or self._last_trade_price(
                f.symbol, side)
            detail = f"closed at {price or 'the last price'} ({side} seen at the broker)" \
                if f.kind == "phantom" else f"set to the broker's {f.broker_quantity}"
        self.tell(self.positions, PositionCorrection(
            strategy, self.account, f.symbol, self.exchanges.get(f.symbol, "NFO"), target,
            price, f"reconcile {f.kind}: engine {f.engine_quantity}, broker "
                   f"{f.broker_quantity}", now))
        self._finding(f, strategy, "corrected", now, detail)

    def _finding(self, f: Finding, strategy: str, action: str, now: float, detail: str) -> None:
        self._counts[f.kind] = self._counts.get(f.kind, 0) + 1
        if self.store is not None and (action == "corrected" or (f, action) not in self._recorded):
            self._recorded.add((f, action))
            self.tell(self.store, record(Correction(
                strategy, self.account, f.symbol, f.kind, action, now, trading_date(now),
                f.engine_quantity, f.broker_quantity, detail=detail)))
        if f not in self._alerted:
            self._alerted.add(f)
            self._alert("reconcile_" + f.kind, f"{f.kind} on {f.symbol}: engine "
                        f"{f.engine_quantity}, broker {f.broker_quantity}: {action}"
                        + (f" ({detail})" if detail else ""),
                        Severity.CRITICAL if f.kind in ("phantom", "orphan") else
                        Severity.WARNING)

    # -- missing stops -------------------------------------------------------------------------
    def _check_stops(self, marks: tuple[PositionMark, ...], working: tuple[WorkingOrder, ...],
                     now: float) -> None:
        for mark in marks:
            if mark.quantity >= 0:
                continue
            mine = [o for o in working if o.intent.symbol == mark.symbol
                    and o.intent.strategy == mark.strategy and o.intent.action is Action.BUY]
            if any(o.intent.purpose is OrderPurpose.EXIT for o in mine):
                continue
            covered = sum(o.intent.quantity - o.filled for o in mine
                          if o.intent.purpose is OrderPurpose.STOP)
            missing = -mark.quantity - covered
            key = (mark.strategy, mark.symbol)
            if missing <= 0:
                self._asked_protect.discard(key)
                continue
            f = Finding("missing_stop", mark.symbol, mark.quantity, covered)
            if key not in self._asked_protect and mark.strategy in self.strategies:
                self._asked_protect.add(key)
                self.tell(f"strategy.{mark.strategy}", Command(
                    "protect", (("symbol", mark.symbol), ("strategy", mark.strategy)), now))
                self._finding(f, mark.strategy, "strategy asked to re-place its stop", now, "")
                continue
            self._place_fallback_stop(mark, missing, now)
            self._asked_protect.discard(key)
            self._finding(f, mark.strategy, "fallback stop placed", now,
                          f"{missing} uncovered")

    def _last_trade_price(self, symbol: str, side: str) -> float:
        """The broker's latest trade on ``side`` for ``symbol`` (0 if none or unreadable): for
        brokers whose orderbook rows carry no average price (Zerodha, Angel)."""
        try:
            trades = self.broker.tradebook()
        except BrokerError:
            return 0.0
        done = [t for t in trades if t.symbol == symbol and t.action.upper() == side]
        return done[-1].average_price if done else 0.0

    def _place_fallback_stop(self, mark: PositionMark, quantity: int, now: float) -> None:
        tick = self.instrument.tick_size
        base = max(mark.average_price, mark.ltp)
        trigger = ceil_to_tick(base * (1 + self.settings.fallback_stop_pct / 100.0), tick)
        limit = round_to_tick(trigger + self.settings.stop_limit_offset, tick)
        self._fallback_seq += 1
        cid = f"{mark.strategy}-{trading_date(now):%y%m%d}-r{int(now)}{self._fallback_seq:02d}"
        self.tell(self.orders, OrderIntent(
            client_id=cid, strategy=mark.strategy, account=self.account, symbol=mark.symbol,
            exchange=self.exchanges.get(mark.symbol, "NFO"), action=Action.BUY,
            quantity=quantity, pricetype=PriceType.SL, price=limit, trigger_price=trigger,
            purpose=OrderPurpose.STOP, reason="reconciler: missing stop", created_ts=now))
        self._alert("reconcile_fallback_stop", f"{mark.strategy} {mark.symbol}: short "
                    f"{quantity} had no stop and the strategy did not re-place it; placed "
                    f"{cid} BUY SL trigger {trigger} limit {limit}", Severity.CRITICAL)

    def _alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        self.raise_alert(kind, f"reconciler[{self.account}]: {message}", severity, HEALTH)



def _last_complete_price(book: list[OrderRow], symbol: str, side: str) -> float:
    """Average price of the broker's latest complete order on ``side`` for ``symbol`` (0 if
    none): the stop that filled unseen."""
    done = [r for r in book if r.symbol == symbol and r.action.upper() == side
            and r.status.lower() == "complete" and (r.average_price or 0.0) > 0]
    return (done[-1].average_price or 0.0) if done else 0.0
