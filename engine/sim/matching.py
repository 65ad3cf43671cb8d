"""The simulated broker: an in-process matching engine that implements ``engine.broker.Broker``.

Owns the book of one simulated account: orders, trades, positions, funds, the last market state
per symbol (price, bid/ask, session OHLC, cumulative volume) and one-minute history bars built
from the ticks it has seen. Fills follow OpenAlgo's analyzer (sandbox) semantics
(openalgo-protocol.md, last section):

- MARKET fills at once: BUY at the ask, SELL at the bid, at the LTP when those are 0;
- LIMIT fills at the LTP if marketable at placement, else at the limit once the LTP crosses it;
- SL starts ``trigger pending``; when the LTP crosses the trigger (BUY: LTP >= trigger, SELL:
  LTP <= trigger) it fills at the LTP if within the limit, else becomes ``open`` at the limit and
  then fills as a LIMIT; SL-M fills at the LTP on trigger.

Options (``MatchingSettings``): partial fills in chunks of N lots per tick, activation latency in
clock seconds, a seeded random rejection rate, and the freeze quantity. Validation failures raise
``RejectedError`` (HTTP 400 at the server); broker-side rejections (the rejection rate, forced
rejections) produce an order with status ``rejected`` and a reason, as a broker's RMS does.
``broker`` picks the personality (``engine.sim.personalities``): how the books and order updates
read, and whether a cancel waits in ``cancel pending`` (the order can still fill meanwhile).

Deterministic: order ids are ``<yymmdd><9-digit counter>`` from the clock's IST date, time comes
only from the clock passed in, randomness only from a seeded ``random.Random``. Thread-safe: every
public method takes one re-entrant lock. Order listeners are called under that lock on every
order state change, in order; they must be quick and must not block.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from loguru import logger

from engine.broker import (
    CancelAllResult,
    Depth,
    DepthLevel,
    Funds,
    HistoryBar,
    OrderNotFound,
    OrderRow,
    PositionRow,
    Quote,
    RejectedError,
    TradeRow,
)
from engine.market.instruments import INDEX_EXCHANGE, InstrumentSpec, minute_start, trading_date
from engine.messages import Tick, frozen
from engine.runtime.clock import IST, Clock, to_ist
from engine.settings import setting
from engine.sim.personalities import (
    CANCEL_PENDING,
    NAMES,
    OPEN_PENDING,
    Personality,
    personality,
)

ACTIONS = ("BUY", "SELL")
PRICE_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("MIS", "CNC", "NRML")

OPEN = "open"
TRIGGER_PENDING = "trigger pending"
COMPLETE = "complete"
REJECTED = "rejected"
CANCELLED = "cancelled"
TERMINAL_STATUSES = frozenset({COMPLETE, REJECTED, CANCELLED})
#: The strategy tag of orders placed "by hand" at the broker (``close_by_hand``).
HAND_TAG = "by_hand"

#: history intervals the simulator can build from its one-minute bars, in seconds (0 = daily)
INTERVALS: dict[str, int] = {
    "1m": 60, "3m": 180, "5m": 300, "10m": 600, "15m": 900, "30m": 1800, "1h": 3600, "D": 0,
}

TIMESTAMP_FORMAT = "%d-%b-%Y %H:%M:%S"
DEPTH_LEVELS = 5

OrderListener = Callable[[OrderRow], None]


@dataclass(frozen=True, slots=True)
class MatchingSettings:
    """Tunables of the simulated broker (section ``sim_matching``)."""

    starting_cash: float = setting(1_000_000.0, "cash the simulated account starts with (rupees)",
                                   min=0)
    partial_fill_lots: int = setting(0, "fill at most this many lots per tick (0 = whole order "
                                        "at once)", min=0, max=10_000)
    latency_s: float = setting(0.0, "clock seconds before a new order becomes active (shown "
                               "as open pending by personalities that do, e.g. zerodha)", min=0,
                               max=3600)
    rejection_rate: float = setting(0.0, "probability that the broker rejects a new order",
                                    min=0, max=1)
    seed: int = setting(7, "seed of the random generator behind rejection_rate", min=0)
    enforce_freeze_quantity: bool = setting(True, "reject orders above the instrument's freeze "
                                                  "quantity, as the exchange does")
    depth_lots_per_level: int = setting(10, "quantity in lots shown at each synthesized depth "
                                            "level", min=1, max=10_000)
    broker: str = setting("zerodha", "broker personality: what OpenAlgo returns in front of "
                                     "this broker (replay, paper and run.py simulator)",
                          choices=NAMES)


@frozen
class MarketSnapshot:
    """The market state of one symbol right after a tick (what feed frames are built from)."""

    symbol: str
    exchange: str
    ltp: float
    ltt: float  # epoch seconds of the last valid tick
    volume: int  # day's cumulative volume
    open: float
    high: float
    low: float
    close: float  # previous session's close, as brokers report it
    last_trade_quantity: int
    average_price: float
    bid: float
    ask: float
    oi: int


Ladder = list[tuple[float, int]]
DepthSide = tuple[DepthLevel, ...]


def touch_prices(ltp: float, bid: float, ask: float, tick_size: float) -> tuple[float, float]:
    """Best bid and ask: the quoted ones, else one tick either side of the LTP (0 = none)."""
    best_bid = bid if bid > 0 else (ltp - tick_size if ltp > tick_size else 0.0)
    best_ask = ask if ask > 0 else (ltp + tick_size if ltp > 0 else 0.0)
    return best_bid, best_ask


def depth_ladder(ltp: float, bid: float, ask: float, tick_size: float, level_quantity: int,
                 levels: int = DEPTH_LEVELS) -> tuple[Ladder, Ladder]:
    """Bid and ask levels ``(price, quantity)`` one tick apart around the best bid/ask (or
    around the LTP when there is no bid/ask).

    Quantities grow with the distance from the touch (``level_quantity`` × 1, 2, ...). A level
    without a positive price is empty: ``(0.0, 0)``.
    """
    best_bid, best_ask = touch_prices(ltp, bid, ask, tick_size)
    bids: Ladder = []
    asks: Ladder = []
    for i in range(levels):
        bp = round(best_bid - i * tick_size, 2) if best_bid > 0 else 0.0
        ap = round(best_ask + i * tick_size, 2) if best_ask > 0 else 0.0
        bids.append((bp, level_quantity * (i + 1)) if bp > 0 else (0.0, 0))
        asks.append((ap, level_quantity * (i + 1)) if ap > 0 else (0.0, 0))
    return bids, asks


def synth_depth(ltp: float, bid: float, ask: float, tick_size: float, level_quantity: int,
                levels: int = DEPTH_LEVELS) -> tuple[DepthSide, DepthSide]:
    """``depth_ladder`` as ``DepthLevel`` tuples (the ``Depth`` result type)."""
    bids, asks = depth_ladder(ltp, bid, ask, tick_size, level_quantity, levels)
    return tuple(DepthLevel(p, q) for p, q in bids), tuple(DepthLevel(p, q) for p, q in asks)


# ---------------------------------------------------------------------------------------------
# Internal state
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Market:
    symbol: str
    exchange: str
    ltp: float = 0.0
    bid: float = 0.0
    ask: float = 0.0
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    prev_close: float = 0.0
    volume: int = 0
    oi: int = 0
    last_quantity: int = 0
    ltt: float = 0.0
    turnover: float = 0.0
    traded: int = 0
    volume_seen: bool = False
    day: date | None = None
    bar: _Bar | None = None  # the one-minute bar the last valid tick went into

    def snapshot(self) -> MarketSnapshot:
        avg = round(self.turnover / self.traded, 2) if self.traded else self.ltp
        return MarketSnapshot(self.symbol, self.exchange, self.ltp, self.ltt, self.volume,
                              self.open, self.high, self.low, self.prev_close,
                              self.last_quantity, avg, self.bid, self.ask, self.oi)


@dataclass(slots=True)
class _Bar:
    start: float
    open: float
    high: float
    low: float
    close: float
    volume: int = 0
    oi: int = 0


@dataclass(slots=True)
class _Order:
    orderid: str
    strategy: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    pricetype: str
    product: str
    price: float
    trigger_price: float
    disclosed_quantity: int
    status: str
    placed_ts: float
    active: bool
    working: str  # how it matches now: MARKET | LIMIT | STOP (waiting for its trigger)
    fresh: bool = True  # not yet evaluated since placement/activation (LIMIT fills at LTP)
    filled_quantity: int = 0
    fill_value: float = 0.0
    rejection_reason: str = ""
    updated_ts: float = 0.0
    cancelling: bool = False  # a cancel awaits the exchange (shown as ``cancel pending``)
    reject_on_activation: str = ""  # rejected by the exchange once the placement latency ends
    # its last row and the fields that row shows (``SimulatedBroker._row``); a finished order's
    # row never changes again: ``final_row``
    row: OrderRow | None = None
    row_key: tuple[Any, ...] = ()
    final_row: OrderRow | None = None

    @property
    def average_price(self) -> float:
        return round(self.fill_value / self.filled_quantity, 2) if self.filled_quantity else 0.0

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled_quantity


@dataclass(slots=True)
class _Position:
    symbol: str
    exchange: str
    product: str
    quantity: int = 0
    average_price: float = 0.0
    realized: float = 0.0


@dataclass(slots=True)
class _Trade:
    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: float
    product: str
    ts: float


def fmt_timestamp(ts: float) -> str:
    """OpenAlgo's order/trade timestamp: ``28-Nov-2024 09:59:10`` (IST)."""
    return to_ist(ts).strftime(TIMESTAMP_FORMAT)


def _is_tick_multiple(price: float, tick: float) -> bool:
    steps = price / tick
    return math.isfinite(steps) and abs(steps - round(steps)) < 1e-6


# ---------------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------------


#: a cumulative volume below this fraction of the day's high mark is a feed restart
RESET_FRACTION = 0.5


class SimulatedBroker:
    """A deterministic, thread-safe simulated broker account (see the module docstring)."""

    def __init__(self, clock: Clock, instrument: InstrumentSpec | None = None,
                 settings: MatchingSettings | None = None, account: str = "simulator",
                 rng: random.Random | None = None) -> None:
        self.account = account
        self.clock = clock
        self.instrument = instrument or InstrumentSpec()
        self.settings = settings or MatchingSettings()
        self._rng = rng or random.Random(self.settings.seed)
        self.personality: Personality = personality(self.settings.broker)
        self._lock = threading.RLock()
        self._listed: tuple[list[OrderRow], list[OrderRow]] | None = None
        self._markets: dict[tuple[str, str], _Market] = {}
        self._bars: dict[tuple[str, str], dict[float, _Bar]] = {}
        self._orders: dict[str, _Order] = {}
        self._working: dict[tuple[str, str], list[str]] = {}  # non-terminal order ids per symbol
        self._trades: list[_Trade] = []
        self._positions: dict[tuple[str, str, str], _Position] = {}
        self._listeners: list[OrderListener] = []
        self._counter = 0
        self._forced_rejections: list[str] = []

    # -- symbols and market data ---------------------------------------------------------------
    def declare_symbol(self, symbol: str, exchange: str) -> None:
        """Make a symbol known (tradable and quotable) before its first tick."""
        with self._lock:
            self._market(symbol, exchange)

    def is_known(self, symbol: str, exchange: str) -> bool:
        with self._lock:
            return (symbol, exchange) in self._markets

    def known_symbols(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._markets)

    def on_tick(self, tick: Tick) -> MarketSnapshot:
        """Apply one tick (``apply_tick``) and return the symbol's market state after it."""
        with self._lock:
            return self.apply_tick(tick).snapshot()

    def apply_tick(self, tick: Tick) -> _Market:
        """Apply one tick (``apply_ticks``) and return the symbol's market state after it."""
        with self._lock:
            self.apply_ticks((tick,))
            return self._market(tick.symbol, tick.exchange)

    def apply_ticks(self, ticks: Iterable[Tick]) -> None:
        """Apply ticks in order: update each symbol's market state and bars, then run its
        orders (a symbol without working orders costs no more than its bookkeeping).

        A tick whose LTP is zero, negative or not finite changes nothing (not even bid/ask).
        Replay calls this once per step: it has no use for a snapshot per tick. The loop is
        written for speed (every replayed tick passes here): the tick unpacked at once (a named
        tuple), locals for what it looks up, comparisons instead of ``max``/``min``/``isfinite``,
        the trading day's span kept while ticks stay in it (what ``trading_date`` does, without
        a call per tick), and the symbol's current minute bar kept on its market state.
        """
        markets, working = self._markets, self._working
        floor, inf = math.floor, math.inf
        day_start = day_end = 0.0  # the IST day of the last valid tick: [day_start, day_end)
        day: date | None = None
        with self._lock:
            for symbol, exchange, ltp, recv_ts, ts, volume, bid, ask, oi in ticks:
                key = (symbol, exchange)
                market = markets.get(key)
                if market is None:
                    market = markets[key] = _Market(symbol, exchange)
                if not 0 < ltp < inf:  # zero, negative, infinite or NaN
                    continue
                if ts is None:  # Tick.ts, inline: exchange time, else receive time
                    ts = recv_ts
                if not day_start <= ts < day_end:
                    day = trading_date(ts)
                    day_start = datetime.combine(day, time(0), IST).timestamp()
                    day_end = day_start + 86400.0  # IST has no daylight saving
                if market.day is not day and market.day != day:  # most often the same object
                    if market.day is not None:
                        market.prev_close = market.ltp
                    elif market.prev_close <= 0:
                        market.prev_close = ltp
                    market.day = day
                    market.open = market.high = market.low = ltp
                    market.turnover = 0.0
                    market.traded = 0
                    market.volume_seen = False
                if ltp > market.high:
                    market.high = ltp
                if ltp < market.low:
                    market.low = ltp
                increment = 0
                if volume is not None:
                    # the first cumulative volume seen in a day is the base. Cumulative volume
                    # is monotone in true time, so a small drop is an earlier report arriving
                    # late (nothing traded; the high mark stands); only a large drop is a feed
                    # restart, which re-bases without a negative increment (an unchanged
                    # volume changes nothing: no write)
                    last = market.volume
                    if not market.volume_seen:
                        market.volume = volume
                        market.volume_seen = True
                    elif volume < last * RESET_FRACTION:
                        market.volume = volume
                    elif volume > last:
                        increment = volume - last
                        market.volume = volume
                        market.turnover += increment * ltp
                        market.traded += increment
                market.last_quantity = increment
                market.ltp = ltp
                market.bid = bid if bid > 0 else 0.0
                market.ask = ask if ask > 0 else 0.0
                if oi is None:
                    oi = market.oi
                else:
                    market.oi = oi
                market.ltt = ts
                # the tick's one-minute bar: most ticks fall in the minute of the one before
                start = floor(ts / 60.0) * 60.0  # minute_start, inline
                bar = market.bar
                if bar is None or bar.start != start:
                    bar = market.bar = self._minute_bar(market, start, ltp)
                if ltp > bar.high:
                    bar.high = ltp
                if ltp < bar.low:
                    bar.low = ltp
                bar.close = ltp
                if increment:
                    bar.volume += increment
                bar.oi = oi
                if working.get(key):
                    self._run_book(market)

    def snapshot(self, symbol: str, exchange: str) -> MarketSnapshot:
        with self._lock:
            return self._known_market(symbol, exchange).snapshot()

    def seed_history(self, symbol: str, exchange: str, bars: Iterable[HistoryBar]) -> None:
        """Pre-load one-minute bars (e.g. earlier sessions) that ``history`` will return."""
        with self._lock:
            market = self._market(symbol, exchange)
            series = self._bars.setdefault((symbol, exchange), {})
            for bar in bars:
                start = minute_start(bar.timestamp)
                series[start] = _Bar(start, bar.open, bar.high, bar.low, bar.close, bar.volume,
                                     bar.oi)
            self._bars[(symbol, exchange)] = dict(sorted(series.items()))
            market.bar = None  # a seeded minute may have replaced it
            if market.prev_close <= 0 and series:
                market.prev_close = next(reversed(self._bars[(symbol, exchange)].values())).close

    # -- listeners and forced rejections ---------------------------------------------------------
    def add_order_listener(self, callback: OrderListener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_order_listener(self, callback: OrderListener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def force_rejections(self, count: int, reason: str) -> None:
        """The next ``count`` accepted orders are rejected by the 'broker' with ``reason``."""
        with self._lock:
            self._forced_rejections = [reason] * max(0, count)

    # -- Broker interface: orders --------------------------------------------------------------
    def ping(self) -> str:
        return "simulator"

    def place_order(self, *, strategy: str, symbol: str, exchange: str, action: str,
                    quantity: int, pricetype: str = "MARKET", product: str = "MIS",
                    price: float = 0.0, trigger_price: float = 0.0,
                    disclosed_quantity: int = 0) -> str:
        with self._lock:
            action, pricetype, product = action.upper(), pricetype.upper(), product.upper()
            self._validate(symbol, exchange, action, quantity, pricetype, product, price,
                           trigger_price)
            market = self._markets[(symbol, exchange)]
            if pricetype == "MARKET" and market.ltp <= 0 and market.bid <= 0 and market.ask <= 0:
                raise RejectedError(f"No market price for {symbol} on {exchange} yet; MARKET "
                                    f"order rejected", endpoint="placeorder")
            now = self.clock.time()
            latency = self.settings.latency_s
            order = _Order(
                orderid=self._next_orderid(now), strategy=strategy, symbol=symbol,
                exchange=exchange, action=action, quantity=quantity, pricetype=pricetype,
                product=product, price=price if pricetype in ("LIMIT", "SL") else 0.0,
                trigger_price=trigger_price if pricetype in ("SL", "SL-M") else 0.0,
                disclosed_quantity=disclosed_quantity,
                status=TRIGGER_PENDING if pricetype in ("SL", "SL-M") else OPEN,
                placed_ts=now, active=latency <= 0,
                working="STOP" if pricetype in ("SL", "SL-M") else pricetype, updated_ts=now)
            self._orders[order.orderid] = order
            reason = self._broker_rejection()
            if reason and not order.active and self.personality.placement_pending:
                # the exchange answers after the in-between state (``open pending``)
                order.reject_on_activation = reason
            elif reason:
                order.status = REJECTED
                order.rejection_reason = reason
                self._notify(order)
                return order.orderid
            self._working.setdefault((symbol, exchange), []).append(order.orderid)
            self._notify(order)
            if order.active:
                self._match_now(order, market)
            else:
                oid = order.orderid
                self.clock.call_at(now + latency, lambda: self._activate(oid),
                                   name=f"sim-activate-{oid}")
            return order.orderid

    def place_smart_order(self, *, strategy: str, symbol: str, exchange: str, action: str,
                          quantity: int, position_size: int, pricetype: str = "MARKET",
                          product: str = "MIS", price: float = 0.0, trigger_price: float = 0.0,
                          disclosed_quantity: int = 0) -> str | None:
        """OpenAlgo's smart order: trade towards the signed ``position_size`` target.

        Returns the order id, or None when the position already matches the target. As in
        OpenAlgo, with both the target and the position at zero the requested order is placed.
        """
        with self._lock:
            product = product.upper()
            current = self._position_qty(symbol, exchange, product)
            if position_size == 0 and current == 0 and quantity != 0:
                side, qty = action.upper(), quantity
            elif position_size == current:
                return None
            else:
                delta = position_size - current
                side, qty = ("BUY" if delta > 0 else "SELL"), abs(delta)
            return self.place_order(strategy=strategy, symbol=symbol, exchange=exchange,
                                    action=side, quantity=qty, pricetype=pricetype,
                                    product=product, price=price, trigger_price=trigger_price,
                                    disclosed_quantity=disclosed_quantity)

    def modify_order(self, *, strategy: str, orderid: str, symbol: str, exchange: str,
                     action: str, quantity: int, pricetype: str, product: str, price: float,
                     trigger_price: float, disclosed_quantity: int = 0) -> str:
        with self._lock:
            order = self._order(orderid, "modifyorder")
            if order.status not in (OPEN, TRIGGER_PENDING) or order.cancelling:
                raise RejectedError(f"Order {orderid} is {self._row(order).status} and cannot "
                                    f"be modified",
                                    endpoint="modifyorder")
            action, pricetype, product = action.upper(), pricetype.upper(), product.upper()
            if (symbol, exchange, action) != (order.symbol, order.exchange, order.action):
                raise RejectedError(f"Order {orderid} is {order.action} {order.symbol} on "
                                    f"{order.exchange}; symbol, exchange and action cannot be "
                                    f"modified", endpoint="modifyorder")
            self._validate(symbol, exchange, action, quantity, pricetype, product, price,
                           trigger_price, endpoint="modifyorder")
            if quantity < order.filled_quantity:
                raise RejectedError(f"Quantity {quantity} is below the {order.filled_quantity} "
                                    f"already filled", endpoint="modifyorder")
            triggered = order.pricetype in ("SL", "SL-M") and order.working != "STOP"
            order.quantity = quantity
            order.pricetype = pricetype
            order.product = product
            order.price = price if pricetype in ("LIMIT", "SL") else 0.0
            order.trigger_price = trigger_price if pricetype in ("SL", "SL-M") else 0.0
            order.disclosed_quantity = disclosed_quantity
            if pricetype in ("SL", "SL-M") and not triggered:
                order.working, order.status = "STOP", TRIGGER_PENDING
            elif pricetype in ("SL", "SL-M"):
                order.working = "MARKET" if pricetype == "SL-M" else "LIMIT"
                order.status = OPEN
            else:
                order.working, order.status = pricetype, OPEN
            order.fresh = True
            order.updated_ts = self.clock.time()
            if order.remaining == 0:
                self._finish(order, COMPLETE)
            else:
                self._notify(order)
                if order.active:
                    self._match_now(order, self._markets[(order.symbol, order.exchange)])
            return orderid

    def cancel_order(self, *, strategy: str, orderid: str) -> str:
        with self._lock:
            order = self._order(orderid, "cancelorder")
            if order.status in TERMINAL_STATUSES or order.cancelling:
                status = CANCEL_PENDING if order.cancelling else order.status
                raise RejectedError(f"Order {orderid} is already {status} and cannot be "
                                    f"cancelled", endpoint="cancelorder")
            latency = self.personality.cancel_latency_s
            if latency <= 0:
                self._finish(order, CANCELLED)
                return orderid
            # the exchange confirms later; the order can still fill meanwhile
            order.cancelling = True
            order.updated_ts = now = self.clock.time()
            self._notify(order)
            self.clock.call_at(now + latency, lambda: self._confirm_cancel(orderid),
                               name=f"sim-cancel-{orderid}")
            return orderid

    def _confirm_cancel(self, orderid: str) -> None:
        with self._lock:
            order = self._orders[orderid]
            if order.status not in TERMINAL_STATUSES:
                self._finish(order, CANCELLED)

    def cancel_all_orders(self, *, strategy: str) -> CancelAllResult:
        """Cancel every open / trigger-pending order of the account (as OpenAlgo does)."""
        with self._lock:
            ids = [oid for oid, o in self._orders.items() if o.status not in TERMINAL_STATUSES]
            for oid in ids:
                self._finish(self._orders[oid], CANCELLED)
            return CancelAllResult(tuple(ids), (), f"Canceled {len(ids)} orders. Failed to "
                                                   f"cancel 0 orders.")

    def close_position(self, *, strategy: str) -> str:
        """Flatten every open position of the account with MARKET orders (freeze-sized parts)."""
        with self._lock:
            failures: list[str] = []
            for pos in list(self._positions.values()):
                remaining = abs(pos.quantity)
                side = "SELL" if pos.quantity > 0 else "BUY"
                while remaining > 0:
                    part = min(remaining, self._max_order_quantity())
                    try:
                        self.place_order(strategy=strategy, symbol=pos.symbol,
                                         exchange=pos.exchange, action=side, quantity=part,
                                         product=pos.product)
                    except RejectedError as exc:
                        failures.append(f"{pos.symbol}: {exc.message}")
                        break
                    remaining -= part
            if failures:
                raise RejectedError("Failed to close some positions: " + "; ".join(failures),
                                    endpoint="closeposition")
            return "All Open Positions SquaredOff"

    # -- what happens behind the engine's back (fault injection) ----------------------------------
    def close_by_hand(self) -> str | None:
        """Close the first open position with a MARKET order tagged ``HAND_TAG``, as an operator
        at the broker's terminal would; its order id, or None when nothing is open."""
        with self._lock:
            for pos in self._positions.values():
                if pos.quantity:
                    return self.place_order(strategy=HAND_TAG, symbol=pos.symbol,
                                            exchange=pos.exchange, action="BUY"
                                            if pos.quantity < 0 else "SELL",
                                            quantity=min(abs(pos.quantity),
                                                         self._max_order_quantity()),
                                            product=pos.product)
            return None

    def cancel_by_hand(self) -> str | None:
        """Cancel the oldest working order (a resting stop first) as if by hand; its id, or
        None when nothing works."""
        with self._lock:
            working = [o for o in self._orders.values() if o.status not in TERMINAL_STATUSES]
            working.sort(key=lambda o: (o.working != "STOP", o.placed_ts))
            if not working:
                return None
            self._finish(working[0], CANCELLED)
            return working[0].orderid

    def lose_state(self) -> dict[str, list[dict[str, object]]]:
        """Forget every order, trade and position, as a broker restarted with empty books.
        Order ids keep counting (a real broker never reuses one). Returns what was lost."""
        with self._lock:
            lost: dict[str, list[dict[str, object]]] = {
                "orders": [_as_dict(self._row(o)) for o in self._orders.values()],
                "trades": [_as_dict(t) for t in self.tradebook()],
                "positions": [_as_dict(p) for p in self.positionbook()]}
            self._orders.clear()
            self._working.clear()
            self._trades.clear()
            self._positions.clear()
            return lost

    # -- Broker interface: books -----------------------------------------------------------------
    def order_status(self, *, strategy: str, orderid: str) -> OrderRow:
        """The order as OpenAlgo reports it in front of this personality's broker."""
        with self._lock:
            self._order(orderid, "orderstatus")
            row = self.personality.order_status(self.raw_orderbook(), str(orderid),
                                                self.tradebook())
            if row is None:
                raise OrderNotFound(f"Order {orderid} not found", endpoint="orderstatus",
                                    status=404)
            return row

    def open_position(self, *, strategy: str, symbol: str, exchange: str, product: str) -> int:
        with self._lock:
            return self._position_qty(symbol, exchange, product.upper())

    def orderbook(self) -> list[OrderRow]:
        """The orderbook as OpenAlgo lists it in front of this personality's broker."""
        with self._lock:
            rows = self.raw_orderbook()
            listed = self._listed
            # no row changed: the same listing (rows are frozen; the list comparison checks
            # identity first, in C, and equal rows give an equal listing)
            if listed is not None and rows == listed[0]:
                return list(listed[1])
            out = self.personality.orderbook(rows)
            self._listed = (rows, out)
            return list(out)

    def raw_orderbook(self) -> list[OrderRow]:
        """Every order as the simulated exchange knows it (all fields, in-between states)."""
        with self._lock:
            return [o.final_row or self._row(o) for o in self._orders.values()]

    def tradebook(self) -> list[TradeRow]:
        with self._lock:
            return [TradeRow(t.orderid, t.symbol, t.exchange, t.action, t.quantity, t.price,
                             t.product, fmt_timestamp(t.ts), round(t.quantity * t.price, 2))
                    for t in self._trades]

    def positionbook(self) -> list[PositionRow]:
        with self._lock:
            rows = []
            for pos in self._positions.values():
                ltp = self._markets[(pos.symbol, pos.exchange)].ltp
                pnl = pos.realized + self._unrealized(pos, ltp)
                rows.append(PositionRow(pos.symbol, pos.exchange, pos.product, pos.quantity,
                                        round(pos.average_price, 2), ltp, round(pnl, 2)))
            return rows

    def funds(self) -> Funds:
        with self._lock:
            realized = sum(p.realized for p in self._positions.values())
            unrealized = sum(self._unrealized(p, self._markets[(p.symbol, p.exchange)].ltp)
                             for p in self._positions.values())
            used = sum(abs(p.quantity) * p.average_price for p in self._positions.values())
            cash = self.settings.starting_cash + realized - used
            return Funds(round(cash, 2), 0.0, round(realized, 2), round(unrealized, 2),
                         round(used, 2))

    def quotes(self, *, symbol: str, exchange: str) -> Quote:
        with self._lock:
            m = self._known_market(symbol, exchange)
            return Quote(ltp=m.ltp, open=m.open, high=m.high, low=m.low, bid=m.bid, ask=m.ask,
                         prev_close=m.prev_close, volume=m.volume, oi=m.oi)

    def depth(self, *, symbol: str, exchange: str) -> Depth:
        with self._lock:
            m = self._known_market(symbol, exchange)
            bids, asks = synth_depth(m.ltp, m.bid, m.ask, self.instrument.tick_size,
                                     self.level_quantity)
            return Depth(m.ltp, m.volume, m.oi, bids, asks)

    @property
    def level_quantity(self) -> int:
        """Quantity at the first synthesized depth level."""
        return self.settings.depth_lots_per_level * self.instrument.lot_size

    def history(self, *, symbol: str, exchange: str, interval: str, start_date: str,
                end_date: str) -> list[HistoryBar]:
        """Bars of ``interval`` between two IST dates (inclusive), built from one-minute bars."""
        if interval not in INTERVALS:
            raise RejectedError(f"Invalid interval {interval!r}; supported: "
                                f"{', '.join(INTERVALS)}", endpoint="history")
        try:
            first = date.fromisoformat(start_date)
            last = date.fromisoformat(end_date)
        except ValueError as exc:
            raise RejectedError(f"Dates must be YYYY-MM-DD: {exc}", endpoint="history") from exc
        if last < first:
            raise RejectedError(f"end_date {end_date} is before start_date {start_date}",
                                endpoint="history")
        if last >= date.max:
            raise RejectedError(f"end_date {end_date} is out of range", endpoint="history")
        lo = datetime.combine(first, time(0), IST).timestamp()
        hi = datetime.combine(last + timedelta(days=1), time(0), IST).timestamp()
        with self._lock:
            self._known_market(symbol, exchange)
            minutes = [b for s, b in self._bars.get((symbol, exchange), {}).items() if lo <= s < hi]
            return self._aggregate(minutes, INTERVALS[interval])

    # -- internals: validation -------------------------------------------------------------------
    def _validate(self, symbol: str, exchange: str, action: str, quantity: int, pricetype: str,
                  product: str, price: float, trigger_price: float,
                  endpoint: str = "placeorder") -> None:
        def reject(message: str) -> RejectedError:
            return RejectedError(message, endpoint=endpoint)

        if action not in ACTIONS:
            raise reject(f"Invalid action {action!r}; expected BUY or SELL")
        if pricetype not in PRICE_TYPES:
            raise reject(f"Invalid pricetype {pricetype!r}; expected one of "
                         f"{', '.join(PRICE_TYPES)}")
        if product not in PRODUCTS:
            raise reject(f"Invalid product {product!r}; expected one of {', '.join(PRODUCTS)}")
        if (symbol, exchange) not in self._markets:
            raise reject(f"Symbol {symbol} not found on {exchange}")
        if exchange == INDEX_EXCHANGE or exchange.endswith("_INDEX"):
            raise reject(f"{symbol} on {exchange} is an index and cannot be traded")
        lot = self.instrument.lot_size
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise reject(f"Quantity must be a positive whole number, got {quantity!r}")
        if quantity % lot:
            raise reject(f"Quantity {quantity} is not a multiple of the lot size {lot}")
        if self.settings.enforce_freeze_quantity and quantity > self.instrument.freeze_quantity:
            raise reject(f"Quantity {quantity} exceeds the freeze quantity "
                         f"{self.instrument.freeze_quantity}; split the order")
        for name, value in (("price", price), ("trigger_price", trigger_price)):
            if not math.isfinite(value) or value < 0:
                raise reject(f"{name} must be a non-negative number, got {value!r}")
        tick = self.instrument.tick_size
        if pricetype in ("LIMIT", "SL") and price <= 0:
            raise reject(f"A {pricetype} order needs a price above 0")
        if pricetype in ("SL", "SL-M") and trigger_price <= 0:
            raise reject(f"A {pricetype} order needs a trigger_price above 0")
        if pricetype in ("LIMIT", "SL") and not _is_tick_multiple(price, tick):
            raise reject(f"Price {price} is not a multiple of the tick size {tick}")
        if pricetype in ("SL", "SL-M") and not _is_tick_multiple(trigger_price, tick):
            raise reject(f"Trigger price {trigger_price} is not a multiple of the tick size {tick}")
        if pricetype == "SL" and action == "BUY" and price < trigger_price:
            raise reject(f"BUY SL limit {price} is below its trigger {trigger_price}")
        if pricetype == "SL" and action == "SELL" and price > trigger_price:
            raise reject(f"SELL SL limit {price} is above its trigger {trigger_price}")

    def _max_order_quantity(self) -> int:
        lot = self.instrument.lot_size
        if not self.settings.enforce_freeze_quantity:
            return 10**12
        return max(lot, self.instrument.freeze_quantity // lot * lot)

    def _broker_rejection(self) -> str:
        if self._forced_rejections:
            return self._forced_rejections.pop()
        rate = self.settings.rejection_rate
        if rate > 0 and self._rng.random() < rate:
            return "Simulated broker rejection (rejection_rate)"
        return ""

    # -- internals: matching ---------------------------------------------------------------------
    def _activate(self, orderid: str) -> None:
        with self._lock:
            order = self._orders[orderid]
            if order.status in TERMINAL_STATUSES:
                return
            order.active = True
            if order.reject_on_activation:
                order.rejection_reason = order.reject_on_activation
                self._finish(order, REJECTED)
                return
            order.fresh = True
            self._match_now(order, self._markets[(order.symbol, order.exchange)])

    def _match_now(self, order: _Order, market: _Market) -> None:
        """Match an order that just became active against the last price, outside a tick.
        A stop order waits in ``trigger pending`` for the next tick."""
        if order.working != "STOP":
            self._evaluate(order, market)

    def _run_book(self, market: _Market) -> None:
        for oid in list(self._working.get((market.symbol, market.exchange), ())):
            order = self._orders[oid]
            if order.active and order.status not in TERMINAL_STATUSES:
                self._evaluate(order, market)

    def _evaluate(self, order: _Order, market: _Market) -> None:
        """Fill, trigger or leave ``order`` against the current market (one tick's worth)."""
        ltp = market.ltp
        buy = order.action == "BUY"
        if order.working == "STOP":
            order.fresh = False
            if ltp <= 0 or not (ltp >= order.trigger_price if buy else ltp <= order.trigger_price):
                return
            if order.pricetype == "SL-M":
                order.working, order.status = "MARKET", OPEN
                self._fill(order, ltp)
                return
            order.working, order.status = "LIMIT", OPEN
            if ltp <= order.price if buy else ltp >= order.price:
                self._fill(order, ltp)
            else:
                order.updated_ts = self.clock.time()
                self._notify(order)
            return
        if order.working == "MARKET":
            if order.pricetype == "SL-M":
                price = ltp
            else:
                touch = market.ask if buy else market.bid
                price = touch if touch > 0 else ltp
            if price > 0:
                self._fill(order, price)
            return
        fresh, order.fresh = order.fresh, False
        if ltp <= 0 or not (ltp <= order.price if buy else ltp >= order.price):
            return
        self._fill(order, ltp if fresh and order.pricetype == "LIMIT" else order.price)

    def _fill(self, order: _Order, price: float) -> None:
        lots = self.settings.partial_fill_lots
        qty = order.remaining
        if lots > 0:
            qty = min(qty, lots * self.instrument.lot_size)
        now = self.clock.time()
        order.filled_quantity += qty
        order.fill_value += qty * price
        order.updated_ts = now
        self._trades.append(_Trade(order.orderid, order.symbol, order.exchange, order.action,
                                   qty, price, order.product, now))
        self._apply_to_position(order, qty, price)
        if order.remaining == 0:
            self._finish(order, COMPLETE)
        else:
            order.status = OPEN
            self._notify(order)

    def _finish(self, order: _Order, status: str) -> None:
        order.status = status
        order.updated_ts = self.clock.time()
        ids = self._working.get((order.symbol, order.exchange))
        if ids and order.orderid in ids:
            ids.remove(order.orderid)
        self._notify(order)

    def _apply_to_position(self, order: _Order, qty: int, price: float) -> None:
        key = (order.symbol, order.exchange, order.product)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = _Position(order.symbol, order.exchange, order.product)
        signed = qty if order.action == "BUY" else -qty
        if pos.quantity == 0 or (pos.quantity > 0) == (signed > 0):
            total = abs(pos.quantity) + qty
            pos.average_price = (pos.average_price * abs(pos.quantity) + price * qty) / total
            pos.quantity += signed
            return
        closing = min(qty, abs(pos.quantity))
        direction = 1 if pos.quantity > 0 else -1
        pos.realized += closing * (price - pos.average_price) * direction
        pos.quantity += signed
        if pos.quantity == 0:
            pos.average_price = 0.0
        elif qty > closing:  # flipped through zero: the rest opens at this price
            pos.average_price = price

    @staticmethod
    def _unrealized(pos: _Position, ltp: float) -> float:
        if pos.quantity == 0 or ltp <= 0:
            return 0.0
        return (ltp - pos.average_price) * pos.quantity

    def _position_qty(self, symbol: str, exchange: str, product: str) -> int:
        pos = self._positions.get((symbol, exchange, product))
        return pos.quantity if pos else 0

    # -- internals: bookkeeping -----------------------------------------------------------------
    def _market(self, symbol: str, exchange: str) -> _Market:
        key = (symbol, exchange)
        market = self._markets.get(key)
        if market is None:
            market = self._markets[key] = _Market(symbol, exchange)
        return market

    def _known_market(self, symbol: str, exchange: str) -> _Market:
        market = self._markets.get((symbol, exchange))
        if market is None:
            raise RejectedError(f"Symbol {symbol} not found on {exchange}")
        return market

    def _order(self, orderid: str, endpoint: str) -> _Order:
        order = self._orders.get(str(orderid))
        if order is None:
            raise OrderNotFound(f"Order {orderid} not found", endpoint=endpoint, status=404)
        return order

    def _next_orderid(self, now: float) -> str:
        self._counter += 1
        return f"{to_ist(now).strftime('%y%m%d')}{self._counter:09d}"

    def _row(self, o: _Order) -> OrderRow:
        """The order's row, built again only when a field it shows changed, and kept for good
        once the order is finished (every orderbook read lists the whole day's orders)."""
        if o.final_row is not None:
            return o.final_row
        key = (o.status, o.active, o.cancelling, o.filled_quantity, o.fill_value,
               o.rejection_reason, o.price, o.trigger_price, o.quantity, o.pricetype)
        if o.row is not None and o.row_key == key:
            return o.row
        row = o.row = self._new_row(o)
        o.row_key = key
        if o.status in TERMINAL_STATUSES:  # no fill, modify or cancel reaches it any more
            o.final_row = row
        return row

    def _new_row(self, o: _Order) -> OrderRow:
        return OrderRow(orderid=o.orderid, symbol=o.symbol, exchange=o.exchange,
                        action=o.action, quantity=o.quantity, price=o.price,
                        trigger_price=o.trigger_price, pricetype=o.pricetype, product=o.product,
                        status=self._raw_status(o), timestamp=fmt_timestamp(o.placed_ts),
                        average_price=o.average_price, filled_quantity=o.filled_quantity,
                        strategy=o.strategy, rejection_reason=o.rejection_reason)

    def _raw_status(self, o: _Order) -> str:
        """The exchange's status, in-between states included: ``cancel pending`` while a
        cancel travels, ``open pending`` while a placement does (personalities that show it)."""
        if o.status in TERMINAL_STATUSES:
            return o.status
        if o.cancelling:
            return CANCEL_PENDING
        if not o.active and self.personality.placement_pending:
            return OPEN_PENDING
        return o.status

    def _notify(self, order: _Order) -> None:
        if not self._listeners:
            return
        row = self.personality.order_update(self._row(order))
        for listener in list(self._listeners):
            try:
                listener(row)
            except Exception:
                logger.exception("order listener {!r} raised; continuing", listener)

    def _minute_bar(self, market: _Market, start: float, ltp: float) -> _Bar:
        """The market's one-minute bar starting at ``start``; a new one opens at ``ltp`` (and
        keeps the series in time order when a late tick opens an earlier minute)."""
        key = (market.symbol, market.exchange)
        series = self._bars.get(key)
        if series is None:
            series = self._bars[key] = {}
        bar = series.get(start)
        if bar is None:
            late = bool(series) and start < next(reversed(series))
            bar = series[start] = _Bar(start, ltp, ltp, ltp, ltp)
            if late:
                self._bars[key] = dict(sorted(series.items()))
        return bar

    def _aggregate(self, minutes: list[_Bar], seconds: int) -> list[HistoryBar]:
        if seconds == 60:
            return [HistoryBar(b.start, b.open, b.high, b.low, b.close, b.volume, b.oi)
                    for b in minutes]
        out: list[HistoryBar] = []
        bucket_key: float | None = None
        agg: _Bar | None = None
        for b in minutes:
            key = self._bucket(b.start, seconds)
            if agg is None or key != bucket_key:
                if agg is not None:
                    out.append(HistoryBar(agg.start, agg.open, agg.high, agg.low, agg.close,
                                          agg.volume, agg.oi))
                bucket_key = key
                agg = _Bar(key, b.open, b.high, b.low, b.close, b.volume, b.oi)
                continue
            agg.high = max(agg.high, b.high)
            agg.low = min(agg.low, b.low)
            agg.close = b.close
            agg.volume += b.volume
            agg.oi = b.oi
        if agg is not None:
            out.append(HistoryBar(agg.start, agg.open, agg.high, agg.low, agg.close, agg.volume,
                                  agg.oi))
        return out

    def _bucket(self, start: float, seconds: int) -> float:
        """Bucket start: the IST day for daily bars, else counted from the session open."""
        day = trading_date(start)
        if seconds == 0:
            return datetime.combine(day, time(0), IST).timestamp()
        session_open = datetime.combine(day, self.instrument.session_open, IST).timestamp()
        return session_open + math.floor((start - session_open) / seconds) * seconds


def _as_dict(row: object) -> dict[str, object]:
    return asdict(row)  # type: ignore[call-overload, no-any-return]
