"""Order bookkeeping: the order state machine and the in-memory book of one account's orders.

Owns, with no broker I/O, no clock and no actor (the ``OrderManager`` actor drives it):

- the state machine as a transition table (``TRANSITIONS``, ``check_transition``): an
  impossible transition raises ``TransitionRefused``; the book logs it and never applies it;
- the mapping of OpenAlgo's order statuses onto engine states (``engine_status``), and the
  conversion of broker reports (an ``order_update`` frame, an orderbook/orderstatus row) into
  ``BrokerOrderUpdate`` messages (``update_from_frame``, ``update_from_row``);
- intent validation (``validate_intent``) and freeze-quantity splitting (``split_quantity``);
- whether the broker's positions show what a protective order closes (``uncovered_reason``),
  asked before an order whose placement outcome was unknown is re-sent;
- ``OrderBook``: every tracked order (``TrackedOrder``), its broker id, its cumulative fill, the
  apply-once fill keys (broker order id, cumulative filled quantity), split parents and their
  children (a parent's state is derived from its children), the matching of an order whose
  placement outcome is unknown against orderbook rows, and recovery from stored rows.

Every state-changing method takes the time it needs and returns the messages to emit
(``OrderEvent`` and ``Fill``, in order). Fills and events of a split child are reported in terms
of the strategy's order: a ``Fill`` carries the top-level client id and the child's broker id.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from loguru import logger

from engine.broker import OrderRow, PositionRow, TradeRow
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    BrokerOrderUpdate,
    Fill,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PriceType,
    Product,
)
from engine.openalgo.wire import Fields, WireError
from engine.runtime.clock import IST
from engine.store.database import StoredOrder

S = OrderStatus
Emitted = OrderEvent | Fill | PendingFill

# ---------------------------------------------------------------------------------------------
# The state machine
# ---------------------------------------------------------------------------------------------

_TERMINALS = frozenset(s for s in OrderStatus if s.is_terminal)
#: States of an order that the broker holds and may still fill.
AT_BROKER = frozenset({S.OPEN, S.TRIGGER_PENDING, S.PARTIALLY_FILLED})

#: Every legal change of state. The broker has the last word on terminal states, so every
#: non-terminal state may end in any terminal one; terminal states never change again.
#: ``cancel_pending`` falls back to the broker's working state when a cancel is refused or never
#: confirmed; ``unknown`` goes back to ``submitting`` when the order was verified absent and is
#: re-sent.
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType({
    S.SUBMITTING: frozenset({S.OPEN, S.TRIGGER_PENDING, S.PARTIALLY_FILLED, S.UNKNOWN}
                            | _TERMINALS),
    S.UNKNOWN: frozenset({S.SUBMITTING, S.OPEN, S.TRIGGER_PENDING, S.PARTIALLY_FILLED}
                         | _TERMINALS),
    S.OPEN: frozenset({S.PARTIALLY_FILLED, S.CANCEL_PENDING} | _TERMINALS),
    S.TRIGGER_PENDING: frozenset({S.OPEN, S.PARTIALLY_FILLED, S.CANCEL_PENDING} | _TERMINALS),
    S.PARTIALLY_FILLED: frozenset({S.CANCEL_PENDING} | _TERMINALS),
    S.CANCEL_PENDING: frozenset(AT_BROKER | _TERMINALS),
    S.COMPLETE: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
})


class OrderError(ValueError):
    """Base of the order module's errors."""


class TransitionRefused(OrderError):
    """A change of state that the transition table does not allow."""


class InvalidIntent(OrderError):
    """An order intent that must not be sent (the message lists every problem)."""


class BadBrokerReport(OrderError):
    """A broker report that cannot be read (unknown status, missing or unparsable fields)."""


class InBetweenStatus(BadBrokerReport):
    """A broker's in-between state (``cancel pending``, ``open pending``, ...): it says nothing
    about what the order has become, and is never read as any engine state."""


def check_transition(old: OrderStatus, new: OrderStatus) -> None:
    """Raise ``TransitionRefused`` unless ``old → new`` is in the table."""
    if new not in TRANSITIONS[old]:
        raise TransitionRefused(f"{old.value} → {new.value} is not a legal order transition")


# ---------------------------------------------------------------------------------------------
# Broker statuses and reports
# ---------------------------------------------------------------------------------------------

#: OpenAlgo's lowercase order statuses (plus ``expired``, which some brokers add).
BROKER_STATUSES: Mapping[str, OrderStatus] = MappingProxyType({
    "open": S.OPEN,
    "trigger pending": S.TRIGGER_PENDING,
    "complete": S.COMPLETE,
    "rejected": S.REJECTED,
    "cancelled": S.CANCELLED,
    "canceled": S.CANCELLED,
    "expired": S.EXPIRED,
})


#: Brokers' in-between states that OpenAlgo passes through (Angel's orderbook) or that a Kite
#: order shows (docs/broker-personalities.md).
IN_BETWEEN_STATUSES = frozenset({
    "cancel pending", "open pending", "validation pending", "put order req received",
    "modify pending", "modify validation pending", "modified", "update", "pending",
    "after market order req received", "amo req received",
})


def engine_status(broker_status: str, filled: int, quantity: int) -> OrderStatus:
    """The engine state of a broker order: ``open`` with part of it filled is
    ``partially_filled``; an in-between state raises ``InBetweenStatus``, an unknown status
    ``BadBrokerReport``."""
    text = broker_status.strip().lower()
    status = BROKER_STATUSES.get(text)
    if status is None:
        if text in IN_BETWEEN_STATUSES:
            raise InBetweenStatus(f"in-between broker order status {broker_status!r}")
        raise BadBrokerReport(f"unknown broker order status {broker_status!r}")
    if status is S.OPEN and 0 < filled < quantity:
        return S.PARTIALLY_FILLED
    return status


def update_from_row(row: OrderRow, ts: float, source: str,
                    certain: bool | None = None) -> BrokerOrderUpdate:
    """An orderbook / orderstatus row (or a simulated broker's listener row) as a report.

    ``certain`` (default: the row gives its filled quantity) says whether the status is the
    order's own; see ``updates_from_rows``."""
    return BrokerOrderUpdate(
        orderid=row.orderid, symbol=row.symbol, exchange=row.exchange, action=row.action,
        quantity=row.quantity, status=row.status, filled_quantity=row.filled_quantity,
        average_price=row.average_price, ts=ts, price=row.price,
        trigger_price=row.trigger_price, pricetype=row.pricetype,
        rejection_reason=row.rejection_reason, source=source,
        status_certain=row.filled_quantity is not None if certain is None else certain)


def updates_from_rows(rows: Sequence[OrderRow], ts: float, source: str,
                      wanted: Container[str] | None = None,
                      ) -> list[tuple[OrderRow, BrokerOrderUpdate]]:
    """An orderbook read as reports, each with its row (only the rows of the ``wanted`` broker
    order ids, when given: a poll reads the whole day's orderbook for the few orders still
    working). A row without a filled quantity (Zerodha's, Angel's) may show the status of the
    row above it (OpenAlgo's Zerodha transform carries the previous row's status over an
    in-between state), so its status is certain only when it differs from the row above, or it
    is the first row (docs/broker-personalities.md)."""
    out: list[tuple[OrderRow, BrokerOrderUpdate]] = []
    above: OrderRow | None = None
    for row in rows:
        if wanted is None or row.orderid in wanted:
            certain = (row.filled_quantity is not None or above is None
                       or row.status.strip().lower() != above.status.strip().lower())
            out.append((row, update_from_row(row, ts, source, certain)))
        above = row
    return out


def update_from_frame(frame: Mapping[str, Any], ts: float) -> BrokerOrderUpdate:
    """An OpenAlgo ``order_update`` WebSocket frame as a report (numbers may be strings).

    Raises ``BadBrokerReport`` naming the field that is missing or unreadable, or the status
    that is not an OpenAlgo order status.
    """
    try:
        f = Fields(dict(frame), "order_update")
        try:
            engine_status(f.status("order_status"), 0, 1)
        except InBetweenStatus:
            pass  # a known state that says nothing: applied as such
        return BrokerOrderUpdate(
            orderid=f.text("orderid"), symbol=f.text("symbol"), exchange=f.text("exchange"),
            action=f.text("action").strip().upper(), quantity=f.whole("quantity"),
            status=f.status("order_status"),
            filled_quantity=f.whole("filled_quantity") if f.has("filled_quantity") else None,
            average_price=f.number("average_price") if f.has("average_price") else None,
            ts=ts, price=f.number("price", 0.0),
            trigger_price=f.number("trigger_price", 0.0),
            pricetype=f.text("pricetype", "").strip().upper(),
            rejection_reason=f.text("rejection_reason", ""), source="stream")
    except WireError as exc:
        raise BadBrokerReport(str(exc)) from None


_TIMESTAMP_FORMATS = ("%d-%b-%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d-%m-%Y %H:%M:%S",
                      "%Y-%m-%dT%H:%M:%S")


def broker_timestamp(text: str) -> float | None:
    """Epoch seconds of a broker's order timestamp (IST wall time), None if unreadable."""
    text = text.strip()
    for fmt in _TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=IST).timestamp()
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------------------------------------
# Intents
# ---------------------------------------------------------------------------------------------


def _on_tick(price: float, tick: float) -> bool:
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


def _enum(kind: type[Any], value: object, name: str, problems: list[str]) -> Any:
    try:
        return kind(value)
    except ValueError:
        problems.append(f"unknown {name} {value!r}")
        return value


def validate_intent(intent: OrderIntent, *, account: str,
                    instrument: InstrumentSpec) -> OrderIntent:
    """The intent with its enumerations normalised, or ``InvalidIntent`` listing every problem:
    quantity not a positive lot multiple, prices negative / not finite / off the tick, a LIMIT or
    SL without a price, a stop without a trigger, an unknown action / price type / product /
    purpose, a missing id, strategy or symbol, or another account's order."""
    problems: list[str] = []
    for name in ("client_id", "strategy", "symbol", "exchange"):
        if not str(getattr(intent, name)).strip():
            problems.append(f"{name} is empty")
    if intent.account != account:
        problems.append(f"account {intent.account!r} is not this order manager's ({account!r})")
    action = _enum(Action, intent.action, "action", problems)
    pricetype = _enum(PriceType, intent.pricetype, "pricetype", problems)
    product = _enum(Product, intent.product, "product", problems)
    purpose = _enum(OrderPurpose, intent.purpose, "purpose", problems)
    qty = intent.quantity
    lot = instrument.lot_size
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        problems.append(f"quantity must be a positive whole number, got {qty!r}")
    elif qty % lot:
        problems.append(f"quantity {qty} is not a multiple of the lot size {lot}")
    tick = instrument.tick_size
    prices: dict[str, float] = {}
    for name in ("price", "trigger_price"):
        value = getattr(intent, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            problems.append(f"{name} must be a finite non-negative number, got {value!r}")
            continue
        if value and not _on_tick(value, tick):
            problems.append(f"{name} {value} is not on the tick size {tick}")
        prices[name] = float(value)
    price, trigger = prices.get("price", 0.0), prices.get("trigger_price", 0.0)
    if pricetype in (PriceType.LIMIT, PriceType.SL) and "price" in prices and not price > 0:
        problems.append(f"a {pricetype} order needs a price above 0")
    if pricetype in (PriceType.SL, PriceType.SL_M) and "trigger_price" in prices \
            and not trigger > 0:
        problems.append(f"a {pricetype} order needs a trigger price above 0")
    if pricetype is PriceType.SL and not problems:
        if action is Action.BUY and price < trigger:
            problems.append(f"BUY SL limit {price} is below its trigger {trigger}")
        if action is Action.SELL and price > trigger:
            problems.append(f"SELL SL limit {price} is above its trigger {trigger}")
    if problems:
        raise InvalidIntent("; ".join(problems))
    return replace(intent, action=action, pricetype=pricetype, product=product, purpose=purpose,
                   price=price, trigger_price=trigger)


def max_child_quantity(instrument: InstrumentSpec) -> int:
    """The largest lot multiple not above the freeze quantity (at least one lot)."""
    lot = instrument.lot_size
    return max(lot, instrument.freeze_quantity // lot * lot)


def split_quantity(quantity: int, instrument: InstrumentSpec) -> list[int]:
    """``[quantity]`` when it is within the freeze quantity, else freeze-sized parts (whole
    lots) with the remainder last."""
    if quantity <= instrument.freeze_quantity:
        return [quantity]
    cap = max_child_quantity(instrument)
    parts = [cap] * (quantity // cap)
    if quantity % cap:
        parts.append(quantity % cap)
    return parts


def uncovered_reason(intent: OrderIntent, positions: Sequence[PositionRow]) -> str | None:
    """Why the broker's positions do not show the position that protective ``intent`` (a stop
    or an exit) closes, or None when they do: the broker's net quantity on its symbol must be
    on the other side of the order (short for a BUY) and at least the order's quantity.
    Otherwise the order would open (or flip to) a position the broker does not hold."""
    net = sum(int(p.quantity) for p in positions if p.symbol == intent.symbol)
    held = -net if intent.action is Action.BUY else net
    if held >= intent.quantity:
        return None
    side = "short" if intent.action is Action.BUY else "long"
    return (f"the broker's positionbook shows {net} {intent.symbol}, not the {side} of at "
            f"least {intent.quantity} it would close")


def child_id(parent_id: str, n: int) -> str:
    return f"{parent_id}.{n}"


def _child_index(order_id: str, parent_id: str | None) -> int | None:
    """``n`` when ``order_id`` is ``f"{parent_id}.{n}"`` (a split child), else None."""
    if not parent_id:
        return None
    m = re.fullmatch(re.escape(parent_id) + r"\.(\d+)", order_id)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Tracked orders
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A strategy's cancel of one of its orders; ``replace_with`` is placed only once the old
    order is confirmed cancelled with nothing more filled than ``filled_at_request``."""

    reason: str
    replace_with: OrderIntent | None
    filled_at_request: int


@dataclass(slots=True)
class TrackedOrder:
    """One order as the book tracks it: a broker-level order, or a split parent (``children``)
    that is never sent itself. Owned by the ``OrderBook``; the actor keeps the request fields
    (attempts, cancel bookkeeping) up to date."""

    intent: OrderIntent
    status: OrderStatus = S.SUBMITTING
    broker_order_id: str | None = None
    filled: int = 0
    average_price: float = 0.0
    pending: int = 0  # cumulative filled at the broker, price not yet known (PendingFill sent)
    split_parent: str | None = None  # children: the split parent's client id
    is_parent: bool = False  # a split parent: never sent itself, state derived from children
    children: tuple[str, ...] = ()
    attempts: int = 0  # placement requests sent
    first_attempt_ts: float | None = None
    at_broker: OrderStatus | None = None  # the last working state the broker reported
    cancel: CancelRequest | None = None  # on the order the strategy asked to cancel
    cancel_deadline: float | None = None  # a sent cancel not confirmed by then is given up
    cancel_deferred: bool = False  # cancel asked while the placement outcome was unknown
    gave_up: bool = False  # re-sends exhausted; still matched against every orderbook read
    reason: str = ""

    @property
    def client_id(self) -> str:
        return self.intent.client_id

    @property
    def working(self) -> bool:
        return not self.status.is_terminal

    def view(self) -> dict[str, Any]:
        """A plain summary for status output."""
        i = self.intent
        return {"client_id": i.client_id, "strategy": i.strategy, "symbol": i.symbol,
                "action": str(i.action), "quantity": i.quantity, "pricetype": str(i.pricetype),
                "price": i.price, "trigger_price": i.trigger_price, "purpose": str(i.purpose),
                "status": self.status.value, "filled": self.filled,
                "average_price": self.average_price, "broker_order_id": self.broker_order_id,
                "children": list(self.children)}


def _initial_state(intent: OrderIntent) -> OrderStatus:
    """What an accepted order is at the broker before anything happens to it."""
    if intent.pricetype in (PriceType.SL, PriceType.SL_M):
        return S.TRIGGER_PENDING
    return S.OPEN


def _same_order(intent: OrderIntent, row: OrderRow) -> bool:
    """Does the broker row look like the request ``intent`` produced?"""

    def norm(text: str) -> str:
        return text.strip().upper().replace("-", "").replace("_", "")

    if row.symbol != intent.symbol or norm(row.action) != intent.action.value:
        return False
    if row.exchange and row.exchange != intent.exchange:
        return False
    if row.strategy and row.strategy != intent.strategy:
        return False
    if row.quantity != intent.quantity or norm(row.pricetype) != norm(intent.pricetype.value):
        return False
    if intent.pricetype in (PriceType.LIMIT, PriceType.SL) and \
            abs(row.price - intent.price) > 1e-6:
        return False
    return not (intent.pricetype in (PriceType.SL, PriceType.SL_M)
                and abs(row.trigger_price - intent.trigger_price) > 1e-6)


def derive_parent_status(children: Sequence[TrackedOrder], quantity: int) -> OrderStatus:
    """A split parent's state from its children's.

    All finished: ``complete`` if everything filled, else the first of cancelled, expired,
    rejected found among them. Some working: ``cancel_pending`` if any child is, else
    ``partially_filled`` once anything filled, else ``open`` / ``trigger_pending`` if any child
    is at the broker, else ``unknown`` / ``submitting``.
    """
    filled = sum(c.filled for c in children)
    statuses = {c.status for c in children}
    if all(s.is_terminal for s in statuses):
        if filled >= quantity:
            return S.COMPLETE
        return next(s for s in (S.CANCELLED, S.EXPIRED, S.REJECTED, S.COMPLETE)
                    if s in statuses)
    if S.CANCEL_PENDING in statuses:
        return S.CANCEL_PENDING
    if filled > 0:
        return S.PARTIALLY_FILLED
    for status in (S.OPEN, S.TRIGGER_PENDING, S.UNKNOWN):
        if status in statuses:
            return status
    return S.SUBMITTING


# ---------------------------------------------------------------------------------------------
# The book
# ---------------------------------------------------------------------------------------------


class OrderBook:
    """Every order of one account the engine tracks, and the fills applied to them."""

    def __init__(self, account: str, instrument: InstrumentSpec) -> None:
        self.account = account
        self.instrument = instrument
        self._orders: dict[str, TrackedOrder] = {}
        self._by_broker: dict[str, TrackedOrder] = {}
        # the broker-level orders not yet seen finished, oldest first: the few a poll is about
        # (a finished order never works again, so it is dropped when found finished)
        self._legs: dict[str, TrackedOrder] = {}
        # broker ids that belong to an order of ours (today's, including finished and restored
        # ones): an order with an unknown outcome never adopts one of these
        self._known_ids: set[str] = set()
        self.fill_keys: set[tuple[str, int]] = set()
        #: broker id -> a report that needs the tradebook before anything is booked from it
        self.claims: dict[str, BrokerOrderUpdate] = {}

    # -- lookup ------------------------------------------------------------------------------
    def get(self, client_id: str) -> TrackedOrder | None:
        return self._orders.get(client_id)

    def by_broker_id(self, orderid: str) -> TrackedOrder | None:
        return self._by_broker.get(orderid)

    def top(self, order: TrackedOrder) -> TrackedOrder:
        """The strategy's order: the split parent of a child, else the order itself."""
        if order.split_parent is None:
            return order
        return self._orders[order.split_parent]

    def legs(self, order: TrackedOrder) -> list[TrackedOrder]:
        """The broker-level orders behind ``order``: its children, or itself."""
        if order.is_parent:
            return [self._orders[c] for c in order.children]
        return [order]

    def working_legs(self) -> list[TrackedOrder]:
        """Broker-level orders not finished yet, oldest first."""
        legs = self._legs
        for cid in [cid for cid, o in legs.items() if not o.working]:
            del legs[cid]
        return list(legs.values())

    def working_top(self) -> list[TrackedOrder]:
        """The strategies' orders not finished yet, oldest first."""
        return [o for o in self._orders.values() if o.working and o.split_parent is None]

    def known_ids(self) -> frozenset[str]:
        """Every broker order id that is one of ours (today's, finished ones included)."""
        return frozenset(self._known_ids)

    def working_ids(self) -> set[str]:
        """The broker ids of the working legs: the orderbook rows a poll applies."""
        return {oid for o in self.working_legs()
                if (oid := o.broker_order_id) is not None and self._by_broker.get(oid) is o}

    def needs_poll(self) -> bool:
        """Whether any order could change at the broker (sent, or with an unknown outcome).
        Asked every second: over the working legs only, not the day's orders."""
        return any(o.broker_order_id is not None or o.status is S.UNKNOWN
                   for o in self.working_legs())

    def cancel_in_progress(self, order: TrackedOrder) -> bool:
        return any(leg.status is S.CANCEL_PENDING or leg.cancel_deferred
                   for leg in self.legs(order))

    def status_counts(self) -> dict[str, int]:
        counts = Counter(o.status.value for o in self._orders.values() if o.split_parent is None)
        return dict(sorted(counts.items()))

    # -- creating ----------------------------------------------------------------------------
    def plan(self, intent: OrderIntent) -> list[TrackedOrder]:
        """The orders a (validated) intent becomes, not yet tracked: itself, then its split
        children when it is above the freeze quantity. ``InvalidIntent`` for a duplicate id."""
        if intent.client_id in self._orders:
            raise InvalidIntent(f"duplicate client id {intent.client_id!r}")
        parts = split_quantity(intent.quantity, self.instrument)
        if len(parts) == 1:
            return [TrackedOrder(intent)]
        children = [TrackedOrder(replace(intent, client_id=child_id(intent.client_id, n),
                                         quantity=qty, parent_id=intent.client_id),
                                 split_parent=intent.client_id)
                    for n, qty in enumerate(parts, start=1)]
        for child in children:
            if child.client_id in self._orders:
                raise InvalidIntent(f"duplicate client id {child.client_id!r}")
        parent = TrackedOrder(intent, is_parent=True,
                              children=tuple(c.client_id for c in children))
        return [parent, *children]

    def add(self, orders: Iterable[TrackedOrder]) -> None:
        """Track planned (or restored) orders; a child's parent must come first or be known."""
        for order in orders:
            self._orders[order.client_id] = order
            if not order.is_parent:
                self._legs[order.client_id] = order
            if order.broker_order_id is not None:
                self._bind(order, order.broker_order_id)

    def missing_children(self, parent: TrackedOrder) -> list[TrackedOrder]:
        """Children still to create for a split parent whose children were not all persisted
        (a restart in the middle of a split), not yet tracked; the parent lists them already."""
        have = [self._orders[c] for c in parent.children]
        left = parent.intent.quantity - sum(c.intent.quantity for c in have)
        if left <= 0:
            return []
        start = max((_child_index(c.client_id, parent.client_id) or 0 for c in have),
                    default=0) + 1
        new = [TrackedOrder(replace(parent.intent, client_id=child_id(parent.client_id, n),
                                    quantity=qty, parent_id=parent.client_id),
                            split_parent=parent.client_id)
               for n, qty in enumerate(split_quantity(left, self.instrument), start=start)]
        parent.children = parent.children + tuple(c.client_id for c in new)
        return new

    # -- state changes -----------------------------------------------------------------------
    def transition(self, order: TrackedOrder, status: OrderStatus, ts: float,
                   reason: str = "") -> list[Emitted]:
        """Move ``order`` to ``status`` (table-checked; an illegal move is logged and refused,
        returning nothing). Returns its event, then its parent's if that changed."""
        if status is order.status:
            return []
        try:
            check_transition(order.status, status)
        except TransitionRefused as exc:
            logger.warning("orders[{}]: {} refused: {} ({})", self.account, order.client_id,
                           exc, reason or "no reason")
            return []
        logger.debug("orders[{}]: {} {} → {}{}", self.account, order.client_id,
                    order.status.value, status.value, f" ({reason})" if reason else "")
        order.status = status
        if reason:
            order.reason = reason
        if status in AT_BROKER:
            order.at_broker = status
        return [self.event(order, ts, reason), *self._derive(order, ts)]

    def placed(self, order: TrackedOrder, orderid: str, ts: float) -> list[Emitted]:
        """The broker accepted ``order`` as ``orderid``."""
        self._bind(order, orderid)
        return self.transition(order, _initial_state(order.intent), ts,
                               f"accepted by the broker as {orderid}")

    def adopt(self, order: TrackedOrder, row: OrderRow, ts: float) -> list[Emitted]:
        """Attach the broker's ``row`` to an order whose placement outcome was unknown."""
        self._bind(order, row.orderid)
        return self.apply_report(update_from_row(row, ts, "poll")) or []

    def begin_cancel(self, order: TrackedOrder, ts: float, reason: str) -> list[Emitted]:
        if order.status in AT_BROKER:
            order.at_broker = order.status
        return self.transition(order, S.CANCEL_PENDING, ts, reason)

    def cancel_failed(self, order: TrackedOrder, ts: float, reason: str) -> list[Emitted]:
        """A cancel was refused or never confirmed: back to the broker's working state."""
        order.cancel_deadline = None
        return self.transition(order, order.at_broker or _initial_state(order.intent), ts,
                               reason)

    def apply_report(self, report: BrokerOrderUpdate) -> list[Emitted] | None:
        """Apply what the broker says about one of our orders; None when the order id is not
        ours. A report older than what is known (less filled) changes nothing; a fill is
        applied once per (broker order id, cumulative quantity); while a cancel is pending,
        working states keep the order ``cancel_pending`` (fills still count).

        Nothing is booked from a guess (docs/execution-and-risk.md, "Fill prices"): a report
        that shows more filled without a price, or a finished order without a filled quantity
        (Zerodha's and Angel's orderbook rows), is kept in ``claims`` and changes nothing until
        ``apply_trades`` prices it from the broker's tradebook; an in-between state
        (``cancel pending``, ...) is never read as any state."""
        order = self._by_broker.get(report.orderid)
        if order is None:
            return None
        quantity = order.intent.quantity
        reported = report.filled_quantity
        try:
            target: OrderStatus | None = engine_status(report.status, reported or 0, quantity)
        except InBetweenStatus:
            target = None
        except BadBrokerReport as exc:
            logger.warning("orders[{}]: {} report ignored: {}", self.account, order.client_id,
                           exc)
            return []
        if reported is not None and reported > quantity:
            logger.error("orders[{}]: {} report ignored: {} filled of {} ({})", self.account,
                         order.client_id, reported, quantity, report.source)
            return []
        if not order.working:
            # an echo of a state the order has passed (the stream's "open" after our own
            # cancel or exit completed) is routine; a finished order the broker now reports
            # with another fill or another end is not
            conflict = (reported is not None and reported > order.filled) or (
                target is not None and target.is_terminal and target is not order.status)
            if (reported is not None and reported != order.filled) or \
                    (target is not None and target is not order.status):
                log = logger.warning if conflict else logger.debug
                log("orders[{}]: {} is {} with {} filled; {} report of {} with {} filled "
                    "ignored", self.account, order.client_id, order.status.value,
                    order.filled, report.source, report.status, reported)
            return []
        price = report.average_price if report.average_price and report.average_price > 0 \
            and reported is not None else None
        unknown_quantity = reported is None or (target is S.COMPLETE and reported == 0)
        if (target is not None and target.is_terminal and unknown_quantity) \
                or (not unknown_quantity and reported is not None and reported > order.filled
                    and price is None):
            # a finished order without its fill, or a fill without its price: the tradebook
            # says how much and at what price (never the intent's price, never 0)
            self.claims[report.orderid] = report
            return []
        filled = order.filled if unknown_quantity or reported is None else reported
        if filled < order.filled:
            return []  # older than what we know
        out: list[Emitted] = []
        progressed = filled > order.filled
        if progressed:
            assert price is not None
            fill = self._fill(order, filled, price, report.ts)
            if fill is not None:
                out.append(fill)
        if target is None:  # in-between: no change of state
            if progressed:
                out.append(self.event(order, report.ts, f"filled {order.filled}"))
                out.extend(self._derive(order, report.ts))
            return out
        if target in AT_BROKER:
            order.at_broker = target
            if order.status is S.CANCEL_PENDING:
                target = S.CANCEL_PENDING
        if target is not order.status:
            changed = self.transition(order, target, report.ts,
                                      report.rejection_reason or f"broker: {report.status}")
            if changed:
                return out + changed
        if progressed:  # same state (or a refused one), more filled: record the progress
            out.append(self.event(order, report.ts, f"filled {order.filled}"))
            out.extend(self._derive(order, report.ts))
        return out

    def apply_trades(self, trades: Sequence[TradeRow], ts: float) -> list[Emitted]:
        """Resolve every claim from the broker's tradebook: the order's filled quantity is the
        sum of its trades and its average the trades' weighted average. A ``complete`` claim
        the trades do not cover (the tradebook is behind, or the status was carried over from
        another row) books what the trades show and leaves the order working; the next report
        claims again. Claims are cleared."""
        claims, self.claims = self.claims, {}
        out: list[Emitted] = []
        for orderid, claim in claims.items():
            order = self._by_broker.get(orderid)
            if order is None or not order.working:
                continue
            mine = [t for t in trades if t.orderid == orderid]
            qty = sum(t.quantity for t in mine)
            value = sum(t.quantity * t.average_price for t in mine)
            status = claim.status
            try:
                claimed: OrderStatus | None = engine_status(status, qty, order.intent.quantity)
            except BadBrokerReport:  # an in-between state with a fill: priced, state kept
                claimed = None
            if claimed is S.COMPLETE and qty < order.intent.quantity:
                # routine: the tradebook lags the order book; the next poll prices it
                logger.debug("orders[{}]: {} reported complete, the tradebook shows {} of {}; "
                            "kept working", self.account, order.client_id, qty,
                            order.intent.quantity)
                working = order.at_broker or _initial_state(order.intent)
                status = "trigger pending" if working is S.TRIGGER_PENDING and qty == 0 \
                    else "open"
            if qty < order.filled:
                continue  # the tradebook is behind what is already booked
            priced = replace(claim, filled_quantity=qty, source="tradebook",
                             average_price=round(value / qty, 4) if qty else None)
            out.extend(self.apply_report(priced) or [])
            out.extend(self._pending(order, claim, qty, ts))
        self.claims.clear()
        return out

    def _pending(self, order: TrackedOrder, claim: BrokerOrderUpdate, traded: int,
                 ts: float) -> list[PendingFill]:
        """The quantity a claim proves filled beyond what the tradebook prices: a report's own
        filled quantity, or the whole order for a ``complete`` whose status is certainly its
        own. Booked once per new cumulative quantity as a ``PendingFill`` (no price)."""
        if not order.working:
            return []
        if claim.filled_quantity is not None:
            known = claim.filled_quantity
        elif claim.status_certain and claim.status.strip().lower() == "complete":
            known = order.intent.quantity
        else:
            return []  # a status that may be carried over: only the tradebook says
        if known <= max(order.filled, order.pending, traded):
            return []
        new = known - max(order.filled, order.pending)
        order.pending = known
        top = self.top(order)
        i = order.intent
        logger.warning("orders[{}]: {} filled {} at the broker, price not known yet (tradebook "
                       "shows {}); booked as price pending", self.account, order.client_id,
                       known, traded)
        return [PendingFill(client_id=top.client_id, broker_order_id=order.broker_order_id or "",
                            strategy=i.strategy, account=i.account, symbol=i.symbol,
                            exchange=i.exchange, action=i.action, quantity=new,
                            cumulative_quantity=known, ts=ts, purpose=i.purpose)]

    def match_unknown(self, order: TrackedOrder, rows: Sequence[OrderRow],
                      skew_s: float) -> OrderRow | None:
        """The orderbook row that ``order`` (placement outcome unknown) became, if any: same
        symbol, side, quantity, price type, price / trigger, strategy tag when the row has one,
        placed at or after its first attempt (less ``skew_s`` for clock differences and
        whole-second stamps), and not already an order of ours. An unreadable timestamp does
        not exclude a row: adopting a stranger leaves us short, re-sending could double."""
        since = (order.first_attempt_ts or order.intent.created_ts) - skew_s
        candidates: list[tuple[float, str, OrderRow]] = []
        for row in rows:
            if row.orderid in self._known_ids or not _same_order(order.intent, row):
                continue
            placed = broker_timestamp(row.timestamp)
            if placed is not None and placed < since:
                continue
            candidates.append((placed if placed is not None else math.inf, row.orderid, row))
        if not candidates:
            return None
        candidates.sort(key=lambda c: (c[0], c[1]))
        if len(candidates) > 1:
            logger.warning("orders[{}]: {} matches {} orderbook rows; adopting the earliest {}",
                           self.account, order.client_id, len(candidates), candidates[0][1])
        return candidates[0][2]

    # -- recovery ----------------------------------------------------------------------------
    def restore(self, rows: Sequence[StoredOrder],
                fill_keys: Iterable[tuple[str, int]]) -> list[TrackedOrder]:
        """Rebuild from stored rows: every unfinished order, with the split parent of any such
        child and all children of any such parent. ``rows`` also name the broker ids that are
        ours. Returns the restored orders, parents before their children."""
        self.fill_keys.update(fill_keys)
        by_id = {r.client_id: r for r in rows}
        self._known_ids.update(r.broker_order_id for r in rows if r.broker_order_id)
        kids_of: dict[str, list[StoredOrder]] = {}
        parent_of: dict[str, str] = {}
        for r in rows:
            pid = r.parent_id
            if pid is not None and pid in by_id and _child_index(r.client_id, pid) is not None:
                kids_of.setdefault(pid, []).append(r)
                parent_of[r.client_id] = pid
        wanted = {parent_of.get(r.client_id, r.client_id) for r in rows
                  if not r.status.is_terminal} - set(self._orders)
        restored: list[TrackedOrder] = []
        for cid in sorted(wanted, key=lambda c: (by_id[c].created_ts, c)):
            row = by_id[cid]
            kids = sorted(kids_of.get(cid, []),
                          key=lambda r: _child_index(r.client_id, cid) or 0)
            if not kids and row.quantity <= self.instrument.freeze_quantity:
                restored.append(self._restored(row))
                continue
            parent = self._restored(row)
            parent.is_parent = True
            parent.children = tuple(k.client_id for k in kids)
            restored.append(parent)
            restored.extend(self._restored(k, split_parent=cid) for k in kids)
        self.add(restored)
        return restored

    def _restored(self, row: StoredOrder, split_parent: str | None = None) -> TrackedOrder:
        intent = OrderIntent(
            client_id=row.client_id, strategy=row.strategy, account=row.account,
            symbol=row.symbol, exchange=row.exchange, action=row.action, quantity=row.quantity,
            pricetype=row.pricetype, product=row.product, price=row.price,
            trigger_price=row.trigger_price, purpose=row.purpose, created_ts=row.created_ts,
            parent_id=row.parent_id, reason=row.reason)
        filled = row.filled_quantity
        if row.broker_order_id:
            applied = [c for oid, c in self.fill_keys if oid == row.broker_order_id]
            filled = max([filled, *applied])
        order = TrackedOrder(intent, status=row.status, broker_order_id=row.broker_order_id,
                             filled=filled, average_price=row.average_price,
                             split_parent=split_parent, reason=row.reason)
        if row.status in AT_BROKER:
            order.at_broker = row.status
        return order

    def derive(self, parent: TrackedOrder, ts: float) -> list[Emitted]:
        """Re-derive a split parent's state and fill from its children (after a restore)."""
        return self._derive_parent(parent, ts)

    # -- internals ---------------------------------------------------------------------------
    def _bind(self, order: TrackedOrder, orderid: str) -> None:
        order.broker_order_id = orderid
        self._by_broker[orderid] = order
        self._known_ids.add(orderid)

    def _fill(self, order: TrackedOrder, filled: int, average: float,
              ts: float) -> Fill | None:
        """Account for cumulative ``filled``; the Fill of the new part unless already applied."""
        before, before_avg = order.filled, order.average_price
        new = filled - before
        price = (filled * average - before * before_avg) / new if before and before_avg \
            else average
        if price <= 0:
            price = average
        order.filled, order.average_price = filled, round(average, 4)
        key = (order.broker_order_id or "", filled)
        if key in self.fill_keys:
            return None
        self.fill_keys.add(key)
        top = self.top(order)
        i = order.intent
        return Fill(client_id=top.client_id, broker_order_id=key[0], strategy=i.strategy,
                    account=i.account, symbol=i.symbol, exchange=i.exchange, action=i.action,
                    quantity=new, price=round(price, 2), cumulative_quantity=filled, ts=ts,
                    purpose=i.purpose)

    def event(self, order: TrackedOrder, ts: float, reason: str) -> OrderEvent:
        """The ``OrderEvent`` describing ``order`` as it is now."""
        i = order.intent
        return OrderEvent(client_id=i.client_id, status=order.status, ts=ts,
                          strategy=i.strategy, account=i.account, symbol=i.symbol,
                          broker_order_id=order.broker_order_id, filled_quantity=order.filled,
                          average_price=order.average_price, purpose=i.purpose, reason=reason)

    def _derive(self, order: TrackedOrder, ts: float) -> list[Emitted]:
        if order.split_parent is None:
            return []
        return self._derive_parent(self._orders[order.split_parent], ts)

    def _derive_parent(self, parent: TrackedOrder, ts: float) -> list[Emitted]:
        kids = [self._orders[c] for c in parent.children]
        if not kids:
            return []
        status = derive_parent_status(kids, parent.intent.quantity)
        filled = sum(k.filled for k in kids)
        average = round(sum(k.filled * k.average_price for k in kids) / filled, 4) \
            if filled else 0.0
        if status is parent.status and filled == parent.filled:
            return []
        parent.filled, parent.average_price = filled, average
        if status is parent.status:
            return [self.event(parent, ts, f"filled {filled}")]
        return self.transition(parent, status, ts, "derived from its split children")
