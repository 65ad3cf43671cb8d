"""The Feed actor: routing ticks, held-symbol subscriptions, reconnect notices, health reports.

Socket tests run the real FeedClient against the simulator over loopback.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from actors.feed import Feed, MarketDataSettings
from engine.app.modes import feed_connector
from engine.app.sections import load_config
from engine.messages import (
    FeedHealth,
    FeedStatus,
    StatusRequest,
    SubscriptionChange,
    Tick,
    TickBatch,
)
from engine.runtime.clock import VirtualClock, WallClock, ist_epoch
from engine.runtime.registry import Registry
from engine.sim.server import SimulatorServer
from tests.support import Collector, wait_for

A, B, C = "NIFTY09SEP2524000CE", "NIFTY09SEP2524000PE", "NIFTY09SEP2525000CE"
T0 = ist_epoch(2025, 9, 3, 10, 0)


class Harness:
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.reg = Registry(clock)
        self.refs: list[Any] = []
        self.got: dict[str, list[Any]] = {}

    def sink(self, name: str) -> list[Any]:
        got: list[Any] = []
        self.got[name] = got
        self.start(name, Collector, got=got,
                   kinds=(TickBatch, FeedHealth, FeedStatus))
        return got

    def start(self, name: str, cls: type, **kw: Any) -> Any:
        ref = cls.start(name=name, registry=self.reg, clock=self.clock, **kw)
        self.reg.declare(name)
        self.reg.register(name, ref)
        self.refs.append(ref)
        return ref

    def close(self) -> None:
        for ref in reversed(self.refs):
            ref.stop()


def tick(sym: str, ts: float, ltp: float = 100.0) -> Tick:
    return Tick(sym, "NFO", ltp, ts, ts, 1000)


def test_ticks_route_per_symbol_and_held_symbols_also_go_to_positions() -> None:
    h = Harness(VirtualClock(start=T0))
    try:
        bars_a, bars_b, pos = h.sink(f"bars.{A}"), h.sink(f"bars.{B}"), h.sink("positions")
        feed = h.start("feed", Feed, symbols=[(A, "NFO"), (B, "NFO")],
                       settings=MarketDataSettings(), health=None)
        feed.tell(SubscriptionChange(add=((B, "NFO"),), requester="positions"))
        feed.tell(TickBatch((tick(A, T0), tick(B, T0 + 1), tick(A, T0 + 2), tick(C, T0 + 3))))
        status = feed.ask(StatusRequest(), timeout=5)
        assert wait_for(lambda: bars_a and bars_b and pos)
        assert [t.ts for t in bars_a[0].ticks] == [T0, T0 + 2]  # one batch, arrival order
        assert [t.symbol for t in bars_b[0].ticks] == [B]
        assert [t.symbol for t in pos[0].ticks] == [B]  # held symbol only
        assert status["unrouted"] == 1 and status["held"] == 1 and status["ticks"] == 4
        feed.tell(SubscriptionChange(remove=((B, "NFO"),), requester="positions"))
        feed.tell(TickBatch((tick(B, T0 + 5),)))
        assert wait_for(lambda: len(bars_b) == 2)
        assert len(pos) == 1
    finally:
        h.close()


def test_feed_reports_last_ticks_to_health_on_its_timer() -> None:
    clock = VirtualClock(start=T0)
    h = Harness(clock)
    try:
        health = h.sink("health")
        feed = h.start("feed", Feed, symbols=[(A, "NFO"), (B, "NFO")],
                       settings=MarketDataSettings(report_interval_s=5.0))
        feed.tell(TickBatch((tick(A, T0 + 1),)))
        feed.ask(StatusRequest(), timeout=5)
        clock.advance_to(T0 + 5)
        assert wait_for(lambda: any(isinstance(m, FeedHealth) for m in health))
        report = next(m for m in health if isinstance(m, FeedHealth))
        assert report.subscribed == (A, B)
        assert dict(report.last_tick) == {A: T0 + 1}
        assert report.connected and report.state == "replay"
        # a held symbol outside the universe is reported while it is held, and no longer after
        for change, at, expected in [(SubscriptionChange(add=((C, "NFO"),)), 10, (A, B, C)),
                                     (SubscriptionChange(remove=((C, "NFO"),)), 15, (A, B))]:
            feed.tell(change)
            feed.ask(StatusRequest(), timeout=5)
            clock.advance_to(T0 + at)
            assert wait_for(lambda at=at: any(isinstance(m, FeedHealth) and m.ts == T0 + at
                                              for m in health))
            report = next(m for m in health if isinstance(m, FeedHealth) and m.ts == T0 + at)
            assert report.subscribed == expected
    finally:
        h.close()


@pytest.fixture
def simulator():
    cfg = load_config(None, env={}, overrides={"simulator.rest_port": "0",
                                               "simulator.ws_port": "0"})
    clock = WallClock()
    sim = SimulatorServer(cfg.section("simulator"), api_key="feed-test-key-1", clock=clock)
    sim.declare_symbols([(A, "NFO"), (B, "NFO"), (C, "NFO")])
    sim.start()
    yield cfg, clock, sim
    sim.stop()
    clock.stop()


def subscribed(sim: SimulatorServer) -> set[str]:
    return {s for subs in sim.subscriptions() for s, _, _ in subs}


def test_socket_subscriptions_follow_universe_and_held_symbols(simulator) -> None:
    cfg, clock, sim = simulator
    h = Harness(clock)
    try:
        bars_a = h.sink(f"bars.{A}")
        h.sink(f"bars.{B}")
        h.sink("positions")
        connect = feed_connector(cfg, api_key="feed-test-key-1", clock=clock, ws_url=sim.ws_url)
        feed = h.start("feed", Feed, symbols=[(A, "NFO"), (B, "NFO")],
                       settings=MarketDataSettings(), connect=connect, health=None)
        assert wait_for(lambda: subscribed(sim) == {A, B})
        sim.publish(tick(A, clock.time(), 101.0))
        assert wait_for(lambda: bars_a)
        assert bars_a[0].ticks[0].ltp == 101.0
        feed.tell(SubscriptionChange(add=((C, "NFO"),), requester="positions"))
        assert wait_for(lambda: subscribed(sim) == {A, B, C})
        feed.tell(SubscriptionChange(remove=((C, "NFO"),), requester="positions"))
        assert wait_for(lambda: subscribed(sim) == {A, B})
    finally:
        h.close()


def test_socket_reconnect_resubscribes_and_notifies_listeners(simulator) -> None:
    cfg, clock, sim = simulator
    cfg = cfg.replace(feed=replace(cfg.feed, reconnect_base_s=0.05))
    h = Harness(clock)
    try:
        h.sink(f"bars.{A}")
        listener = h.sink("reconciler")
        connect = feed_connector(cfg, api_key="feed-test-key-1", clock=clock, ws_url=sim.ws_url)
        h.start("feed", Feed, symbols=[(A, "NFO")], settings=MarketDataSettings(),
                connect=connect, health=None, reconnect_listeners=("reconciler",))
        assert wait_for(lambda: subscribed(sim) == {A})
        sim.faults.drop_connections()
        assert wait_for(lambda: any(isinstance(m, FeedStatus) and m.state == "connected"
                                    for m in listener))
        assert wait_for(lambda: subscribed(sim) == {A})
        notice = next(m for m in listener if isinstance(m, FeedStatus))
        assert notice.reconnects >= 1
    finally:
        h.close()


class _Busy:
    """A message that holds the Feed's thread until ``release`` is set."""

    def __init__(self) -> None:
        import threading

        self.started = threading.Event()
        self.release = threading.Event()


class _BlockableFeed(Feed):
    def handle(self, message: Any) -> Any:
        if isinstance(message, _Busy):
            message.started.set()
            message.release.wait(10)
            return None
        return super().handle(message)


class _FakeConnection:
    state = "connected"

    def __init__(self, callbacks: Any) -> None:
        self.callbacks = callbacks

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def subscribe(self, symbols: Any, mode: int | None = None) -> None: ...

    def unsubscribe(self, symbols: Any) -> None: ...

    def subscribe_orders(self) -> None: ...


def test_the_reader_thread_routes_ticks_without_waiting_for_the_feed_thread() -> None:
    """Paper and live: a received batch reaches its bar builder (and the position monitor for a
    held symbol) from the feed client's thread, not one actor hop later; the Feed books it once
    (no second copy to the builders)."""
    h = Harness(WallClock())
    conns: list[_FakeConnection] = []
    try:
        bars_a, pos = h.sink(f"bars.{A}"), h.sink("positions")
        feed = h.start("feed", _BlockableFeed, symbols=[(A, "NFO"), (B, "NFO")],
                       settings=MarketDataSettings(), health=None,
                       connect=lambda cb: conns.append(_FakeConnection(cb)) or conns[-1])
        feed.tell(SubscriptionChange(add=((A, "NFO"),), requester="positions"))
        feed.ask(StatusRequest(), timeout=5)
        busy = _Busy()
        feed.tell(busy)
        assert busy.started.wait(5)
        conns[0].callbacks.on_ticks([tick(A, T0), tick(A, T0 + 1)])
        assert wait_for(lambda: bars_a and pos, timeout=5), "routing waited for the Feed thread"
        busy.release.set()
        status = feed.ask(StatusRequest(), timeout=5)
        assert status["ticks"] == 2 and status["last_tick_ts"] == T0 + 1
        assert [t.ts for b in bars_a for t in b.ticks] == [T0, T0 + 1]
        assert [t.ts for b in pos for t in b.ticks] == [T0, T0 + 1]
    finally:
        h.close()
