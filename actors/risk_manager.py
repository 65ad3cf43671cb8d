"""The RiskManager actor (registry name ``risk``): limits, latching states and the one exit path.

Owns, for every strategy on one account (execution-and-risk.md, "Risk manager"):

- **Evaluation** of ``engine.trading.risk.check_limits`` (max loss, max profit, trailing stop,
  daily R)
  on every ``StrategyPnl`` the position monitor sends (each price update of a held symbol, each
  fill) and on a backstop timer (``check_interval_s``); the end-of-day exit at ``eod_exit`` on
  the engine clock. Only fresh prices decide: a P&L with a stale open position is "prices
  unreliable" and alerts (throttled) instead of firing.
- **States** ``ACTIVE`` → ``REDUCING`` (operator kill: entries closed, stops stay) → ``HALTED``
  (a limit fired, the day ended, or flatten: entries closed, everything being closed). They
  latch for the trading day, persist in ``risk_state`` (committed before acting) and come back
  after a restart; an operator ``resume`` lifts a kill (REDUCING), ``unhalt`` either. The
  worst state goes to health (the heartbeat's ``State:``). The state is enforced through
  the order manager's per-strategy ``TradingGate`` (which tells the host). Every trigger is a
  ``RiskEvent`` in the store and a critical alert.
- **The exit coordinator** (one per strategy; idempotent; also what ``ExitAll`` from a strategy
  or an operator flatten starts). Each step (at once, then every ``exit_check_s`` until done):
  1. cancel every working entry order of the strategy (once);
  2. read the broker's positionbook: unreadable means the positions are *unknown*, never flat —
     alert, keep the stops, try again next step;
  3. for each symbol the strategy holds and the broker shows open, shorts first (BUY-first:
     longs are sold only once the broker shows no short open, or its exit was given up):
     every resting stop is cancelled with its market exit as the verified replacement (the order
     manager places it only if the broker confirms the stop cancelled with nothing more filled:
     an already-filled stop gets no exit), and quantity no stop covers gets a plain market exit;
     a symbol with an exit still working, or one completed less than ``exit_settle_s`` ago, is
     left to settle; each new round on a symbol is one attempt, at most ``exit_retries``;
  4. done when the broker shows quantity 0 for every symbol of the strategy.
  Exit orders are ``OrderPurpose.EXIT`` intents of the strategy itself (client ids
  ``<strategy>-<yyMMdd>-x<seq>``), so their fills reach the strategy's host and the position
  monitor like any other.

A restarted risk manager reloads the states and trailing peaks, and restarts the exit of every
HALTED strategy (harmless when it is already flat: step 4 finishes at once).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from typing import Any

from loguru import logger

from engine.broker import Broker, BrokerError, PositionRow
from engine.market.instruments import InstrumentSpec, trading_date
from engine.messages import (
    Action,
    CancelIntent,
    Command,
    ExitAll,
    HealthUpdate,
    OrderIntent,
    OrderPurpose,
    PnlRefresh,
    PositionQuery,
    PriceType,
    RiskEvent,
    RiskState,
    Severity,
    StatusRequest,
    StrategyPnl,
    TimerFired,
    TradingGate,
    WorkingOrder,
    WorkingOrdersQuery,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.clock import IST
from engine.store.database import Database, StoredDailyState, StoredRiskState, record
from engine.trading.risk import RiskSettings, Trail, Trigger, check_limits, day_r

CHECK_TIMER = "risk.check"
EOD_TIMER = "risk.eod"
EXIT_TIMER = "risk.exit"
HEALTH = "health"
#: limits that stop a losing day (worth a look); the others (eod, profit latches, operator) are
#: the normal course of a day
LOSS_LATCHES = frozenset({"max_loss", "trailing_stop"})


@dataclass(slots=True)
class ExitJob:
    """One strategy's exit in progress."""

    reason: str
    started: float
    entries_cancelled: bool = False
    attempts: dict[str, int] = field(default_factory=dict)
    last_sent: dict[str, float] = field(default_factory=dict)
    stray_cancels: set[str] = field(default_factory=set)
    gave_up: set[str] = field(default_factory=set)
    unknown_since: float | None = None
    sent: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Book:
    """What the risk manager keeps per strategy."""

    state: RiskState = RiskState.ACTIVE
    reason: str = ""
    day: date | None = None
    trail: Trail = field(default_factory=Trail)
    pnl: StrategyPnl | None = None
    last_stale_alert: float = -math.inf
    job: ExitJob | None = None
    exit_seq: int = 0


class RiskManager(EngineActor):
    """Registry name ``risk``; see the module docstring."""

    def __init__(self, supervision: Supervision | None = None, *, account: str,
                 strategies: Mapping[str, float], settings: RiskSettings,
                 instrument: InstrumentSpec, broker: Broker | None, db: Database | None,
                 exchanges: Mapping[str, str] | None = None, orders: str = "orders",
                 positions: str = "positions", store: str | None = "store",
                 **kw: Any) -> None:
        if supervision is None:
            kw.setdefault("name", "risk")
        super().__init__(supervision, **kw)
        if self.clock is None:
            raise ValueError("RiskManager needs an engine clock")
        self.account = account
        self.r_units = dict(strategies)
        self.settings = settings
        self.instrument = instrument
        self.broker = broker
        self.db = db
        self.exchanges = dict(exchanges or {})
        self.orders = orders
        self.positions = positions
        self.store = store
        self.books: dict[str, Book] = {name: Book() for name in self.r_units}
        self._eod_time = dtime.fromisoformat(settings.eod_exit)
        self._eod_scheduled: date | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def on_start(self) -> None:
        now = self.now()
        today = trading_date(now)
        for name, book in sorted(self.books.items()):
            book.day = today
            self._restore(name, book, today)
        self.schedule_every(self.settings.check_interval_s, CHECK_TIMER)
        self._schedule_eod(now)
        # the day's P&L as the position monitor has it (a restart late in a day whose positions
        # are all closed would otherwise wait for the next position to move)
        if self.positions:
            self.tell(self.positions, PnlRefresh())
        self._report_state()
        for name, book in sorted(self.books.items()):
            if book.state is not RiskState.ACTIVE:
                self._send_gate(name, book)
            if book.state is RiskState.HALTED:
                self._start_exit(name, book, book.reason or "restart: halted")

    def _restore(self, name: str, book: Book, today: date) -> None:
        if self.db is None:
            return
        row = self.db.risk_state(name, self.account)
        if row is None or row.trading_date != today:
            return
        book.state, book.reason = RiskState(row.state), row.reason
        book.trail.peak = row.peak
        book.trail.stop_level = row.stop_level
        daily = self.db.daily_state(name, self.account, today)
        if daily is not None:
            book.trail.base = float(daily.extra.get("trail_base", 0.0))
            book.trail.active = bool(daily.extra.get("trail_active", False))
        prefix = f"{name}-{today:%y%m%d}-x"
        seqs = [int(m.group(1)) for o in self.db.orders(trading_date=today, strategy=name,
                                                         account=self.account)
                if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", o.client_id))]
        book.exit_seq = max(seqs, default=0)
        logger.info("risk[{}]: {} restored {} ({}), trail peak {:.2f}, stop {}", self.account,
                    name, book.state.value, book.reason or "-", book.trail.peak,
                    book.trail.stop_level)

    # -- inputs ------------------------------------------------------------------------------------
    @handles(StrategyPnl)
    def _on_pnl(self, pnl: StrategyPnl) -> None:
        book = self.books.get(pnl.strategy)
        if book is None or pnl.account not in ("", self.account):
            return
        self._roll_day(pnl.strategy, book, self.now())
        book.pnl = pnl
        self._evaluate(pnl.strategy, book)

    @handles(ExitAll)
    def _on_exit_all(self, msg: ExitAll) -> None:
        names = [msg.strategy] if msg.strategy else sorted(self.books)
        for name in names:
            book = self.books.get(name)
            if book is None:
                logger.warning("risk[{}]: exit for unknown strategy {!r} ignored", self.account,
                               name)
                continue
            value = day_r(book.pnl, self._r(name)) if book.pnl else 0.0
            self._trigger(name, book, Trigger(msg.reason, 0.0, round(value, 4)))

    @handles(Command)
    def _on_command(self, command: Command) -> dict[str, Any]:
        args = dict(command.args)
        target = str(args.get("strategy") or "")
        names = [target] if target else sorted(self.books)
        unknown = [n for n in names if n not in self.books]
        if unknown:
            return {"ok": False, "error": f"unknown strategy {unknown[0]!r}"}
        done: dict[str, str] = {}
        for name in names:
            book = self.books[name]
            if command.name == "flatten":
                self._trigger(name, book, Trigger("operator", 0.0, 0.0))
            elif command.name == "kill":
                if book.state is RiskState.ACTIVE:
                    self._set_state(name, book, RiskState.REDUCING, "operator kill")
                self.tell(f"strategy.{name}", Command("kill", command.args, self.now()))
            elif command.name == "resume":  # lifts a kill; a HALTED latch needs unhalt
                if book.state is RiskState.REDUCING:
                    self._set_state(name, book, RiskState.ACTIVE, "operator resume")
            elif command.name == "unhalt":
                if book.state is not RiskState.ACTIVE:
                    book.job = None
                    self._set_state(name, book, RiskState.ACTIVE, "operator unhalt")
                    self.tell(f"strategy.{name}", Command("unhalt", command.args, self.now()))
            else:
                return {"ok": False, "error": f"the risk manager does not do {command.name!r}"}
            done[name] = book.state.value
        return {"ok": True, "states": done}

    @handles(TimerFired)
    def _on_timer(self, timer: TimerFired) -> None:
        now = self.now()
        if timer.name == CHECK_TIMER:
            for name, book in sorted(self.books.items()):
                self._roll_day(name, book, now)
                if book.pnl is not None:
                    self._evaluate(name, book)
            self._schedule_eod(now)
        elif timer.name == EOD_TIMER:
            for name, book in sorted(self.books.items()):
                self._roll_day(name, book, now)
                self._trigger(name, book, Trigger("eod", 0.0, 0.0))
        elif timer.name == EXIT_TIMER:
            book = self.books.get(str(timer.payload))
            if book is not None and book.job is not None:
                self._exit_step(str(timer.payload), book)

    @handles(StatusRequest)
    def _on_status(self, _: StatusRequest) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {"account": self.account, "limits": {
            "max_loss": s.max_loss, "max_profit": s.max_profit, "trail": s.trail,
            "trail_pct": s.trail_pct, "daily_r_target": s.daily_r_target,
            "daily_r_stop": s.daily_r_stop, "r_unit": s.r_unit, "eod_exit": s.eod_exit},
            "strategies": {}}
        for name, book in sorted(self.books.items()):
            pnl = book.pnl
            out["strategies"][name] = {
                "state": book.state.value, "reason": book.reason,
                "pnl": round(pnl.pnl, 2) if pnl else None,
                "realized": round(pnl.realized, 2) if pnl else None,
                "r": round(day_r(pnl, self._r(name)), 4) if pnl else None,
                "fresh": pnl.fresh if pnl else None,
                "open_positions": pnl.open_positions if pnl else 0,
                "trail_peak": round(book.trail.peak, 2), "trail_stop": book.trail.stop_level,
                "exit": None if book.job is None else {
                    "reason": book.job.reason, "attempts": dict(book.job.attempts),
                    "gave_up": sorted(book.job.gave_up), "orders": list(book.job.sent)},
            }
        return out

    # -- evaluation --------------------------------------------------------------------------------
    def _evaluate(self, name: str, book: Book) -> None:
        pnl = book.pnl
        if pnl is None or book.state is RiskState.HALTED:
            return
        if pnl.open_positions and not pnl.fresh:
            now = self.now()
            if now - book.last_stale_alert >= self.settings.stale_alert_s:
                book.last_stale_alert = now
                self._alert("prices_unreliable", f"{name}: prices unreliable (stale: "
                            f"{', '.join(pnl.stale) or '?'}); limits not evaluated")
            return
        peak, level = book.trail.peak, book.trail.stop_level
        trigger = check_limits(pnl, self.settings, self._r(name), book.trail)
        if trigger is not None:
            self._trigger(name, book, trigger)
        elif (book.trail.peak, book.trail.stop_level) != (peak, level):
            self._persist(name, book, durable=False)

    def _trigger(self, name: str, book: Book, trigger: Trigger) -> None:
        """A limit fired (or an exit was asked): record it, halt, and start the exit."""
        if book.state is RiskState.HALTED and book.job is not None:
            logger.info("risk[{}]: {} already exiting ({}); {} ignored", self.account, name,
                        book.job.reason, trigger.kind)
            return
        now = self.now()
        action = "exit_all"
        # the scheduled close and a profit latch are the normal course of a day (INFO); a loss
        # limit halts the day until the operator reviews it (`unhalt`): CRITICAL
        severity = Severity.CRITICAL if trigger.kind in LOSS_LATCHES else Severity.INFO
        what = "the scheduled end-of-day exit" if trigger.kind == "eod" else \
            f"{trigger.kind} at {trigger.value:.2f} (threshold {trigger.threshold:.2f})"
        # below critical, the health actor's [ALERT] line (same words) is the console's one
        logger.log("CRITICAL" if severity is Severity.CRITICAL else "DEBUG",
                   "[RISK] {} {}: {} -> {}; halted for the day", name, self.account, what,
                   action)
        self.tell(self.store, RiskEvent(name, trigger.kind, trigger.threshold, trigger.value,
                                        action, now, (), self.account))
        self._alert("risk_" + trigger.kind, f"{name}: {what}; halted for the day, exiting "
                    "everything", severity)
        self._set_state(name, book, RiskState.HALTED, trigger.kind)
        self._start_exit(name, book, trigger.kind)

    def _set_state(self, name: str, book: Book, state: RiskState, reason: str) -> None:
        book.state, book.reason = state, reason
        self._persist(name, book, durable=True)
        self._send_gate(name, book)
        self._report_state()

    def _report_state(self) -> None:
        """The worst state over the strategies, for the heartbeat's ``State:``."""
        states = {b.state for b in self.books.values()}
        worst = next((s for s in (RiskState.HALTED, RiskState.REDUCING) if s in states),
                     RiskState.ACTIVE)
        self.tell(HEALTH, HealthUpdate("state", worst.value, source=self.name))

    def _send_gate(self, name: str, book: Book) -> None:
        active = book.state is RiskState.ACTIVE
        self.tell(self.orders, TradingGate(entries=active, exits=True,
                                           reason=f"risk {book.state.value}"
                                           + (f": {book.reason}" if book.reason else ""),
                                           strategy=name))

    def _persist(self, name: str, book: Book, *, durable: bool) -> None:
        now = self.now()
        day = book.day or trading_date(now)
        rows = (StoredRiskState(name, self.account, book.state, day, now, book.trail.peak,
                                book.trail.stop_level, book.reason),
                StoredDailyState(name, self.account, day, now,
                                 book.state is RiskState.HALTED, book.reason,
                                 {"trail_base": book.trail.base,
                                  "trail_active": book.trail.active}))
        for row in rows:
            message = record(row, durable=durable)
            if durable and self.registry is not None and self.store is not None:
                try:
                    self.registry.ask(self.store, message, timeout=self.settings.broker_timeout_s)
                except Exception as exc:  # the state still acts; the failure is loud
                    self._alert("risk_state_not_stored", f"{name}: risk state not stored "
                                f"({type(exc).__name__}: {exc})", Severity.CRITICAL)
            elif self.store is not None:
                self.tell(self.store, message)

    def _roll_day(self, name: str, book: Book, now: float) -> None:
        today = trading_date(now)
        if book.day == today:
            return
        if book.day is not None:
            logger.info("risk[{}]: {} new trading day {}: ACTIVE", self.account, name, today)
        book.day, book.state, book.reason = today, RiskState.ACTIVE, ""
        book.trail, book.job, book.exit_seq, book.pnl = Trail(), None, 0, None
        self._send_gate(name, book)

    def _schedule_eod(self, now: float) -> None:
        day = trading_date(now)
        if self._eod_scheduled == day:
            return
        self._eod_scheduled = day
        at = datetime.combine(day, self._eod_time, IST).timestamp()
        self.schedule_at(max(at, now), EOD_TIMER)

    # -- the exit coordinator ---------------------------------------------------------------
    def _start_exit(self, name: str, book: Book, reason: str) -> None:
        if book.job is not None:
            return
        book.job = ExitJob(reason, self.now())
        self.tell(f"strategy.{name}", ExitAll(name, reason, self.now(), self.account))
        self._exit_step(name, book)

    def _exit_step(self, name: str, book: Book) -> None:
        job = book.job
        assert job is not None
        now = self.now()
        try:
            working = self._ask(self.orders, WorkingOrdersQuery(name))
            held = self._ask(self.positions, PositionQuery(strategy=name,
                                                           account=self.account))
        except Exception as exc:
            self._alert("exit_blocked", f"{name}: exit waits: order manager or position "
                        f"monitor did not answer ({type(exc).__name__})", Severity.CRITICAL)
            self._next_exit_step(name)
            return
        if not job.entries_cancelled:
            for order in working:
                if order.intent.purpose is OrderPurpose.ENTRY:
                    self.tell(self.orders, CancelIntent(order.intent.client_id,
                                                        f"exit: {job.reason}"))
            job.entries_cancelled = True
        held_qty = {m.symbol: m.quantity for m in held if m.quantity}
        strays = [o for o in working if o.intent.purpose is OrderPurpose.STOP
                  and o.intent.symbol not in held_qty]
        for stop in strays:  # a stop on a symbol the strategy no longer holds
            if stop.intent.client_id not in job.stray_cancels:
                job.stray_cancels.add(stop.intent.client_id)
                self.tell(self.orders, CancelIntent(stop.intent.client_id,
                                                    f"exit: {job.reason}: nothing held"))
        if not held_qty:
            if strays:
                self._next_exit_step(name)
            else:
                self._exit_done(name, book, "the strategy holds nothing")
            return
        broker = self._broker_positions()
        if broker is None:
            if job.unknown_since is None:
                job.unknown_since = now
            self._alert("positions_unknown", f"{name}: the broker's positions cannot be read; "
                        f"positions are UNKNOWN (not flat), stops stay; retrying",
                        Severity.CRITICAL)
            self._next_exit_step(name)
            return
        job.unknown_since = None
        remaining = 0
        shorts_open = False
        # BUY-first: shorts (covered by buying) before longs; a long is sold only once no
        # short is open at the broker any more (a cover may wait for its stop's cancel to be
        # confirmed, and must not be overtaken by the sale), unless its exit was given up
        for symbol in sorted(held_qty, key=lambda s: (held_qty[s] > 0, s)):
            at_broker, mine = broker.get(symbol, 0), held_qty[symbol]
            if at_broker == 0 or (mine > 0) != (at_broker > 0):
                continue  # flat at the broker (or only the other side): nothing to close here
            remaining += 1
            if mine > 0 and shorts_open:
                continue
            self._close_symbol(name, book, symbol, min(abs(at_broker), abs(mine)),
                               Action.BUY if mine < 0 else Action.SELL, working, now)
            shorts_open = shorts_open or (mine < 0 and symbol not in job.gave_up)
        if remaining == 0:
            self._exit_done(name, book, "the broker shows every position flat")
            return
        self._next_exit_step(name)

    def _close_symbol(self, name: str, book: Book, symbol: str, open_qty: int, side: Action,
                      working: tuple[WorkingOrder, ...], now: float) -> None:
        """One attempt at closing ``open_qty`` of ``symbol`` (verified open at the broker):
        each resting stop is cancelled with its market exit as the verified replacement, the
        rest bought (or sold) at market."""
        job = book.job
        assert job is not None
        if symbol in job.gave_up:
            return
        on_symbol = [o for o in working if o.intent.symbol == symbol]
        if any(o.intent.purpose is OrderPurpose.EXIT for o in on_symbol):
            return  # an exit is working: let it fill
        if now - job.last_sent.get(symbol, -math.inf) < self.settings.exit_settle_s:
            return  # sent recently: its fill may not show at the broker yet
        attempts = job.attempts.get(symbol, 0)
        if attempts >= self.settings.exit_retries:
            job.gave_up.add(symbol)
            self._alert("exit_failed", f"{name}: {symbol} still open ({open_qty}) at the "
                        f"broker after {attempts} exit attempts; act manually",
                        Severity.CRITICAL)
            return
        job.attempts[symbol] = attempts + 1
        job.last_sent[symbol] = now
        stops = sorted((o for o in on_symbol if o.intent.purpose is OrderPurpose.STOP
                        and o.intent.action is side), key=lambda o: o.intent.client_id)
        for stop in stops:
            rest = min(stop.intent.quantity - stop.filled, open_qty)
            if rest <= 0:
                continue
            exit_intent = self._exit_intent(name, book, stop.intent.exchange, symbol, side, rest,
                                            job.reason, stop.intent.client_id)
            self.tell(self.orders, CancelIntent(stop.intent.client_id, f"exit: {job.reason}",
                                                replace_with=exit_intent))
            job.sent.append(exit_intent.client_id)
            open_qty -= rest
            logger.info("risk[{}]: {} exit {}: stop {} -> market {} {} x{} (attempt {})",
                           self.account, name, job.reason, stop.intent.client_id, side.value,
                           symbol, rest, attempts + 1)
        if open_qty > 0:
            exchange = self.exchanges.get(symbol, "NFO")
            exit_intent = self._exit_intent(name, book, exchange, symbol, side, open_qty,
                                            job.reason, None)
            self.tell(self.orders, exit_intent)
            job.sent.append(exit_intent.client_id)
            logger.warning("risk[{}]: {} exit {}: market {} {} x{} (attempt {})", self.account,
                           name, job.reason, side.value, symbol, open_qty, attempts + 1)

    def _exit_intent(self, name: str, book: Book, exchange: str, symbol: str, side: Action,
                     quantity: int, reason: str, parent: str | None) -> OrderIntent:
        now = self.now()
        book.exit_seq += 1
        cid = f"{name}-{trading_date(now):%y%m%d}-x{book.exit_seq:04d}"
        return OrderIntent(client_id=cid, strategy=name, account=self.account, symbol=symbol,
                           exchange=exchange, action=side, quantity=quantity,
                           pricetype=PriceType.MARKET, purpose=OrderPurpose.EXIT,
                           parent_id=parent, reason=f"exit: {reason}", created_ts=now)

    def _next_exit_step(self, name: str) -> None:
        # each step reads the broker: real seconds apart (engine.runtime.actor.real_s)
        self.schedule_at(self.now() + self.real_s(self.settings.exit_check_s), EXIT_TIMER,
                         payload=name)

    def _exit_done(self, name: str, book: Book, why: str) -> None:
        job = book.job
        assert job is not None
        logger.debug("risk[{}]: {} exit ({}) done: {}; {} order(s)", self.account, name,
                       job.reason, why, len(job.sent))
        self._alert("exit_done", f"{name}: exit ({job.reason}) done: {why}", Severity.INFO)
        book.job = None
        book.trail = Trail()
        self._persist(name, book, durable=False)

    def _broker_positions(self) -> dict[str, int] | None:
        """Net quantity per symbol at the broker, or None when it cannot be read."""
        if self.broker is None:
            return None
        try:
            rows: list[PositionRow] = self.broker.positionbook()
        except BrokerError as exc:
            logger.warning("risk[{}]: positionbook unreadable: {}", self.account, exc)
            return None
        net: dict[str, int] = {}
        for row in rows:
            net[row.symbol] = net.get(row.symbol, 0) + int(row.quantity)
        return net

    # -- helpers ---------------------------------------------------------------------------------
    def _ask(self, name: str, message: Any) -> Any:
        assert self.registry is not None
        return self.registry.ask(name, message, timeout=self.settings.broker_timeout_s)

    def _r(self, name: str) -> float:
        return self.r_units.get(name) or self.settings.r_rupees

    def _alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        self.raise_alert(kind, f"risk[{self.account}]: {message}", severity, HEALTH)

