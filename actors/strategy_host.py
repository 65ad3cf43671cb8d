"""The StrategyHost actor (registry name ``strategy.<name>``): runs one strategy.

Owns the strategy object and everything the ``StrategyContext`` promises it:

- hooks are called on the host's thread, one per message, in message order (bars, updates,
  swings, order events, fills, marks, timers, commands);
- ``place`` builds an ``OrderIntent`` with a deterministic client id
  ``<strategy>-<yyMMdd>-<seq:05d>`` (IST date of the engine time; ``seq`` is persisted, so a
  restart continues it and two replays give identical ids) and tells the order manager;
  ``cancel`` / ``replace`` tell a ``CancelIntent`` (``replace_with``: verified
  cancel-then-replace, done by the order manager);
- the order views (from ``OrderEvent``) and net positions (from ``Fill``, each fill applied once
  by its key, and ``PendingFill``: quantity filled before its price is known, completed by the
  priced fill without counting it twice) the strategy reads;
- ``can_trade``: False until the order manager, which owns the gate, reports it open for this
  strategy (after startup reconciliation; at the start of a replay), while the risk manager has
  it closed (REDUCING, HALTED) and while paused. A starting host asks the order manager for the
  gate (``GateQuery``), so a restarted host never trades on a gate it did not see. An
  entry placed while it is False is not sent: it is reported back as rejected.
  ``Command`` pause/resume set the pause; every command is then passed to ``on_command``;
- persistence: ``strategy.snapshot()`` and the host's own state (sequence, positions, fill
  keys, pause) are written as the ``strategy_state`` row ``strategy.<name>``, and each of the
  day's orders as a row of its own (``order_rows_prefix``: ``strategy.<name>/orders/<day>/<client
  id>``), written again only when that order changed, so a write does not grow with the day's
  orders (a version 1 row, orders inside, is still read). Both are written ``soon``
  after every hook that changed orders or fills (built ``PERSIST_DELAY_S`` real seconds later
  in paper and live, on the next message in a replay, so the intent is committed and sent
  first); when only the strategy's snapshot changed, batched and at most
  once a minute of engine time (at the first message of the next minute, and on stop), since
  a snapshot can be tens of KB and change on every ``BarUpdate``. Whether the strategy
  changed is read from its ``state_version`` when it keeps one (the snapshot is then built
  only when it is written), else by building its snapshot after every hook and comparing it
  with the last one (``Strategy.snapshot_cached``: by identity). A restart therefore resumes
  from the last minute's snapshot plus every order and fill (the journal). Nothing is
  committed before an intent leaves: the intent row the order manager commits is the durable
  record of the order and of its client id. On start a row of the current trading day is
  restored; one from an earlier day is ignored (a stale "day is over" flag must never block a
  new day). The next client id is past both the restored sequence and every id of the day in
  the order journal, and journal orders the restored state does not know (a kill between the
  intent's commit and the state's) are adopted, so no client id is ever reused. A row that
  cannot be read is a ``StrategyStateError``: the host refuses to start rather than trade
  without knowing its latches and positions;
- ``exit_all`` → ``ExitAll`` to the risk manager (the one exit coordinator); an ``ExitAll``
  from the risk manager → ``strategy.on_exit``;
- ``record_trade`` → the store's ``trades`` table; ``alert`` → the health actor;
  ``schedule_at`` / ``schedule_every`` → engine-clock timers delivered to ``on_timer`` (a new
  incarnation starts without the old one's timers: a strategy schedules what it needs in
  ``on_start``);
- ``StatusRequest`` → a dict for ``run.py status``.

Time inside ``on_timer`` is the timer's due time, so decisions taken on timers do not depend on
how far a replay's virtual clock has already moved on.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from types import MappingProxyType
from typing import Any

from loguru import logger

from engine.market.instruments import InstrumentSpec, trading_date
from engine.messages import (
    Action,
    Alert,
    Bar,
    BarUpdate,
    CancelIntent,
    Command,
    ExitAll,
    Fill,
    GateQuery,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PositionCorrection,
    PositionMark,
    PositionRisk,
    PriceType,
    Product,
    Severity,
    StatusRequest,
    Swing,
    SwingBroken,
    TimerFired,
    TradingGate,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.store.database import StoredOrder, StoredStrategyState, StoredTrade, record
from engine.trading.pending import PendingBook, add_pending, add_priced
from strategies.base import OrderView, Strategy, StrategyContext

StateLoader = Callable[[str], StoredStrategyState | None]
#: every persisted state row whose name starts with a prefix: ``load(prefix) -> states``
StatesLoader = Callable[[str], Sequence[StoredStrategyState]]
#: (strategy, day) -> the stored orders and fills of that day (the order manager's journal)
Journal = Callable[[str, date], tuple[list[StoredOrder], list[Fill]]]

#: 2: the day's orders are rows of their own (``order_rows_prefix``); 1: inside the state
STATE_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})
#: the host's own message: persist the state now (after the hook whose intent has left)
PERSIST = "strategy.persist"
#: real seconds after a hook that changed the state before it is built and stored (paper, live):
#: the intent the hook placed is committed and sent meanwhile
PERSIST_DELAY_S = 0.03

#: the OrderIntent fields ``replace`` may change
REPLACEABLE = frozenset({"symbol", "exchange", "action", "quantity", "pricetype", "price",
                         "trigger_price", "purpose", "product", "parent_id"})
_TRADE_FIELDS = frozenset({"symbol", "action", "quantity", "entry_ts", "entry_price", "exit_ts",
                           "exit_price", "pnl", "r_multiple", "entry_client_id",
                           "exit_client_id", "exit_reason", "risk"})


class StrategyStateError(RuntimeError):
    """The persisted state of a strategy cannot be restored; the host does not start."""


class UnknownOrder(KeyError):
    """A strategy referred to a client id that is not one of its orders."""

    def __str__(self) -> str:
        return f"not an order of this strategy: {self.args[0]!r}"


def order_rows_prefix(strategy: str, day: date) -> str:
    """The ``strategy_state`` names of a strategy's saved orders of ``day`` start with this
    (one row per order, named by its client id)."""
    return f"strategy.{strategy}/orders/{day.isoformat()}/"


def client_id(strategy: str, day: date, seq: int) -> str:
    """``<strategy>-<yyMMdd>-<seq:05d>``."""
    return f"{strategy}-{day:%y%m%d}-{seq:05d}"


class StrategyHost(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *,
                 strategy_factory: Callable[[StrategyContext], Strategy], strategy_name: str,
                 account: str, instrument: InstrumentSpec, orders: str = "orders",
                 store: str | None = "store", health: str | None = "health",
                 risk: str = "risk", journal: Journal | None = None,
                 load_state: StateLoader | None = None,
                 load_states: StatesLoader | None = None, positions: str | None = "positions",
                 r_unit: str = "fixed", **kw: Any) -> None:
        if supervision is None and "name" not in kw:
            kw["name"] = f"strategy.{strategy_name}"
        super().__init__(supervision, **kw)
        self.strategy_name = strategy_name
        self.account = account
        self.instrument = instrument
        self.orders_name = orders
        self.risk_name = risk
        self.positions_name = positions
        self.r_unit = r_unit
        self.store = store
        self.health = health
        self.load_state = load_state
        self.load_states = load_states
        self.journal = journal
        self._factory = strategy_factory
        self.strategy: Strategy | None = None
        self.context = HostContext(self)
        # host state (persisted)
        self.day: date | None = None
        self.seq = 0
        self.intents: dict[str, OrderIntent] = {}
        self.views: dict[str, OrderView] = {}
        self.net: dict[str, int] = {}
        self.fill_keys: set[tuple[str, int]] = set()
        self.pending: dict[str, PendingBook] = {"BUY": {}, "SELL": {}}  # price-pending fills
        self.paused = False
        self.corrected: set[str] = set()  # symbols the reconciler corrected (not persisted)
        # not persisted: the gate must be opened again by every incarnation (fail-closed)
        self.gate_open = False
        self._dirty = False
        self._rows: dict[str, tuple[OrderView | None, OrderIntent, dict[str, Any]]] = {}
        self._told_rows: dict[str, dict[str, Any]] = {}  # the order rows the store was told
        # what the strategy's state was last seen as: its state_version when it keeps one,
        # else its snapshot (the newest seen, written as it is)
        self._seen_version: int | None = None
        self._last_snapshot: dict[str, Any] | None = None
        self._unsaved = False  # the strategy or the host changed since the stored row
        self._persist_due = False  # a PERSIST message is on its way to this actor
        # start of the engine minute of the last write (minute -1: none yet), in seconds
        self._saved_from = -60.0
        self._timer_now: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.strategy = self._factory(self.context)
        now = self.now()
        self.day = trading_date(now)
        self._restore()
        self._changed()  # what the state is now: the next change is compared with it
        synced = self._ask_gate()
        self._call(self.strategy.on_start)
        self._catch_up(synced)

    def _ask_gate(self) -> bool:
        """The gate as the order manager has it now (closed if it cannot say). The answer also
        means the order manager has handled every intent an earlier incarnation sent."""
        if self.registry is None:
            return False
        try:
            gate = self.registry.ask(self.orders_name, GateQuery(self.strategy_name),
                                     timeout=5.0)
        except Exception as exc:  # any failure leaves the gate closed
            logger.warning("{}: gate unknown ({}); entries stay closed until it is told",
                           self.name, type(exc).__name__)
            return False
        if isinstance(gate, TradingGate):
            self.on_gate(gate)
        return True

    def _catch_up(self, synced: bool) -> None:
        """Deliver what happened while no host ran: stored fills not applied yet, and order
        states that moved on. With ``synced`` (the order manager answered after handling every
        earlier intent), an intent with no stored order was lost before it was stored: it is
        reported rejected, so the strategy never waits for it."""
        if self.journal is None or self.day is None:
            return
        orders, fills = self.journal(self.strategy_name, self.day)
        missed = [f for f in fills if f.key not in self.fill_keys]
        stored = {o.client_id: o for o in orders}
        self._adopt(orders)
        moved: list[OrderEvent] = []
        for cid, intent in sorted(self.intents.items()):
            row = stored.get(cid)
            view = self.views.get(cid)
            if row is None:
                if synced and (view is None or view.working):
                    moved.append(OrderEvent(cid, OrderStatus.REJECTED, self.now(),
                                            self.strategy_name, self.account, intent.symbol,
                                            purpose=intent.purpose,
                                            reason="lost in a restart before it was stored"))
                continue
            if view is None or view.status is not row.status \
                    or view.filled_quantity != row.filled_quantity:
                moved.append(OrderEvent(cid, row.status, row.updated_ts, self.strategy_name,
                                        self.account, row.symbol, row.broker_order_id,
                                        row.filled_quantity, row.average_price, row.purpose,
                                        row.reason))
        if missed or moved:
            logger.warning("{}: catching up {} fill(s) and {} order state(s) missed while "
                           "restarting", self.name, len(missed), len(moved))
        for fill in missed:
            self.on_fill(fill)
        for event in moved:
            self.on_order_event(event)

    def _adopt(self, orders: list[StoredOrder]) -> None:
        """The journal's orders of the day: the sequence moves past every one of their ids,
        and those the restored state does not know become the host's (as submitted: the
        catch-up brings them to their stored state)."""
        assert self.day is not None
        prefix = client_id(self.strategy_name, self.day, 0)[:-5]
        adopted = []
        for row in orders:
            seq = _seq_of(row.client_id, prefix)
            if seq is None:
                continue  # a split child, or the exit coordinator's order
            self.seq = max(self.seq, seq)
            if row.client_id not in self.intents:
                intent = _intent_of(row)
                self.intents[row.client_id] = intent
                self.views[row.client_id] = _view_of(intent)
                adopted.append(row.client_id)
        if adopted:
            self._dirty = True
            logger.warning("{}: {} order(s) from the journal were not in the saved state "
                           "(stopped between the intent and the state); adopted: {}",
                           self.name, len(adopted), ", ".join(adopted))

    def _restore(self) -> None:
        assert self.strategy is not None
        if self.load_state is None:
            return
        name = self.state_name
        stored = self.load_state(name)
        if stored is None:
            return
        if stored.version not in READABLE_VERSIONS:
            raise StrategyStateError(f"{name}: state version {stored.version} is not one of "
                                     f"{sorted(READABLE_VERSIONS)}; refusing to start without "
                                     f"it")
        state = stored.state
        try:
            day = date.fromisoformat(state["day"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StrategyStateError(f"{name}: state has no valid day ({exc!r})") from None
        if day != self.day:
            logger.info("{}: saved state is from {}, not today ({}); starting the day fresh",
                        self.name, day, self.day)
            return
        try:
            self.seq = int(state["seq"])
            self.paused = bool(state["paused"])
            for row in self._stored_orders(stored.version, state, day):
                intent, view = _order_from_dict(row)
                self.intents[intent.client_id] = intent
                if view is not None:
                    self.views[intent.client_id] = view
            self.net = {str(k): int(v) for k, v in state["positions"].items()}
            self.fill_keys = {(str(b), int(c)) for b, c in state["fill_keys"]}
            pending = state.get("pending", {})
            self.pending = {side: {str(o): [int(p), int(d)] for o, (p, d) in
                                   pending.get(side, {}).items()} for side in ("BUY", "SELL")}
            self.strategy.restore(state["strategy"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StrategyStateError(f"{name}: saved state cannot be restored: {exc!r}") from None
        logger.info("{}: restored the day's state: {} orders ({} working), positions {}, "
                    "next id #{}", self.name, len(self.intents),
                    sum(1 for v in self.views.values() if v.working),
                    {s: q for s, q in self.net.items() if q}, self.seq + 1)

    def _stored_orders(self, version: int, state: Mapping[str, Any],
                       day: date) -> list[Mapping[str, Any]]:
        """The saved orders of ``day``: inside the state (version 1), or one row each."""
        if version == 1:
            return list(state["orders"])
        if self.load_states is None:
            raise StrategyStateError(f"{self.state_name}: the orders are stored as rows of "
                                     f"their own and this host cannot read them")
        rows = self.load_states(order_rows_prefix(self.strategy_name, day))
        for row in rows:
            if row.version not in READABLE_VERSIONS:
                raise StrategyStateError(f"{row.name}: version {row.version} is unknown")
        return [row.state for row in rows]

    @property
    def state_name(self) -> str:
        return f"strategy.{self.strategy_name}"

    # -- market data ---------------------------------------------------------------------------
    @handles(Bar)
    def on_bar(self, bar: Bar) -> None:
        self._call(self._strategy.on_bar, bar)

    @handles(BarUpdate)
    def on_bar_update(self, update: BarUpdate) -> None:
        self._call(self._strategy.on_bar_update, update)

    @handles(Swing)
    def on_swing(self, swing: Swing) -> None:
        self._call(self._strategy.on_swing, swing)

    @handles(SwingBroken)
    def on_swing_broken(self, broken: SwingBroken) -> None:
        self._call(self._strategy.on_swing_broken, broken)

    # -- execution -------------------------------------------------------------------------------
    @handles(OrderEvent)
    def on_order_event(self, event: OrderEvent) -> None:
        view = self.views.get(event.client_id)
        intent = self.intents.get(event.client_id)
        if view is None and intent is not None:
            view = _view_of(intent)
        if view is not None:
            self.views[event.client_id] = dataclasses.replace(
                view, status=event.status,
                filled_quantity=max(view.filled_quantity, event.filled_quantity),
                average_price=event.average_price or view.average_price,
                broker_order_id=event.broker_order_id or view.broker_order_id)
            self._dirty = True
        else:  # the exit coordinator's or the reconciler's order for this strategy
            logger.debug("{}: order event for an order it did not place: {}", self.name,
                         event)
        self._call(self._strategy.on_order_event, event)

    @handles(Fill)
    def on_fill(self, fill: Fill) -> None:
        if fill.key in self.fill_keys:
            logger.debug("{}: fill {} already applied; ignored", self.name, fill.key)
            return
        self.fill_keys.add(fill.key)
        # the part a PendingFill already put in the position is not added again
        new = fill.quantity - add_priced(self.pending[fill.action.value],
                                         fill.broker_order_id, fill.cumulative_quantity)
        signed = new if fill.action is Action.BUY else -new
        self.net[fill.symbol] = self.net.get(fill.symbol, 0) + signed
        self.corrected.discard(fill.symbol)
        view = self.views.get(fill.client_id)
        if view is not None and fill.cumulative_quantity > view.filled_quantity:
            self.views[fill.client_id] = dataclasses.replace(
                view, filled_quantity=fill.cumulative_quantity)
        self._dirty = True
        self._call(self._strategy.on_fill, fill)

    @handles(PendingFill)
    def on_fill_pending(self, pending: PendingFill) -> None:
        new = add_pending(self.pending[pending.action.value], pending.broker_order_id,
                          pending.cumulative_quantity)
        if not new:
            return
        signed = new if pending.action is Action.BUY else -new
        self.net[pending.symbol] = self.net.get(pending.symbol, 0) + signed
        self.corrected.discard(pending.symbol)  # as a fill: the strategy's own quantity again
        self._dirty = True
        self._call(self._strategy.on_fill_pending, pending)

    @handles(PositionCorrection)
    def on_correction(self, fix: PositionCorrection) -> None:
        """The reconciler booked the broker's quantity for one of this strategy's positions (a
        hand close, a lost broker): the host's count follows, and the strategy hears it as the
        command ``position_corrected`` (symbol, quantity, price)."""
        if fix.strategy != self.strategy_name:
            return
        held = self.net.get(fix.symbol, 0)
        if fix.expected is not None and held != fix.expected:
            logger.warning("{}: correction of {} to {} skipped: the host holds {}, not {}",
                           self.name, fix.symbol, fix.quantity, held, fix.expected)
            return
        logger.warning("{}: {} corrected by reconciliation: {} -> {} ({})", self.name,
                       fix.symbol, held, fix.quantity, fix.reason)
        self.net[fix.symbol] = fix.quantity
        self.corrected.add(fix.symbol)
        self._dirty = True
        self._call(self._strategy.on_command, "position_corrected",
                   {"symbol": fix.symbol, "quantity": fix.quantity, "price": fix.price})

    @handles(PositionMark)
    def on_position(self, mark: PositionMark) -> None:
        if mark.strategy in ("", self.strategy_name):
            self._call(self._strategy.on_position, mark)

    @handles(TimerFired)
    def on_timer(self, timer: TimerFired) -> None:
        if timer.name == PERSIST:
            self._persist_due = False
            self._save()
            return
        self._timer_now = timer.due
        try:
            self._call(self._strategy.on_timer, timer)
        finally:
            self._timer_now = None

    # -- operations ------------------------------------------------------------------------------
    @handles(TradingGate)
    def on_gate(self, gate: TradingGate) -> None:
        if gate.strategy not in ("", self.strategy_name):
            return
        if gate.entries != self.gate_open:
            logger.info("{}: entries {} ({})", self.name, "open" if gate.entries else "closed",
                        gate.reason or "no reason given")
        self.gate_open = gate.entries

    @handles(ExitAll)
    def on_exit(self, exit_all: ExitAll) -> None:
        if exit_all.strategy in ("", self.strategy_name):
            logger.info("{}: exit coordinator closing everything ({})", self.name,
                           exit_all.reason)
            self._call(self._strategy.on_exit, exit_all.reason)

    def set_risk(self, symbol: str, points: float) -> None:
        if self.positions_name:
            self.tell(self.positions_name, PositionRisk(self.strategy_name, self.account,
                                                        symbol, float(points), self.now()))

    def exit_all(self, reason: str) -> None:
        self.tell(self.risk_name, ExitAll(self.strategy_name, reason, self.now(),
                                          self.account))

    @handles(Command)
    def on_command(self, command: Command) -> None:
        args = dict(command.args)
        target = args.get("strategy")
        if target not in (None, "", self.strategy_name):
            return
        if command.name in ("pause", "resume"):
            paused = command.name == "pause"
            if paused != self.paused:
                self.paused = paused
                self._dirty = True
                logger.info("{}: {} by operator", self.name,
                            "paused" if paused else "resumed")
        self._call(self._strategy.on_command, command.name, args)

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, Any]:
        working = [v for v in self.views.values() if v.working]
        return {
            "strategy": self.strategy_name,
            "account": self.account,
            "can_trade": self.can_trade,
            "gate_open": self.gate_open,
            "paused": self.paused,
            "day": self.day.isoformat() if self.day else None,
            "orders_today": len(self.intents),
            "orders_working": len(working),
            "positions": {s: q for s, q in sorted(self.net.items()) if q},
            "last_client_id": (client_id(self.strategy_name, self.day, self.seq)
                               if self.day and self.seq else None),
            "detail": self._strategy.status(),
        }

    # -- the context's implementation --------------------------------------------------------------
    @property
    def can_trade(self) -> bool:
        return self.gate_open and not self.paused

    def now(self) -> float:
        if self._timer_now is not None:
            return self._timer_now
        if self.clock is None:
            raise RuntimeError(f"{self.name} needs an engine clock")
        return self.clock.time()

    def place(self, *, symbol: str, exchange: str, action: Action, quantity: int,
              pricetype: PriceType, price: float = 0.0, trigger_price: float = 0.0,
              purpose: OrderPurpose = OrderPurpose.ENTRY, product: Product = Product.MIS,
              parent_id: str | None = None, reason: str = "") -> str:
        now = self.now()
        cid = self._next_id(now)
        intent = _checked(OrderIntent(
            client_id=cid, strategy=self.strategy_name, account=self.account, symbol=symbol,
            exchange=exchange, action=Action(action), quantity=quantity,
            pricetype=PriceType(pricetype), product=Product(product), price=float(price),
            trigger_price=float(trigger_price), purpose=OrderPurpose(purpose), created_ts=now,
            parent_id=parent_id, reason=reason))
        self.intents[cid] = intent
        self.views[cid] = _view_of(intent)
        if intent.purpose is OrderPurpose.ENTRY and not self.can_trade:
            self._refuse(intent, now)
        elif (why := self._opens_a_position(intent)) is not None:
            self._refuse(intent, now, why)
        else:
            self.tell(self.orders_name, intent)
        return cid

    def _opens_a_position(self, intent: OrderIntent) -> str | None:
        """On a symbol the reconciler corrected, a stop or exit from flat (or on the wrong
        side) would open a position nobody asked for (the one closed at the broker): refused,
        until the strategy's next fill on the symbol."""
        if intent.purpose is OrderPurpose.ENTRY or intent.symbol not in self.corrected:
            return None
        held = self.net.get(intent.symbol, 0)
        if (held < 0 and intent.action is Action.BUY) or (held > 0 and
                                                          intent.action is Action.SELL):
            return None
        return (f"{intent.purpose.value} {intent.action.value} would open a position: the "
                f"strategy holds {held} of {intent.symbol}")

    def cancel(self, cid: str, reason: str = "") -> None:
        if cid not in self.intents:
            raise UnknownOrder(cid)
        self.tell(self.orders_name, CancelIntent(cid, reason))

    def replace(self, cid: str, *, reason: str = "", **changes: Any) -> str:
        old = self.intents.get(cid)
        if old is None:
            raise UnknownOrder(cid)
        unknown = sorted(set(changes) - REPLACEABLE)
        if unknown:
            raise ValueError(f"replace cannot change {unknown}; allowed: {sorted(REPLACEABLE)}")
        now = self.now()
        new_id = self._next_id(now)
        new = _checked(dataclasses.replace(
            old, client_id=new_id, created_ts=now, reason=reason or old.reason,
            **_typed_changes(changes)))
        self.intents[new_id] = new
        if new.purpose is OrderPurpose.ENTRY and not self.can_trade:
            self.views[new_id] = _view_of(new)
            self._refuse(new, now)
        else:
            # no view yet: the replacement exists once the order manager reports it
            self.tell(self.orders_name, CancelIntent(cid, reason, replace_with=new))
        return new_id

    def order_views(self, working_only: bool) -> Mapping[str, OrderView]:
        if not working_only:
            return MappingProxyType(dict(self.views))
        return MappingProxyType({c: v for c, v in self.views.items() if v.working})

    def net_positions(self) -> Mapping[str, int]:
        return MappingProxyType({s: q for s, q in self.net.items() if q})

    def raise_alert(self, kind: str, message: str, severity: Severity) -> None:
        text = f"{self.strategy_name}: {message}"
        log = logger.error if severity is Severity.CRITICAL else logger.warning
        log("[ALERT {}] {}", kind, text)
        if self.health:
            self.tell(self.health, Alert(kind, text, self.now(), Severity(severity)))

    def save_trade(self, fields: Mapping[str, Any]) -> None:
        fields = dict(fields)
        if "r" in fields:
            fields["r_multiple"] = fields.pop("r")
        risk = float(fields.pop("risk", 0.0) or 0.0)
        unknown = sorted(set(fields) - _TRADE_FIELDS)
        if unknown:
            raise ValueError(f"record_trade: unknown fields {unknown}")
        # the unit goes with the row: a report made after the setting changed still says
        # what this trade's R was measured in
        fields["r_unit"] = "fixed"
        if self.r_unit == "position" and risk > 0 and "pnl" in fields:
            fields["r_multiple"] = round(float(fields["pnl"]) / risk, 4)
            fields["r_unit"] = "position"
        try:
            trade = StoredTrade(strategy=self.strategy_name, account=self.account,
                                trading_date=trading_date(float(fields["exit_ts"])),
                                **{**fields, "action": Action(fields["action"])})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"record_trade: incomplete trade {fields!r}: {exc}") from None
        logger.info("{}: trade {} {} x{} {:.2f} -> {:.2f} pnl {:+.2f} ({:+.2f} R) {}", self.name,
                    trade.symbol, trade.action.value, trade.quantity, trade.entry_price,
                    trade.exit_price, trade.pnl, trade.r_multiple, trade.exit_reason)
        if self.store:
            self.tell(self.store, record(trade))

    # -- internals -------------------------------------------------------------------------------
    @property
    def _strategy(self) -> Strategy:
        if self.strategy is None:
            raise RuntimeError(f"{self.name}: the strategy is not started")
        return self.strategy

    def _call(self, hook: Callable[..., None], *args: Any) -> None:
        """Run one hook, then persist: at once if orders or fills changed, else a changed
        snapshot once a minute (see the module docstring)."""
        hook(*args)
        if self._changed() or self._dirty:
            self._unsaved = True
        # the cheap tests first: this runs after every one of the day's million BarUpdates
        if self._unsaved and not self._persist_due and (self._dirty or self._new_minute()):
            # built and encoded later, not now: an intent this hook told the order manager
            # leaves while this thread is idle, not while it encodes the state (and competes
            # for the GIL with the order manager)
            self._persist_due = True
            assert self.clock is not None
            if math.isfinite(self.clock.speed):
                self.schedule_at(self.now() + self.real_s(PERSIST_DELAY_S), PERSIST)
            else:  # a virtual clock: on the next message, deterministically
                self.tell(self.name, TimerFired(PERSIST, self.now()))

    def _save(self) -> None:
        if self._unsaved and (self._dirty or self._new_minute()):
            self._persist(durable=self._dirty)
            self._dirty = False

    def on_stop(self) -> None:
        if self._unsaved:
            self._persist(durable=False)

    def _new_minute(self) -> bool:
        """Whether engine time is outside the minute of the last write. A compare with that
        minute's bounds, not ``int(now // 60)``: this runs after most of the day's million
        BarUpdates (the bounds are whole multiples of 60, exact as floats: the same answer)."""
        now = self.now()
        return not self._saved_from <= now < self._saved_from + 60.0

    def _changed(self) -> bool:
        """Whether the strategy's state changed since it was last seen: its ``state_version``
        moved, or (a strategy without one) its snapshot differs from the last one, which is
        then kept to be written."""
        strategy = self.strategy
        assert strategy is not None  # (not the property: this runs after every message)
        version = strategy.state_version
        if version is not None:
            if version == self._seen_version:
                return False
            self._seen_version = version
            return True
        snapshot = strategy.snapshot()
        if strategy.snapshot_cached:
            if snapshot is self._last_snapshot:
                return False
        elif snapshot == self._last_snapshot:
            return False
        self._last_snapshot = self._kept(snapshot)
        return True

    def _snapshot(self) -> dict[str, Any]:
        """The strategy's snapshot to write (encoded at once, by ``record``): built now from a
        strategy that keeps a ``state_version`` (this runs between hooks, so it is the state
        after the last one), else the one ``_changed`` kept."""
        if self._strategy.state_version is None:
            return self._last_snapshot or {}
        return self._strategy.snapshot()

    def _kept(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """What the next snapshot is compared with: the object itself when the strategy never
        changes a snapshot it returned, else a copy (it may hand out live state)."""
        return snapshot if self._strategy.snapshot_cached else copy.deepcopy(snapshot)

    def _persist(self, durable: bool) -> None:
        """Tell the store the state (``soon`` when ``durable``: see the docstring): a row for
        each order that changed since it was last told (the day's orders are many; one
        changes at a time), then the state itself, which no longer grows with the day's
        orders. The orders go first: a state row is never newer than the orders it counts."""
        if not self.store or self.day is None:
            return
        now = self.now()
        prefix = order_rows_prefix(self.strategy_name, self.day)
        told = self._told_rows
        for cid, intent in self.intents.items():
            row = self._order_row(cid, intent)
            if told.get(cid) is not row:
                self.tell(self.store, record(StoredStrategyState(
                    name=prefix + cid, version=STATE_VERSION, state=row, updated_ts=now),
                    durable=durable, soon=durable))
                told[cid] = row
        state = {
            "day": self.day.isoformat(),
            "seq": self.seq,
            "paused": self.paused,
            "positions": dict(self.net),
            "fill_keys": sorted([b, c] for b, c in self.fill_keys),
            "pending": self.pending,
            "strategy": self._snapshot(),
        }
        self.tell(self.store, record(StoredStrategyState(
            name=self.state_name, version=STATE_VERSION, state=state, updated_ts=now),
            durable=durable, soon=durable))
        self._unsaved = False
        self._saved_from = (self.now() // 60) * 60.0

    def _order_row(self, cid: str, intent: OrderIntent) -> dict[str, Any]:
        """An order as stored in the state, built again only when its view changed (the
        state is written after every change; the day's orders are many)."""
        view = self.views.get(cid)
        cached = self._rows.get(cid)
        if cached is not None and cached[0] is view and cached[1] is intent:
            return cached[2]
        row = _order_to_dict(intent, view)
        self._rows[cid] = (view, intent, row)
        return row

    def _next_id(self, now: float) -> str:
        day = trading_date(now)
        if day != self.day:
            self._new_day(day)
        self.seq += 1
        self._dirty = True
        return client_id(self.strategy_name, day, self.seq)

    def _new_day(self, day: date) -> None:
        """The engine ran into a new trading day: ids restart, finished orders are dropped."""
        logger.info("{}: new trading day {}", self.name, day)
        self.day = day
        self.seq = 0
        self.fill_keys.clear()
        done = [cid for cid, view in self.views.items() if not view.working]
        for cid in done:
            del self.views[cid]
        self.intents = {cid: i for cid, i in self.intents.items() if cid in self.views}
        self._rows = {cid: r for cid, r in self._rows.items() if cid in self.intents}
        self._told_rows.clear()  # the orders still working are stored again under the new day

    def _refuse(self, intent: OrderIntent, now: float, reason: str | None = None) -> None:
        if reason is None:
            why = "not reconciled yet" if not self.gate_open else "paused"
            reason = f"entries closed ({why})"
        logger.warning("{}: {} {} on {} not sent: {}", self.name, intent.purpose.value,
                       intent.client_id, intent.symbol, reason)
        self.tell(self.name, OrderEvent(
            intent.client_id, OrderStatus.REJECTED, now, self.strategy_name, self.account,
            intent.symbol, purpose=intent.purpose, reason=reason))


class HostContext:
    """The ``StrategyContext`` a strategy gets: a narrow view of its host."""

    def __init__(self, host: StrategyHost) -> None:
        self._host = host

    @property
    def strategy(self) -> str:
        return self._host.strategy_name

    @property
    def instrument(self) -> InstrumentSpec:
        return self._host.instrument

    def now(self) -> float:
        return self._host.now()

    @property
    def can_trade(self) -> bool:
        return self._host.can_trade

    def place(self, *, symbol: str, exchange: str, action: Action, quantity: int,
              pricetype: PriceType, price: float = 0.0, trigger_price: float = 0.0,
              purpose: OrderPurpose = OrderPurpose.ENTRY, product: Product = Product.MIS,
              parent_id: str | None = None, reason: str = "") -> str:
        return self._host.place(symbol=symbol, exchange=exchange, action=action,
                                quantity=quantity, pricetype=pricetype, price=price,
                                trigger_price=trigger_price, purpose=purpose, product=product,
                                parent_id=parent_id, reason=reason)

    def cancel(self, client_id: str, reason: str = "") -> None:
        self._host.cancel(client_id, reason)

    def replace(self, client_id: str, *, reason: str = "", **changes: Any) -> str:
        return self._host.replace(client_id, reason=reason, **changes)

    def orders(self, *, working_only: bool = True) -> Mapping[str, OrderView]:
        return self._host.order_views(working_only)

    def positions(self) -> Mapping[str, int]:
        return self._host.net_positions()

    def schedule_at(self, when: float, name: str, payload: Any = None) -> None:
        self._host.schedule_at(when, name, payload)

    def schedule_every(self, interval: float, name: str, *, first: float | None = None,
                       payload: Any = None) -> None:
        self._host.schedule_every(interval, name, first=first, payload=payload)

    def exit_all(self, reason: str) -> None:
        self._host.exit_all(reason)

    def alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        self._host.raise_alert(kind, message, severity)

    def record_trade(self, **fields: Any) -> None:
        self._host.save_trade(fields)

    def set_risk(self, symbol: str, points: float) -> None:
        self._host.set_risk(symbol, points)

    @property
    def r_unit(self) -> str:
        return self._host.r_unit


# -- (de)serialization of orders ------------------------------------------------------------------
def _view_of(intent: OrderIntent) -> OrderView:
    return OrderView(client_id=intent.client_id, symbol=intent.symbol, action=intent.action,
                     quantity=intent.quantity, pricetype=intent.pricetype, price=intent.price,
                     trigger_price=intent.trigger_price, purpose=intent.purpose,
                     status=OrderStatus.SUBMITTING)


def _checked(intent: OrderIntent) -> OrderIntent:
    if not isinstance(intent.quantity, int) or isinstance(intent.quantity, bool) \
            or intent.quantity <= 0:
        raise ValueError(f"order quantity must be a positive int, got {intent.quantity!r}")
    for what in ("price", "trigger_price"):
        value = getattr(intent, what)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"order {what} must be a finite non-negative number, got {value!r}")
    if not intent.symbol or not intent.exchange:
        raise ValueError(f"order needs a symbol and an exchange, got {intent.symbol!r} on "
                         f"{intent.exchange!r}")
    return intent


def _seq_of(cid: str, prefix: str) -> int | None:
    """The sequence number of one of the host's own client ids of the day (``prefix`` is
    ``<strategy>-<yyMMdd>-``); None for anything else (a split child ``<id>.<n>`` included)."""
    digits = cid[len(prefix):] if cid.startswith(prefix) else ""
    return int(digits) if digits.isdigit() else None


def _intent_of(row: StoredOrder) -> OrderIntent:
    return OrderIntent(client_id=row.client_id, strategy=row.strategy, account=row.account,
                       symbol=row.symbol, exchange=row.exchange, action=row.action,
                       quantity=row.quantity, pricetype=row.pricetype, product=row.product,
                       price=row.price, trigger_price=row.trigger_price, purpose=row.purpose,
                       created_ts=row.created_ts, parent_id=row.parent_id, reason=row.reason)


def _typed_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    enums: dict[str, Callable[[Any], Any]] = {
        "action": Action, "pricetype": PriceType, "purpose": OrderPurpose, "product": Product,
        "price": float, "trigger_price": float}
    return {k: enums[k](v) if k in enums else v for k, v in changes.items()}


def _order_to_dict(intent: OrderIntent, view: OrderView | None) -> dict[str, Any]:
    row: dict[str, Any] = {f.name: getattr(intent, f.name)
                           for f in dataclasses.fields(OrderIntent)}
    for key in ("action", "pricetype", "product", "purpose"):
        row[key] = row[key].value
    row["status"] = view.status.value if view is not None else None
    row["filled_quantity"] = view.filled_quantity if view is not None else 0
    row["average_price"] = view.average_price if view is not None else 0.0
    row["broker_order_id"] = view.broker_order_id if view is not None else None
    return row


def _order_from_dict(row: Mapping[str, Any]) -> tuple[OrderIntent, OrderView | None]:
    names = {f.name for f in dataclasses.fields(OrderIntent)}
    fields = {k: v for k, v in row.items() if k in names}
    intent = _checked(OrderIntent(**{**fields, "action": Action(fields["action"]),
                                     "pricetype": PriceType(fields["pricetype"]),
                                     "product": Product(fields["product"]),
                                     "purpose": OrderPurpose(fields["purpose"])}))
    if row["status"] is None:
        return intent, None
    view = dataclasses.replace(
        _view_of(intent), status=OrderStatus(row["status"]),
        filled_quantity=int(row["filled_quantity"]), average_price=float(row["average_price"]),
        broker_order_id=row["broker_order_id"])
    return intent, view
