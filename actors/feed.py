"""The Feed actor: the one owner of market data coming in, and its router.

Owns the subscription set and the routing of every tick: to its symbol's bar builder (always, by
the registry name ``bars.<symbol>``) and to the position monitor for symbols with open positions.
In live and paper modes it owns the WebSocket feed client (built in ``on_start`` from a factory,
so a restarted Feed gets a fresh connection that re-subscribes everything), and the client's
reader thread routes each batch itself, by the Feed's rules, before handing it to the Feed to
book (freshness, counts, the tap): one actor hop less between a tick and an order, with the
same per-symbol order (one reader thread). In replay the replay driver hands the Feed
``TickBatch`` messages, and it routes them on its own thread. Every ``report_interval_s`` it
reports per-symbol last-tick times and connection facts to the health actor; connection
changes are forwarded to health and to whoever asked to hear about reconnects (the reconciler).
With a ``tap`` (the recorder) every batch received is also handed to it, unchanged. When
trading, the connection also subscribes to OpenAlgo's order-update stream and its frames go to
the order manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger

from actors.bar_builder import builder_name
from engine.messages import (
    FeedHealth,
    FeedStatus,
    StatusRequest,
    SubscriptionChange,
    Tick,
    TickBatch,
    TimerFired,
    batch_of,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.settings import setting

Pair = tuple[str, str]
REPORT_TIMER = "feed.report"


@dataclass(frozen=True, slots=True)
class MarketDataSettings:
    """Section ``[market_data]``: how the feed actor routes and reports."""

    report_interval_s: float = setting(5.0, "how often the feed reports per-symbol freshness to "
                                       "health, engine seconds", min=0.1, max=600)
    positions_actor: str = setting("positions", "registry name that gets ticks of held symbols")
    close_transit_s: float = setting(0.05, "real seconds a received tick may take to reach its "
                                     "bar builder; minute closes wait this long (scaled by the "
                                     "clock's speed in paper)", min=0.0, max=5.0)


class FeedConnection(Protocol):
    """What the Feed needs of a feed client (engine.openalgo.feed.FeedClient satisfies it)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def subscribe(self, symbols: Iterable[Pair], mode: int | None = None) -> None: ...

    def unsubscribe(self, symbols: Iterable[Pair]) -> None: ...

    def subscribe_orders(self) -> None: ...

    @property
    def state(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FeedCallbacks:
    """Where a feed client delivers what it receives (all of it goes to the Feed's inbox)."""

    on_ticks: Callable[[list[Tick]], None]
    on_status: Callable[[FeedStatus], None]
    on_order_update: Callable[[dict[str, Any]], None] | None = None


ConnectionFactory = Callable[[FeedCallbacks], FeedConnection]


class Feed(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *, symbols: Sequence[Pair],
                 settings: MarketDataSettings, mode: int = 2,
                 connect: ConnectionFactory | None = None, health: str | None = "health",
                 reconnect_listeners: Sequence[str] = (), tap: str | None = None,
                 orders: str | None = None, **kw: Any) -> None:
        super().__init__(supervision, **kw)
        self.settings = settings
        self.mode = mode
        self.universe: dict[str, str] = dict(symbols)
        self._builders = {sym: builder_name(sym) for sym in self.universe}  # fixed, as it is
        self._subscribed_syms: tuple[str, ...] | None = None
        self.held: dict[str, str] = {}
        self._connect = connect
        self._conn: FeedConnection | None = None
        self._health = health
        self._reconnect_listeners = tuple(reconnect_listeners)
        self._tap = tap
        self._orders = orders
        self._last_tick: dict[str, float] = {}
        self._connected = connect is None  # replay: the driver is always "connected"
        self._state = "replay" if connect is None else "starting"
        self._reconnects = 0
        self._unrouted = 0
        self._ticks = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.schedule_every(self.settings.report_interval_s, REPORT_TIMER)
        if self._connect is None:
            return
        me = self.name
        registry = self.registry
        assert registry is not None
        route = self._route

        def on_ticks(ticks: list[Tick]) -> None:  # the feed client's reader thread
            batch = TickBatch(tuple(ticks), routed=True)
            route(batch.ticks, registry.tell)
            registry.tell(me, batch)

        callbacks = FeedCallbacks(
            on_ticks=on_ticks,
            on_status=lambda status: (registry.tell(me, status)
                                      if status.state != "stopped" else None),
            on_order_update=self._order_forwarder())
        self._conn = self._connect(callbacks)
        self._conn.start()
        self._conn.subscribe(self._all_pairs(), self.mode)
        if self._orders:
            self._conn.subscribe_orders()

    def _order_forwarder(self) -> Callable[[dict[str, Any]], None] | None:
        """Order-update frames go straight to the order manager (read on the client thread)."""
        target, registry, clock = self._orders, self.registry, self.clock
        if target is None or registry is None or clock is None:
            return None
        from engine.trading.orders import update_from_frame

        def forward(frame: dict[str, Any]) -> None:
            registry.tell(target, update_from_frame(frame, clock.time()))

        return forward

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.stop()
            except Exception as exc:  # a dying socket must not hide the original exit
                logger.warning("{}: closing the feed connection failed: {}", self.name, exc)
            self._conn = None

    def _subscribed(self) -> tuple[str, ...]:
        """The subscribed symbols, sorted (kept until the held set changes: every report)."""
        if self._subscribed_syms is None:
            self._subscribed_syms = tuple(sym for sym, _ in self._all_pairs())
        return self._subscribed_syms

    def _all_pairs(self) -> list[Pair]:
        merged = dict(self.universe)
        merged.update(self.held)
        return sorted(merged.items())

    # -- ticks -----------------------------------------------------------------------------------
    @handles(TickBatch)
    def on_batch(self, batch: TickBatch) -> None:
        groups = self._by_symbol(batch.ticks)
        last = self._last_tick
        universe, held = self.universe, self.held
        for sym, group in groups.items():
            last[sym] = group[-1].recv_ts
            if sym not in universe and sym not in held:
                self._unrouted += len(group)
        self._ticks += len(batch.ticks)
        if self._tap:
            self.tell(self._tap, batch)
        if not batch.routed:
            self._send(groups, self.tell)

    def _route(self, ticks: tuple[Tick, ...], tell: Callable[[str, Any], None]) -> None:
        """Each symbol's ticks, in order, to its bar builder and, while held, to the position
        monitor. Runs on the Feed's thread (replay) or the feed client's reader thread (paper,
        live): it only reads ``universe`` (fixed) and ``held`` (one membership test a symbol)."""
        self._send(self._by_symbol(ticks), tell)

    @staticmethod
    def _by_symbol(ticks: Iterable[Tick]) -> dict[str, list[Tick]]:
        """The ticks of each symbol, in arrival order (symbols in order of first arrival)."""
        groups: dict[str, list[Tick]] = {}
        for tick in ticks:
            group = groups.get(tick.symbol)
            if group is None:
                groups[tick.symbol] = [tick]
            else:
                group.append(tick)
        return groups

    def _send(self, groups: dict[str, list[Tick]], tell: Callable[[str, Any], None]) -> None:
        builders, held = self._builders, self.held
        for sym, group in groups.items():
            packed = batch_of((tuple(group), False))
            name = builders.get(sym)
            if name is not None:
                tell(name, packed)
            if sym in held:
                tell(self.settings.positions_actor, packed)

    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        self.on_batch(TickBatch((tick,)))

    # -- subscriptions ---------------------------------------------------------------------------
    @handles(SubscriptionChange)
    def on_subscription(self, change: SubscriptionChange) -> None:
        added = [(s, e) for s, e in change.add if s not in self.held]
        for sym, exch in change.add:
            self.held[sym] = exch
        removed = [(s, e) for s, e in change.remove if s in self.held]
        for sym, _ in removed:
            del self.held[sym]
        self._subscribed_syms = None
        if self._conn is None:
            return
        new = [(s, e) for s, e in added if s not in self.universe]
        if new:
            self._conn.subscribe(new, change.mode)
        gone = [(s, e) for s, e in removed if s not in self.universe]
        if gone:
            self._conn.unsubscribe(gone)

    # -- connection and health -------------------------------------------------------------------
    @handles(FeedStatus)
    def on_status(self, status: FeedStatus) -> None:
        was_connected = self._connected
        self._state = status.state
        self._connected = status.state == "connected"
        self._reconnects = max(self._reconnects, status.reconnects)
        if self._health:
            self.tell(self._health, status)
        if self._connected and not was_connected and status.reconnects > 0:
            for name in self._reconnect_listeners:
                self.tell(name, status)

    @handles(TimerFired)
    def on_timer(self, timer: TimerFired) -> None:
        if timer.name == REPORT_TIMER and self._health:
            self.tell(self._health, self._report(timer.due))

    def _report(self, now: float) -> FeedHealth:
        return FeedHealth(ts=now, connected=self._connected,
                          subscribed=self._subscribed(),
                          last_tick=tuple(sorted(self._last_tick.items())),
                          reconnects=self._reconnects, invalid=self._unrouted,
                          state=self._state)

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, Any]:
        stats = getattr(self._conn, "stats", None)  # the feed client's (FeedClient.stats)
        return {"dropped": dict(stats().invalid) if stats is not None else {},
                "state": self._state, "connected": self._connected,
                "subscribed": len(self._all_pairs()), "held": len(self.held),
                "ticks": self._ticks, "unrouted": self._unrouted,
                "reconnects": self._reconnects,
                "last_tick_ts": max(self._last_tick.values(), default=None)}
