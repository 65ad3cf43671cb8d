"""The ``ideal`` broker: OpenAlgo's tidiest answers, and the hooks a personality overrides.

A personality says how OpenAlgo, in front of one broker, reports what the simulated account did:
which reply fields are present (``None`` in an ``OrderRow`` = the field is absent), which are
strings, how in-between order states show, the market-data frame of each mode, the order-update
frame, the default rate limits and whether a cancel passes through ``cancel pending``. The
simulated broker and the simulator's REST and WebSocket sides call these hooks; everything else
about matching is the same for every personality. docs/broker-personalities.md lists each quirk
with the OpenAlgo source file it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from engine.broker import BrokerError, OrderRow, TradeRow

#: The order states OpenAlgo's own vocabulary knows; anything else is a broker's in-between state.
OPENALGO_STATUSES = frozenset({"open", "trigger pending", "complete", "rejected", "cancelled"})
#: The simulated broker's in-between state while a cancel travels to the exchange.
CANCEL_PENDING = "cancel pending"
#: ... and while a new order travels to it (during ``[matching] latency_s``)
OPEN_PENDING = "open pending"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per window per client IP: order endpoints, placesmartorder, everything else."""

    order: int
    smart_order: int
    default: int


@dataclass(frozen=True, slots=True)
class MarketFacts:
    """What one published tick knows, for a personality's market-data frame.

    ``ltt`` is epoch seconds; ``bids``/``asks`` are the synthesized depth levels."""

    ltp: float
    ltt: float
    volume: int
    open: float
    high: float
    low: float
    close: float
    last_quantity: int
    average_price: float
    total_buy_quantity: int
    total_sell_quantity: int
    oi: int
    bids: list[dict[str, Any]]
    asks: list[dict[str, Any]]


class Personality:
    """The ``ideal`` broker (the simulator's behaviour before personalities)."""

    name = "ideal"
    #: OpenAlgo's sample .env: API_RATE_LIMIT 50/s, ORDER_RATE_LIMIT and SMART_ORDER 10/s
    rate_limits = RateLimits(order=10, smart_order=10, default=50)
    #: clock seconds a cancelled order stays ``cancel pending`` (0 = cancelled at once)
    cancel_latency_s = 0.0
    #: a new order shows ``open pending`` until it is active (``[matching] latency_s``), and a
    #: rejection comes after it
    placement_pending = False
    #: start the simulator in analyzer (sandbox) mode
    analyze = False
    #: order-row fields sent as JSON strings
    string_fields: frozenset[str] = frozenset()

    # -- order rows -------------------------------------------------------------------------------
    def orderbook(self, rows: list[OrderRow]) -> list[OrderRow]:
        """The orderbook as OpenAlgo lists it (rows oldest first)."""
        return [self.settled(row) for row in rows]

    def order_status(self, rows: list[OrderRow], orderid: str,
                     trades: list[TradeRow]) -> OrderRow | None:
        """``orderstatus`` for ``orderid`` (None: not found). services/orderstatus_service.py
        reads it from the (transformed) orderbook, so a row without ``average_price`` gets the
        FIRST tradebook row of the order (not the average of its fills), and only when it says
        ``complete``; else 0.0."""
        row = next((r for r in self.orderbook(rows) if r.orderid == orderid), None)
        if row is None or row.average_price is not None:
            return row
        price = next((t.average_price for t in trades if t.orderid == row.orderid), 0.0) \
            if row.status == "complete" else 0.0
        return replace(row, average_price=price)

    def order_update(self, row: OrderRow) -> OrderRow:
        """An order-update frame's row (also the in-process broker's listener row)."""
        return self.settled(row)

    @staticmethod
    def settled(row: OrderRow) -> OrderRow:
        """In-between states shown as the working state they are (``open``)."""
        return row if row.status in OPENALGO_STATUSES else replace(row, status="open")

    # -- frames -----------------------------------------------------------------------------------
    def market_frame(self, mode: int, head: dict[str, Any], m: MarketFacts) -> str | None:
        """The JSON text of a ``market_data`` frame, or None for the standard (ideal) shape."""
        return None

    def order_update_frame(self, row: OrderRow, *, analyze: bool, user_id: str,
                           broker: str) -> dict[str, Any] | None:
        """The ``order_update`` frame, or None for the standard (ideal) shape."""
        return None

    # -- JSON numbers -----------------------------------------------------------------------------
    def position_average(self, value: float) -> float | str:
        return value


def dumps(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"))


def openalgo_frame(row: OrderRow, *, analyze: bool, user_id: str, broker: str) -> dict[str, Any]:
    """The frame subscribers/wsproxy_subscriber.py builds from an order event (no strategy,
    no timestamp; in-between states already mapped by the broker's order adapter)."""
    filled = row.filled_quantity or 0
    return {
        "type": "order_update", "user_id": user_id, "mode": "analyze" if analyze else "live",
        "broker": broker, "orderid": row.orderid, "symbol": row.symbol,
        "exchange": row.exchange, "action": row.action, "quantity": row.quantity,
        "price": row.price, "trigger_price": row.trigger_price, "pricetype": row.pricetype,
        "product": row.product, "order_status": row.status, "filled_quantity": filled,
        "pending_quantity": row.quantity - filled,
        "average_price": row.average_price or 0.0,
        "rejection_reason": row.rejection_reason if row.status == "rejected" else "",
    }


def first_row_error() -> BrokerError:
    """What OpenAlgo answers when the transform meets an unknown status with no row before it
    (a Python UnboundLocalError caught by orderbook_service.py: HTTP 500 with its text)."""
    return BrokerError("cannot access local variable 'order_status' where it is not associated "
                       "with a value", endpoint="orderbook", status=500)
