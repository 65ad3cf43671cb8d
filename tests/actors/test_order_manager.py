"""The OrderManager actor against the in-process SimulatedBroker, on a virtual clock, with real
actor threads and a real store (SQLite in tmp_path): durable intents before requests, the gate,
freeze splits, the request rate, partial and duplicate fills, verified cancel-then-replace,
unknown placement outcomes, and recovery after a restart."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.order_manager import OrderManager, OrderSettings
from actors.store import StoreWriter
from engine.broker import (
    BrokerUnavailable,
    OrderRow,
    OutcomeUnknown,
    RejectedError,
    SemiAutoMode,
    TradeRow,
)
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    Alert,
    BrokerOrderUpdate,
    CancelIntent,
    Fill,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    Ping,
    PriceType,
    Severity,
    StatusRequest,
    Tick,
    TradingGate,
)
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.sim.matching import MatchingSettings, SimulatedBroker
from engine.store.database import Database, StoreSettings
from engine.trading.orders import update_from_row
from tests.support import Collector

S = OrderStatus
T0 = ist_epoch(2025, 1, 30, 9, 20)
CE = "NIFTY30JAN2524000CE"
ACCOUNT = "acct"
SPEC = InstrumentSpec()
SETTINGS = OrderSettings(rate_per_s=8.0, poll_interval_s=1.0, cancel_confirm_timeout_s=2.0,
                         cancel_poll_s=0.5, resend_attempts=2, start_open=True)




class Spy:
    """Delegates to the simulated broker and records each order-endpoint call (name, engine
    time); ``hooks`` replace a method's behaviour for a test."""

    def __init__(self, sim: SimulatedBroker) -> None:
        self.sim = sim
        self.account = sim.account
        self.calls: list[tuple[str, float]] = []
        self.hooks: dict[str, Callable[..., Any]] = {}

    def _call(self, name: str, **kw: Any) -> Any:
        self.calls.append((name, self.sim.clock.time()))
        hook = self.hooks.get(name)
        return hook(**kw) if hook is not None else getattr(self.sim, name)(**kw)

    def place_order(self, **kw: Any) -> str:
        return self._call("place_order", **kw)

    def cancel_order(self, **kw: Any) -> str:
        return self._call("cancel_order", **kw)

    def order_status(self, **kw: Any) -> OrderRow:
        return self._call("order_status", **kw)

    def orderbook(self) -> list[OrderRow]:
        return self._call("orderbook")

    def tradebook(self) -> list[TradeRow]:
        hook = self.hooks.get("tradebook")  # a read, not an order-endpoint call: not recorded
        return hook() if hook is not None else self.sim.tradebook()

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class Harness:
    """Virtual clock, registry, store, simulated broker (its listener is the order-update
    stream), recorders for ``strategy.s`` / ``positions`` / ``health``, and the manager."""

    def __init__(self, tmp_path: Path, settings: OrderSettings = SETTINGS,
                 matching: MatchingSettings | None = None, *, start: bool = True,
                 store: str = "store") -> None:
        self.clock = VirtualClock(T0)
        self.registry = Registry(self.clock)
        self.db = Database(tmp_path / "engine.db", StoreSettings(flush_interval_s=60.0))
        self.sim = SimulatedBroker(self.clock, SPEC, matching or MatchingSettings(broker="ideal"),
                                   account="sim")
        self.sim.declare_symbol(CE, "NFO")
        self.broker = Spy(self.sim)
        self.settings = settings
        self.store = store
        self.strategy: list[Any] = []
        self.positions: list[Any] = []
        self.health: list[Any] = []
        self.refs: list[pykka.ActorRef[Any]] = []
        self._register("store", StoreWriter.start(self.db, name="store", registry=self.registry,
                                                  clock=self.clock))
        for name, sink in (("strategy.s", self.strategy), ("positions", self.positions),
                           ("health", self.health)):
            self._register(name, Collector.start(sink, name=name, registry=self.registry,
                                                clock=self.clock))
        self.market(100.0)
        self.listening = False
        self.listen()
        self.manager: pykka.ActorRef[Any] | None = None
        if start:
            self.start_manager()

    def _register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        self.registry.register(name, ref)
        self.refs.append(ref)

    def _on_row(self, row: OrderRow) -> None:
        self.registry.tell("orders", update_from_row(row, self.clock.time(), "stream"))

    def listen(self, on: bool = True) -> None:
        if on and not self.listening:
            self.sim.add_order_listener(self._on_row)
        elif not on and self.listening:
            self.sim.remove_order_listener(self._on_row)
        self.listening = on

    def start_manager(self, settings: OrderSettings | None = None) -> None:
        self.registry.declare("orders")
        self.manager = OrderManager.start(
            broker=self.broker, account=ACCOUNT, settings=settings or self.settings,
            instrument=SPEC, db=self.db, store=self.store, registry=self.registry,
            clock=self.clock)
        self._register("orders", self.manager)
        self.sync()

    def stop_manager(self) -> None:
        assert self.manager is not None
        self.manager.stop()
        self.manager = None

    def close(self) -> None:
        self.listen(False)
        for ref in reversed(self.refs):
            ref.stop()
        self.db.close()

    # -- driving ---------------------------------------------------------------------------------
    def market(self, ltp: float) -> None:
        now = self.clock.time()
        self.sim.on_tick(Tick(CE, "NFO", ltp, recv_ts=now, exchange_ts=now,
                              bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2)))

    def send(self, message: Any) -> None:
        self.registry.tell("orders", message)
        self.sync()

    def sync(self) -> dict[str, Any]:
        """The manager's status, once everything told to it before has been handled (asked
        twice: reports its own broker calls queued behind the first ask are handled too), and
        once the recorders have taken what it sent them."""
        self.registry.ask("orders", StatusRequest(), timeout=10)
        status = self.registry.ask("orders", StatusRequest(), timeout=10)
        for name in ("strategy.s", "positions", "health"):
            self.registry.ask(name, Ping(0), timeout=10)
        return status

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move the clock forward in small steps, letting the manager handle each step's timers."""
        end = self.clock.time() + seconds
        while self.clock.time() < end - 1e-9:
            self.clock.advance_to(min(end, self.clock.time() + step))
            self.sync()

    # -- observing -------------------------------------------------------------------------------
    def events(self, client_id: str) -> list[OrderEvent]:
        return [m for m in list(self.strategy)
                if isinstance(m, OrderEvent) and m.client_id == client_id]

    def statuses(self, client_id: str) -> list[OrderStatus]:
        return [e.status for e in self.events(client_id)]

    def fills(self) -> list[Fill]:
        return [m for m in list(self.strategy) if isinstance(m, Fill)]

    def alerts(self) -> list[Alert]:
        return [m for m in list(self.health) if isinstance(m, Alert)]

    def sim_orders(self) -> list[OrderRow]:
        return self.sim.orderbook()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(**kw: Any) -> Harness:
        h = Harness(tmp_path, **kw)
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


_seq = iter(range(1, 10_000))


def intent(client_id: str | None = None, *, quantity: int = 65,
           pricetype: PriceType = PriceType.MARKET, price: float = 0.0,
           trigger_price: float = 0.0, action: Action = Action.BUY,
           purpose: OrderPurpose = OrderPurpose.ENTRY, strategy: str = "s") -> OrderIntent:
    return OrderIntent(client_id=client_id or f"{strategy}-250130-{next(_seq):05d}",
                       strategy=strategy, account=ACCOUNT, symbol=CE, exchange="NFO",
                       action=action, quantity=quantity, pricetype=pricetype, price=price,
                       trigger_price=trigger_price, purpose=purpose, created_ts=T0)


def resting_buy(client_id: str | None = None, quantity: int = 65) -> OrderIntent:
    """A LIMIT BUY below the market (100): it rests until the price comes down."""
    return intent(client_id, quantity=quantity, pricetype=PriceType.LIMIT, price=99.0)




# ---------------------------------------------------------------------------------------------
# Intents: durable first, validated, gated
# ---------------------------------------------------------------------------------------------


def test_the_intent_is_stored_before_the_request_leaves(harness: Harness) -> None:
    seen: list[tuple[str, OrderStatus, str | None]] = []

    def place(**kw: Any) -> str:
        row = harness.db.order("s-1")
        assert row is not None, "the broker saw the order before the store had it"
        seen.append((row.client_id, row.status, row.broker_order_id))
        return harness.sim.place_order(**kw)

    harness.broker.hooks["place_order"] = place
    harness.send(intent("s-1"))
    assert seen == [("s-1", S.SUBMITTING, None)]
    assert harness.statuses("s-1") == [S.SUBMITTING, S.OPEN, S.COMPLETE]
    [fill] = harness.fills()
    assert (fill.client_id, fill.quantity, fill.price, fill.cumulative_quantity) == (
        "s-1", 65, 100.05, 65)  # a MARKET BUY fills at the ask
    assert [m for m in harness.positions if isinstance(m, Fill)] == [fill]
    stored = harness.db.order("s-1")
    assert stored is not None
    assert (stored.status, stored.filled_quantity, stored.broker_order_id) == (
        S.COMPLETE, 65, harness.sim_orders()[0].orderid)
    assert [e.status for e in harness.db.order_events("s-1")] == [S.SUBMITTING, S.OPEN,
                                                                   S.COMPLETE]
    assert harness.db.fills(client_id="s-1") == [fill]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"quantity": 100}, "lot size"),
    ({"quantity": -65}, "positive"),
    ({"pricetype": PriceType.LIMIT, "price": 99.03}, "tick"),
    ({"purpose": "hedge"}, "unknown purpose"),
    ({"account": "someone-else"}, "account"),
])
def test_invalid_intents_are_refused_before_anything_is_stored(harness: Harness,
                                                               changes: dict[str, Any],
                                                               reason: str) -> None:
    harness.send(replace(intent("bad-1"), **changes))
    [event] = harness.events("bad-1")
    assert event.status is S.REJECTED and reason in event.reason
    assert harness.db.order("bad-1") is None
    assert harness.sim_orders() == []


def test_a_duplicate_client_id_never_makes_a_second_order(harness: Harness) -> None:
    harness.send(intent("dup"))
    harness.send(intent("dup"))
    assert harness.statuses("dup")[-1] is S.REJECTED
    assert "duplicate client id" in harness.events("dup")[-1].reason
    assert len(harness.sim_orders()) == 1
    assert harness.db.order("dup").status is S.COMPLETE  # type: ignore[union-attr]


def test_entries_wait_for_the_gate_exits_and_stops_do_not(make: Callable[..., Harness]) -> None:
    h = make(settings=replace(SETTINGS, start_open=False))

    def go(message: Any) -> None:
        h.send(message)
        h.advance(0.2)  # past the next request slot

    go(intent("e-1"))
    assert h.statuses("e-1") == [S.REJECTED]
    assert "entries are closed" in h.events("e-1")[0].reason
    assert h.db.order("e-1") is None and h.sim_orders() == []
    go(intent("x-1", action=Action.SELL, purpose=OrderPurpose.EXIT))
    go(intent("st-1", action=Action.SELL, pricetype=PriceType.SL_M, trigger_price=90.0,
              purpose=OrderPurpose.STOP))
    assert h.statuses("x-1")[-1] is S.COMPLETE
    assert h.statuses("st-1")[-1] is S.TRIGGER_PENDING
    go(TradingGate(entries=True, reason="reconciled"))
    go(intent("e-2"))
    assert h.statuses("e-2")[-1] is S.COMPLETE
    go(TradingGate(entries=False, reason="halted", strategy="s"))
    go(intent("e-3"))
    assert h.statuses("e-3") == [S.REJECTED] and "for s" in h.events("e-3")[0].reason
    go(intent("t-1", strategy="t"))  # another strategy is not halted
    assert h.db.order("t-1").status is S.COMPLETE  # type: ignore[union-attr]
    go(TradingGate(entries=False, exits=False, reason="safe stop"))
    go(intent("x-2", action=Action.SELL, purpose=OrderPurpose.EXIT))
    assert h.statuses("x-2") == [S.REJECTED]
    go(CancelIntent("st-1", "tidy up"))
    assert h.statuses("st-1")[-1] is S.TRIGGER_PENDING  # the stop stays
    assert any(a.kind == "cancel_refused" for a in h.alerts())
    status = h.sync()
    assert status["gate"]["entries"] is False and status["gate"]["exits"] is False
    assert status["gate"]["strategies"]["s"]["reason"] == "halted"


def test_when_the_store_cannot_write_nothing_is_sent(make: Callable[..., Harness]) -> None:
    h = make(store="no-such-store")
    h.send(intent("s-1"))
    assert h.statuses("s-1")[-1] is S.REJECTED
    assert "not sent" in h.events("s-1")[-1].reason
    assert h.sim_orders() == []
    assert any(a.kind == "order_not_stored" and a.severity is Severity.CRITICAL
               for a in h.alerts())


# ---------------------------------------------------------------------------------------------
# Freeze split and rate limit
# ---------------------------------------------------------------------------------------------


def test_orders_above_the_freeze_quantity_are_split_and_tracked(harness: Harness) -> None:
    harness.send(intent("big", quantity=3900))
    harness.advance(0.5)
    orders = harness.sim_orders()
    assert sorted(o.quantity for o in orders) == [390, 1755, 1755]
    assert all(o.status == "complete" for o in orders)
    # the strategy hears of its own order only, with every child's fill
    assert {e.client_id for e in harness.strategy if isinstance(e, OrderEvent)} == {"big"}
    assert [f.quantity for f in harness.fills()] == [1755, 1755, 390]
    assert {f.client_id for f in harness.fills()} == {"big"}
    assert len({f.broker_order_id for f in harness.fills()}) == 3
    last = harness.events("big")[-1]
    assert (last.status, last.filled_quantity) == (S.COMPLETE, 3900)
    rows = {o.client_id: o for o in harness.db.orders()}
    assert {cid: (r.quantity, r.parent_id, r.status) for cid, r in rows.items()} == {
        "big": (3900, None, S.COMPLETE), "big.1": (1755, "big", S.COMPLETE),
        "big.2": (1755, "big", S.COMPLETE), "big.3": (390, "big", S.COMPLETE)}


def test_requests_are_spaced_on_the_engine_clock_and_cancels_go_first(harness: Harness) -> None:
    harness.send(resting_buy("r-0"))
    for n in range(1, 5):
        harness.send(resting_buy(f"r-{n}"))
    harness.send(CancelIntent("r-0", "changed my mind"))
    # nothing moves while engine time stands still
    assert harness.broker.names().count("place_order") == 1
    assert harness.sync()["queued"] == 5
    harness.advance(1.0, step=0.01)
    sent = [(name, ts) for name, ts in harness.broker.calls
            if name in ("place_order", "cancel_order")]
    assert [name for name, _ in sent] == ["place_order", "cancel_order"] + ["place_order"] * 4
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(sent)]
    assert min(gaps) >= 1 / 8 - 1e-6
    assert sent[0][1] == T0
    assert harness.statuses("r-0")[-1] is S.CANCELLED


# ---------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------


def test_partial_fills_emit_each_new_quantity(make: Callable[..., Harness]) -> None:
    h = make(matching=MatchingSettings(partial_fill_lots=1, broker="ideal"))
    h.send(resting_buy("p-1", quantity=195))
    for _ in range(3):
        h.market(98.9)
    h.sync()
    assert [(f.quantity, f.cumulative_quantity, f.price) for f in h.fills()] == [
        (65, 65, 99.0), (65, 130, 99.0), (65, 195, 99.0)]
    assert [(e.status, e.filled_quantity) for e in h.events("p-1")][-3:] == [
        (S.PARTIALLY_FILLED, 65), (S.PARTIALLY_FILLED, 130), (S.COMPLETE, 195)]
    assert len(h.db.fills(client_id="p-1")) == 3


def test_a_fill_reported_by_the_stream_and_the_poll_is_applied_once(
        make: Callable[..., Harness]) -> None:
    h = make(matching=MatchingSettings(partial_fill_lots=1, broker="ideal"))
    h.send(resting_buy("d-1", quantity=130))
    h.market(98.9)  # first lot: the stream reports it
    h.sync()
    polls = h.sync()["reports"].get("poll", 0)
    h.advance(1.0)  # the poll reads the same 65 filled
    assert h.sync()["reports"]["poll"] > polls
    assert [f.cumulative_quantity for f in h.fills()] == [65]
    h.listen(False)  # the second lot is seen by the poll first ...
    h.market(98.9)
    h.advance(1.0)
    late = h.sim.order_status(strategy="s", orderid=h.sim_orders()[0].orderid)
    h.send(update_from_row(late, h.clock.time(), "stream"))  # ... then the stream, late
    h.send(update_from_row(late, h.clock.time(), "stream"))
    assert [(f.quantity, f.cumulative_quantity) for f in h.fills()] == [(65, 65), (65, 130)]
    assert len(h.db.fills(client_id="d-1")) == 2
    assert h.statuses("d-1")[-1] is S.COMPLETE


# ---------------------------------------------------------------------------------------------
# Verified cancel-then-replace
# ---------------------------------------------------------------------------------------------


def stop_and_exit() -> tuple[OrderIntent, OrderIntent]:
    stop = intent("stop-1", action=Action.SELL, pricetype=PriceType.SL_M, trigger_price=90.0,
                  purpose=OrderPurpose.STOP)
    exit_ = intent("exit-1", action=Action.SELL, purpose=OrderPurpose.EXIT)
    return stop, exit_


def test_replace_waits_for_the_broker_to_confirm_the_cancel(harness: Harness) -> None:
    stop, exit_ = stop_and_exit()
    harness.send(stop)
    harness.send(CancelIntent("stop-1", "exit now", replace_with=exit_))
    harness.advance(0.5)
    names = harness.broker.names()
    cancel = names.index("cancel_order")
    assert names[cancel + 1] == "order_status"  # confirmed before ...
    assert names.index("place_order", cancel) > cancel + 1  # ... the replacement leaves
    assert harness.statuses("stop-1") == [S.SUBMITTING, S.TRIGGER_PENDING, S.CANCEL_PENDING,
                                          S.CANCELLED]
    assert harness.statuses("exit-1") == [S.SUBMITTING, S.OPEN, S.COMPLETE]
    assert sorted(o.status for o in harness.sim_orders()) == ["cancelled", "complete"]


def test_an_order_that_fills_while_cancelling_gets_no_replacement(harness: Harness) -> None:
    harness.broker.hooks["cancel_order"] = lambda **kw: kw["orderid"]  # accepted, in flight
    harness.send(resting_buy("b-1"))
    replacement = resting_buy("b-2")
    harness.send(CancelIntent("b-1", "reprice", replace_with=replacement))
    harness.advance(0.2)
    assert harness.statuses("b-1")[-1] is S.CANCEL_PENDING
    harness.market(98.9)  # it fills before the cancel lands
    harness.sync()
    assert harness.statuses("b-1")[-2:] == [S.CANCEL_PENDING, S.COMPLETE]
    assert [f.client_id for f in harness.fills()] == ["b-1"]
    [refused] = harness.events("b-2")
    assert refused.status is S.REJECTED and "ended complete" in refused.reason
    assert len(harness.sim_orders()) == 1
    assert harness.db.order("b-2") is None
    assert any(a.kind == "replace_refused" for a in harness.alerts())


def test_a_refused_cancel_keeps_the_old_order_and_places_nothing(harness: Harness) -> None:
    def refuse(**kw: Any) -> str:
        raise RejectedError("Order cannot be cancelled (RMS)", endpoint="cancelorder",
                            status=400)

    harness.broker.hooks["cancel_order"] = refuse
    harness.send(resting_buy("b-1"))
    harness.send(CancelIntent("b-1", "reprice", replace_with=resting_buy("b-2")))
    harness.advance(0.2)
    assert harness.statuses("b-1")[-2:] == [S.CANCEL_PENDING, S.OPEN]
    assert "cancel refused by the broker" in harness.events("b-1")[-1].reason
    assert harness.statuses("b-2") == [S.REJECTED]
    assert len(harness.sim_orders()) == 1
    assert {a.kind for a in harness.alerts()} >= {"cancel_refused", "replace_refused"}
    harness.market(98.9)  # still tracked: its fill arrives
    harness.sync()
    assert [f.client_id for f in harness.fills()] == ["b-1"]


def test_an_unconfirmed_cancel_is_given_up_after_the_timeout(harness: Harness) -> None:
    harness.broker.hooks["cancel_order"] = lambda **kw: kw["orderid"]  # never takes effect
    harness.send(resting_buy("b-1"))
    harness.send(CancelIntent("b-1", "reprice", replace_with=resting_buy("b-2")))
    harness.advance(1.9)
    assert harness.statuses("b-1")[-1] is S.CANCEL_PENDING
    harness.advance(0.5)
    assert harness.statuses("b-1")[-1] is S.OPEN
    assert "not confirmed within 2s" in harness.events("b-1")[-1].reason
    assert harness.statuses("b-2") == [S.REJECTED]
    reads = [t for name, t in harness.broker.calls if name == "order_status"]
    assert len(reads) >= 4  # every cancel_poll_s until the deadline
    assert any(a.kind == "cancel_unconfirmed" for a in harness.alerts())
    assert len(harness.sim_orders()) == 1


def test_cancelling_an_order_still_queued_withdraws_it(harness: Harness) -> None:
    harness.send(resting_buy("q-0"))
    harness.send(resting_buy("q-1"))  # waits for the next request slot
    harness.send(CancelIntent("q-1", "never mind", replace_with=resting_buy("q-2")))
    assert harness.statuses("q-1") == [S.SUBMITTING, S.CANCELLED]
    harness.advance(0.5)
    assert [o.price for o in harness.sim_orders()] == [99.0, 99.0]  # q-0 and q-2 only
    assert harness.statuses("q-2")[-1] is S.OPEN


def test_cancelling_a_split_order_cancels_every_child_before_replacing(
        harness: Harness) -> None:
    harness.send(resting_buy("big", quantity=1820))
    harness.advance(0.2)
    assert sorted(o.quantity for o in harness.sim_orders()) == [65, 1755]
    harness.send(CancelIntent("big", "reprice", replace_with=resting_buy("small")))
    harness.advance(0.5)
    assert harness.statuses("big")[-2:] == [S.CANCEL_PENDING, S.CANCELLED]
    assert sorted((o.quantity, o.status) for o in harness.sim_orders()) == [
        (65, "cancelled"), (65, "open"), (1755, "cancelled")]
    assert harness.statuses("small")[-1] is S.OPEN
    place_times = [t for name, t in harness.broker.calls if name == "place_order"]
    cancel_times = [t for name, t in harness.broker.calls if name == "cancel_order"]
    assert place_times[-1] > max(cancel_times)


# ---------------------------------------------------------------------------------------------
# Unknown placement outcomes
# ---------------------------------------------------------------------------------------------


def lose_reply(sim: SimulatedBroker, *, process: bool) -> Callable[..., str]:
    def place(**kw: Any) -> str:
        if process:
            sim.place_order(**kw)
        raise OutcomeUnknown("no reply, the request may have been processed",
                             endpoint="placeorder")

    return place


def test_a_lost_reply_is_adopted_from_the_orderbook_not_resent(harness: Harness) -> None:
    harness.broker.hooks["place_order"] = lose_reply(harness.sim, process=True)
    harness.send(intent("u-1"))
    assert harness.statuses("u-1") == [S.SUBMITTING, S.UNKNOWN]
    harness.broker.hooks.clear()
    harness.advance(1.0)
    assert harness.statuses("u-1") == [S.SUBMITTING, S.UNKNOWN, S.COMPLETE]
    assert len(harness.sim_orders()) == 1
    assert harness.broker.names().count("place_order") == 1
    assert [f.quantity for f in harness.fills()] == [65]
    stored = harness.db.order("u-1")
    assert stored is not None and stored.broker_order_id == harness.sim_orders()[0].orderid
    assert harness.sync()["counts"]["adopted"] == 1


def test_a_lost_order_is_resent_only_after_the_orderbook_shows_it_absent(
        harness: Harness) -> None:
    harness.broker.hooks["place_order"] = lose_reply(harness.sim, process=False)
    harness.send(intent("u-1"))
    harness.broker.hooks.clear()
    harness.advance(1.0)
    names = [n for n in harness.broker.names() if n in ("place_order", "orderbook")]
    assert names[:3] == ["place_order", "orderbook", "place_order"]
    assert len(harness.sim_orders()) == 1
    assert harness.statuses("u-1") == [S.SUBMITTING, S.UNKNOWN, S.SUBMITTING, S.OPEN,
                                       S.COMPLETE]


def test_resends_are_bounded_and_the_order_stays_watched(harness: Harness) -> None:
    harness.broker.hooks["place_order"] = lose_reply(harness.sim, process=False)
    harness.send(intent("u-1"))
    harness.advance(4.0)
    assert harness.broker.names().count("place_order") == 3  # 1 + resend_attempts
    assert harness.statuses("u-1")[-1] is S.UNKNOWN
    assert any(a.kind == "order_not_placed" and a.severity is Severity.CRITICAL
               for a in harness.alerts())
    harness.sim.place_order(strategy="s", symbol=CE, exchange="NFO", action="BUY",
                            quantity=65)  # it shows up late after all
    harness.advance(1.0)
    assert harness.statuses("u-1")[-1] is S.COMPLETE
    assert harness.broker.names().count("place_order") == 3


@pytest.mark.parametrize("reached_broker", [True, False])
def test_a_cancel_asked_while_the_outcome_is_unknown_waits_for_the_orderbook(
        harness: Harness, reached_broker: bool) -> None:
    harness.broker.hooks["place_order"] = lose_reply(harness.sim, process=reached_broker)
    harness.send(resting_buy("u-1"))
    harness.broker.hooks.clear()
    harness.send(CancelIntent("u-1", "reprice", replace_with=resting_buy("u-2")))
    assert harness.statuses("u-1")[-1] is S.UNKNOWN  # nothing to cancel yet
    assert "cancel_order" not in harness.broker.names()
    harness.advance(1.5)
    assert harness.statuses("u-1")[-1] is S.CANCELLED
    assert harness.statuses("u-2")[-1] is S.OPEN
    expected = [("cancelled", 99.0), ("open", 99.0)] if reached_broker else [("open", 99.0)]
    assert sorted((o.status, o.price) for o in harness.sim_orders()) == expected
    assert harness.broker.names().count("cancel_order") == (1 if reached_broker else 0)


def test_an_unreadable_orderbook_is_alerted_once_and_polling_goes_on(harness: Harness) -> None:
    def down() -> list[OrderRow]:
        raise BrokerUnavailable("connection refused", endpoint="orderbook")

    harness.send(resting_buy("p-1"))
    harness.broker.hooks["orderbook"] = down
    harness.advance(3.0)
    assert [a.kind for a in harness.alerts()].count("orderbook_unreadable") == 1
    assert harness.sync()["counts"]["poll_failures"] == 3
    harness.broker.hooks.clear()
    harness.listen(False)
    harness.market(98.9)
    harness.advance(1.0)
    assert [f.client_id for f in harness.fills()] == ["p-1"]


# ---------------------------------------------------------------------------------------------
# Restart
# ---------------------------------------------------------------------------------------------


def test_a_restart_resumes_working_orders_and_applies_each_fill_once(
        make: Callable[..., Harness]) -> None:
    h = make(matching=MatchingSettings(partial_fill_lots=1, broker="ideal"))
    h.send(resting_buy("w-1", quantity=130))
    h.market(98.9)
    h.sync()
    assert [f.cumulative_quantity for f in h.fills()] == [65]
    h.stop_manager()
    h.listen(False)  # nobody streams while the engine is down
    h.market(98.9)  # the rest fills meanwhile
    h.start_manager()
    assert h.sync()["working"][0]["client_id"] == "w-1"
    h.advance(1.0)
    assert [(f.quantity, f.cumulative_quantity) for f in h.fills()] == [(65, 65), (65, 130)]
    assert h.statuses("w-1")[-1] is S.COMPLETE
    h.stop_manager()
    h.start_manager()
    h.advance(2.0)
    assert len(h.fills()) == 2 and len(h.db.fills(client_id="w-1")) == 2
    assert h.sync()["working"] == []


def test_a_restart_resolves_orders_left_submitting(make: Callable[..., Harness]) -> None:
    h = make(start=False)
    sent, unsent = resting_buy("left-1"), replace(resting_buy("left-2"), price=98.0)
    big = intent("left-3", quantity=3900)
    child = replace(big, client_id="left-3.1", quantity=1755, parent_id="left-3")
    for stored in (sent, unsent, big, child):
        h.registry.ask("store", stored)  # stored, then the engine died before sending all
    h.clock.advance_to(T0 + 1)
    h.sim.place_order(strategy="s", symbol=CE, exchange="NFO", action="BUY", quantity=65,
                      pricetype="LIMIT", price=99.0)  # left-1 did leave
    h.sim.place_order(strategy="s", symbol=CE, exchange="NFO", action="BUY", quantity=1755)
    h.start_manager()
    h.advance(2.0)
    orders = h.sim_orders()
    assert sorted((o.quantity, o.price) for o in orders) == [
        (65, 98.0), (65, 99.0), (390, 0.0), (1755, 0.0), (1755, 0.0)]
    assert h.statuses("left-1")[-1] is S.OPEN
    assert h.statuses("left-2")[-1] is S.OPEN
    assert h.statuses("left-3")[-1] is S.COMPLETE
    assert h.events("left-3")[-1].filled_quantity == 3900
    assert h.broker.names().count("place_order") == 3  # left-2, left-3.2, left-3.3
    assert h.sync()["counts"]["adopted"] == 2


def test_a_cancel_pending_across_a_restart_is_verified_again(
        make: Callable[..., Harness]) -> None:
    h = make()
    h.broker.hooks["cancel_order"] = lambda **kw: kw["orderid"]  # it lands while we are down
    h.send(resting_buy("c-1"))
    h.send(resting_buy("c-2"))
    h.advance(0.2)
    h.send(CancelIntent("c-1", "cancel"))
    h.send(CancelIntent("c-2", "cancel"))
    h.advance(0.3)
    assert h.statuses("c-1")[-1] is S.CANCEL_PENDING
    assert h.statuses("c-2")[-1] is S.CANCEL_PENDING
    h.stop_manager()
    h.listen(False)
    first = h.sim_orders()[0].orderid
    h.sim.cancel_order(strategy="s", orderid=first)
    h.start_manager()
    h.advance(0.1)
    assert h.statuses("c-1")[-1] is S.CANCELLED  # confirmed by the status read
    assert h.statuses("c-2")[-1] is S.CANCEL_PENDING
    h.advance(2.5)  # c-2's cancel never took effect: given up, the order stays
    assert h.statuses("c-2")[-1] is S.OPEN
    assert h.db.order("c-2").status is S.OPEN  # type: ignore[union-attr]


def test_an_intent_already_stored_is_never_sent_again(make: Callable[..., Harness]) -> None:
    h = make()
    h.send(intent("once"))
    h.stop_manager()
    h.start_manager()
    h.send(intent("once"))  # a strategy repeating itself after a restart
    assert h.statuses("once")[-1] is S.REJECTED
    assert "already stored" in h.events("once")[-1].reason
    assert len(h.sim_orders()) == 1
    assert h.db.order("once").status is S.COMPLETE  # type: ignore[union-attr]


def test_status_reports_working_orders_requests_and_counts(harness: Harness) -> None:
    harness.send(resting_buy("st-1"))
    harness.send(BrokerOrderUpdate(orderid="nope", symbol=CE, exchange="NFO", action="BUY",
                                   quantity=65, status="open", filled_quantity=0,
                                   average_price=0.0, ts=T0))
    status = harness.sync()
    assert status["account"] == ACCOUNT
    [working] = status["working"]
    assert (working["client_id"], working["status"], working["price"]) == ("st-1", "open", 99.0)
    assert status["last_request"]["endpoint"] == "placeorder"
    assert status["last_order_id"] == working["broker_order_id"]
    assert status["counts"]["placed"] == 1 and status["reports"]["unmatched"] >= 1
    assert status["statuses"] == {"open": 1}


def test_timers_only_run_while_the_actor_lives(harness: Harness) -> None:
    harness.send(resting_buy("t-1"))
    polls = harness.sync()["counts"].get("polls", 0)
    harness.advance(1.0)
    assert harness.sync()["counts"]["polls"] == polls + 1
    done = threading.Event()
    harness.stop_manager()
    harness.clock.call_later(0, done.set)
    harness.clock.advance_to(harness.clock.time() + 5)
    assert done.is_set()
    assert harness.broker.names().count("orderbook") == 1


# ---------------------------------------------------------------------------------------------
# Fill prices come from the broker (issue 15): Zerodha's rows carry no fill fields
# ---------------------------------------------------------------------------------------------


def _zerodha_as_parsed(rows: list[OrderRow]) -> list[OrderRow]:
    """Rows as any client reads Zerodha's: no average price, no filled quantity (0 or None)."""
    return [replace(r, average_price=0.0, filled_quantity=0) for r in rows]


def _down(**kw: Any) -> Any:
    raise BrokerUnavailable("down", endpoint="test")


def test_a_market_fill_seen_first_by_the_poll_is_booked_at_the_tradebook_price(
        make: Callable[..., Harness]) -> None:
    """A completed MARKET row without ``average_price``: nothing is booked (no P&L from a
    guess) until the tradebook can be read, then the fill is booked at its price."""
    h = make(matching=MatchingSettings(broker="zerodha"))
    h.listen(False)  # no order-update stream: only the poll can see the fill
    h.broker.hooks["order_status"] = _down
    h.broker.hooks["orderbook"] = lambda: _zerodha_as_parsed(h.sim.orderbook())
    h.broker.hooks["tradebook"] = _down
    h.send(intent("m-1"))
    h.advance(2.5)
    assert h.sim_orders()[0].status == "complete"
    assert h.fills() == [] and not [m for m in h.positions if isinstance(m, Fill)]
    assert S.COMPLETE not in h.statuses("m-1")
    del h.broker.hooks["tradebook"]
    h.advance(1.0)
    [trade] = h.sim.tradebook()
    assert trade.average_price == 100.05  # bought at the ask
    assert [(f.quantity, f.price) for f in h.fills()] == [(65, trade.average_price)]
    assert h.statuses("m-1")[-1] is S.COMPLETE
    assert [f.price for f in h.db.fills(client_id="m-1")] == [100.05]


def test_a_fill_found_by_the_poll_is_dated_when_the_orderbook_read_returned(
        make: Callable[..., Harness]) -> None:
    """The engine knows a fill the poll finds only once the orderbook read has returned: its
    time (what the stop's latency is measured from) is not the time the read was sent."""
    h = make()
    h.listen(False)
    h.broker.hooks["order_status"] = _down
    returned: list[float] = []

    def slow_orderbook() -> list[OrderRow]:
        rows = h.sim.orderbook()
        h.clock.advance_to(h.clock.time() + 0.4)  # the read took 0.4 s
        returned.append(h.clock.time())
        return rows

    h.broker.hooks["orderbook"] = slow_orderbook
    h.send(intent("m-1"))
    h.advance(2.0)
    [fill] = h.fills()
    assert fill.ts in returned


def test_a_cancel_pending_carried_over_as_complete_books_no_fill(
        make: Callable[..., Harness]) -> None:
    """Zerodha's transform gives a CANCEL PENDING row the previous row's status: here
    ``complete``. No phantom fill (so no stop would be placed), and the order ends cancelled."""
    h = make(matching=MatchingSettings(broker="zerodha"))
    h.listen(False)
    h.broker.hooks["orderbook"] = lambda: _zerodha_as_parsed(h.sim.orderbook())
    h.broker.hooks["order_status"] = \
        lambda **kw: _zerodha_as_parsed([h.sim.order_status(**kw)])[0]
    h.send(intent("done-1"))  # a completed order: the row above ours
    h.advance(0.5)
    h.send(resting_buy("e-1"))
    h.advance(0.5)
    h.send(CancelIntent("e-1", "cancel"))
    h.advance(0.2)
    raw = {r.orderid: r.status for r in h.sim.raw_orderbook()}
    shown = {r.orderid: r.status for r in h.sim.orderbook()}
    entry = h.sim_orders()[1].orderid
    assert (raw[entry], shown[entry]) == ("cancel pending", "complete")
    h.advance(2.0)
    assert [f.client_id for f in h.fills()] == ["done-1"]
    assert S.COMPLETE not in h.statuses("e-1")
    assert h.statuses("e-1")[-1] is S.CANCELLED


def test_a_semi_auto_reply_closes_the_gate_and_is_never_nothing_to_do(
        make: Callable[..., Harness]) -> None:
    h = make()

    def queued(**kw: Any) -> str:
        raise SemiAutoMode("order queued for approval in the Action Center",
                           endpoint="placeorder", status=200)

    h.broker.hooks["place_order"] = queued
    h.send(intent("q-1"))
    h.send(intent("q-2", purpose=OrderPurpose.EXIT, action=Action.SELL))
    assert h.statuses("q-1")[-1] is S.REJECTED
    assert "Action Center" in h.events("q-1")[-1].reason
    assert h.statuses("q-2")[-1] is S.REJECTED  # not sent: the gate is closed for exits too
    assert h.broker.names().count("place_order") == 1
    assert [a.kind for a in h.alerts()].count("semi_auto_mode") == 1
