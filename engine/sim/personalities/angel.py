"""``angel``: OpenAlgo in front of Angel One (SmartAPI). Only the differences from ``ideal``.

Each quirk is named after the OpenAlgo source file it comes from (docs/broker-personalities.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.broker import OrderRow
from engine.sim.personalities.base import (
    MarketFacts,
    Personality,
    RateLimits,
    dumps,
    openalgo_frame,
)


def order_data_transform(rows: list[OrderRow]) -> list[OrderRow]:
    """broker/angel/mapping/order_data.py ``transform_order_data``: Angel's own lowercase status
    passes through (``cancel pending``, ``open pending``, ...); ``price`` is ``averageprice``
    once filled, else the order's price; no ``average_price``, no ``filled_quantity``."""
    return [replace(r, average_price=None, filled_quantity=None, strategy="",
                    rejection_reason="",
                    price=(r.average_price or r.price) if r.filled_quantity else r.price)
            for r in rows]


class Angel(Personality):
    name = "angel"
    #: restx_api/*.py: ``os.getenv("API_RATE_LIMIT", "10 per second")``: 10/s when unset
    rate_limits = RateLimits(order=10, smart_order=10, default=10)
    cancel_latency_s = 0.5
    #: SmartAPI sends quantities as text ("75"); OpenAlgo passes them through
    string_fields = frozenset({"quantity"})

    def orderbook(self, rows: list[OrderRow]) -> list[OrderRow]:
        return order_data_transform(rows)

    def order_update_frame(self, row: OrderRow, *, analyze: bool, user_id: str,
                           broker: str) -> dict[str, Any] | None:
        # broker/angel/streaming/angel_order_adapter.py: AB09 open pending, AB11 modify
        # pending ... -> "open"
        return openalgo_frame(self.settled(row), analyze=analyze, user_id=user_id,
                              broker=broker)

    def market_frame(self, mode: int, head: dict[str, Any], m: MarketFacts) -> str | None:
        """broker/angel/streaming/angel_adapter.py ``_normalize_market_data``: ``ltt`` is the
        exchange timestamp in epoch MILLISECONDS in every mode; quote mode says
        ``last_trade_quantity``, snap-quote (depth) mode ``last_quantity``, with ``oi`` and
        circuit limits but no average price or total quantities."""
        data: dict[str, Any] = {"ltp": m.ltp, "ltt": int(m.ltt * 1000)}
        if mode == 2:
            data.update(volume=m.volume, open=m.open, high=m.high, low=m.low, close=m.close,
                        last_trade_quantity=m.last_quantity, average_price=m.average_price,
                        total_buy_quantity=m.total_buy_quantity,
                        total_sell_quantity=m.total_sell_quantity)
        elif mode == 3:
            data.update(volume=m.volume, open=m.open, high=m.high, low=m.low, close=m.close,
                        last_quantity=m.last_quantity, oi=m.oi,
                        upper_circuit=round(m.ltp * 1.2, 2), lower_circuit=round(m.ltp * 0.8, 2),
                        depth={"buy": m.bids, "sell": m.asks})
        data.update(symbol=head["symbol"], exchange=head["exchange"], mode=mode,
                    timestamp=int(m.ltt * 1000))
        return dumps({**head, "data": data})
