"""The OrderManager actor: the only code that calls the broker's order endpoints (one account).

Owns, for its account (execution-and-risk.md, "Order manager"):

- taking ``OrderIntent`` / ``CancelIntent`` (from strategy hosts and the risk manager):
  validation and the trading gate BEFORE anything is stored (a refusal is an ``OrderEvent``
  ``rejected`` to the strategy), then the intent is made durable in the store (asked, so it is
  committed) BEFORE the request leaves; a store that cannot write means the order is not sent;
- the outgoing order-request rate limit (``rate_per_s``, place and cancel alike) on the engine
  clock: requests wait in a queue (cancels first, then stops and exits, then entries) and a
  timer releases them; the actor never sleeps;
- placements whose outcome is unknown (the REST client raises ``OutcomeUnknown`` and never
  re-sends): the order becomes ``unknown``; the next orderbook read adopts the matching row, or
  the order is re-sent after it was verified absent (``resend_attempts``, each checked first).
  Absent means missing from an orderbook read at least ``unknown_settle_s`` after the failed
  attempt: a server can still be working on a request its client gave up on, and an order it
  places after an earlier read must not get a twin. Never two orders for one intent. A
  protective order (stop, exit) verified absent is re-sent only while no broker state loss was
  declared since its first attempt (a working order the broker has never heard of, found by
  ``OrderSync``) and only when the broker's positionbook, read first, still shows the position
  it closes; otherwise it ends ``rejected`` with one critical alert: re-sent, it would open a
  position on a broker that holds nothing (the reconciler's state-loss handling owns that);
- verified cancel-then-replace: cancel → the broker must report ``cancelled`` (order status read
  right away, then every ``cancel_poll_s`` until ``cancel_confirm_timeout_s``; the order-update
  stream counts too) → only then is the replacement placed, and only if nothing more filled
  meanwhile. A refused or unconfirmed cancel keeps the old order tracked, places nothing and
  says so (an ``OrderEvent`` rejecting the replacement, and an ``Alert``);
- fill discovery: ``BrokerOrderUpdate`` messages (the order-update stream, or the simulated
  broker's listener), an order-status read after every order request, and an orderbook poll at
  most once per ``poll_interval_s`` while anything is working. Each fill is applied once
  (``engine.trading.orders.OrderBook``); the store's fill keys rebuild that guard after a restart;
  a report without the fill's price or quantity (Zerodha's and Angel's rows) is priced from one
  tradebook read, never guessed; a quantity the broker proves filled that the tradebook does not
  price yet goes out as a ``PendingFill`` (quantity, no price) and is priced by a later read;
- recovery on start: working orders from the store, their fill keys, and every order left
  ``submitting`` / ``unknown`` resolved through the orderbook like a timed-out placement;
- the trading gate, which it owns: the global ``TradingGate`` (entries closed until startup
  reconciliation opens them, unless ``start_open``) and each strategy's own (the risk manager's:
  REDUCING / HALTED close entries). Every change of a strategy's effective gate (both combined)
  is told to its host ``strategy.<name>``; a starting host asks it (``GateQuery``);
- ``WorkingOrdersQuery`` (the reconciler and the exit coordinator read the working orders) and
  ``StatusRequest`` (a dict for ``run.py status``).

Outputs: ``OrderEvent``, ``Fill`` and ``PendingFill`` go to the store (asked: durable), then to
``strategy.<strategy>`` and ``positions``; a split child's events go to the store only (the
strategy sees its own order, whose state is derived from the children). Alerts go to
``health``.

Broker calls are synchronous on the actor's thread (one owner, deterministic in replay): the
execution group's liveness timeout must exceed the longest broker call (REST timeout × retries).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import pykka
from loguru import logger

from actors.store import WriteReceipt
from engine.broker import (
    AuthError,
    Broker,
    BrokerError,
    BrokerUnavailable,
    OrderNotFound,
    OrderRow,
    OutcomeUnknown,
    RateLimited,
    RejectedError,
    SemiAutoMode,
)
from engine.market.instruments import InstrumentSpec, trading_date
from engine.messages import (
    BrokerOrderUpdate,
    CancelIntent,
    Fill,
    GateQuery,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderSync,
    OrderSyncReply,
    PendingFill,
    Severity,
    StatusRequest,
    TimerFired,
    TradingGate,
    WorkingOrder,
    WorkingOrdersQuery,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.registry import NoSuchActor
from engine.settings import setting
from engine.store.database import Database, StoreError
from engine.trading.orders import (
    CancelRequest,
    Emitted,
    InvalidIntent,
    OrderBook,
    TrackedOrder,
    uncovered_reason,
    update_from_row,
    updates_from_rows,
    validate_intent,
)

S = OrderStatus
POLL_TIMER = "orders.poll"
SEND_TIMER = "orders.send"
CANCEL_TIMER = "orders.cancel_check"
HEALTH = "health"
PLACE = "place"
CANCEL = "cancel"
#: Queue order of waiting requests: cancels, then protective orders, then new exposure.
_PRIORITY = {CANCEL: 0, OrderPurpose.STOP.value: 1, OrderPurpose.EXIT.value: 1,
             OrderPurpose.ENTRY.value: 2}


@dataclass(frozen=True, slots=True)
class OrderSettings:
    """Section ``[orders]``: request rate, fill polling, cancel verification, unknown outcomes."""

    rate_per_s: float = setting(8.0, "order requests (place and cancel) per real second at "
                                "most; keep below the broker's 10/s", min=0.1, max=100.0)
    poll_interval_s: float = setting(1.0, "orderbook poll while orders are working, seconds "
                                     "(at most one orderbook read per interval; real seconds: "
                                     "scaled by the clock's speed in paper)", min=0.01,
                                     max=60.0)
    cancel_confirm_timeout_s: float = setting(10.0, "a cancel the broker has not confirmed "
                                              "within this many (real) seconds is given up: the "
                                              "old order stays, no replacement", min=0.05,
                                              max=600.0)
    cancel_poll_s: float = setting(0.5, "order status reads while a cancel awaits confirmation, "
                                   "real seconds apart", min=0.01, max=60.0)
    resend_attempts: int = setting(2, "re-sends of an order whose placement outcome was unknown "
                                   "and that the orderbook does not show (each checked first)",
                                   min=0, max=10)
    start_open: bool = setting(False, "open entries at start (replay); otherwise startup "
                               "reconciliation opens them (fail-closed)")
    match_skew_s: float = setting(2.0, "an orderbook row stamped up to this long before a "
                                  "placement attempt still matches it (clock skew, whole-second "
                                  "stamps), seconds", min=0.0, max=60.0)
    store_timeout_s: float = setting(5.0, "wait for the store to confirm a write, seconds",
                                     min=0.1, max=60.0)
    unknown_settle_s: float = setting(2.0, "real seconds a placement with an unknown outcome "
                                      "may still be in flight at the server: only an orderbook "
                                      "read this long after the failed attempt can show it "
                                      "absent and let it be re-sent (scaled by the clock's "
                                      "speed in paper; none on a virtual clock)", min=0.0,
                                      max=600.0)


class OrderManager(EngineActor):
    """Registry name ``orders``; see the module docstring."""

    def __init__(self, supervision: Supervision | None = None, *, broker: Broker, account: str,
                 settings: OrderSettings, instrument: InstrumentSpec, db: Database | None,
                 store: str | None = "store", positions: str | None = "positions",
                 strategies: tuple[str, ...] = (), **kw: Any) -> None:
        if supervision is None:
            kw.setdefault("name", "orders")
        super().__init__(supervision, **kw)
        if self.clock is None:
            raise ValueError("OrderManager needs an engine clock")
        self.broker = broker
        # reads the manager repeats on its own timers (status, orderbook, tradebook): one
        # attempt each, never a retry pause on the actor's thread
        once = getattr(broker, "without_retries", None)
        self._reads: Broker = once() if once is not None else broker
        self.account = account
        self.settings = settings
        self.instrument = instrument
        self.db = db
        self.store = store
        self.positions = positions
        self.strategies = strategies
        self.book = OrderBook(account, instrument)
        why = "start_open" if settings.start_open else "closed until startup reconciliation"
        self._gate = TradingGate(entries=settings.start_open, exits=True, reason=why)
        self._strategy_gates: dict[str, TradingGate] = {}
        self._queue: list[tuple[int, int, str, str]] = []  # (priority, seq, kind, client id)
        self._seq = itertools.count()
        self._next_send = float("-inf")
        self._send_wake: float | None = None
        self._draining = False
        self._last_request: dict[str, Any] | None = None
        self._last_order_id: str | None = None
        self._counts: Counter[str] = Counter()
        self._reports: Counter[str] = Counter()
        self._poll_failing = False
        self._unknown_since: dict[str, float] = {}  # client id -> engine time it became unknown
        self._touched: dict[str, float] = {}  # symbol -> engine time of its last request or fill
        self._loss_declared_at: float | None = None  # last OrderSync that found orders lost

    # -- lifecycle -----------------------------------------------------------------------------
    def on_start(self) -> None:
        self._recover()
        if any(o.status is S.UNKNOWN for o in self.book.working_legs()):
            # a request a restart left unknown may have filled while the engine was down:
            # one orderbook read now, before anyone (the startup reconciliation, a status
            # read) is answered, not at the first poll
            self._poll()
        self.schedule_every(self.real_s(self.settings.poll_interval_s), POLL_TIMER)

    # -- messages ------------------------------------------------------------------------------
    @handles(OrderIntent)
    def _on_intent(self, intent: OrderIntent) -> None:
        self._submit(intent)

    @handles(CancelIntent)
    def _on_cancel(self, msg: CancelIntent) -> None:
        order = self.book.get(msg.client_id)
        if order is None:
            why = "it is not an order of this account"
        elif order.split_parent is not None:
            why = f"it is part of split order {order.split_parent}; cancel that one"
        elif (refusal := self._gate_refusal(order.intent.strategy, OrderPurpose.EXIT)):
            why = refusal
            self._alert("cancel_refused", f"cancel of {msg.client_id} refused: {refusal}")
        elif not order.working:
            why = f"it is already {order.status.value}"
        elif order.cancel is not None:
            why = "a cancel of it is already in progress"
        else:
            why = None
        if why is not None:
            logger.info("orders[{}]: cancel of {} not done: {}", self.account, msg.client_id,
                        why)
            if msg.replace_with is not None:
                self._replacement_refused(msg.replace_with, f"order {msg.client_id}: {why}")
            return
        assert order is not None
        order.cancel = CancelRequest(msg.reason, msg.replace_with, order.filled)
        for leg in self.book.legs(order):
            self._cancel_leg(leg, msg.reason or "cancel requested")
        self._settle(order)

    @handles(BrokerOrderUpdate)
    def _on_update(self, update: BrokerOrderUpdate) -> None:
        self._apply(update)
        self._price_claims()

    @handles(TradingGate)
    def _on_gate(self, gate: TradingGate) -> None:
        names = (gate.strategy,) if gate.strategy else \
            tuple(sorted(set(self.strategies) | set(self._strategy_gates)))
        before = {name: self.effective_gate(name) for name in names}
        if gate.strategy:
            self._strategy_gates[gate.strategy] = gate
        else:
            self._gate = gate
        # entries: each strategy host logs the change it sees ("entries closed (...)"); closed
        # exits are rare and serious, so they are news here
        logger.log("DEBUG" if gate.exits else "INFO", "orders[{}]: gate{} entries {} exits {} "
                   "({})", self.account, f" for {gate.strategy}" if gate.strategy else "",
                   "open" if gate.entries else "closed", "open" if gate.exits else "closed",
                   gate.reason or "no reason")
        for name in names:
            after = self.effective_gate(name)
            if (after.entries, after.exits) != (before[name].entries, before[name].exits):
                self.tell(f"strategy.{name}", after)

    @handles(GateQuery)
    def _on_gate_query(self, query: GateQuery) -> TradingGate:
        return self.effective_gate(query.strategy)

    def effective_gate(self, strategy: str) -> TradingGate:
        """The global gate and ``strategy``'s own combined: closed where either is."""
        own = self._strategy_gates.get(strategy)
        g = self._gate
        if own is None:
            return TradingGate(g.entries, g.exits, g.reason, strategy)
        reasons = [r for r, shut in ((g.reason, not (g.entries and g.exits)),
                                     (own.reason, not (own.entries and own.exits))) if shut]
        return TradingGate(g.entries and own.entries, g.exits and own.exits,
                           "; ".join(reasons) or own.reason or g.reason, strategy)

    @handles(WorkingOrdersQuery)
    def _on_working(self, query: WorkingOrdersQuery) -> tuple[WorkingOrder, ...]:
        return tuple(WorkingOrder(o.intent, o.status, o.filled, o.broker_order_id)
                     for o in self.book.working_top()
                     if query.strategy in ("", o.intent.strategy))

    @handles(OrderSync)
    def _on_sync(self, sync: OrderSync) -> OrderSyncReply:
        """The reconciler's orderbook read: see ``OrderSync``. A working order placed before
        ``since`` (less ``unknown_settle_s``, for a broker whose book lags) must be in the rows;
        one that is not is read through ``orderstatus``: what it says is applied and alerted;
        "not found" means the broker has never heard of it: it is ended ``expired`` (it cannot
        fill) and reported as lost. A read that fails leaves it for the next pass."""
        busy = {sym for sym, ts in self._touched.items() if ts >= sync.since}
        busy |= {o.intent.symbol for o in self.book.working_legs()
                 if o.broker_order_id is None}
        now = self.now()
        rows: list[OrderRow] = list(sync.rows)
        self._apply_rows(rows, now, "reconcile")
        seen = {row.orderid for row in rows}
        cutoff = sync.since - self._settle_engine_s()
        vanished: list[tuple[str, str]] = []
        lost: list[str] = []
        lost_placed = 0.0
        for leg in self.book.working_legs():
            oid = leg.broker_order_id
            placed = max(leg.first_attempt_ts or leg.intent.created_ts,
                         self._touched.get(leg.intent.symbol, float("-inf")))
            if oid is None or oid in seen or placed >= cutoff:
                continue  # not sent, in the rows, or too recent to be sure of the rows
            try:
                row = self._reads.order_status(strategy=leg.intent.strategy, orderid=oid)
            except OrderNotFound:
                lost.append(leg.client_id)
                lost_placed = max(lost_placed, placed)
                self._emit(self.book.transition(
                    leg, S.EXPIRED, now, f"the broker does not know {oid} (orderstatus: not "
                    f"found): broker state lost"))
                self._settle(leg)
                continue
            except BrokerError as exc:
                logger.info("orders[{}]: {} missing from the orderbook; status not read: {}",
                            self.account, leg.client_id, exc)
                continue
            vanished.append((leg.client_id, row.status))
            self._alert("order_vanished", f"{leg.client_id} ({oid}) was missing from the "
                        f"orderbook; orderstatus says {row.status!r}")
            self._apply(update_from_row(row, now, "status"))
        if lost:  # the reconciler declares the broker's state lost: no protective re-send
            self._loss_declared_at = now
        working = self._on_working(WorkingOrdersQuery())
        return OrderSyncReply(working, tuple(sorted(busy)), tuple(vanished), tuple(lost),
                              self.book.known_ids(), lost_placed)

    @handles(TimerFired)
    def _on_timer(self, timer: TimerFired) -> None:
        if timer.name == POLL_TIMER:
            self._poll()
        elif timer.name == SEND_TIMER:
            self._send_wake = None
            self._drain()
        elif timer.name == CANCEL_TIMER:
            self._check_cancel(str(timer.payload))

    @handles(StatusRequest)
    def _on_status(self, request: StatusRequest) -> dict[str, Any]:
        return {
            "account": self.account,
            "gate": {"entries": self._gate.entries, "exits": self._gate.exits,
                     "reason": self._gate.reason,
                     "strategies": {name: {"entries": g.entries, "exits": g.exits,
                                           "reason": g.reason}
                                    for name, g in sorted(self._strategy_gates.items())}},
            "working": [o.view() for o in self.book.working_top()],
            "statuses": self.book.status_counts(),
            "queued": len(self._queue),
            "counts": dict(sorted(self._counts.items())),
            "reports": dict(sorted(self._reports.items())),
            "last_request": self._last_request,
            "last_order_id": self._last_order_id,
        }

    # -- intents ---------------------------------------------------------------------------------
    def _submit(self, intent: OrderIntent) -> None:
        """Validate, gate, persist, then queue the placement of an intent (or a replacement)."""
        now = self.now()
        if intent.created_ts <= 0:
            intent = replace(intent, created_ts=now)
        try:
            intent = validate_intent(intent, account=self.account, instrument=self.instrument)
            planned = self.book.plan(intent)
        except InvalidIntent as exc:
            self._refuse(intent, str(exc))
            return
        refusal = self._gate_refusal(intent.strategy, intent.purpose)
        if refusal is not None:
            self._refuse(intent, refusal)
            return
        stored, problem = self._store_intents(planned)
        if problem is not None:
            self._not_sent(intent, stored, problem)
            return
        self.book.add(planned)
        self._counts["accepted"] += 1
        top = planned[0]
        self._forward(self.book.event(top, now, intent.reason or "accepted"))
        for leg in self.book.legs(top):
            self._enqueue(PLACE, leg)

    def _store_intents(self, orders: list[TrackedOrder]) -> tuple[list[TrackedOrder],
                                                                   str | None]:
        """Commit each order's intent in turn, stopping at the first failure. Returns the
        orders that are on disk, or may yet be (a store that could not write keeps the row and
        writes it later, in order), and the problem (None when all were stored)."""
        stored: list[TrackedOrder] = []
        for order in orders:
            receipt, problem = self._write(order.intent)
            if problem is None and receipt is not None and receipt.duplicate:
                return stored, f"duplicate client id {order.client_id!r} (already stored)"
            stored.append(order)
            if problem is not None:
                return stored, problem
        return stored, None

    def _not_sent(self, intent: OrderIntent, stored: list[TrackedOrder], problem: str) -> None:
        """Nothing is sent. Orders that may be on disk are tracked and ended ``rejected``
        through the store (the event is written after the row), so no restart resumes them."""
        if not stored:
            self._refuse(intent, problem)
            return
        self._alert("order_not_stored", f"order {intent.client_id} not sent: {problem}",
                    Severity.CRITICAL)
        top = stored[0]
        if top.is_parent:
            top.children = tuple(o.client_id for o in stored[1:])
        self._reject_unsent(stored, problem)

    def _reject_unsent(self, orders: list[TrackedOrder], problem: str) -> None:
        """Track and end as ``rejected`` orders whose intents could not all be stored: the
        broker-level ones (a split parent follows), or a parent that has none."""
        self.book.add(orders)
        now = self.now()
        for order in [o for o in orders if not o.is_parent] or orders:
            self._emit(self.book.transition(order, S.REJECTED, now, f"not sent: {problem}"))

    def _refuse(self, intent: OrderIntent, reason: str) -> None:
        """Refused before anything was stored: the strategy hears it, the store does not."""
        logger.warning("orders[{}]: intent {} refused: {}", self.account, intent.client_id,
                       reason)
        self._counts["refused"] += 1
        self._forward(OrderEvent(client_id=intent.client_id, status=S.REJECTED,
                                 ts=self.now(), strategy=intent.strategy,
                                 account=intent.account, symbol=intent.symbol,
                                 purpose=intent.purpose, reason=reason))

    def _gate_refusal(self, strategy: str, purpose: OrderPurpose) -> str | None:
        """Why the gate refuses an order of ``purpose`` for ``strategy``, or None."""
        entry = purpose is OrderPurpose.ENTRY
        for gate in (self._gate, self._strategy_gates.get(strategy)):
            if gate is None:
                continue
            what = "for " + gate.strategy if gate.strategy else "globally"
            if entry and not gate.entries:
                return f"entries are closed {what} ({gate.reason or 'no reason'})"
            if not entry and not gate.exits:
                return f"exits are closed {what} ({gate.reason or 'no reason'})"
        return None

    # -- the request queue (rate limit on the engine clock) --------------------------------------
    def _enqueue(self, kind: str, order: TrackedOrder) -> None:
        priority = _PRIORITY[kind] if kind == CANCEL else \
            _PRIORITY[order.intent.purpose.value]
        heapq.heappush(self._queue, (priority, next(self._seq), kind, order.client_id))
        self._drain()

    def _drain(self) -> None:
        """Send what the rate allows now; wake on a timer for the rest."""
        if self._draining:
            return  # a request being sent queued another: the loop below takes it
        self._draining = True
        try:
            while self._queue:
                now = self.now()
                if now < self._next_send:
                    self._wake_at(self._next_send)
                    return
                _, _, kind, client_id = heapq.heappop(self._queue)
                order = self.book.get(client_id)
                if order is None:
                    continue
                sent = self._place(order) if kind == PLACE else self._send_cancel(order)
                if sent:
                    self._next_send = now + self.real_s(1.0 / self.settings.rate_per_s)
        finally:
            self._draining = False

    def _wake_at(self, when: float) -> None:
        if self._send_wake is not None and self._send_wake <= when:
            return
        self._send_wake = when
        self.schedule_at(when, SEND_TIMER)

    # -- placing ---------------------------------------------------------------------------------
    def _place(self, order: TrackedOrder) -> bool:
        """Send one placement; True when a request went out."""
        if order.status is not S.SUBMITTING:
            return False  # withdrawn by a cancel, or otherwise resolved while queued
        refusal = self._gate_refusal(order.intent.strategy, order.intent.purpose)
        if refusal is not None:
            self._emit(self.book.transition(order, S.REJECTED, self.now(),
                                            f"not sent: {refusal}"))
            self._settle(order)
            return False
        now = self.now()
        order.attempts += 1
        self._touched[order.intent.symbol] = now
        if order.first_attempt_ts is None:
            order.first_attempt_ts = now
        i = order.intent
        try:
            orderid = self.broker.place_order(
                strategy=i.strategy, symbol=i.symbol, exchange=i.exchange, action=i.action.value,
                quantity=i.quantity, pricetype=i.pricetype.value, product=i.product.value,
                price=i.price, trigger_price=i.trigger_price)
        except OutcomeUnknown as exc:
            self._placement_unknown(order, exc)
        except SemiAutoMode as exc:
            self._semi_auto(order, exc)
        except (RejectedError, AuthError, OrderNotFound, RateLimited, BrokerUnavailable) as exc:
            # refused, or provably never processed: no order exists at the broker
            self._request("placeorder", order, f"{type(exc).__name__}: {exc.message}")
            severity = Severity.CRITICAL if isinstance(exc, AuthError) else Severity.WARNING
            self._alert("order_rejected", f"{order.client_id} not placed: {exc}", severity)
            self._emit(self.book.transition(order, S.REJECTED, self.now(),
                                            f"not placed: {exc.message}"))
        except BrokerError as exc:  # any other failure: the order may exist
            self._placement_unknown(order, exc)
        else:
            self._request("placeorder", order, "ok", orderid)
            self._counts["placed"] += 1
            self._emit(self.book.placed(order, orderid, self.now()))
            self._read_status(order)
        self._settle(order)
        return True

    def _semi_auto(self, order: TrackedOrder, exc: SemiAutoMode) -> None:
        """OpenAlgo queued the order in its Action Center (no order id): not placed by us, and
        nothing more is sent. The gate closes for everything and one line says what to do."""
        self._request("placeorder", order, f"semi-auto: {exc.message}")
        self._counts["semi_auto"] += 1
        self._emit(self.book.transition(order, S.REJECTED, self.now(),
                                        "queued in OpenAlgo's Action Center (semi-auto mode), "
                                        "not placed by the engine"))
        if self._gate.entries or self._gate.exits:
            self._alert("semi_auto_mode", SemiAutoMode.HINT, Severity.CRITICAL)
            self._on_gate(TradingGate(entries=False, exits=False, reason=SemiAutoMode.HINT))

    def _placement_unknown(self, order: TrackedOrder, exc: BrokerError) -> None:
        self._request("placeorder", order, f"outcome unknown: {exc.message}")
        self._counts["outcome_unknown"] += 1
        self._alert("order_outcome_unknown", f"{order.client_id}: placement outcome unknown "
                    f"({exc}); checking the orderbook before anything is re-sent")
        self._unknown_since[order.client_id] = self.now()
        self._emit(self.book.transition(order, S.UNKNOWN, self.now(),
                                        f"placement outcome unknown: {exc.message}"))

    def _settle_engine_s(self) -> float:
        """``unknown_settle_s`` in engine seconds: real time scaled by the clock's speed (a
        virtual clock drives an in-process broker: nothing is ever in flight there)."""
        assert self.clock is not None
        speed = self.clock.speed
        return self.settings.unknown_settle_s * speed if math.isfinite(speed) else 0.0

    def _resolve_unknown(self, order: TrackedOrder, rows: list[OrderRow], now: float,
                         sent: float) -> None:
        """Adopt the orderbook row an unknown placement became, else (once the request can no
        longer be in flight when the read was ``sent``) re-send, bounded."""
        row = self.book.match_unknown(order, rows, self.settings.match_skew_s)
        since = self._unknown_since.get(order.client_id, float("-inf"))
        if row is None and sent - since < self._settle_engine_s():
            return  # the server may still place it: absent from this read proves nothing
        self._unknown_since.pop(order.client_id, None)
        if row is not None:
            self._counts["adopted"] += 1
            logger.warning("orders[{}]: {} found at the broker as {}; adopted", self.account,
                           order.client_id, row.orderid)
            self._emit(self.book.adopt(order, row, now))
            if order.cancel_deferred:
                order.cancel_deferred = False
                self._cancel_leg(order, "cancel requested while the outcome was unknown")
        elif order.cancel_deferred:
            order.cancel_deferred = False
            self._emit(self.book.transition(order, S.CANCELLED, now, "cancel requested while "
                                            "the outcome was unknown; not at the broker, "
                                            "not re-sent"))
        elif order.attempts <= self.settings.resend_attempts:
            try:
                refusal = self._resend_refusal(order)
            except BrokerError as exc:  # positions unknown, never flat: ask again next poll
                logger.info("orders[{}]: {} not re-sent yet: positionbook not read ({})",
                            self.account, order.client_id, exc)
                self._unknown_since[order.client_id] = since
                return
            if refusal is not None:
                self._counts["resend_refused"] += 1
                self._alert("protective_not_resent", f"{order.client_id} "
                            f"({order.intent.purpose.value} {order.intent.action.value} "
                            f"{order.intent.quantity} {order.intent.symbol}): placement outcome "
                            f"was unknown and it is not at the broker; not re-sent: {refusal}",
                            Severity.CRITICAL)
                self._emit(self.book.transition(order, S.REJECTED, now, f"not re-sent: "
                                                f"{refusal}"))
                self._settle(order)
                return
            self._counts["resent"] += 1
            self._emit(self.book.transition(order, S.SUBMITTING, now, "not in the orderbook; "
                                            f"re-sending (attempt {order.attempts + 1})"))
            self._enqueue(PLACE, order)
        elif not order.gave_up:
            order.gave_up = True
            self._alert("order_not_placed", f"{order.client_id}: not in the orderbook after "
                        f"{order.attempts} attempt(s) with unknown outcome; not re-sent, still "
                        f"watched in the orderbook", Severity.CRITICAL)
        self._settle(order)

    def _resend_refusal(self, order: TrackedOrder) -> str | None:
        """Why a protective order verified absent must not be re-sent (None: re-send it; an
        entry is always re-sent, the gate decides). Reads the positionbook (``BrokerError``
        when it cannot: the positions are unknown, never flat)."""
        if order.intent.purpose is OrderPurpose.ENTRY:
            return None
        first = order.first_attempt_ts if order.first_attempt_ts is not None \
            else order.intent.created_ts
        if self._loss_declared_at is not None and self._loss_declared_at >= first:
            return ("a broker state loss was declared since it was first sent; the "
                    "reconciler's state-loss hold owns the position")
        return uncovered_reason(order.intent, self._reads.positionbook())

    # -- cancelling ------------------------------------------------------------------------------
    def _cancel_leg(self, leg: TrackedOrder, reason: str) -> None:
        if not leg.working or leg.status is S.CANCEL_PENDING:
            return
        if leg.status is S.SUBMITTING:  # still queued here: never reached the broker
            self._emit(self.book.transition(leg, S.CANCELLED, self.now(),
                                            "cancelled before it was sent"))
        elif leg.status is S.UNKNOWN:
            leg.cancel_deferred = True
        else:
            self._emit(self.book.begin_cancel(leg, self.now(), reason))
            self._enqueue(CANCEL, leg)

    def _send_cancel(self, leg: TrackedOrder) -> bool:
        """Send one cancel; True when a request went out."""
        if leg.status is not S.CANCEL_PENDING or leg.broker_order_id is None:
            return False
        refusal = self._gate_refusal(leg.intent.strategy, OrderPurpose.EXIT)
        if refusal is not None:
            self._emit(self.book.cancel_failed(leg, self.now(), f"cancel not sent: {refusal}"))
            self._settle(leg)
            return False
        try:
            self.broker.cancel_order(strategy=leg.intent.strategy, orderid=leg.broker_order_id)
        except (RejectedError, OrderNotFound, AuthError) as exc:
            self._request("cancelorder", leg, f"refused: {exc.message}")
            self._read_status(leg)  # it may have filled just before
            if leg.status is S.CANCEL_PENDING:
                self._emit(self.book.cancel_failed(
                    leg, self.now(), f"cancel refused by the broker: {exc.message}"))
                self._alert("cancel_refused", f"{leg.client_id}: cancel refused by the broker "
                            f"({exc}); the order stays tracked")
            self._settle(leg)
            return True
        except BrokerError as exc:  # no answer: verify like a sent cancel
            self._request("cancelorder", leg, f"unconfirmed: {exc.message}")
        else:
            self._request("cancelorder", leg, "ok", leg.broker_order_id)
            self._counts["cancels"] += 1
        leg.cancel_deadline = self.now() + self.real_s(self.settings.cancel_confirm_timeout_s)
        self._read_status(leg)
        if leg.status is S.CANCEL_PENDING:
            self.schedule_at(self.now() + self.real_s(self.settings.cancel_poll_s),
                             CANCEL_TIMER, payload=leg.client_id)
        self._settle(leg)
        return True

    def _check_cancel(self, client_id: str) -> None:
        """A sent cancel awaits confirmation: read the status; give up after the timeout."""
        leg = self.book.get(client_id)
        if leg is None or leg.status is not S.CANCEL_PENDING:
            return
        self._read_status(leg)
        if leg.status is not S.CANCEL_PENDING:
            return
        now = self.now()
        if leg.cancel_deadline is None or now >= leg.cancel_deadline:
            timeout = self.settings.cancel_confirm_timeout_s
            self._emit(self.book.cancel_failed(
                leg, now, f"cancel not confirmed within {timeout:g}s; the order is kept"))
            self._alert("cancel_unconfirmed", f"{leg.client_id}: the broker did not confirm the "
                        f"cancel within {timeout:g}s; the order stays tracked")
            self._settle(leg)
            return
        self.schedule_at(now + self.real_s(self.settings.cancel_poll_s), CANCEL_TIMER,
                         payload=client_id)

    def _settle(self, order: TrackedOrder) -> None:
        """When the cancel of the strategy's order is over: place its replacement only if the
        old order ended ``cancelled`` with nothing more filled; otherwise say why not."""
        top = self.book.top(order)
        request = top.cancel
        if request is None or (top.working and self.book.cancel_in_progress(top)):
            return
        top.cancel = None
        if request.replace_with is None:
            return
        if top.status is S.CANCELLED and top.filled == request.filled_at_request:
            logger.debug("orders[{}]: {} cancelled at the broker; placing its replacement {}",
                        self.account, top.client_id, request.replace_with.client_id)
            self._submit(request.replace_with)
            return
        if top.working:
            why = f"order {top.client_id} was not cancelled ({top.reason}); it stays tracked"
        else:
            why = (f"order {top.client_id} ended {top.status.value} with {top.filled} filled "
                   f"(was {request.filled_at_request} when the cancel was asked)")
        self._replacement_refused(request.replace_with, why)

    def _replacement_refused(self, replacement: OrderIntent, why: str) -> None:
        self._counts["replacements_refused"] += 1
        self._alert("replace_refused", f"replacement {replacement.client_id} not placed: {why}")
        self._forward(OrderEvent(client_id=replacement.client_id, status=S.REJECTED,
                                 ts=self.now(), strategy=replacement.strategy,
                                 account=replacement.account, symbol=replacement.symbol,
                                 purpose=replacement.purpose,
                                 reason=f"replacement not placed: {why}"))

    # -- what the broker reports -----------------------------------------------------------------
    def _apply(self, report: BrokerOrderUpdate) -> None:
        order = self.book.by_broker_id(report.orderid)
        asked = order is not None and (not order.working or order.status is S.CANCEL_PENDING
                                       or self.book.top(order).cancel is not None)
        msgs = self.book.apply_report(report)
        if msgs is None or order is None:
            self._reports["unmatched"] += 1
            return
        self._reports[report.source] += 1
        self._emit(msgs)
        if not asked and order.status is S.CANCELLED:
            self._counts["cancelled_at_broker"] += 1
            self._alert("cancelled_at_broker", f"{order.client_id} ({order.intent.purpose.value} "
                        f"{order.intent.action.value} {order.intent.symbol}) was cancelled at "
                        f"the broker, not by the engine", Severity.CRITICAL
                        if order.intent.purpose is OrderPurpose.STOP else Severity.WARNING)
        self._settle(order)

    def _read_status(self, order: TrackedOrder) -> None:
        """Read one order's status from the broker and apply it (errors only logged)."""
        if order.broker_order_id is None:
            return
        try:
            row = self._reads.order_status(strategy=order.intent.strategy,
                                           orderid=order.broker_order_id)
        except BrokerError as exc:
            logger.info("orders[{}]: status of {} not read: {}", self.account, order.client_id,
                        exc)
            return
        self._apply(update_from_row(row, self.now(), "status"))
        self._price_claims()

    def _price_claims(self) -> None:
        """Reports that showed a fill without its price, or a finished order without its fill,
        are priced from one tradebook read (unreadable: the next report claims again)."""
        if not self.book.claims:
            return
        ids = list(self.book.claims)
        try:
            trades = self._reads.tradebook()
        except BrokerError as exc:
            self._counts["tradebook_failures"] += 1
            logger.info("orders[{}]: tradebook not read ({}); {} fill(s) wait for the next "
                        "report", self.account, exc, len(ids))
            self.book.claims.clear()
            return
        self._counts["tradebook_reads"] += 1
        self._emit(self.book.apply_trades(trades, self.now()))
        for orderid in ids:
            order = self.book.by_broker_id(orderid)
            if order is not None:
                self._settle(order)

    def _poll(self) -> None:
        """Read the orderbook (if anything is working): apply our rows, resolve unknowns."""
        if not self.book.needs_poll():
            return
        sent = self.now()  # absence proves something only for a read sent late enough
        try:
            rows = self._reads.orderbook()
        except BrokerError as exc:
            self._counts["poll_failures"] += 1
            if not self._poll_failing:
                self._alert("orderbook_unreadable", f"orderbook not readable ({exc}); fills "
                            f"rely on the order-update stream until it is")
            self._poll_failing = True
            return
        if self._poll_failing:
            logger.info("orders[{}]: orderbook readable again", self.account)
            self._poll_failing = False
        self._counts["polls"] += 1
        now = self.now()  # what the rows say is known from when the read returned
        self._apply_rows(rows, now, "poll")
        for order in self.book.working_legs():
            if order.status is S.UNKNOWN and order.broker_order_id is None:
                self._resolve_unknown(order, rows, now, sent)
        self._price_claims()

    def _apply_rows(self, rows: list[OrderRow], now: float, source: str) -> None:
        """Apply an orderbook read to this manager's working orders (reports are made only
        for them: the book holds the whole day's orders)."""
        for row, report in updates_from_rows(rows, now, source, self.book.working_ids()):
            if self._working_row(row):  # still: applying an earlier row may have ended it
                self._apply(report)

    def _working_row(self, row: OrderRow) -> bool:
        """Whether an orderbook row is one of this manager's orders still working."""
        order = self.book.by_broker_id(row.orderid)
        return order is not None and order.working

    # -- recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild the working orders from the store; left ``submitting`` / ``unknown`` ones
        are resolved through the orderbook, pending cancels verified again."""
        if self.db is None:
            return
        now = self.now()
        open_rows = self.db.open_orders(account=self.account)
        days = {trading_date(now)} | {r.trading_date for r in open_rows}
        rows = {r.client_id: r for day in sorted(days)
                for r in self.db.orders(trading_date=day, account=self.account)}
        rows.update((r.client_id, r) for r in open_rows)
        keys: set[tuple[str, int]] = set()
        for day in days:
            keys |= self.db.fill_keys(account=self.account, trading_date=day)
        restored = self.book.restore(list(rows.values()), keys)
        pending: dict[str, int] = {}
        for day in days:
            for p in self.db.pending_fills(account=self.account, trading_date=day):
                pending[p.broker_order_id] = max(pending.get(p.broker_order_id, 0),
                                                 p.cumulative_quantity)
        for order in restored:
            if order.broker_order_id in pending:
                order.pending = pending[order.broker_order_id]
        for order in restored:
            if order.is_parent or not order.working:
                continue
            if order.status in (S.SUBMITTING, S.UNKNOWN):
                order.attempts = 1  # it may have left before the restart
                self._unknown_since[order.client_id] = now
                self._emit(self.book.transition(order, S.UNKNOWN, now, "restart: the request "
                                                "may have been sent; checking the orderbook"))
            elif order.status is S.CANCEL_PENDING:
                order.cancel_deadline = now + self.real_s(
                    self.settings.cancel_confirm_timeout_s)
                self.schedule_at(now, CANCEL_TIMER, payload=order.client_id)
        for order in restored:
            if order.is_parent:
                self._complete_split(order)
        working = sum(1 for o in restored if o.split_parent is None and o.working)
        logger.log("INFO" if working or keys else "DEBUG",  # a fresh start: nothing to say
                   "orders[{}]: recovered {} working order(s), {} fill key(s)", self.account,
                   working, len(keys))

    def _complete_split(self, parent: TrackedOrder) -> None:
        """Children a restart interrupted before they were stored are created and queued."""
        new = self.book.missing_children(parent)
        stored, problem = self._store_intents(new)
        lost = {c.client_id for c in new[len(stored):]}
        parent.children = tuple(c for c in parent.children if c not in lost)
        if problem is not None:
            self._alert("order_not_stored", f"{parent.client_id}: children not sent: "
                        f"{problem}", Severity.CRITICAL)
            self._reject_unsent(stored, problem)
        else:
            self.book.add(stored)
        if not parent.children:
            self._reject_unsent([parent], problem or "no child could be stored")
            return
        self._emit(self.book.derive(parent, self.now()))
        if problem is None:
            for child in stored:
                self._enqueue(PLACE, child)

    # -- output ----------------------------------------------------------------------------------
    def _emit(self, msgs: Iterable[Emitted]) -> None:
        """Store each message (committed), then tell the strategy and positions."""
        for msg in msgs:
            receipt, _ = self._write(msg)
            if isinstance(msg, Fill | PendingFill):
                if receipt is not None and receipt.duplicate:
                    logger.warning("orders[{}]: {} {} already stored; not applied again",
                                   self.account, type(msg).__name__, msg.key)
                    continue
                self._counts["fills" if isinstance(msg, Fill) else "price_pending"] += 1
                self._touched[msg.symbol] = self.now()
            else:
                order = self.book.get(msg.client_id)
                if order is not None and order.split_parent is not None:
                    continue  # a split child: the strategy follows its parent
            self._forward(msg)

    def _forward(self, msg: OrderEvent | Fill | PendingFill) -> None:
        self.tell(f"strategy.{msg.strategy}", msg)
        if self.positions:
            self.tell(self.positions, msg)

    def _write(self, msg: Any) -> tuple[WriteReceipt | None, str | None]:
        """Ask the store to commit ``msg``: (its receipt, None) or (None, the problem)."""
        if self.store is None or self.registry is None:
            return None, None
        try:
            receipt = self.registry.ask(self.store, msg, timeout=self.settings.store_timeout_s)
        except (StoreError, pykka.Timeout, pykka.ActorDeadError, NoSuchActor) as exc:
            problem = f"store: {type(exc).__name__}: {exc}"
            # a timed-out ask stays queued: the store (or the next one) still writes it
            outcome = "not confirmed stored" if isinstance(exc, pykka.Timeout) else "not stored"
            logger.error("orders[{}]: {} {}: {}", self.account, type(msg).__name__, outcome,
                         problem)
            return None, problem
        return receipt, None

    def _alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        self.raise_alert(kind, f"orders[{self.account}]: {message}", severity, HEALTH)

    def _request(self, endpoint: str, order: TrackedOrder, outcome: str,
                 orderid: str | None = None) -> None:
        self._last_request = {"endpoint": endpoint, "client_id": order.client_id,
                              "ts": self.now(), "outcome": outcome, "orderid": orderid}
        if orderid is not None:
            self._last_order_id = orderid

