"""The StrategyHost actor with real threads, a real registry and a real SQLite store: client
ids, the trading gate, pause/resume, fills applied once, persistence and restore."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.store import StoreWriter
from actors.strategy_host import StrategyHost, UnknownOrder, client_id, order_rows_prefix
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    Alert,
    Bar,
    CancelIntent,
    Command,
    Fill,
    LoadState,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    Ping,
    PriceType,
    StatusRequest,
    TimerFired,
    TradingGate,
)
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.store.database import Database, StoredOrder, StoredStrategyState, StoreSettings, record
from strategies.base import Strategy, StrategyContext
from tests.support import Collector

T0 = ist_epoch(2025, 1, 30, 9, 30)
DAY = date(2025, 1, 30)
CE = "NIFTY30JAN2524000CE"
NAME = "strategy.probe"


class Probe(Strategy):
    """Records its hooks; places orders when told by a ``place`` command."""

    name = "probe"

    def __init__(self, ctx: StrategyContext, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self.seen: list[tuple[Any, ...]] = []
        self.state: dict[str, Any] = {"count": 0}
        self.placed: list[str] = []

    def snapshot(self) -> dict[str, Any]:
        return self.state  # its live state: the host must not be fooled by in-place changes

    def restore(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)

    def status(self) -> dict[str, Any]:
        return {"count": self.state["count"]}

    def on_bar(self, bar: Bar) -> None:
        self.seen.append(("bar", bar.symbol))

    def on_order_event(self, event: OrderEvent) -> None:
        self.seen.append(("event", event.client_id, event.status))

    def on_fill(self, fill: Fill) -> None:
        self.seen.append(("fill", fill.client_id, fill.quantity))

    def on_timer(self, timer: TimerFired) -> None:
        self.seen.append(("timer", timer.name, self.ctx.now()))

    def on_command(self, name: str, args: Mapping[str, Any]) -> None:
        self.seen.append(("command", name))
        if name == "place":
            self.state["count"] += 1
            self.placed.append(self.ctx.place(
                symbol=CE, exchange="NFO", action=Action.SELL, quantity=65,
                pricetype=PriceType.SL, price=197.0, trigger_price=199.95,
                purpose=OrderPurpose(args.get("purpose", "entry"))))
        elif name == "replace":
            self.placed.append(self.ctx.replace(args["id"], reason="move", trigger_price=189.95,
                                                price=186.95))
        elif name == "cancel":
            self.ctx.cancel(args["id"], "why not")
        elif name == "timer":
            self.ctx.schedule_at(args["at"], "wake")
        elif name == "every":
            self.ctx.schedule_every(args["interval"], "tick", first=args["first"])
        elif name == "trade":
            self.ctx.record_trade(symbol=CE, action=Action.SELL, quantity=65, entry_ts=T0,
                                  entry_price=200.0, exit_ts=T0 + 60, exit_price=190.0,
                                  pnl=650.0, r=0.1, exit_reason="test")
        elif name == "alert":
            self.ctx.alert("probe", "hello")
        elif name == "note":
            self.state.setdefault("notes", []).append(args["text"])
        elif name == "place_then_fail":
            self.on_command("place", {})
            raise RuntimeError("a bug after placing")


class CachedProbe(Probe):
    """A strategy that caches its snapshot (``snapshot_cached``): the same object until a change,
    and a new one after it, as baseline_v1 does."""

    snapshot_cached = True

    def __init__(self, ctx: StrategyContext, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self._snap: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        if self._snap is None:
            self._snap = copy.deepcopy(self.state)
        return self._snap

    def on_command(self, name: str, args: Mapping[str, Any]) -> None:
        super().on_command(name, args)
        self._snap = None


class CountedProbe(Probe):
    """A strategy that counts its changes (``state_version``) and how often its snapshot is
    built."""

    def __init__(self, ctx: StrategyContext, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self.state_version = 0
        self.built = 0

    def snapshot(self) -> dict[str, Any]:
        self.built += 1
        return copy.deepcopy(self.state)

    def on_command(self, name: str, args: Mapping[str, Any]) -> None:
        super().on_command(name, args)
        self.state_version += 1


class World:
    def __init__(self, path: Path) -> None:
        self.clock = VirtualClock(T0)
        self.registry = Registry(self.clock)
        self.db = Database(path, StoreSettings(flush_interval_s=60.0))
        self.refs: list[pykka.ActorRef[Any]] = []
        self.sent: list[Any] = []
        self.alerts: list[Any] = []
        self._start("store", StoreWriter.start(self.db, name="store", clock=self.clock))
        self._start("orders", Collector.start(self.sent, name="orders",
                                              registry=self.registry, clock=self.clock))
        self._start("health", Collector.start(self.alerts, name="health",
                                              registry=self.registry, clock=self.clock))
        self.probes: list[Probe] = []

    def _start(self, name: str, ref: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
        self.registry.declare(name)
        self.registry.register(name, ref)
        self.refs.append(ref)
        return ref

    def host(self, *, load: bool = True, kind: type[Probe] = Probe,
             journal: bool = False) -> pykka.ActorRef[Any]:
        def factory(ctx: StrategyContext) -> Strategy:
            probe = kind(ctx)
            self.probes.append(probe)
            return probe

        def read_journal(strategy: str, day: date) -> tuple[list[StoredOrder], list[Fill]]:
            return (self.db.orders(trading_date=day, strategy=strategy, account="acct"),
                    self.db.fills(strategy=strategy, account="acct", trading_date=day))

        ref = StrategyHost.start(strategy_factory=factory, strategy_name="probe",
                                 account="acct", instrument=InstrumentSpec(),
                                 load_state=self.db.strategy_state if load else None,
                                 load_states=self.db.strategy_states if load else None,
                                 journal=read_journal if journal else None,
                                 name=NAME, registry=self.registry, clock=self.clock)
        return self._start(NAME, ref)

    @property
    def probe(self) -> Probe:
        return self.probes[-1]

    def tell(self, message: Any) -> None:
        self.registry.tell(NAME, message)

    def sync(self) -> None:
        """Everything sent so far is handled (host twice: it may tell itself), store too."""
        for _ in range(2):
            self.registry.ask(NAME, Ping(0), timeout=10)
        for name in ("orders", "health", "store"):
            self.registry.ask(name, Ping(0), timeout=10)

    def command(self, name: str, **args: Any) -> None:
        self.tell(Command(name, tuple(args.items())))
        self.sync()

    def intents(self) -> list[OrderIntent]:
        return [m for m in self.sent if isinstance(m, OrderIntent)]

    def stop_host(self) -> None:
        ref = self.registry.ref(NAME)
        assert ref is not None
        self.registry.suspend(NAME, ref)
        ref.stop(timeout=10)

    def close(self) -> None:
        for ref in reversed(self.refs):
            if ref.is_alive():
                ref.stop(timeout=10)
        self.db.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "engine.db")
    yield w
    w.close()


def test_client_ids_are_deterministic_and_intents_go_to_the_order_manager(world: World) -> None:
    world.host()
    world.tell(TradingGate(entries=True))
    for _ in range(3):
        world.command("place")
    assert world.probe.placed == [f"probe-250130-0000{n}" for n in (1, 2, 3)]
    first = world.intents()[0]
    assert first == OrderIntent(
        client_id="probe-250130-00001", strategy="probe", account="acct", symbol=CE,
        exchange="NFO", action=Action.SELL, quantity=65, pricetype=PriceType.SL, price=197.0,
        trigger_price=199.95, purpose=OrderPurpose.ENTRY, created_ts=T0)
    assert client_id("x", DAY, 42) == "x-250130-00042"


def test_entries_wait_for_the_gate_but_stops_do_not(world: World) -> None:
    world.host()
    world.command("place")  # an entry before startup reconciliation: not sent
    world.command("place", purpose="stop")
    assert [i.purpose for i in world.intents()] == [OrderPurpose.STOP]
    assert ("event", "probe-250130-00001", OrderStatus.REJECTED) in world.probe.seen
    world.tell(TradingGate(entries=True, strategy="someone_else"))
    world.command("place")
    assert len(world.intents()) == 1
    world.tell(TradingGate(entries=True, strategy="probe"))
    world.command("place")
    assert [i.client_id for i in world.intents()] == ["probe-250130-00002",
                                                      "probe-250130-00004"]


def test_pause_and_resume(world: World) -> None:
    world.host()
    world.tell(TradingGate(entries=True))
    world.command("pause")
    world.command("place")
    assert world.intents() == []
    status = world.registry.ask(NAME, StatusRequest(), timeout=10)
    assert status["paused"] is True and status["can_trade"] is False
    world.command("resume")
    world.command("place")
    assert len(world.intents()) == 1
    assert ("command", "pause") in world.probe.seen and ("command", "resume") in world.probe.seen


def test_views_follow_events_and_each_fill_applies_once(world: World) -> None:
    world.host()
    world.tell(TradingGate(entries=True))
    world.command("place")
    cid = world.probe.placed[0]
    world.tell(OrderEvent(cid, OrderStatus.TRIGGER_PENDING, T0, "probe", "acct", CE,
                          broker_order_id="B1"))
    fill = Fill(cid, "B1", "probe", "acct", CE, "NFO", Action.SELL, 65, 199.9, 65, T0 + 1)
    world.tell(fill)
    world.tell(fill)  # the same fill reported twice
    world.tell(OrderEvent(cid, OrderStatus.COMPLETE, T0 + 1, "probe", "acct", CE,
                          filled_quantity=65, average_price=199.9))
    world.sync()
    ctx = world.probe.ctx
    assert ctx.positions() == {CE: -65}
    assert [s for s in world.probe.seen if s[0] == "fill"] == [("fill", cid, 65)]
    view = ctx.orders(working_only=False)[cid]
    assert (view.status, view.filled_quantity, view.average_price, view.broker_order_id) == (
        OrderStatus.COMPLETE, 65, 199.9, "B1")
    assert ctx.orders() == {}


def test_replace_and_cancel_send_cancel_intents(world: World) -> None:
    world.host()
    world.tell(TradingGate(entries=True))
    world.command("place")
    old = world.probe.placed[0]
    world.command("replace", id=old)
    world.command("cancel", id=old)
    replace_msg, cancel_msg = [m for m in world.sent if isinstance(m, CancelIntent)]
    assert replace_msg.client_id == old and replace_msg.replace_with is not None
    new = replace_msg.replace_with
    assert new.client_id == "probe-250130-00002" == world.probe.placed[1]
    assert (new.trigger_price, new.price, new.symbol, new.quantity) == (189.95, 186.95, CE, 65)
    assert cancel_msg == CancelIntent(old, "why not")
    with pytest.raises(UnknownOrder):
        world.registry.ask(NAME, Command("cancel", (("id", "nope"),)), timeout=10)


@pytest.mark.parametrize("kind", [Probe, CountedProbe])
def test_state_is_persisted_and_restored_on_the_same_day(world: World, kind: type[Probe]) -> None:
    world.host(kind=kind)
    world.tell(TradingGate(entries=True))
    world.command("place")
    world.command("place", purpose="stop")
    cid = world.probe.placed[0]
    world.tell(Fill(cid, "B1", "probe", "acct", CE, "NFO", Action.SELL, 65, 199.9, 65, T0))
    world.command("pause")
    stored = world.db.strategy_state(NAME)
    assert stored is not None and stored.state["seq"] == 2
    world.stop_host()

    world.clock.advance_to(T0 + 3600)
    world.host(kind=kind)
    world.sync()
    status = world.registry.ask(NAME, StatusRequest(), timeout=10)
    assert status["paused"] is True and status["gate_open"] is False  # the gate: fail-closed
    assert status["positions"] == {CE: -65} and status["detail"] == {"count": 2}
    assert world.probe.state == {"count": 2}
    world.command("resume")
    world.tell(TradingGate(entries=True))
    world.command("place")
    assert world.probe.placed[-1] == "probe-250130-00003"  # the sequence continues
    # the fill applied before the restart is not applied again
    world.tell(Fill(cid, "B1", "probe", "acct", CE, "NFO", Action.SELL, 65, 199.9, 65, T0))
    world.sync()
    assert world.probe.ctx.positions() == {CE: -65}


def test_each_order_is_a_row_of_its_own_and_only_a_changed_one_is_written_again(
        world: World) -> None:
    """Issue 21: the state grows with the day's orders, so each order is its own state row
    and a write carries only the orders that changed; the state row holds no orders. A
    restart reads them back."""
    world.host()
    world.tell(TradingGate(entries=True))
    for _ in range(3):
        world.command("place")
    prefix = order_rows_prefix("probe", date(2025, 1, 30))
    rows = {r.name: r for r in world.db.strategy_states(prefix)}
    assert sorted(rows) == [prefix + cid for cid in world.probe.placed]
    main = world.db.strategy_state(NAME)
    assert main is not None and main.version == 2 and "orders" not in main.state
    placed = list(world.probe.placed)
    second = placed[1]
    world.clock.advance_to(T0 + 5)
    world.tell(OrderEvent(second, OrderStatus.OPEN, T0 + 5, "probe", "acct", CE, "B2"))
    world.sync()
    after = {r.name: r for r in world.db.strategy_states(prefix)}
    changed = sorted(n for n in after if after[n].updated_ts != rows[n].updated_ts)
    assert changed == [prefix + second]
    assert after[prefix + second].state["status"] == "open"
    world.stop_host()

    world.host()
    world.sync()
    views = world.probe.ctx.orders(working_only=False)
    assert sorted(views) == placed
    assert views[second].status is OrderStatus.OPEN and views[second].broker_order_id == "B2"
    world.command("place")
    assert world.probe.placed[-1] == "probe-250130-00004"


def test_a_version_1_state_with_its_orders_inside_is_still_restored(world: World) -> None:
    """A day begun before the upgrade: the orders are read from inside the state row."""
    cid = client_id("probe", date(2025, 1, 30), 1)
    order = {"client_id": cid, "strategy": "probe", "account": "acct", "symbol": CE,
             "exchange": "NFO", "action": "SELL", "quantity": 65, "pricetype": "SL",
             "product": "MIS", "price": 197.0, "trigger_price": 199.95, "purpose": "entry",
             "created_ts": T0, "parent_id": None, "reason": "", "status": "open",
             "filled_quantity": 0, "average_price": 0.0, "broker_order_id": "B1"}
    state = {"day": "2025-01-30", "seq": 1, "paused": False, "orders": [order],
             "positions": {}, "fill_keys": [], "strategy": {"count": 1}}
    world.registry.ask("store", record(StoredStrategyState(NAME, 1, state, T0)), timeout=10)
    world.host()
    world.sync()
    views = world.probe.ctx.orders(working_only=False)
    assert list(views) == [cid] and views[cid].status is OrderStatus.OPEN


def test_in_place_changes_of_the_strategy_state_are_persisted(world: World) -> None:
    world.host()
    world.command("note", text="a")
    world.command("note", text="b")
    world.clock.advance_to(T0 + 61)
    world.tell(Bar(CE, T0, 100.0, 101.0, 99.0, 100.5, 650, 3, 100.2))  # a new minute: saved
    world.sync()
    world.clock.advance_to(T0 + 130)  # the store's flush timer: batched rows are written
    world.registry.ask("store", Ping(0), timeout=10)
    stored = world.db.strategy_state(NAME)
    assert stored is not None and stored.state["strategy"]["notes"] == ["a", "b"]


@pytest.mark.parametrize("kind", [Probe, CachedProbe, CountedProbe])
def test_a_snapshot_only_change_is_persisted_once_a_minute_and_on_stop(
        world: World, kind: type[Probe]) -> None:
    world.host(kind=kind)
    world.command("note", text="a")  # the first change of a minute is written at once
    world.clock.advance_to(T0 + 30)
    world.command("note", text="b")  # the second waits for the next minute
    world.clock.advance_to(T0 + 59)
    stored = world.registry.ask("store", LoadState(NAME), timeout=10)  # buffered rows too
    assert stored is not None and stored.state["strategy"]["notes"] == ["a"]
    world.clock.advance_to(T0 + 61)
    world.tell(Bar(CE, T0, 100.0, 101.0, 99.0, 100.5, 650, 3, 100.2))  # changes nothing
    world.sync()
    world.clock.advance_to(T0 + 130)  # flushed
    world.registry.ask("store", Ping(0), timeout=10)
    stored = world.db.strategy_state(NAME)
    assert stored is not None and stored.state["strategy"]["notes"] == ["a", "b"]
    assert stored.updated_ts == T0 + 61
    world.command("note", text="c")  # written at once (first change of the minute)
    world.command("note", text="d")  # pending ...
    ref = world.registry.ref(NAME)
    assert ref is not None
    ref.stop(timeout=10)  # ... and written on stop (as its supervisor stops it)
    world.clock.advance_to(T0 + 200)
    world.registry.ask("store", Ping(0), timeout=10)
    stored = world.db.strategy_state(NAME)
    assert stored is not None and stored.state["strategy"]["notes"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("kind", [CachedProbe, CountedProbe])
def test_a_cached_snapshot_is_persisted_on_change_and_not_after_other_messages(
        world: World, kind: type[Probe]) -> None:
    world.host(kind=kind)
    world.command("note", text="a")
    world.clock.advance_to(T0 + 61)  # flushed
    world.registry.ask("store", Ping(0), timeout=10)
    stored = world.db.strategy_state(NAME)
    assert stored is not None and stored.state["strategy"]["notes"] == ["a"]
    assert stored.updated_ts == T0
    world.tell(Bar(CE, T0 + 60, 100.0, 101.0, 99.0, 100.5, 650, 3, 100.2))  # changes nothing
    world.sync()
    world.clock.advance_to(T0 + 130)  # flushed again
    world.registry.ask("store", Ping(0), timeout=10)
    assert world.db.strategy_state(NAME) == stored


def test_a_counted_strategy_s_snapshot_is_built_only_when_it_is_written(world: World) -> None:
    """With ``state_version`` the host reads the counter after a hook, not the snapshot: it
    builds one only to write it (the first change of a minute, the next minute, stop)."""
    world.host(kind=CountedProbe)
    probe = world.probe
    assert isinstance(probe, CountedProbe)
    world.command("note", text="a")  # the first change of the minute: written (built once)
    for n in range(20):  # changes nothing
        world.tell(Bar(CE, T0 + n, 100.0, 101.0, 99.0, 100.5, 650, 3, 100.2))
    world.command("note", text="b")  # waits for the next minute
    world.sync()
    assert probe.built == 1
    world.clock.advance_to(T0 + 61)
    world.tell(Bar(CE, T0 + 60, 100.0, 101.0, 99.0, 100.5, 650, 3, 100.2))  # written now
    world.sync()
    assert probe.built == 2
    world.clock.advance_to(T0 + 130)  # flushed
    world.registry.ask("store", Ping(0), timeout=10)
    stored = world.db.strategy_state(NAME)
    assert stored is not None and stored.state["strategy"]["notes"] == ["a", "b"]
    world.stop_host()  # nothing new: not built again
    assert probe.built == 2


def test_state_of_an_earlier_day_is_ignored(world: World) -> None:
    world.registry.tell("store", record(StoredStrategyState(
        name=NAME, version=1, updated_ts=T0 - 86_400, state={
            "day": "2025-01-29", "seq": 9, "paused": True, "orders": [], "positions": {},
            "fill_keys": [], "strategy": {"count": 7, "day_over": True}})))
    world.registry.ask("store", Ping(0), timeout=10)
    world.host()
    world.tell(TradingGate(entries=True))
    world.command("place")
    assert world.probe.placed == ["probe-250130-00001"]
    assert world.probe.state["count"] == 1


def test_unreadable_state_stops_the_host_from_starting(world: World, log_capture: Any) -> None:
    world.registry.tell("store", record(StoredStrategyState(
        name=NAME, version=1, updated_ts=T0, state={"day": "2025-01-30", "seq": "x"})))
    world.registry.ask("store", Ping(0), timeout=10)
    ref = world.host()
    assert ref.actor_stopped.wait(10)
    assert "StrategyStateError" in log_capture.getvalue()


def test_a_hook_failing_after_place_never_reuses_a_client_id(world: World) -> None:
    """Nothing is committed before the intent leaves: the order manager's intent row is the
    record of the id, and a restarted host continues past every id in that journal."""
    ref = world.host(journal=True)
    world.tell(TradingGate(entries=True))
    world.command("place")
    world.tell(Command("place_then_fail"))
    assert ref.actor_stopped.wait(10)
    world.registry.ask("orders", Ping(0), timeout=10)
    for intent in world.intents():  # as the order manager does: committed before it is sent
        world.registry.ask("store", intent, timeout=10)
    world.host(journal=True)
    world.tell(TradingGate(entries=True))
    world.command("place")
    assert [i.client_id for i in world.intents()] == [
        "probe-250130-00001", "probe-250130-00002", "probe-250130-00003"]
    status = world.registry.ask(NAME, StatusRequest(), timeout=10)
    assert status["orders_today"] == 3


def test_trades_alerts_and_timers(world: World) -> None:
    world.host()
    world.command("trade")
    world.command("alert")
    due = T0 + 30.25
    world.command("timer", at=due)
    world.clock.advance_to(T0 + 100)  # the host sees the timer's due time, not the clock's
    world.sync()
    assert ("timer", "wake", due) in world.probe.seen
    [trade] = world.db.trades(strategy="probe", trading_date=DAY)
    assert (trade.symbol, trade.quantity, trade.pnl, trade.r_multiple, trade.account) == (
        CE, 65, 650.0, 0.1, "acct")
    [alert] = [a for a in world.alerts if isinstance(a, Alert)]
    assert alert.kind == "probe" and "probe: hello" in alert.message


def test_periodic_timers_keep_their_due_times_when_the_clock_jumps(world: World) -> None:
    world.host()
    world.command("every", interval=1.0, first=T0 + 0.5)
    world.clock.advance_to(T0 + 3.0)  # one jump over three due times
    world.sync()
    assert [s[2] for s in world.probe.seen if s[:2] == ("timer", "tick")] == [
        T0 + 0.5, T0 + 1.5, T0 + 2.5]


def test_bars_reach_the_strategy_in_order(world: World) -> None:
    world.host()
    for k in range(5):
        world.tell(Bar(f"S{k}", T0, 1, 2, 1, 2, 10, 1, 1.5))
    world.sync()
    assert [s[1] for s in world.probe.seen if s[0] == "bar"] == [f"S{k}" for k in range(5)]


def test_a_kill_between_the_intent_and_the_state_never_reuses_an_id(world: World) -> None:
    """The intent is committed by the order manager, the host's state after it (``soon``): a
    kill in between leaves a journal order the saved state does not know. The restarted host
    adopts it and continues past its id."""
    world.host(journal=True)
    world.tell(TradingGate(entries=True))
    world.command("place")
    world.stop_host()
    lost = OrderIntent(client_id="probe-250130-00002", strategy="probe", account="acct",
                       symbol=CE, exchange="NFO", action=Action.SELL, quantity=65,
                       pricetype=PriceType.SL, price=197.0, trigger_price=199.95,
                       created_ts=T0)
    world.registry.ask("store", lost, timeout=10)  # committed; the state never heard of it
    world.host(journal=True)
    world.tell(TradingGate(entries=True))
    world.command("place")
    assert world.intents()[-1].client_id == "probe-250130-00003"
    status = world.registry.ask(NAME, StatusRequest(), timeout=10)
    assert status["orders_today"] == 3
