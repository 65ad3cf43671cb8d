"""The strategy API: the small base class every strategy implements, and what it may use.

Owns the contract between a strategy and the engine. A strategy is plain, single-threaded Python
driven by the ``StrategyHost`` actor: the host calls one ``on_*`` hook per message, in order, on
the host's thread. A strategy never calls the broker and never blocks: it *emits* order intents
and cancels through its ``StrategyContext``; the order manager executes them and the results come
back as ``on_order_event`` / ``on_fill``. Time comes from ``ctx.now()`` (the engine clock), so
the same strategy runs unchanged in replay, paper and live.

State that must survive a restart goes in ``snapshot()`` (JSON-able) and comes back through
``restore()``; the host persists it after every hook that changed it. A strategy that knows when
its state changes may say so with ``state_version`` (a change counter), so the host builds the
snapshot only when it writes it.

Writing your own: subclass ``Strategy``, set ``name`` and ``settings_class``, implement the hooks
you need. ``strategies/vwap_cross.py`` is a small complete example; ``run.py new-strategy NAME``
writes a commented template; docs/strategies/writing.md says where the engine finds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    Bar,
    BarUpdate,
    Fill,
    OrderEvent,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PositionMark,
    PriceType,
    Product,
    Severity,
    Swing,
    SwingBroken,
    TimerFired,
)


@dataclass(frozen=True, slots=True)
class OrderView:
    """What the strategy knows of one of its orders (kept by the host from order events)."""

    client_id: str
    symbol: str
    action: Action
    quantity: int
    pricetype: PriceType
    price: float
    trigger_price: float
    purpose: OrderPurpose
    status: OrderStatus
    filled_quantity: int = 0
    average_price: float = 0.0
    broker_order_id: str | None = None

    @property
    def working(self) -> bool:
        return not self.status.is_terminal


class StrategyContext(Protocol):
    """What a strategy may use. Implemented by the StrategyHost actor."""

    @property
    def strategy(self) -> str: ...

    @property
    def instrument(self) -> InstrumentSpec: ...

    def now(self) -> float:
        """Engine time, epoch seconds."""

    @property
    def can_trade(self) -> bool:
        """False until startup reconciliation succeeded, and while paused or halted: a
        strategy must not place new entries then (the order manager also refuses them)."""

    def place(self, *, symbol: str, exchange: str, action: Action, quantity: int,
              pricetype: PriceType, price: float = 0.0, trigger_price: float = 0.0,
              purpose: OrderPurpose = OrderPurpose.ENTRY, product: Product = Product.MIS,
              parent_id: str | None = None, reason: str = "") -> str:
        """Emit an order intent; returns its engine-side client id (deterministic)."""

    def cancel(self, client_id: str, reason: str = "") -> None:
        """Ask for a cancel; the outcome arrives as an order event (never assume it worked)."""

    def replace(self, client_id: str, *, reason: str = "", **changes: Any) -> str:
        """Verified cancel-then-replace: the new order (same fields plus ``changes``) is placed
        only after the broker confirms the old one cancelled. Returns the new client id."""

    def orders(self, *, working_only: bool = True) -> Mapping[str, OrderView]:
        """This strategy's orders by client id."""

    def positions(self) -> Mapping[str, int]:
        """Signed net quantity per symbol (short < 0), from this strategy's fills."""

    def schedule_at(self, when: float, name: str, payload: Any = None) -> None:
        """``on_timer`` will get ``TimerFired(name, when, payload)`` at engine time ``when``."""

    def schedule_every(self, interval: float, name: str, *, first: float | None = None,
                       payload: Any = None) -> None:
        """``on_timer`` gets ``TimerFired(name, due, payload)`` every ``interval`` engine
        seconds (first at ``first``, else one interval from now). The clock keeps the series,
        so every firing has its exact due time even when a replay steps over several."""

    def exit_all(self, reason: str) -> None:
        """Close everything of this strategy through the risk manager's exit coordinator (the
        one exit path): it cancels the working entries, closes every position BUY-first
        (cancelling each resting stop and checking it did not fill first) and halts the
        strategy for the day. ``on_exit`` is called when it starts."""

    def alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        """Raise an operator alert (throttled by the health actor)."""

    def record_trade(self, **fields: Any) -> None:
        """Persist a closed trade (symbol, entry/exit prices and times, quantity, pnl, r).
        ``risk`` (optional): the rupees the trade risked (quantity × stop distance at entry);
        with ``[risk] r_unit = "position"`` the recorded R is pnl / risk."""

    def set_risk(self, symbol: str, points: float) -> None:
        """Say what one unit of a position in ``symbol`` risks (its stop distance at entry, in
        rupees), before the entry can fill: with ``[risk] r_unit = "position"`` the risk
        latch measures that position against it (the position monitor stores it, so it holds
        across restarts). Without it, the fixed R is used."""

    @property
    def r_unit(self) -> str:
        """``[risk] r_unit``: "position" (each position's R over its own risk) or "fixed";
        a strategy showing its own R uses the same unit."""


class Strategy:
    """Subclass and implement the hooks you need; every hook has a do-nothing default."""

    #: The strategy's name: ``engine.strategy`` / ``--strategy`` pick it, and its settings are
    #: the ``[name]`` section of config.toml. Setting it is what registers the class.
    name: str = "strategy"
    #: The frozen settings dataclass of the ``[name]`` section (fields made with
    #: ``engine.settings.setting``), or None for a strategy without settings. An instance
    #: arrives as ``self.settings``; a ``problems()`` method on it adds checks across keys.
    settings_class: ClassVar[type | None] = None
    #: True when ``snapshot`` keeps returning the very same object while the state is unchanged,
    #: a new object after any change, and never changes an object it returned (baseline_v1
    #: caches it so). The host then neither compares nor copies the snapshot after every message
    #: (a day's state is tens of KB, and BarUpdates come thousands a minute). Leave it False when
    #: ``snapshot`` may hand out live state that is changed in place.
    snapshot_cached: ClassVar[bool] = False
    #: Optional change counter: None (the default), or an int the strategy increases with every
    #: change of what ``snapshot`` would return (baseline_v1 does it in ``_touch``), kept from
    #: ``__init__`` on. The host then reads it after every hook instead of building the snapshot
    #: and comparing it with the last one, and builds the snapshot only when it writes the
    #: state (at most once a minute of engine time, with every order or fill, and on stop). A
    #: change it misses is a change a restart forgets; when in doubt, leave it None.
    state_version: int | None = None

    def __init__(self, ctx: StrategyContext, settings: Any = None) -> None:
        self.ctx = ctx
        self.settings = settings

    # -- lifecycle ---------------------------------------------------------------------------
    def on_start(self) -> None:
        """Called once the host is up (after ``restore`` when there was saved state)."""

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state to persist; restored by ``restore`` after a restart."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what ``snapshot`` returned."""

    def status(self) -> dict[str, Any]:
        """A small summary for ``run.py status`` (state, P&L, R, limits); JSON-able."""
        return {}

    # -- market data -------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> None:
        """A completed one-minute bar (``bar.source`` is "history" during backfill)."""

    def on_bar_update(self, update: BarUpdate) -> None:
        """The bar in progress moved (new high/low immediately, else rate-limited)."""

    def on_swing(self, swing: Swing) -> None:
        """A swing was created or updated (``swing.updated``)."""

    def on_swing_broken(self, broken: SwingBroken) -> None:
        """A swing was broken (by a tick or by a completed bar)."""

    # -- execution ---------------------------------------------------------------------------
    def on_order_event(self, event: OrderEvent) -> None:
        """One of this strategy's orders changed state."""

    def on_fill(self, fill: Fill) -> None:
        """New quantity filled on one of this strategy's orders (each fill exactly once)."""

    def on_fill_pending(self, pending: PendingFill) -> None:
        """The broker filled ``pending.quantity`` more of one of this strategy's orders and has
        not given its price yet. Protect it now (a stop must not wait for a price); book no
        P&L from it. The priced ``on_fill`` of the same order follows and completes it (use
        ``engine.trading.pending`` so it is not counted twice)."""

    def on_position(self, mark: PositionMark) -> None:
        """Mark-to-market of one of this strategy's positions."""

    def on_timer(self, timer: TimerFired) -> None:
        """A timer scheduled with ``ctx.schedule_at`` is due."""

    def on_exit(self, reason: str) -> None:
        """The exit coordinator is closing everything of this strategy (a risk limit, the
        day's end, an operator flatten, or the strategy's own ``ctx.exit_all``). From here the
        coordinator owns the positions: a strategy must not place stops or exits for them (it
        keeps receiving their fills and order events, to account for them)."""

    def on_command(self, name: str, args: Mapping[str, Any]) -> None:
        """An operator command addressed to the strategy. The host acts on pause/resume
        itself (``can_trade``) and then passes every command here too, so a strategy can add
        its own (kill, flatten, ...) and clear its own blocks on resume."""
