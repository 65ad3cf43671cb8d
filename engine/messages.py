"""Every message that travels between actors: small, immutable, slotted dataclasses (and three
named tuples, ``Tick``, ``TickBatch`` and ``BarUpdate``: a replay builds up to a million of each
a day).

This module owns the vocabulary of the engine. Nothing here holds behaviour beyond trivial
derived properties; actors never hand each other mutable objects.

Conventions:
- times are POSIX epoch seconds as floats (UTC based, timezone-free); they are shown in IST;
- prices are rupees as floats; quantities are ints (positive; the side is in ``action``);
- symbols are OpenAlgo symbols (``NIFTY30JAN2524000CE``) with an exchange (``NFO``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from functools import partial
from typing import Any, NamedTuple, TypeVar

_C = TypeVar("_C", bound=type)


def frozen(cls: _C) -> _C:
    """``@dataclass(frozen=True, slots=True)`` with a faster ``__init__``.

    The standard frozen ``__init__`` sets each field through ``object.__setattr__``; this one
    calls each slot's own setter, about twice as fast (a replay builds millions of messages).
    Immutability is unchanged: assignment after construction still raises. A class with
    ``__post_init__``, ``default_factory``, ``init=False`` or keyword-only fields keeps the
    standard one.
    """
    made = dataclass(frozen=True, slots=True)(cls)
    specs = fields(made)
    if hasattr(made, "__post_init__") or any(
            f.default_factory is not MISSING or not f.init or f.kw_only for f in specs):
        return made
    scope: dict[str, Any] = {f"_set_{f.name}": made.__dict__[f.name].__set__ for f in specs}
    params = []
    for f in specs:
        if f.default is MISSING:
            params.append(f.name)
        else:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"\n    _set_{f.name}(self, {f.name})" for f in specs) or "\n    pass"
    built: dict[str, Any] = {}
    exec(f"def __init__(self, {', '.join(params)}):{body}\n", scope, built)
    init = built["__init__"]
    init.__qualname__ = f"{made.__qualname__}.__init__"
    init.__doc__ = made.__init__.__doc__
    made.__init__ = init
    return made


# ---------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Action:
        return Action.SELL if self is Action.BUY else Action.BUY


class PriceType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"
    SL_M = "SL-M"


class Product(StrEnum):
    MIS = "MIS"
    CNC = "CNC"
    NRML = "NRML"


class OrderStatus(StrEnum):
    """Engine-side order states (execution-and-risk.md). Broker strings map onto these."""

    SUBMITTING = "submitting"
    OPEN = "open"
    TRIGGER_PENDING = "trigger_pending"
    PARTIALLY_FILLED = "partially_filled"
    COMPLETE = "complete"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CANCEL_PENDING = "cancel_pending"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderStatus.COMPLETE, OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
)


class OrderPurpose(StrEnum):
    ENTRY = "entry"
    STOP = "stop"
    EXIT = "exit"


class SwingKind(StrEnum):
    LOW = "LOW"
    HIGH = "HIGH"


class RiskState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# ---------------------------------------------------------------------------------------------
# Market data
# ---------------------------------------------------------------------------------------------


class Tick(NamedTuple):
    """One market-data update for one symbol.

    ``volume`` is the day's cumulative traded volume (None in LTP mode); ``exchange_ts`` is the
    last-trade time from the exchange (``ltt``) when the feed gives it, else None; ``recv_ts`` is
    when the engine received it (engine clock).

    A named tuple, unlike the other messages: as immutable, and a replay builds one per
    recorded row (over a million a day) straight from the row's tuple (``tick_from_row``), ten
    times faster than setting nine slots. Change a field with ``tick._replace(...)``.
    """

    symbol: str
    exchange: str
    ltp: float
    recv_ts: float
    exchange_ts: float | None = None
    volume: int | None = None
    bid: float = 0.0
    ask: float = 0.0
    oi: int | None = None

    @property
    def ts(self) -> float:
        """The time a bar builder buckets this tick by: exchange time, else receive time."""
        return self.exchange_ts if self.exchange_ts is not None else self.recv_ts


#: a Tick from a row of exactly its nine fields in order (no check: for rows read by a query
#: that selects them, e.g. a session file's)
tick_from_row: Callable[[tuple[Any, ...]], Tick] = partial(tuple.__new__, Tick)  # type: ignore[assignment]


class TickBatch(NamedTuple):
    """Several ticks in arrival order (the feed batches per step and per symbol).
    ``routed``: the feed client's reader thread has already sent these ticks on to their bar
    builders (paper, live); the Feed actor only books them. A named tuple: a replay sends one
    to a bar builder for almost every second of every symbol (``batch_of`` builds one without a
    Python frame)."""

    ticks: tuple[Tick, ...]
    routed: bool = False


#: a TickBatch from ``(ticks, routed)`` (no check)
batch_of: Callable[[tuple[tuple[Tick, ...], bool]], TickBatch] = \
    partial(tuple.__new__, TickBatch)  # type: ignore[assignment]


@frozen
class Bar:
    """A completed one-minute bar. ``start`` is the minute's first second (epoch)."""

    symbol: str
    start: float
    open: float
    high: float
    low: float
    close: float
    volume: int
    ticks: int
    vwap: float
    source: str = "live"  # "live" | "history"


class BarUpdate(NamedTuple):
    """The bar in progress: emitted (rate-limited) while a minute is still open.

    A named tuple like ``Tick``: a replay builds one for almost every tick, and
    ``bar_update_of`` makes one from a tuple of its six fields without a Python frame."""

    symbol: str
    start: float
    high: float
    low: float
    last: float
    ts: float


#: a BarUpdate from a tuple of exactly its six fields in order (no check)
bar_update_of: Callable[[tuple[str, float, float, float, float, float]], BarUpdate] = \
    partial(tuple.__new__, BarUpdate)  # type: ignore[assignment]


@frozen
class BarGap:
    """A minute with no valid tick for a symbol that was otherwise live."""

    symbol: str
    start: float


@frozen
class SubscriptionChange:
    """Ask the feed to add and/or remove symbols (``(symbol, exchange)`` pairs) in a mode."""

    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[tuple[str, str], ...] = ()
    mode: int = 2
    requester: str = ""


@frozen
class FeedStatus:
    """The feed's connection state changed (connected, reconnecting, frozen, ...)."""

    state: str
    ts: float
    reason: str = ""
    reconnects: int = 0


# ---------------------------------------------------------------------------------------------
# Swings and strategy
# ---------------------------------------------------------------------------------------------


@frozen
class Swing:
    symbol: str
    kind: SwingKind
    price: float
    bar_start: float
    index: int
    vwap: float
    updated: bool = False
    tradable: bool = True


@frozen
class SwingBroken:
    symbol: str
    kind: SwingKind
    price: float
    bar_start: float
    broken_ts: float
    by: str  # "tick" | "bar"


# ---------------------------------------------------------------------------------------------
# Orders and fills
# ---------------------------------------------------------------------------------------------


@frozen
class OrderIntent:
    """A strategy's (or risk manager's) wish to place an order; ``client_id`` is engine-side."""

    client_id: str
    strategy: str
    account: str
    symbol: str
    exchange: str
    action: Action
    quantity: int
    pricetype: PriceType
    product: Product = Product.MIS
    price: float = 0.0
    trigger_price: float = 0.0
    purpose: OrderPurpose = OrderPurpose.ENTRY
    created_ts: float = 0.0
    parent_id: str | None = None
    reason: str = ""


@frozen
class CancelIntent:
    client_id: str
    reason: str = ""
    replace_with: OrderIntent | None = None


@frozen
class OrderEvent:
    """An order's state changed (as the order manager tracks it)."""

    client_id: str
    status: OrderStatus
    ts: float
    strategy: str = ""
    account: str = ""
    symbol: str = ""
    broker_order_id: str | None = None
    filled_quantity: int = 0
    average_price: float = 0.0
    purpose: OrderPurpose = OrderPurpose.ENTRY
    reason: str = ""


@frozen
class Fill:
    """Quantity newly filled on an order; applied exactly once (keyed by order and cumulative)."""

    client_id: str
    broker_order_id: str
    strategy: str
    account: str
    symbol: str
    exchange: str
    action: Action
    quantity: int
    price: float
    cumulative_quantity: int
    ts: float
    purpose: OrderPurpose = OrderPurpose.ENTRY

    @property
    def key(self) -> tuple[str, int]:
        return (self.broker_order_id, self.cumulative_quantity)


@frozen
class PendingFill:
    """Quantity the broker says is filled on an order whose price it does not give yet
    (docs/execution-and-risk.md, "Fill prices"). The position holds the quantity (so its stop is
    placed), marked at the last price; no P&L or R is booked from it. The priced ``Fill`` of
    the same order later completes it (up to ``cumulative_quantity``, never counted twice)."""

    client_id: str
    broker_order_id: str
    strategy: str
    account: str
    symbol: str
    exchange: str
    action: Action
    quantity: int  # newly known filled (beyond what was priced or pending before)
    cumulative_quantity: int  # filled at the broker on this order, price pending
    ts: float
    purpose: OrderPurpose = OrderPurpose.ENTRY

    @property
    def key(self) -> tuple[str, int]:
        return (self.broker_order_id, self.cumulative_quantity)


@frozen
class BrokerOrderUpdate:
    """The broker reported an order's state (order-update stream, or an orderbook poll).

    Fields follow OpenAlgo's ``order_update`` frame; ``filled_quantity`` is cumulative. A fill
    is booked only from a report that gives both quantity and price; others are priced from the
    broker's tradebook (source ``tradebook``).
    """

    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    status: str  # OpenAlgo's lowercase status: open, trigger pending, complete, ...
    filled_quantity: int | None  # None: the report does not say (Zerodha/Angel orderbook rows)
    average_price: float | None  # None or 0: not known from this report
    ts: float
    price: float = 0.0
    trigger_price: float = 0.0
    pricetype: str = ""
    rejection_reason: str = ""
    source: str = "stream"  # "stream" | "poll" | "status" | "tradebook"
    #: False when the status may be another row's, carried over (OpenAlgo's Zerodha orderbook
    #: gives an in-between state the status of the row above): its quantity is not booked
    #: before the tradebook shows it
    status_certain: bool = True


@frozen
class TradingGate:
    """What the order manager may send: ``entries`` (new exposure) and ``exits`` (reducing
    orders, stops, cancels). Startup reconciliation opens it; pause, kill and HALTED close
    ``entries``; a safe stop closes both."""

    entries: bool
    exits: bool = True
    reason: str = ""
    strategy: str = ""  # empty: every strategy


# ---------------------------------------------------------------------------------------------
# Positions and risk
# ---------------------------------------------------------------------------------------------


@frozen
class PositionMark:
    """Mark-to-market of one position; ``quantity`` is signed (short < 0)."""

    strategy: str
    account: str
    symbol: str
    quantity: int
    average_price: float
    ltp: float
    unrealized: float
    realized: float
    r_multiple: float
    ts: float
    fresh: bool = True
    price_pending: int = 0  # of ``quantity``, filled at the broker with its price not known yet


@frozen
class RiskEvent:
    strategy: str
    kind: str  # max_loss | max_profit | trailing_stop | daily_r | eod | operator
    threshold: float
    value: float
    action: str
    ts: float
    order_ids: tuple[str, ...] = ()
    account: str = ""


@frozen
class ExitAll:
    strategy: str
    reason: str
    ts: float
    account: str = ""


@frozen
class StrategyPnl:
    """One strategy's day on one account, marked to market (position monitor → risk manager).

    ``realized`` and ``unrealized`` are rupees for the current trading day; ``fresh`` is True
    when every open position has a fresh price (``stale`` names the others); ``open_positions``
    counts symbols with a non-zero quantity."""

    strategy: str
    account: str
    realized: float
    unrealized: float
    open_positions: int
    fresh: bool
    ts: float
    stale: tuple[str, ...] = ()
    premium: float = 0.0  # rupees collected on open shorts (entry price x quantity)
    r: float | None = None  # the day's R in the configured unit (None: pnl over the fixed R)

    @property
    def pnl(self) -> float:
        return self.realized + self.unrealized


@frozen
class PositionRisk:
    """What one unit of a strategy's position in ``symbol`` risks: its stop distance at entry,
    in rupees (strategy host → position monitor, before the entry can fill). With ``[risk]
    r_unit = "position"`` the position's R is its day P&L over its largest quantity × this."""

    strategy: str
    account: str
    symbol: str
    points: float
    ts: float


@frozen
class PositionCorrection:
    """The reconciler's verdict on one position: the broker is the truth. The monitor sets the
    engine quantity to ``quantity`` (signed), closing any difference at ``price`` (rupees; 0:
    at the last known price) and recording ``reason``. With ``expected``, a position that moved
    since the reconciler looked is left alone (the next pass looks again)."""

    strategy: str
    account: str
    symbol: str
    exchange: str
    quantity: int
    price: float
    reason: str
    ts: float
    expected: int | None = None  # set: applied only while the engine still holds this much


@frozen
class PnlRefresh:
    """Ask the position monitor to send each strategy's ``StrategyPnl`` again (empty
    ``strategy``: every strategy it holds positions of, open or closed): a restarted risk
    manager learns the day's P&L at once, even on a day with nothing left open to move it."""

    strategy: str = ""


@frozen
class PositionQuery:
    """Ask the position monitor for its positions (empty fields: all). The answer is a tuple
    of ``PositionMark`` (open positions only unless ``include_flat``)."""

    strategy: str = ""
    account: str = ""
    include_flat: bool = False


@frozen
class WorkingOrdersQuery:
    """Ask an order manager for its working orders: the answer is a tuple of ``OrderIntent``
    paired with status, filled quantity and broker id (``WorkingOrder``)."""

    strategy: str = ""


@frozen
class OrderSync:
    """The reconciler's orderbook read, handed to the order manager (asked): it applies the rows
    of its working orders and resolves, through ``orderstatus``, every working order it placed
    before ``since`` that the rows do not show. Answered with an ``OrderSyncReply``."""

    rows: tuple[Any, ...]  # engine.broker.OrderRow, as the broker reported them
    since: float  # engine time just before the rows were read


@frozen
class OrderSyncReply:
    """What an ``OrderSync`` found. ``busy``: symbols with a placement or fill after ``since``
    or an order whose outcome is unknown (a broker position read meanwhile may not match);
    ``vanished``: (client id, what ``orderstatus`` said) for orders missing from the rows;
    ``lost``: client ids of orders the broker has never heard of (ended ``expired``), the last
    of them placed (sent, or its symbol touched) at ``lost_placed``: a broker state loss, which
    the order manager remembers too (no protective order of unknown outcome sent before it is
    re-sent);
    ``known_ids``: every broker order id that is one of this engine's orders today."""

    working: tuple[WorkingOrder, ...]
    busy: tuple[str, ...] = ()
    vanished: tuple[tuple[str, str], ...] = ()
    lost: tuple[str, ...] = ()
    known_ids: frozenset[str] = frozenset()
    lost_placed: float = 0.0


@frozen
class GateQuery:
    """Ask the order manager for the effective gate of ``strategy`` (the global gate and the
    strategy's own, combined): the answer is a ``TradingGate``. A starting strategy host asks
    it, so a restarted host never trades on a gate it did not see."""

    strategy: str


@frozen
class WorkingOrder:
    intent: OrderIntent
    status: OrderStatus
    filled: int
    broker_order_id: str | None


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------


@frozen
class Command:
    """An operator command: status, pause, resume, kill, flatten, unhalt."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()
    ts: float = 0.0


@frozen
class Heartbeat:
    ts: float
    positions: int
    data_live: int
    data_total: int
    stale: int
    restarts: int
    state: str

    @property
    def coverage(self) -> float:
        return 100.0 * self.data_live / self.data_total if self.data_total else 0.0

    def line(self) -> str:
        return (
            f"[HEARTBEAT] Positions: {self.positions} | Data: {self.data_live}/{self.data_total}"
            f" | Coverage: {self.coverage:.1f}% | Stale: {self.stale}"
            f" | Restarts: {self.restarts} | State: {self.state}"
        )


@frozen
class FeedHealth:
    """The feed's periodic report to health: per-symbol last tick time and connection facts."""

    ts: float
    connected: bool
    subscribed: tuple[str, ...]
    last_tick: tuple[tuple[str, float], ...]
    reconnects: int = 0
    invalid: int = 0
    state: str = ""


@frozen
class HealthUpdate:
    """A component's contribution to the heartbeat: ``key`` is "positions" or "state"."""

    key: str
    value: Any
    source: str = ""


@frozen
class LoadState:
    """Ask the store for a persisted state row (``strategy_state`` by name): the newest one,
    written or not yet (buffered, held during an outage), so an actor restarting right after a
    crash reads what it last wrote, without waiting for the database."""

    name: str


@frozen
class LoadStates:
    """``LoadState`` for every row whose name starts with ``prefix``, by name, in one read: an
    actor that keeps one row per symbol restores them all at once, not one ask per symbol."""

    prefix: str


@frozen
class Crash:
    """Make the receiving actor fail as if its handler had raised (fault injection: tests and
    the chaos harness). The supervisor then does what it does for any crash."""

    reason: str = "injected fault"


@frozen
class StatusRequest:
    """Ask an actor for its status section (answered with a dict via ``ask``)."""

    section: str = ""


@frozen
class Alert:
    kind: str
    message: str
    ts: float
    severity: Severity = Severity.WARNING


@frozen
class TimerFired:
    """Delivered to an actor when a timer it scheduled on the engine clock is due."""

    name: str
    due: float
    payload: Any = None


@frozen
class FlushToken:
    """Travels behind a replay step through every actor it reached (determinism barrier).

    ``barrier`` is the replay driver's ``engine.runtime.barrier.StepBarrier``: each actor that
    receives a
    token forwards it to every name it told since its previous token, then counts itself done.
    """

    step: int
    barrier: Any


# ---------------------------------------------------------------------------------------------
# Supervision (internal to engine.runtime.supervisor, kept here so every message lives in one place)
# ---------------------------------------------------------------------------------------------


@frozen
class Ping:
    seq: int


@frozen
class Pong:
    seq: int
    name: str


@frozen
class ChildExited:
    """A supervised child stopped: ``normal`` is False for a crash or a detected hang."""

    name: str
    generation: int
    normal: bool
    reason: str = ""


@frozen
class RestartChild:
    name: str
    generation: int


@frozen
class LivenessCheck:
    seq: int


@frozen
class RestartRecord:
    """One restart, as recorded in the store and shown in status."""

    name: str
    supervisor: str
    reason: str
    ts: float
    attempt: int
    delay: float


@frozen
class DeadLetter:
    name: str
    message_type: str
    reason: str
    ts: float


# Store-bound records that are not otherwise messages.
@frozen
class StoreRecord:
    """A generic row for the store writer: ``table`` and column values.

    ``durable`` rows are committed before the writer answers (risk state, trades); the others
    ride the next batch (state snapshots that a later snapshot supersedes anyway). ``soon``
    rows (a strategy's state) are committed as soon as nothing more urgent waits at the writer
    (its inbox is empty), at the latest by the next flush: never ahead of an order's intent.
    """

    table: str
    values: tuple[tuple[str, Any], ...] = field(default=())
    durable: bool = True
    soon: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)
