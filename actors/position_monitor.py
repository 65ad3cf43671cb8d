"""The PositionMonitor actor: every open position of one account, marked to market.

Owns, for its account (execution-and-risk.md, "Position monitor"):

- the positions, keyed (strategy, symbol): signed quantity (short < 0), average price of the
  open side, the day's realized P&L (rupees), and a flip through zero (the closed part is
  realized, the rest opens at the fill price). Each ``Fill`` is applied once, by ``fill.key``;
  after a restart the keys and positions are rebuilt from the day's stored fills;
- the stop distance each position's strategy declared (``PositionRisk``), committed to the
  store as it arrives and restored with the positions after a restart;
- the feed subscriptions of held symbols: a symbol going from no position (in any strategy) to
  one is added (``subscribe_mode``), one going back to zero everywhere is removed;
- the last valid price of each held symbol and its freshness: a zero, negative, NaN or missing
  LTP never replaces the last valid price (it is counted); a price older than
  ``stale_after_s`` is stale, and on the check timer stale symbols are read over REST
  (``broker.quotes``) within a token bucket of ``quotes_per_s`` on the engine clock. A broker
  error is logged when the failures start and when they stop, and the symbol is tried again
  on the next check;
- the output: on every price update of a held symbol and every fill, a ``StrategyPnl`` of the
  affected strategy to ``risk`` and the affected ``PositionMark``-s to ``strategy.<name>``; on
  the check timer the ``StrategyPnl`` again when the strategy's freshness changed; the number
  of open positions to ``health`` (``HealthUpdate("positions", n)``) when it changes; on
  ``PnlRefresh`` (a restarted risk manager) every strategy's ``StrategyPnl`` again;
- the store: marks of the positions changed since the last flush go to the store every
  ``flush_interval_s`` (the store writer batches ``PositionMark``, never per tick);
- quantity filled before its price is known (``PendingFill``): held in the position (marks,
  subscriptions, open counts, the reconciler's view) with no P&L and no R from it, until the
  priced ``Fill`` of the same order completes it (``engine.trading.pending``); rebuilt from the
  store's pending fills after a restart;
- ``PositionCorrection`` (the reconciler: the broker is the truth), ``PositionQuery`` and
  ``StatusRequest``.

P&L is that of the current trading day (IST) per strategy, never summed over history: a new
trading day resets the realized P&L (open quantities carry over). A position's ``r_multiple``
is its day P&L (realized + unrealized) over one R: with ``r_unit = "position"`` (``[risk]``)
its own risk, the largest quantity it had today × the stop distance its strategy declared
(``PositionRisk``); otherwise, or while none was declared, the strategy's fixed rupees of one R
(``r_units``; none known: 0). The ``StrategyPnl`` carries the day's R as the sum of its
positions' (``r``). Unrealized P&L uses the last valid price (0 while no price is known).
After a restart the largest quantity comes back from the same fills in the same order, and the
declared distance from the store, so R and the day's R are what they were before it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pykka
from loguru import logger

from engine.broker import Broker, BrokerError
from engine.market.instruments import trading_date
from engine.messages import (
    Action,
    Fill,
    HealthUpdate,
    OrderEvent,
    PendingFill,
    PnlRefresh,
    PositionCorrection,
    PositionMark,
    PositionQuery,
    PositionRisk,
    Severity,
    StatusRequest,
    StrategyPnl,
    SubscriptionChange,
    Tick,
    TickBatch,
    TimerFired,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.settings import setting
from engine.store.database import Database
from engine.trading.pending import PendingBook, add_pending, add_priced, is_pending

CHECK_TIMER = "positions.check"
FLUSH_TIMER = "positions.flush"
DEFAULT_EXCHANGE = "NFO"
STORE_TIMEOUT_S = 5.0  # how long a risk declaration waits for the store to commit it

Key = tuple[str, str]  # (strategy, symbol)


@dataclass(frozen=True, slots=True)
class PositionSettings:
    """Section ``[positions]``: price freshness, the REST quotes fallback, store flushes."""

    stale_after_s: float = setting(5.0, "a held symbol's last price older than this is stale, "
                                   "engine seconds", min=0.1, max=600.0)
    quotes_per_s: float = setting(2.0, "REST quotes fallback for stale symbols: calls per "
                                  "second at most, all symbols together", min=0.01, max=10.0)
    flush_interval_s: float = setting(2.0, "how often changed positions and prices are sent to "
                                      "the store, engine seconds", min=0.05, max=60.0)
    check_interval_s: float = setting(1.0, "how often freshness is checked (and stale symbols "
                                      "quoted), engine seconds", min=0.05, max=60.0)
    subscribe_mode: int = setting(2, "feed mode for held symbols: 1 LTP, 2 Quote, 3 Depth",
                                  choices=(1, 2, 3))


class InvalidFill(ValueError):
    """A fill that cannot be applied (no quantity, or no usable price); nothing was changed."""


@dataclass(slots=True)
class _Position:
    """One strategy's position in one symbol for the current trading day."""

    strategy: str
    symbol: str
    exchange: str
    quantity: int = 0
    average: float = 0.0
    realized: float = 0.0
    peak: int = 0  # the largest quantity held today (either side)
    points: float = 0.0  # stop distance per unit its strategy declared (PositionRisk)
    # filled at the broker, price not known yet (PendingFill), per order: engine.trading.pending
    pending_buy: PendingBook = field(default_factory=dict)
    pending_sell: PendingBook = field(default_factory=dict)
    #: signed quantity held without a price: outstanding(pending_buy) - outstanding(pending_sell),
    #: kept by ``add_pending`` / ``add_priced`` (read on every tick and check; the books keep
    #: every order of the day)
    pending: int = 0

    @property
    def held(self) -> int:
        """Signed quantity held: the priced ``quantity`` and the price-pending part."""
        return self.quantity + self.pending

    def add_pending(self, action: Action, orderid: str, cumulative: int) -> int:
        """``cumulative`` of ``orderid`` is filled, price unknown: the quantity newly held."""
        buy = action is Action.BUY
        new = add_pending(self.pending_buy if buy else self.pending_sell, orderid, cumulative)
        self.pending += new if buy else -new
        return new

    def add_priced(self, action: Action, orderid: str, cumulative: int) -> None:
        """A priced fill up to ``cumulative`` of ``orderid``: the pending part it completes is
        no longer held without a price (the fill's own quantity is traded by ``trade``)."""
        buy = action is Action.BUY
        done = add_priced(self.pending_buy if buy else self.pending_sell, orderid, cumulative)
        self.pending -= done if buy else -done

    def trade(self, signed: int, price: float) -> float:
        """Apply a signed quantity at ``price``; returns the rupees it realized."""
        if signed == 0:
            return 0.0
        held = self.quantity
        after = held + signed
        if held == 0 or (held > 0) == (signed > 0):  # open or add
            self.average = (self.average * abs(held) + price * abs(signed)) / abs(after)
            self.quantity = after
            self.peak = max(self.peak, abs(after))
            return 0.0
        closed = min(abs(held), abs(signed))
        realized = (price - self.average) * closed * (1 if held > 0 else -1)
        if after == 0:
            self.average = 0.0
        elif (after > 0) != (held > 0):  # flipped through zero: the rest opens here
            self.average = price
        self.quantity = after
        self.peak = max(self.peak, abs(after))
        self.realized += realized
        return realized

    def unrealized(self, ltp: float) -> float:
        if self.quantity == 0 or ltp <= 0:
            return 0.0
        return (ltp - self.average) * self.quantity


@dataclass(slots=True)
class _Price:
    """A symbol's last valid price and when it arrived (engine clock; -inf: from the store)."""

    ltp: float
    ts: float


class _TokenBucket:
    """``rate`` tokens per engine second, holding at most one second's worth (at least one)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> bool:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _valid_price(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


class PositionMonitor(EngineActor):
    """Registry name ``positions``; see the module docstring."""

    def __init__(self, supervision: Supervision | None = None, *, account: str,
                 settings: PositionSettings, broker: Broker | None, db: Database | None,
                 r_units: Mapping[str, float] | None = None, r_unit: str = "fixed",
                 exchanges: Mapping[str, str] | None = None, risk: str | None = "risk",
                 feed: str | None = "feed", store: str | None = "store",
                 health: str | None = "health", **kw: Any) -> None:
        if supervision is None:
            kw.setdefault("name", "positions")
        super().__init__(supervision, **kw)
        if self.clock is None:
            raise ValueError("PositionMonitor needs an engine clock")
        self.account = account
        self.settings = settings
        self.broker = broker
        self.db = db
        self.r_units = dict(r_units or {})
        self.r_unit = r_unit
        self.exchanges = dict(exchanges or {})
        self.risk = risk
        self.feed = feed
        self.store = store
        self.health = health
        now = self.clock.time()
        self._day: date = trading_date(now)
        self._positions: dict[Key, _Position] = {}
        self._prices: dict[str, _Price] = {}
        self._applied: set[tuple[str, int]] = set()
        self._subscribed: dict[str, str] = {}  # symbol -> exchange, as told to the feed
        self._dirty: set[Key] = set()
        self._unpriced: set[Key] = set()  # opened by a correction with no price known
        self._sent_freshness: dict[str, tuple[bool, tuple[str, ...]]] = {}
        self._open_reported: int | None = None
        # a broker rate: per real second (engine.runtime.actor.real_s)
        self._bucket = _TokenBucket(settings.quotes_per_s / self.real_s(1.0), now)
        self._bad_prices: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._quotes_failing = 0  # consecutive failed quotes calls

    # -- lifecycle -----------------------------------------------------------------------------
    def on_start(self) -> None:
        self._recover()
        self.schedule_every(self.settings.check_interval_s, CHECK_TIMER)
        self.schedule_every(self.settings.flush_interval_s, FLUSH_TIMER)

    def on_stop(self) -> None:
        self._flush()
        super().on_stop()

    # -- messages ------------------------------------------------------------------------------
    @handles(Fill)
    def _on_fill(self, fill: Fill) -> None:
        now = self.now()
        if fill.account != self.account:
            self._counts["foreign"] += 1
            logger.warning("positions[{}]: fill {} of account {!r} ignored", self.account,
                           fill.key, fill.account)
            return
        pos = self._positions.get((fill.strategy, fill.symbol))
        # a fill that prices a quantity held as pending was traded well before its ts
        late = pos is not None and is_pending(
            pos.pending_buy if fill.action is Action.BUY else pos.pending_sell,
            fill.broker_order_id)
        try:
            applied = self._apply_fill(fill)
        except InvalidFill as exc:
            self._counts["invalid_fills"] += 1
            self._alert("invalid_fill", f"fill {fill.key} of {fill.strategy} in {fill.symbol} "
                        f"not applied: {exc}; the reconciler will correct the quantity",
                        Severity.CRITICAL)
            return
        if applied:
            price = self._prices.get(fill.symbol)
            if fill.price > 0 and not late and (price is None or price.ts < fill.ts):
                # a fill is a traded price: a position just opened is priced, not "stale",
                # until the feed's first tick for the symbol arrives
                self._set_price(fill.symbol, fill.price, fill.ts)
            self._changed({(fill.strategy, fill.symbol)}, now)

    @handles(PendingFill)
    def _on_pending(self, pending: PendingFill) -> None:
        if pending.account != self.account:
            self._counts["foreign"] += 1
            return
        try:
            applied = self._apply_pending(pending)
        except InvalidFill as exc:
            self._alert("invalid_fill", f"pending fill {pending.key} not applied: {exc}",
                        Severity.CRITICAL)
            return
        if applied:
            self._changed({(pending.strategy, pending.symbol)}, self.now())

    @handles(PositionRisk)
    def _on_risk(self, msg: PositionRisk) -> None:
        if msg.account != self.account or not msg.points > 0:
            return
        self._roll_day(self.now())
        self._declare(msg)
        self._store_risk(msg)

    @handles(OrderEvent)
    def _on_order_event(self, event: OrderEvent) -> None:
        """Order states are the order manager's; positions move only by fills."""
        self._counts["order_events"] += 1

    @handles(TickBatch)
    def _on_batch(self, batch: TickBatch) -> None:
        self._on_prices(batch.ticks)

    @handles(Tick)
    def _on_tick(self, tick: Tick) -> None:
        self._on_prices((tick,))

    @handles(PositionCorrection)
    def _on_correction(self, fix: PositionCorrection) -> None:
        now = self.now()
        if fix.account != self.account:
            self._counts["foreign"] += 1
            logger.warning("positions[{}]: correction of account {!r} ignored", self.account,
                           fix.account)
            return
        self._roll_day(now)
        key = (fix.strategy, fix.symbol)
        current = self._positions.get(key)
        held = current.held if current is not None else 0
        if fix.expected is not None and held != fix.expected:
            logger.warning("positions[{}]: correction of {} {} skipped: it moved to {} since the "
                           "reconciler saw {}", self.account, fix.strategy, fix.symbol, held,
                           fix.expected)
            return
        if fix.quantity == held:
            logger.info("positions[{}]: correction of {} {} matches ({}); nothing to change",
                        self.account, fix.strategy, fix.symbol, fix.quantity)
            return
        pos = self._position(fix.strategy, fix.symbol, fix.exchange)
        before = pos.held
        price, source = self._correction_price(fix, pos)
        if price > 0:
            realized = pos.trade(fix.quantity - before, price)
        else:  # nothing known to price it at: it opens at the first valid price that arrives
            pos.quantity, pos.average, realized = fix.quantity - pos.pending, 0.0, 0.0
            self._unpriced.add(key)
        self._counts["corrections"] += 1
        self._alert("position_corrected",
                    f"{fix.strategy} {fix.symbol}: quantity {before} -> {fix.quantity} "
                    f"({fix.reason}); {abs(fix.quantity - before)} at {price:g} ({source}), "
                    f"realized {realized:+.2f}")
        self._changed({key}, now)

    @handles(PnlRefresh)
    def _on_pnl_refresh(self, refresh: PnlRefresh) -> None:
        now = self.now()
        self._roll_day(now)
        for strategy in sorted({pos.strategy for pos in self._positions.values()}):
            if not refresh.strategy or strategy == refresh.strategy:
                self._send_pnl(strategy, now)

    @handles(PositionQuery)
    def _on_query(self, query: PositionQuery) -> tuple[PositionMark, ...]:
        now = self.now()
        self._roll_day(now)
        if query.account and query.account != self.account:
            return ()
        return tuple(self._mark(pos, now) for _, pos in sorted(self._positions.items())
                     if (not query.strategy or pos.strategy == query.strategy)
                     and (query.include_flat or pos.held != 0))

    @handles(StatusRequest)
    def _on_status(self, request: StatusRequest) -> dict[str, Any]:
        now = self.now()
        self._roll_day(now)
        strategies = sorted({pos.strategy for pos in self._positions.values()})
        return {
            "account": self.account,
            "trading_date": self._day.isoformat(),
            "positions": [self._view(pos, now) for _, pos in sorted(self._positions.items())
                          if pos.held != 0],
            "strategies": {name: self._strategy_view(name, now) for name in strategies},
            "stale": list(self._stale_symbols(self._held(), now)),
            "bad_prices": dict(sorted(self._bad_prices.items())),
            "counts": dict(sorted(self._counts.items())),
        }

    @handles(TimerFired)
    def _on_timer(self, timer: TimerFired) -> None:
        if timer.name == CHECK_TIMER:
            self._check()
        elif timer.name == FLUSH_TIMER:
            self._flush()

    # -- fills and positions ---------------------------------------------------------------------
    def _apply_fill(self, fill: Fill) -> bool:
        """Apply a fill once; False when its key was applied before."""
        if fill.key in self._applied:
            self._counts["duplicate_fills"] += 1
            logger.info("positions[{}]: fill {} already applied", self.account, fill.key)
            return False
        if fill.quantity <= 0:
            raise InvalidFill(f"quantity {fill.quantity}")
        if not _valid_price(fill.price):
            raise InvalidFill(f"price {fill.price}")
        self._roll_day(self.now())
        pos = self._position(fill.strategy, fill.symbol, fill.exchange)
        if (fill.strategy, fill.symbol) in self._unpriced:  # the fill prices it
            self._unpriced.discard((fill.strategy, fill.symbol))
            pos.average = fill.price
        signed = fill.quantity if fill.action is Action.BUY else -fill.quantity
        pos.trade(signed, fill.price)
        pos.add_priced(fill.action, fill.broker_order_id, fill.cumulative_quantity)
        self._applied.add(fill.key)
        self._counts["fills"] += 1
        return True

    def _apply_pending(self, p: PendingFill) -> bool:
        """Hold quantity the broker filled before its price is known; False when nothing new
        (already pending, or already priced)."""
        if p.cumulative_quantity <= 0 or not p.broker_order_id:
            raise InvalidFill(f"pending cumulative quantity {p.cumulative_quantity} of order "
                              f"{p.broker_order_id!r}")
        self._roll_day(self.now())
        pos = self._position(p.strategy, p.symbol, p.exchange)
        new = pos.add_pending(p.action, p.broker_order_id, p.cumulative_quantity)
        if new:
            self._counts["price_pending"] += 1
            logger.warning("positions[{}]: {} {} {} {} filled, price pending (held at the last "
                           "price; no P&L booked until the broker prices it)", self.account,
                           p.strategy, p.symbol, p.action.value, new)
        return new > 0

    def _position(self, strategy: str, symbol: str, exchange: str) -> _Position:
        key = (strategy, symbol)
        pos = self._positions.get(key)
        if pos is None:
            exch = exchange or self.exchanges.get(symbol, DEFAULT_EXCHANGE)
            pos = self._positions[key] = _Position(strategy, symbol, exch)
        return pos

    def _declare(self, msg: PositionRisk) -> None:
        self._position(msg.strategy, msg.symbol, "").points = msg.points

    def _store_risk(self, msg: PositionRisk) -> None:
        """Commit a declaration before going on: a restart of this actor reads it back."""
        if not self.store or self.registry is None:
            return
        try:
            self.registry.ask(self.store, msg, timeout=STORE_TIMEOUT_S)
        except Exception as exc:  # the declaration still counts; the failure is loud
            # a timed-out ask stays queued: the store (or the next one) may still write it
            outcome = "not confirmed stored" if isinstance(exc, pykka.Timeout) else "not stored"
            self._alert("position_risk_not_stored", f"{msg.strategy} {msg.symbol}: stop "
                        f"distance {msg.points:g} {outcome} ({type(exc).__name__}: {exc}); "
                        f"after a restart this position may be measured in the fixed R",
                        Severity.CRITICAL)

    def _correction_price(self, fix: PositionCorrection, pos: _Position) -> tuple[float, str]:
        """The price a correction is applied at, and where it came from (0: none known)."""
        key_priced = (pos.strategy, pos.symbol) not in self._unpriced
        if _valid_price(fix.price):
            return fix.price, "reconciler's price"
        last = self._prices.get(fix.symbol)
        if last is not None:
            return last.ltp, "last price"
        if pos.quantity != 0 and key_priced:
            return pos.average, "no price known: at the average price, nothing realized"
        return 0.0, "no price known: opens at the first valid price"

    def _open(self) -> list[_Position]:
        """Positions with a non-zero quantity (the day's flat ones are kept too)."""
        return [pos for pos in self._positions.values() if pos.held]

    def _held(self, open_: list[_Position] | None = None) -> dict[str, str]:
        """Symbols with a non-zero quantity in any strategy, with their exchange (of ``open_``,
        the open positions, when the caller has them)."""
        return {pos.symbol: pos.exchange for pos in (self._open() if open_ is None else open_)}

    def _roll_day(self, now: float) -> None:
        """A new trading day: realized P&L starts again at 0; open quantities carry over."""
        day = trading_date(now)
        if day <= self._day:
            return
        logger.info("positions[{}]: trading day {} begins; realized P&L reset", self.account,
                    day.isoformat())
        self._day = day
        for key, pos in list(self._positions.items()):
            pos.realized = 0.0
            pos.peak = abs(pos.quantity)
            if pos.held == 0:
                del self._positions[key]
                self._dirty.discard(key)
            else:
                self._dirty.add(key)

    # -- prices ----------------------------------------------------------------------------------
    def _on_prices(self, ticks: Iterable[Tick]) -> None:
        now = self.now()
        self._roll_day(now)
        held = self._held()
        updated: set[str] = set()
        for tick in ticks:
            if tick.symbol not in held:
                continue
            if not _valid_price(tick.ltp):
                self._bad_prices[tick.symbol] += 1
                continue
            self._set_price(tick.symbol, tick.ltp, now)
            updated.add(tick.symbol)
        if updated:
            self._price_changed(updated, now)

    def _set_price(self, symbol: str, ltp: float, now: float) -> None:
        """A valid price arrived; a position opened without a price (a correction) opens here."""
        self._prices[symbol] = _Price(ltp, now)
        for key in [k for k in self._unpriced if k[1] == symbol]:
            self._unpriced.discard(key)
            pos = self._positions.get(key)
            if pos is not None and pos.held:
                pos.average = ltp

    def _price_changed(self, symbols: set[str], now: float) -> None:
        self._changed({key for key, pos in self._positions.items()
                       if pos.held and pos.symbol in symbols}, now)

    def _fresh(self, symbol: str, now: float) -> bool:
        price = self._prices.get(symbol)
        return price is not None and now - price.ts <= self.settings.stale_after_s

    def _stale_symbols(self, symbols: Iterable[str], now: float) -> tuple[str, ...]:
        return tuple(sorted(s for s in set(symbols) if not self._fresh(s, now)))

    def _check(self) -> None:
        """Freshness timer: re-subscribe and quote stale held symbols (quotes within budget),
        then re-send the P&L of every strategy whose freshness changed since it was last sent."""
        now = self.now()
        self._roll_day(now)
        open_ = self._open()  # once: a quote changes prices, never what is held
        held = self._held(open_)
        stale = self._stale_symbols(held, now)
        if stale and self.feed:
            # a restarted feed forgets what it was asked; asking again is harmless
            self.tell(self.feed, SubscriptionChange(
                add=tuple(sorted((s, held[s]) for s in stale)),
                mode=self.settings.subscribe_mode, requester=self.name))
        if stale and self.broker is not None:
            refreshed: set[str] = set()
            for sym in sorted(stale, key=self._price_ts):
                if not self._bucket.take(now):
                    break
                if self._quote(sym, held[sym], now):
                    refreshed.add(sym)
            if refreshed:
                self._price_changed(refreshed, now)
        for strategy in sorted({pos.strategy for pos in self._positions.values()}):
            if self._freshness(strategy, open_, now) != self._sent_freshness.get(strategy):
                self._dirty.update(k for k, p in self._positions.items()
                                   if p.strategy == strategy and p.held)
                self._send_pnl(strategy, now)

    def _price_ts(self, symbol: str) -> float:
        price = self._prices.get(symbol)
        return price.ts if price is not None else -math.inf

    def _quote(self, symbol: str, exchange: str, now: float) -> bool:
        """Read one symbol's quote; True when it gave a valid price (now the last price)."""
        assert self.broker is not None
        self._counts["quotes"] += 1
        try:
            quote = self.broker.quotes(symbol=symbol, exchange=exchange)
        except BrokerError as exc:
            self._counts["quote_errors"] += 1
            if not self._quotes_failing:
                logger.warning("positions[{}]: quotes fallback failing ({}); stale symbols are "
                               "retried on every check", self.account, exc)
            self._quotes_failing += 1
            return False
        if self._quotes_failing:
            logger.info("positions[{}]: quotes fallback working again after {} failed call(s)",
                        self.account, self._quotes_failing)
            self._quotes_failing = 0
        if not _valid_price(quote.ltp):
            self._bad_prices[symbol] += 1
            return False
        self._set_price(symbol, quote.ltp, now)
        return True

    # -- output ----------------------------------------------------------------------------------
    def _changed(self, keys: set[Key], now: float) -> None:
        """Positions ``keys`` changed: marks to their strategies, each strategy's P&L to risk,
        subscriptions and the health count brought up to date, the store flush owed."""
        self._dirty |= keys
        for strategy in sorted({s for s, _ in keys}):
            if strategy:  # a correction may concern a position no strategy owns
                for key in sorted(k for k in keys if k[0] == strategy):
                    self.tell(f"strategy.{strategy}", self._mark(self._positions[key], now))
            self._send_pnl(strategy, now)
        self._sync_subscriptions()
        self._report_open()

    def _send_pnl(self, strategy: str, now: float) -> None:
        pnl = self._pnl(strategy, now)
        self._sent_freshness[strategy] = (pnl.fresh, pnl.stale)
        if self.risk:
            self.tell(self.risk, pnl)

    def _pnl(self, strategy: str, now: float) -> StrategyPnl:
        mine = [p for p in self._positions.values() if p.strategy == strategy]
        open_ = [p for p in mine if p.held]
        fresh, stale = self._freshness(strategy, open_, now)
        return StrategyPnl(
            strategy=strategy, account=self.account,
            realized=sum(p.realized for p in mine),
            unrealized=sum(p.unrealized(self._ltp(p.symbol)) for p in open_),
            open_positions=len(open_), fresh=fresh, ts=now, stale=stale,
            premium=sum(p.average * -p.quantity for p in open_ if p.quantity < 0),
            r=self._day_r(mine))

    def _r_of(self, pos: _Position, pnl: float) -> float | None:
        """``pnl`` of ``pos`` in R (module doc); None when no unit is known."""
        if self.r_unit == "position" and pos.points > 0 and pos.peak > 0:
            return pnl / (pos.peak * pos.points)
        r_unit = self.r_units.get(pos.strategy, 0.0)
        return pnl / r_unit if r_unit > 0 else None

    def _day_r(self, positions: Iterable[_Position]) -> float | None:
        total = 0.0
        for pos in positions:
            pnl = pos.realized + pos.unrealized(self._ltp(pos.symbol))
            r = self._r_of(pos, pnl)
            if r is None:
                return None
            total += r
        return total

    def _freshness(self, strategy: str, open_: list[_Position],
                   now: float) -> tuple[bool, tuple[str, ...]]:
        """Whether the open positions ``open_`` of ``strategy`` are priced fresh, and the stale
        symbols among them."""
        stale = self._stale_symbols((p.symbol for p in open_ if p.strategy == strategy), now)
        return not stale, stale

    def _mark(self, pos: _Position, now: float) -> PositionMark:
        ltp = self._ltp(pos.symbol)
        unrealized = pos.unrealized(ltp)
        r = self._r_of(pos, pos.realized + unrealized)
        return PositionMark(
            strategy=pos.strategy, account=self.account, symbol=pos.symbol,
            quantity=pos.held, average_price=pos.average, ltp=ltp, unrealized=unrealized,
            realized=pos.realized, r_multiple=r if r is not None else 0.0,
            ts=now, fresh=self._fresh(pos.symbol, now), price_pending=abs(pos.pending))

    def _ltp(self, symbol: str) -> float:
        price = self._prices.get(symbol)
        return price.ltp if price is not None else 0.0

    def _sync_subscriptions(self) -> None:
        """Keep the feed subscribed to exactly the held symbols."""
        held = self._held()
        add = tuple(sorted((s, e) for s, e in held.items() if s not in self._subscribed))
        remove = tuple(sorted((s, e) for s, e in self._subscribed.items() if s not in held))
        if not add and not remove:
            return
        self._subscribed = held
        if self.feed:
            self.tell(self.feed, SubscriptionChange(add=add, remove=remove,
                                                    mode=self.settings.subscribe_mode,
                                                    requester=self.name))

    def _report_open(self) -> None:
        count = sum(1 for pos in self._positions.values() if pos.held)
        if count != self._open_reported and self.health:
            self.tell(self.health, HealthUpdate("positions", count, source=self.name))
        self._open_reported = count

    def _flush(self) -> None:
        """Send the marks of positions changed since the last flush to the store."""
        if not self._dirty:
            return
        now = self.now()
        dirty, self._dirty = self._dirty, set()
        if not self.store:
            return
        for key in sorted(dirty):
            pos = self._positions.get(key)
            if pos is not None:
                self.tell(self.store, self._mark(pos, now))
        self._counts["flushes"] += 1

    def _alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        self.raise_alert(kind, f"positions[{self.account}]: {message}", severity, self.health)

    # -- status views ----------------------------------------------------------------------------
    def _view(self, pos: _Position, now: float) -> dict[str, Any]:
        mark = self._mark(pos, now)
        return {"strategy": pos.strategy, "symbol": pos.symbol, "exchange": pos.exchange,
                "quantity": mark.quantity, "price_pending": mark.price_pending,
                "average_price": pos.average, "ltp": mark.ltp,
                "unrealized": mark.unrealized, "realized": pos.realized,
                "r_multiple": mark.r_multiple, "fresh": mark.fresh}

    def _strategy_view(self, strategy: str, now: float) -> dict[str, Any]:
        pnl = self._pnl(strategy, now)
        return {"realized": pnl.realized, "unrealized": pnl.unrealized, "pnl": pnl.pnl,
                "open_positions": pnl.open_positions, "fresh": pnl.fresh,
                "stale": list(pnl.stale), "premium": pnl.premium}

    # -- recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild today's positions from the stored fills (oldest first), their declared stop
        distances and the last stored prices (stale until a new price arrives); re-subscribe
        the held symbols."""
        if self.db is None:
            self._report_open()
            return
        now = self.now()
        fills = self.db.fills(account=self.account, trading_date=self._day)
        for fill in fills:
            try:
                self._apply_fill(fill)
            except InvalidFill as exc:
                self._counts["invalid_fills"] += 1
                logger.error("positions[{}]: stored fill {} not applied: {}", self.account,
                             fill.key, exc)
        for p in self.db.pending_fills(account=self.account, trading_date=self._day):
            try:
                self._apply_pending(p)
            except InvalidFill as exc:
                logger.error("positions[{}]: stored pending fill {} not applied: {}",
                             self.account, p.key, exc)
        filled = set(self._positions)
        risks = self.db.position_risks(account=self.account, trading_date=self._day)
        for risk in risks:
            self._declare(risk)
        held = self._held()
        for symbol, stored in self.db.last_prices().items():
            if symbol in held and _valid_price(stored.ltp):
                self._prices[symbol] = _Price(stored.ltp, -math.inf)
        logger.log("INFO" if fills or risks else "DEBUG",  # a fresh start: nothing to say
                   "positions[{}]: recovered {} fill(s) and {} risk declaration(s) of {}: {} "
                   "open position(s)", self.account, len(fills), len(risks),
                    self._day.isoformat(),
                    sum(1 for pos in self._positions.values() if pos.held))
        if filled:
            self._changed(filled, now)
        else:
            self._report_open()

