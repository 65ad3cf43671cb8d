"""The Reconciler actor (registry name ``reconciler``): the engine's positions against the broker's.

Owns (execution-and-risk.md, "Reconciler"):

- **When**: at start (fail-closed: the global trading gate stays closed — no new entry for any
  strategy — until one startup pass has succeeded; failed passes are retried every
  ``startup_retry_s`` with an alert), every ``interval_s``, and after every feed reconnect
  (``FeedStatus`` from the feed).
- **What**, every pass, every symbol: the broker's orderbook is read, then its positionbook,
  then the orderbook again; the second read goes to the order manager (``OrderSync``), which
  applies it to its working orders and resolves through ``orderstatus`` any of them the book
  no longer shows (alerted; one the broker has never heard of is *lost*). Then the position
  monitor's positions (summed per symbol) are compared with the broker's, working orders or
  not; only a symbol that moved while the books were read (a fill, a placement, an order of
  unknown outcome) waits for the next pass.
  * phantom (engine holds, broker flat: a hand close) and quantity mismatch: the broker is the
    truth; the difference is booked at the price of the broker's trades that are not the
    engine's (tradebook), on the strategy that holds the most; a phantom's stops are cancelled
    (orphan stops). No such trade: nothing is booked (never a guessed price), entries are
    held until the operator's ``unhalt``, which accepts the broker's quantity at the last price;
  * orphan (broker holds, engine flat): alerted; adopted into ``adopt_strategy`` only when
    ``adopt_orphans`` is set;
  * lost orders (broker state loss): entries held, one critical alert, the operator decides
    (the order manager, which found them lost, re-sends no stop or exit of unknown outcome
    sent before the loss);
  * a broker order with one of this engine's strategy tags that the engine does not know, and
    a stop working on a symbol flat at the broker and in the engine (cancelled): alerted.
  Each finding is a ``reconciliation`` row and ONE alert per distinct finding.
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

from engine.broker import Broker, BrokerError, OrderRow, TradeRow
from engine.market.instruments import InstrumentSpec, ceil_to_tick, round_to_tick, trading_date
from engine.messages import (
    Action,
    CancelIntent,
    Command,
    FeedStatus,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderSync,
    OrderSyncReply,
    PositionCorrection,
    PositionMark,
    PositionQuery,
    PriceType,
    Severity,
    StatusRequest,
    TimerFired,
    TradingGate,
    WorkingOrder,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.clock import fmt_ist
from engine.runtime.registry import WaitCancelled
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
        self.hold = ""  # why entries are halted by reconciliation (the operator lifts it)
        self.lost_orders = 0
        self.divergent: dict[str, tuple[int, int]] = {}  # symbol -> (engine, broker), last pass
        # when the last broker state loss was found: orders placed before it and found lost
        # later belong to that loss (one alert per loss, however many passes find its orders)
        self._loss_found_at: float | None = None
        self._accept_unpriced = False
        self._strangers: set[str] = set()
        self._orphans_alerted: set[str] = set()

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

    @handles(Command)
    def _on_command(self, command: Command) -> None:
        """``unhalt``: the operator has looked at the broker. The hold is lifted and positions
        the broker shows flat with no trade to price them are accepted at the last price."""
        if command.name != "unhalt" or not self.hold:
            return
        logger.warning("reconciler[{}]: operator unhalt: hold lifted ({})", self.account,
                       self.hold)
        self.hold, self._accept_unpriced = "", True
        if self.ready:
            self.tell(self.orders, TradingGate(entries=True, exits=True,
                                               reason="operator unhalt after reconciliation"))
        self._run("operator unhalt")

    @handles(StatusRequest)
    def _on_status(self, _: StatusRequest) -> dict[str, Any]:
        return {"ready": self.ready, "passes": self.passes, "failures": self.failures,
                "last_ok_ts": self.last_ok_ts, "last_error": self.last_error,
                "findings": dict(sorted(self._counts.items())), "hold": self.hold or None,
                "lost_orders": self.lost_orders,
                "divergent": {s: {"engine": e, "broker": b}
                              for s, (e, b) in self.divergent.items()}}

    # -- one pass ------------------------------------------------------------------------------
    def _run(self, why: str) -> None:
        now = self.now()
        startup = not self.ready
        try:
            ok = self._reconcile(why, now)
        except WaitCancelled:  # being stopped (a restart of its group): no pass, no alert
            logger.info("reconciler[{}]: pass ({}) abandoned: the reconciler is being stopped",
                        self.account, why)
            return
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
                logger.info("reconciler[{}]: startup reconciliation done; entries {}",
                            self.account, f"stay halted ({self.hold})" if self.hold else "open")
                if not self.hold:
                    self.tell(self.orders, TradingGate(entries=True, exits=True,
                                                       reason="startup reconciliation done"))
        if why in ("startup", "periodic"):
            delay = self.settings.interval_s if self.ready else self.settings.startup_retry_s
            self.schedule_at(now + delay, RUN_TIMER,
                             payload="periodic" if self.ready else "startup")

    def _reconcile(self, why: str, now: float) -> bool:
        try:
            first = self.broker.orderbook()
            broker_rows = self.broker.positionbook()
            book = self.broker.orderbook()
        except BrokerError as exc:
            self.last_error = f"broker unreadable: {exc}"
            return False
        assert self.registry is not None
        timeout = self.settings.timeout_s
        sync: OrderSyncReply = self.registry.ask(self.orders, OrderSync(tuple(book), now),
                                                 timeout=timeout)
        marks: tuple[PositionMark, ...] = self.registry.ask(
            self.positions, PositionQuery(account=self.account), timeout=timeout)
        working = sync.working
        if sync.lost:
            self._state_lost(sync.lost, sync.lost_placed, now)
        at_broker: dict[str, int] = {}
        for row in broker_rows:
            at_broker[row.symbol] = at_broker.get(row.symbol, 0) + int(row.quantity)
            self.exchanges.setdefault(row.symbol, row.exchange)
        engine: dict[str, int] = {}
        holders: dict[str, list[PositionMark]] = {}
        for mark in marks:
            engine[mark.symbol] = engine.get(mark.symbol, 0) + mark.quantity
            holders.setdefault(mark.symbol, []).append(mark)
        # a fill or a placement while the books were read: that symbol is compared next pass
        busy = set(sync.busy) | _moved(first, book)
        self._foreign_orders(book, sync.known_ids, busy, now)
        diverged: set[str] = set()
        open_: dict[str, tuple[int, int]] = {}  # left as they are: the operator's to resolve
        trades: list[TradeRow] | None = None
        for symbol in sorted(engine.keys() | at_broker.keys()):
            mine, theirs = engine.get(symbol, 0), at_broker.get(symbol, 0)
            if mine == theirs or symbol in busy:
                continue
            diverged.add(symbol)
            finding = Finding("phantom" if theirs == 0 else "orphan" if mine == 0
                              else "mismatch", symbol, mine, theirs)
            if finding.kind != "orphan" and trades is None:
                trades = self._tradebook()
            if not self._correct(finding, holders.get(symbol, []), trades, sync.known_ids,
                                 working, now):
                open_[symbol] = (mine, theirs)
        self.divergent = open_
        self._accept_unpriced = False
        calm = tuple(m for m in marks if m.symbol not in diverged and m.symbol not in busy)
        # the marks of a symbol just corrected are wrong: its stops are checked next pass
        # (a stop sized on them could open a position the broker does not hold)
        self._check_stops(calm, working, now)
        self._orphan_stops(engine, at_broker, working, diverged | busy, now)
        logger.debug("reconciler[{}]: pass ({}) ok: {} engine symbol(s), {} at the broker",
                     self.account, why, len(engine), len(at_broker))
        return True

    def _tradebook(self) -> list[TradeRow] | None:
        try:
            return self.broker.tradebook()
        except BrokerError as exc:
            logger.warning("reconciler[{}]: tradebook unreadable ({}); nothing is priced this "
                           "pass", self.account, exc)
            return None

    # -- broker state loss, strangers ----------------------------------------------------------
    def _state_lost(self, lost: tuple[str, ...], placed: float, now: float) -> None:
        """Orders the broker has never heard of: entries stop until the operator decides. One
        critical alert per loss: orders placed before the last loss was found, and found lost
        only in a later pass (their symbols were busy then), belong to that loss."""
        self.lost_orders += len(lost)
        reason = (f"broker state lost: {self.lost_orders} order(s) unknown to the broker; "
                  f"the operator decides (run.py status, then unhalt or flatten)")
        self._hold(reason)
        if self._loss_found_at is not None and placed < self._loss_found_at:
            logger.critical("reconciler[{}]: {} more order(s) lost in the broker state loss "
                            "found at {}: {}", self.account, len(lost),
                            fmt_ist(self._loss_found_at), ", ".join(lost[:5]))
        else:
            self._loss_found_at = now
            self._alert("broker_state_loss", f"the broker does not know {len(lost)} working "
                        f"order(s) of this engine ({', '.join(lost[:5])}"
                        f"{', …' if len(lost) > 5 else ''}): its state was lost; entries are "
                        f"halted, the orders ended as expired; check the broker, then "
                        f"`run.py unhalt` (accept the broker's positions) or `run.py flatten`",
                        Severity.CRITICAL)

    def _hold(self, reason: str) -> None:
        if self.hold == reason:
            return
        self.hold = reason
        logger.critical("reconciler[{}]: entries halted: {}", self.account, reason)
        self.tell(self.orders, TradingGate(entries=False, exits=True, reason=reason))

    def _foreign_orders(self, book: list[OrderRow], known: frozenset[str], busy: set[str],
                        now: float) -> None:
        """Orders at the broker tagged with one of this engine's strategies that the engine
        does not know (another engine on the account, a hand-placed order): alerted once."""
        for row in book:
            if row.strategy not in self.strategies or row.orderid in known \
                    or row.orderid in self._strangers or row.symbol in busy:
                continue
            self._strangers.add(row.orderid)
            working = row.status.lower() in ("open", "trigger pending")
            self._counts["unknown_order"] = self._counts.get("unknown_order", 0) + 1
            self._alert("reconcile_unknown_order", f"broker order {row.orderid} ({row.action} "
                        f"{row.quantity} {row.symbol} {row.pricetype}, {row.status}) carries "
                        f"the tag {row.strategy!r} but is not this engine's",
                        Severity.CRITICAL if working else Severity.WARNING)

    def _orphan_stops(self, engine: dict[str, int], at_broker: dict[str, int],
                      working: tuple[WorkingOrder, ...], skip: set[str], now: float) -> None:
        """A stop working on a symbol that is flat at the broker and in the engine protects
        nothing and would open a position when it triggers: it is cancelled (verified by the
        order manager; asked again every pass while it works)."""
        for order in working:
            i = order.intent
            if i.purpose is not OrderPurpose.STOP or i.symbol in skip \
                    or engine.get(i.symbol, 0) or at_broker.get(i.symbol, 0) \
                    or order.status is OrderStatus.CANCEL_PENDING:
                continue
            self._cancel_stop(order, "orphan stop: the position is flat at the broker", now)

    def _cancel_stop(self, order: WorkingOrder, why: str, now: float) -> None:
        cid = order.intent.client_id
        self._counts["orphan_stop"] = self._counts.get("orphan_stop", 0) + 1
        if cid not in self._orphans_alerted:
            self._orphans_alerted.add(cid)
            self._alert("reconcile_orphan_stop", f"{cid} ({order.intent.symbol}): {why}; "
                        f"cancelling it", Severity.CRITICAL)
        self.tell(self.orders, CancelIntent(cid, f"reconciler: {why}"))

    # -- corrections ---------------------------------------------------------------------------
    def _correct(self, f: Finding, holders: list[PositionMark], trades: list[TradeRow] | None,
                 known: frozenset[str], working: tuple[WorkingOrder, ...], now: float) -> bool:
        """Book the broker's figure, or say why not; True when corrected."""
        diff = f.broker_quantity - f.engine_quantity
        if f.kind == "orphan" and not self.settings.adopt_orphans:
            self._finding(f, self.settings.adopt_strategy, "alert only (adopt_orphans off)",
                          now, "")
            return False
        if f.kind == "orphan":
            strategy = self.settings.adopt_strategy
            target, price, expected = f.broker_quantity, 0.0, 0
            detail = "adopted"
        else:
            holder = max(holders, key=lambda m: (abs(m.quantity), m.strategy))
            strategy, target, expected = holder.strategy, holder.quantity + diff, \
                holder.quantity
            side = "BUY" if diff > 0 else "SELL"
            price = _trade_price(trades or [], f.symbol, side, abs(diff), known)
            if price <= 0 and not self._accept_unpriced:
                self._finding(f, strategy, "not booked: no broker trade prices it", now,
                              f"no {side} trade of {abs(diff)} at the broker; the operator "
                              "decides (unhalt accepts the broker's quantity at the last price)")
                self._hold(f"{f.symbol}: engine {f.engine_quantity}, broker "
                           f"{f.broker_quantity}, no broker trade to price the difference; "
                           "the operator decides (run.py status, then unhalt)")
                return False
            detail = (f"closed at {price:g} ({side} traded at the broker)" if price > 0 else
                      "closed at the last price: accepted by the operator, not a broker trade")
            if f.kind == "mismatch":
                detail = f"set to the broker's {f.broker_quantity}; " + detail
        fix = PositionCorrection(
            strategy, self.account, f.symbol, self.exchanges.get(f.symbol, "NFO"), target,
            price, f"reconcile {f.kind}: engine {f.engine_quantity}, broker "
                   f"{f.broker_quantity}", now, expected=expected)
        self.tell(self.positions, fix)
        if strategy in self.strategies:  # its host counts positions too (stops, limits)
            self.tell(f"strategy.{strategy}", fix)
        self._finding(f, strategy, "corrected", now, detail)
        if f.kind == "phantom":  # its stops protect nothing now
            for order in working:
                if order.intent.symbol == f.symbol and order.intent.purpose is OrderPurpose.STOP:
                    self._cancel_stop(order, "orphan stop: the position was closed at the "
                                      "broker", now)
        return True

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



def _trade_price(trades: list[TradeRow], symbol: str, side: str, quantity: int,
                 known: frozenset[str]) -> float:
    """Average price of the broker's latest trades on ``side`` for ``symbol`` that are not this
    engine's orders (a hand close, a stop filled unseen is the engine's and already applied),
    covering ``quantity``; 0 when the tradebook does not show that much (never a guess)."""
    taken, value = 0, 0.0
    for t in reversed(trades):
        if t.symbol != symbol or t.action.upper() != side or t.orderid in known:
            continue
        part = min(t.quantity, quantity - taken)
        taken, value = taken + part, value + part * t.average_price
        if taken >= quantity:
            return round(value / taken, 2)
    return 0.0


def _moved(before: list[OrderRow], after: list[OrderRow]) -> set[str]:
    """Symbols whose orders changed (new, filled more, changed state) between two reads."""
    seen = {r.orderid: (r.status, r.filled_quantity) for r in before}
    return {r.symbol for r in after if seen.get(r.orderid) != (r.status, r.filled_quantity)}
