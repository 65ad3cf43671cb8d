"""``zerodha``: OpenAlgo in front of Zerodha (Kite Connect). Only the differences from ``ideal``.

Each quirk is named after the OpenAlgo source file it comes from (docs/broker-personalities.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.broker import OrderRow
from engine.sim.personalities.base import (
    OPENALGO_STATUSES,
    MarketFacts,
    Personality,
    RateLimits,
    dumps,
    first_row_error,
    openalgo_frame,
)


def order_data_transform(rows: list[OrderRow]) -> list[OrderRow]:
    """broker/zerodha/mapping/order_data.py ``transform_order_data``: no ``average_price``, no
    ``filled_quantity``, no strategy or rejection reason; a status outside the five it knows
    (CANCEL PENDING, OPEN PENDING, ...) keeps the previous row's ``order_status``, and on the
    first row it fails (HTTP 500). services/orderbook_service.py ``format_order_data`` then sets
    ``price`` to 0.0 for MARKET orders."""
    out: list[OrderRow] = []
    status: str | None = None
    for row in rows:
        if row.status in OPENALGO_STATUSES:
            status = row.status
        elif status is None:
            raise first_row_error()
        out.append(replace(row, status=status, average_price=None, filled_quantity=None,
                           strategy="", rejection_reason="",
                           price=0.0 if row.pricetype == "MARKET" else row.price))
    return out


class Zerodha(Personality):
    name = "zerodha"
    #: restx_api/*.py: ``os.getenv("API_RATE_LIMIT", "10 per second")``: 10/s when unset
    rate_limits = RateLimits(order=10, smart_order=10, default=10)
    #: Kite shows CANCEL PENDING while the exchange confirms a cancel
    cancel_latency_s = 0.5
    #: ... and OPEN PENDING while the exchange has not acknowledged a new order
    placement_pending = True

    def orderbook(self, rows: list[OrderRow]) -> list[OrderRow]:
        return order_data_transform(rows)

    def order_update(self, row: OrderRow) -> OrderRow:
        # broker/zerodha/streaming/zerodha_order_adapter.py _STATUS_MAP: in-between -> "open";
        # the postback carries filled_quantity and average_price
        return self.settled(row)

    def order_update_frame(self, row: OrderRow, *, analyze: bool, user_id: str,
                           broker: str) -> dict[str, Any] | None:
        return openalgo_frame(self.settled(row), analyze=analyze, user_id=user_id,
                              broker=broker)

    def position_average(self, value: float) -> float | str:
        # broker/zerodha/mapping/order_data.py transform_positions_data: "{:.2f}" text
        return f"{value:.2f}"

    def market_frame(self, mode: int, head: dict[str, Any], m: MarketFacts) -> str | None:
        """broker/zerodha/streaming/zerodha_adapter.py ``_transform_regular_tick`` over
        zerodha_websocket.py ``_parse_packet``: LTP and quote ``ltt`` is the receive time in
        epoch MILLISECONDS (``timestamp``); full (depth) mode's ``ltt`` is the packet's exchange
        timestamp in epoch SECONDS; ``last_quantity`` (not ``last_trade_quantity``); ``oi`` only
        in full mode; the data repeats symbol, exchange and the Kite mode name."""
        received_ms = int(m.ltt * 1000)
        kite_mode = {1: "ltp", 2: "quote", 3: "full"}[mode]
        data: dict[str, Any] = {"symbol": head["symbol"], "exchange": head["exchange"],
                                "mode": kite_mode, "ltp": m.ltp,
                                "ltt": int(m.ltt) if mode == 3 else received_ms,
                                "timestamp": received_ms}
        if mode >= 2:
            data.update(volume=m.volume, last_quantity=m.last_quantity,
                        average_price=m.average_price,
                        total_buy_quantity=m.total_buy_quantity,
                        total_sell_quantity=m.total_sell_quantity, open=m.open, high=m.high,
                        low=m.low, close=m.close)
        if mode == 3:
            data.update(oi=m.oi, open_interest=m.oi, depth={"buy": m.bids, "sell": m.asks})
        return dumps({**head, "data": data})
