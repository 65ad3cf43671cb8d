"""Acceptance tests of the OrderManager over REAL sockets: the OpenAlgo-compatible simulator on
loopback, the engine's OpenAlgoClient (REST) and FeedClient (order-update stream), a real store,
real actor threads and the wall clock.

- a placeorder whose reply is lost after the simulator accepted it leads to exactly one order;
- a cancel the simulator refuses (HTTP 400, or an order that has just completed) or never
  confirms (HTTP 500) keeps the old order tracked and places no replacement;
- a fill reported by both the order-update stream and the orderbook poll yields one Fill.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.order_manager import OrderManager, OrderSettings
from actors.store import StoreWriter
from engine.market.instruments import InstrumentSpec, option_symbol
from engine.messages import (
    Action,
    CancelIntent,
    Fill,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PriceType,
    StatusRequest,
    Tick,
)
from engine.openalgo.feed import FeedClient, FeedSettings
from engine.openalgo.rest import OpenAlgoClient, RestSettings
from engine.runtime.clock import Clock, ScaledClock, WallClock
from engine.runtime.registry import Registry
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.store.database import Database
from engine.trading.orders import update_from_frame
from tests.support import Collector
from tests.support import until as wait_for

S = OrderStatus
API_KEY = "sim-orders-key-2b7c9e"
ACCOUNT = "acct"
SYM = option_symbol("NIFTY", date(2025, 1, 30), 24000, "CE")
SETTINGS = OrderSettings(rate_per_s=8.0, poll_interval_s=0.1, cancel_confirm_timeout_s=0.5,
                         cancel_poll_s=0.05, resend_attempts=2, start_open=True)






class Paper:
    """Simulator + REST client + store + manager (+ the order-update stream if asked)."""

    def __init__(self, tmp_path: Path, settings: OrderSettings = SETTINGS, *,
                 stream: bool = False, matching: MatchingSettings | None = None,
                 clock: Clock | None = None) -> None:
        self.clock = clock or WallClock()
        self.sim = SimulatorServer(
            SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                              lost_reply_hold_s=2.0),
            api_key=API_KEY, clock=self.clock, instrument=InstrumentSpec(), matching=matching)
        self.sim.declare_symbols([(SYM, "NFO")])
        self.sim.start()
        self.publish(100.0)
        self.client = OpenAlgoClient(
            RestSettings(host=self.sim.rest_url, timeout_s=0.5, retries=3, retry_delay_s=0.0),
            api_key=API_KEY, clock=self.clock, account=ACCOUNT, sleep=lambda _: None)
        self.registry = Registry(self.clock)
        self.db = Database(tmp_path / "engine.db")
        self.strategy: list[Any] = []
        self.health: list[Any] = []
        self.refs: list[pykka.ActorRef[Any]] = []
        self._register("store", StoreWriter.start(self.db, name="store", registry=self.registry,
                                                  clock=self.clock))
        for name, sink in (("strategy.s", self.strategy), ("health", self.health)):
            self._register(name, Collector.start(sink, name=name, registry=self.registry,
                                                clock=self.clock))
        self.registry.declare("orders")
        self.feed: FeedClient | None = None
        if stream:
            self.feed = FeedClient(
                FeedSettings(ws_url=self.sim.ws_url, frozen_after_s=0.0), api_key=API_KEY,
                clock=self.clock, account=ACCOUNT,
                on_order_update=lambda frame: self.registry.tell(
                    "orders", update_from_frame(frame, self.clock.time())))
            self.feed.subscribe_orders()
            self.feed.start()
            wait_for(lambda: self.feed is not None and self.feed.state == "connected")
        self._register("orders", OrderManager.start(
            broker=self.client, account=ACCOUNT, settings=settings,
            instrument=InstrumentSpec(), db=self.db, positions=None, registry=self.registry,
            clock=self.clock))

    def _register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        self.registry.register(name, ref)
        self.refs.append(ref)

    def close(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        for ref in reversed(self.refs):
            ref.stop()
        self.client.close()
        self.sim.stop()
        self.clock.stop()
        self.db.close()

    def publish(self, ltp: float) -> None:
        now = self.clock.time()
        self.sim.publish(Tick(SYM, "NFO", ltp, recv_ts=now, exchange_ts=now,
                              bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2)))

    def send(self, message: Any) -> None:
        self.registry.tell("orders", message)

    def status(self) -> dict[str, Any]:
        return self.registry.ask("orders", StatusRequest(), timeout=10)

    def statuses(self, client_id: str) -> list[OrderStatus]:
        return [m.status for m in list(self.strategy)
                if isinstance(m, OrderEvent) and m.client_id == client_id]

    def events(self, client_id: str) -> list[OrderEvent]:
        return [m for m in list(self.strategy)
                if isinstance(m, OrderEvent) and m.client_id == client_id]

    def fills(self) -> list[Fill]:
        return [m for m in list(self.strategy) if isinstance(m, Fill)]

    def reached(self, client_id: str, status: OrderStatus) -> Callable[[], bool]:
        return lambda: status in self.statuses(client_id)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Paper]]:
    made: list[Paper] = []

    def build(**kw: Any) -> Paper:
        paper = Paper(tmp_path, **kw)
        made.append(paper)
        return paper

    yield build
    for paper in made:
        paper.close()


def order(client_id: str, *, pricetype: PriceType = PriceType.MARKET, price: float = 0.0,
          quantity: int = 65, action: Action = Action.BUY,
          purpose: OrderPurpose = OrderPurpose.ENTRY) -> OrderIntent:
    return OrderIntent(client_id=client_id, strategy="s", account=ACCOUNT, symbol=SYM,
                       exchange="NFO", action=action, quantity=quantity, pricetype=pricetype,
                       price=price, purpose=purpose, created_ts=time.time())


def resting(client_id: str, quantity: int = 65) -> OrderIntent:
    return order(client_id, pricetype=PriceType.LIMIT, price=99.0, quantity=quantity)


def test_a_lost_placeorder_reply_makes_exactly_one_order(make: Callable[..., Paper]) -> None:
    paper = make()
    paper.sim.faults.lose_reply(1)
    paper.send(order("lost-1"))
    wait_for(paper.reached("lost-1", S.COMPLETE))
    assert paper.statuses("lost-1") == [S.SUBMITTING, S.UNKNOWN, S.COMPLETE]
    assert paper.sim.rest_calls("placeorder") == 1
    [only] = paper.sim.broker.orderbook()
    assert [f.broker_order_id for f in paper.fills()] == [only.orderid]
    stored = paper.db.order("lost-1")
    assert stored is not None and stored.broker_order_id == only.orderid
    assert paper.status()["counts"]["adopted"] == 1


def test_a_cancel_refused_with_http_400_keeps_the_order_and_places_nothing(
        make: Callable[..., Paper]) -> None:
    paper = make()
    paper.send(resting("old"))
    wait_for(paper.reached("old", S.OPEN))
    paper.sim.faults.http_error(400, count=1, endpoints="cancelorder")
    paper.send(CancelIntent("old", "reprice", replace_with=resting("new")))
    wait_for(paper.reached("new", S.REJECTED))
    assert paper.statuses("old")[-2:] == [S.CANCEL_PENDING, S.OPEN]
    assert "cancel refused" in paper.events("old")[-1].reason
    [still] = paper.sim.broker.orderbook()
    assert still.status == "open"
    assert paper.sim.rest_calls("placeorder") == 1
    paper.publish(98.9)  # the old order is still followed: its fill arrives through the poll
    wait_for(lambda: len(paper.fills()) == 1)
    assert paper.fills()[0].client_id == "old"


def test_a_cancel_never_confirmed_keeps_the_order_and_places_nothing(
        make: Callable[..., Paper]) -> None:
    paper = make()
    paper.send(resting("old"))
    wait_for(paper.reached("old", S.OPEN))
    paper.sim.faults.http_error(500, count=3, endpoints="cancelorder")  # every retry fails
    paper.send(CancelIntent("old", "reprice", replace_with=resting("new")))
    wait_for(paper.reached("new", S.REJECTED))
    assert paper.statuses("old")[-2:] == [S.CANCEL_PENDING, S.OPEN]
    assert "not confirmed" in paper.events("old")[-1].reason
    assert paper.sim.rest_calls("cancelorder") == 3
    assert [o.status for o in paper.sim.broker.orderbook()] == ["open"]


def test_cancelling_an_order_that_just_completed_places_no_replacement(
        make: Callable[..., Paper]) -> None:
    paper = make(settings=replace(SETTINGS, poll_interval_s=30.0))  # no poll in this test
    paper.send(resting("stop-ish"))
    wait_for(lambda: paper.status()["reports"].get("status", 0) == 1)  # read back: open
    paper.publish(98.9)  # it fills at the simulator; nothing tells the engine yet
    assert paper.sim.broker.orderbook()[0].status == "complete"
    exit_ = order("exit", action=Action.SELL, purpose=OrderPurpose.EXIT)
    paper.send(CancelIntent("stop-ish", "flatten", replace_with=exit_))
    wait_for(paper.reached("exit", S.REJECTED))
    assert paper.statuses("stop-ish")[-2:] == [S.CANCEL_PENDING, S.COMPLETE]
    assert [f.client_id for f in paper.fills()] == ["stop-ish"]
    assert "ended complete" in paper.events("exit")[-1].reason
    assert paper.sim.rest_calls("placeorder") == 1
    assert len(paper.sim.broker.orderbook()) == 1


def test_a_fill_reported_by_stream_and_poll_yields_one_fill(make: Callable[..., Paper]) -> None:
    paper = make(stream=True, matching=MatchingSettings(partial_fill_lots=1))
    paper.send(resting("twice", quantity=130))
    wait_for(lambda: paper.status()["reports"].get("stream", 0) >= 1)  # the "open" push
    paper.publish(98.9)  # one lot fills: pushed on the stream, and in every orderbook poll
    wait_for(lambda: paper.status()["reports"].get("stream", 0) >= 2)
    polls = paper.status()["reports"].get("poll", 0)
    wait_for(lambda: paper.status()["reports"].get("poll", 0) >= polls + 3)
    assert [(f.quantity, f.cumulative_quantity) for f in paper.fills()] == [(65, 65)]
    paper.publish(98.9)  # the last lot
    wait_for(paper.reached("twice", S.COMPLETE))
    # the stream's "complete" push arrives too (before or after the poll's): it changes nothing
    wait_for(lambda: paper.status()["reports"]["stream"] >= 3)
    assert [(f.quantity, f.cumulative_quantity) for f in paper.fills()] == [(65, 65),
                                                                            (65, 130)]
    assert len(paper.db.fills(client_id="twice")) == 2


def test_at_100x_the_orderbook_is_polled_per_real_second_not_per_engine_second(
        make: Callable[..., Paper]) -> None:
    """``poll_interval_s`` is real time: paper at 100x must not read the orderbook 100 times a
    real second (against a 10/s broker the actor stalled behind 429s: issue 21's root cause)."""
    paper = make(settings=replace(SETTINGS, poll_interval_s=0.5),
                 clock=ScaledClock(start=time.time(), speed=100.0))
    paper.send(resting("slow-1"))
    wait_for(paper.reached("slow-1", S.OPEN))
    before = paper.sim.rest_calls("orderbook")
    time.sleep(1.0)
    assert paper.sim.rest_calls("orderbook") - before <= 4  # ~2; engine-time polls: ~200
