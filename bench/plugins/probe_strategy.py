"""A bench-only strategy: turns chosen ticks into orders whose price names the tick.

Owns ``ProbeStrategy`` and its settings: a strategy plugin that bench/tick_to_order.py names
through ``[engine] strategy_paths``, as a user names a folder of their own strategies. On each
``BarUpdate`` of ``symbol`` (a tick making a new high of its minute is published at once, so a
rising price gives one update per tick) whose price is
``base + k·tick`` with ``k`` a multiple of ``every``, it places a LIMIT BUY of one lot at
``last - offset`` — far below the market, so it never fills — and cancels it once the broker
holds it. The limit price therefore carries ``k``: the benchmark pairs each placeorder request
with the tick frame that caused it by symbol and ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.market.instruments import round_to_tick
from engine.messages import Action, BarUpdate, OrderEvent, OrderPurpose, OrderStatus, PriceType
from engine.settings import setting
from strategies.base import Strategy, StrategyContext

NAME = "bench_probe"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Section ``[bench_probe]`` (set by the benchmark, not in config.toml)."""

    symbol: str = setting("", "the option whose ticks trigger orders")
    exchange: str = setting("NFO", "its exchange")
    base: float = setting(100.0, "price of sequence number 0", min=0.05)
    offset: float = setting(50.0, "limit price this many rupees below the triggering price",
                            min=0.05)
    every: int = setting(1, "place on sequence numbers that are multiples of this", min=1)


def sequence_of(price: float, settings: ProbeSettings, tick: float) -> int:
    """The sequence number a trigger price stands for."""
    return round((price - settings.base) / tick)


def order_sequence(limit: float, settings: ProbeSettings, tick: float) -> int:
    """The sequence number of the tick that caused a probe order with limit price ``limit``."""
    return sequence_of(limit + settings.offset, settings, tick)


class ProbeStrategy(Strategy):
    name = NAME
    settings_class = ProbeSettings

    def __init__(self, ctx: StrategyContext, settings: ProbeSettings | None = None) -> None:
        super().__init__(ctx, settings or ProbeSettings())
        self.cfg: ProbeSettings = self.settings
        self.cancelled: set[str] = set()

    def on_bar_update(self, update: BarUpdate) -> None:
        cfg = self.cfg
        tick = self.ctx.instrument.tick_size
        if update.symbol != cfg.symbol or not self.ctx.can_trade:
            return
        seq = sequence_of(update.last, cfg, tick)
        if seq <= 0 or seq % cfg.every:
            return
        self.ctx.place(symbol=cfg.symbol, exchange=cfg.exchange, action=Action.BUY,
                       quantity=self.ctx.instrument.lot_size, pricetype=PriceType.LIMIT,
                       price=round_to_tick(update.last - cfg.offset, tick),
                       purpose=OrderPurpose.ENTRY, reason=f"probe {seq}")

    def on_order_event(self, event: OrderEvent) -> None:
        if event.status is OrderStatus.OPEN and event.client_id not in self.cancelled:
            self.cancelled.add(event.client_id)
            self.ctx.cancel(event.client_id, "probe done")
