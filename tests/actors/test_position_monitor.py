"""The PositionMonitor actor on a virtual clock, with real actor threads, a real store writer and
SQLite in tmp_path, and the in-process SimulatedBroker for the quotes fallback: fills (open, add,
reduce, close, flip) with exact P&L, apply-once, feed subscriptions, bad prices, staleness and the
rate-limited quotes fallback, freshness in StrategyPnl, batched store flushes, corrections,
restart recovery, and the trading-day scope of P&L."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.position_monitor import PositionMonitor, PositionSettings, _Position
from actors.store import FLUSH_TIMER, StoreWriter
from engine.broker import BrokerUnavailable, Quote
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    Alert,
    Crash,
    Fill,
    HealthUpdate,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    Ping,
    PositionCorrection,
    PositionMark,
    PositionQuery,
    PositionRisk,
    PriceType,
    Severity,
    StatusRequest,
    StrategyPnl,
    SubscriptionChange,
    Tick,
    TickBatch,
    TimerFired,
)
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.sim.matching import SimulatedBroker
from engine.store.database import Database, StoreSettings
from engine.trading.pending import outstanding
from tests.support import Collector, until

T0 = ist_epoch(2025, 1, 30, 9, 20)
DAY = date(2025, 1, 30)
CE = "NIFTY30JAN2524000CE"
PE = "NIFTY30JAN2524000PE"
CE2 = "NIFTY30JAN2524100CE"
PE2 = "NIFTY30JAN2524100PE"
ACCOUNT = "acct"
R_UNIT = 650.0
SINKS = ("feed", "risk", "strategy.s", "strategy.t", "health")


class QuoteSpy:
    """The simulated broker's ``quotes``, recording each call (symbol, engine time); ``fail``
    makes every call raise ``BrokerUnavailable``."""

    def __init__(self, sim: SimulatedBroker) -> None:
        self.sim = sim
        self.account = sim.account
        self.calls: list[tuple[str, float]] = []
        self.fail = False

    def quotes(self, *, symbol: str, exchange: str) -> Quote:
        self.calls.append((symbol, self.sim.clock.time()))
        if self.fail:
            raise BrokerUnavailable("connection refused", endpoint="quotes")
        return self.sim.quotes(symbol=symbol, exchange=exchange)


class Harness:
    """Virtual clock, registry, a real store (or a collector standing in for it), collectors for
    the feed, risk, two strategies and health, a simulated broker for quotes, and the monitor."""

    def __init__(self, tmp_path: Path, *, settings: PositionSettings | None = None,
                 start: float = T0, store_collector: bool = False,
                 with_broker: bool = True, r_unit: str = "fixed") -> None:
        self.clock = VirtualClock(start)
        self.registry = Registry(self.clock)
        self.db = Database(tmp_path / "engine.db", StoreSettings(flush_interval_s=60.0))
        self.sim = SimulatedBroker(self.clock, InstrumentSpec(), account="sim")
        for sym in (CE, PE, CE2, PE2):
            self.sim.declare_symbol(sym, "NFO")
        self.broker = QuoteSpy(self.sim)
        self.with_broker = with_broker
        self.settings = settings or PositionSettings()
        self.r_unit = r_unit
        self.got: dict[str, list[Any]] = {name: [] for name in SINKS}
        self.refs: list[pykka.ActorRef[Any]] = []
        self.store_collector = store_collector
        if store_collector:
            self.got["store"] = []
            self._register("store", Collector.start(self.got["store"], name="store",
                                                    registry=self.registry, clock=self.clock))
        else:
            self._register("store", StoreWriter.start(self.db, name="store",
                                                      registry=self.registry, clock=self.clock))
        for name in SINKS:
            self._register(name, Collector.start(self.got[name], name=name,
                                                 registry=self.registry, clock=self.clock))
        self.monitor: pykka.ActorRef[Any] | None = None
        self._keys = itertools.count(1)
        self.start_monitor()

    def _register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        self.registry.register(name, ref)
        self.refs.append(ref)

    def start_monitor(self) -> None:
        self.registry.declare("positions")
        self.monitor = PositionMonitor.start(
            account=ACCOUNT, settings=self.settings,
            broker=self.broker if self.with_broker else None, db=self.db,
            r_units={"s": R_UNIT}, r_unit=self.r_unit, exchanges={}, registry=self.registry,
            clock=self.clock)
        self.registry.register("positions", self.monitor)
        self.sync()

    def stop_monitor(self) -> None:
        assert self.monitor is not None
        self.monitor.stop()
        self.monitor = None

    def crash_monitor(self) -> None:
        """Fault injection: the monitor dies on a ``Crash`` (nothing flushed on the way out)."""
        assert self.monitor is not None
        monitor, self.monitor = self.monitor, None
        self.registry.tell("positions", Crash("test: the position monitor alone"))
        until(lambda: not monitor.is_alive())

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        for ref in reversed(self.refs):
            ref.stop()
        self.db.close()

    # -- driving ---------------------------------------------------------------------------------
    def fill(self, action: Action, quantity: int, price: float, *, symbol: str = CE,
             strategy: str = "s", order: str | None = None, cumulative: int | None = None,
             ts: float | None = None, account: str = ACCOUNT) -> Fill:
        """A fill stored as the order manager stores it (committed), then told to the monitor."""
        n = next(self._keys)
        fill = Fill(client_id=f"{strategy}-{n}", broker_order_id=order or f"B{n}",
                    strategy=strategy, account=account, symbol=symbol, exchange="NFO",
                    action=action, quantity=quantity, price=price,
                    cumulative_quantity=cumulative or quantity,
                    ts=self.clock.time() if ts is None else ts)
        if not self.store_collector and account == ACCOUNT:
            self.registry.ask("store", OrderIntent(
                client_id=fill.client_id, strategy=strategy, account=account, symbol=symbol,
                exchange="NFO", action=action, quantity=quantity, pricetype=PriceType.MARKET,
                created_ts=fill.ts), timeout=10)
            self.registry.ask("store", fill, timeout=10)
        self.send(fill)
        return fill

    def tick(self, *prices: tuple[str, float]) -> None:
        now = self.clock.time()
        self.send(TickBatch(tuple(Tick(sym, "NFO", ltp, recv_ts=now) for sym, ltp in prices)))

    def market(self, symbol: str, ltp: float) -> None:
        """Move the simulated broker's market (what ``quotes`` answers), not the monitor's."""
        now = self.clock.time()
        self.sim.on_tick(Tick(symbol, "NFO", ltp, recv_ts=now, exchange_ts=now))

    def send(self, message: Any) -> None:
        self.registry.tell("positions", message)
        self.sync()

    def ask(self, message: Any) -> Any:
        return self.registry.ask("positions", message, timeout=10)

    def sync(self) -> dict[str, Any]:
        """The monitor's status once it handled everything told before, and once every sink
        took what it was sent."""
        status = self.ask(StatusRequest())
        for name in (*SINKS, "store"):
            self.registry.ask(name, Ping(0), timeout=10)
        return status

    def store_writes_buffered(self) -> None:
        """The store writes what it holds (its flush timer, as if it fired now)."""
        self.registry.ask("store", TimerFired(FLUSH_TIMER, self.clock.time()), timeout=10)

    def advance(self, seconds: float, step: float = 0.25) -> None:
        end = self.clock.time() + seconds
        while self.clock.time() < end - 1e-9:
            self.clock.advance_to(min(end, self.clock.time() + step))
            self.sync()

    # -- observing -------------------------------------------------------------------------------
    def pnls(self, strategy: str = "s") -> list[StrategyPnl]:
        return [m for m in list(self.got["risk"])
                if isinstance(m, StrategyPnl) and m.strategy == strategy]

    def marks(self, strategy: str = "s") -> list[PositionMark]:
        return [m for m in list(self.got[f"strategy.{strategy}"]) if isinstance(m, PositionMark)]

    def subscriptions(self) -> list[SubscriptionChange]:
        return [m for m in list(self.got["feed"]) if isinstance(m, SubscriptionChange)]

    def alerts(self) -> list[Alert]:
        return [m for m in list(self.got["health"]) if isinstance(m, Alert)]

    def query(self, **kw: Any) -> dict[tuple[str, str], PositionMark]:
        return {(m.strategy, m.symbol): m for m in self.ask(PositionQuery(**kw))}

    def status(self) -> dict[str, Any]:
        return self.sync()


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


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    return make()


# ---------------------------------------------------------------------------------------------
# Fills: quantity, average price and realized P&L
# ---------------------------------------------------------------------------------------------


def test_open_add_reduce_close_with_exact_pnl(h: Harness) -> None:
    h.fill(Action.BUY, 65, 100.0)
    h.fill(Action.BUY, 65, 110.0)
    [pos] = h.query().values()
    assert (pos.quantity, pos.average_price, pos.realized) == (130, 105.0, 0.0)

    h.fill(Action.SELL, 65, 120.0)  # (120 - 105) x 65
    pos = h.query()[("s", CE)]
    assert (pos.quantity, pos.average_price, pos.realized) == (65, 105.0, 975.0)

    h.fill(Action.SELL, 65, 100.0)  # (100 - 105) x 65 = -325
    assert h.query() == {}
    flat = h.query(include_flat=True)[("s", CE)]
    assert (flat.quantity, flat.average_price, flat.realized) == (0, 0.0, 650.0)
    assert flat.r_multiple == pytest.approx(650.0 / R_UNIT)

    pnl = h.pnls()[-1]
    assert (pnl.realized, pnl.unrealized, pnl.open_positions, pnl.fresh, pnl.premium) == (
        650.0, 0.0, 0, True, 0.0)
    assert [m.quantity for m in h.marks()] == [65, 130, 65, 0]
    assert len(h.pnls()) == 4  # one per fill


def test_short_then_flip_through_zero(h: Harness) -> None:
    h.fill(Action.SELL, 65, 200.0)
    pnl = h.pnls()[-1]
    assert (pnl.open_positions, pnl.premium) == (1, 13_000.0)
    assert h.query()[("s", CE)].quantity == -65

    h.fill(Action.BUY, 195, 180.0)  # covers 65 (+1300), then long 130 at 180
    pos = h.query()[("s", CE)]
    assert (pos.quantity, pos.average_price, pos.realized) == (130, 180.0, 1300.0)
    assert h.pnls()[-1].premium == 0.0

    h.fill(Action.SELL, 260, 170.0)  # closes 130 (-1300), then short 130 at 170
    pos = h.query()[("s", CE)]
    assert (pos.quantity, pos.average_price, pos.realized) == (-130, 170.0, 0.0)
    assert h.pnls()[-1].premium == pytest.approx(170.0 * 130)


def test_a_fill_is_applied_once_by_its_key(h: Harness) -> None:
    first = h.fill(Action.BUY, 65, 100.0, order="B-1", cumulative=65)
    h.send(first)
    h.send(replace(first, price=101.0))
    h.fill(Action.BUY, 65, 102.0, order="B-1", cumulative=130)  # the same order, filled more
    pos = h.query()[("s", CE)]
    assert (pos.quantity, pos.average_price) == (130, 101.0)
    status = h.status()
    assert status["counts"]["duplicate_fills"] == 2
    assert status["counts"]["fills"] == 2
    assert len(h.pnls()) == 2


def test_strategies_are_kept_apart(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0, strategy="s")
    h.fill(Action.BUY, 130, 90.0, strategy="t")
    h.fill(Action.BUY, 65, 80.0, strategy="s")
    assert h.pnls("s")[-1].realized == 1300.0
    assert h.pnls("t")[-1].realized == 0.0
    assert h.query(strategy="t")[("t", CE)].quantity == 130
    assert h.query(strategy="s") == {}
    assert h.query(account="other") == {}
    assert [m.strategy for m in h.marks("t")] == ["t"]


def test_other_accounts_and_invalid_fills_change_nothing(h: Harness) -> None:
    h.fill(Action.BUY, 65, 100.0, account="other")
    bad = Fill("s-x", "B-x", "s", ACCOUNT, CE, "NFO", Action.BUY, 65, math.nan, 65, T0)
    h.send(bad)
    h.send(OrderEvent("s-1", OrderStatus.OPEN, T0, strategy="s", account=ACCOUNT, symbol=CE))
    assert h.query() == {}
    counts = h.status()["counts"]
    assert (counts["foreign"], counts["invalid_fills"], counts["order_events"]) == (1, 1, 1)
    [alert] = h.alerts()
    assert alert.kind == "invalid_fill" and alert.severity is Severity.CRITICAL
    assert h.pnls() == []


# ---------------------------------------------------------------------------------------------
# Feed subscriptions: exactly the held symbols
# ---------------------------------------------------------------------------------------------


def test_subscribes_exactly_the_held_symbols(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0, strategy="s")
    h.fill(Action.SELL, 65, 100.0, strategy="t")  # already held: no new subscription
    h.fill(Action.SELL, 65, 50.0, symbol=PE, strategy="s")
    h.fill(Action.BUY, 65, 90.0, strategy="s")  # t still holds CE
    h.fill(Action.BUY, 65, 90.0, strategy="t")  # CE is flat everywhere now
    h.fill(Action.BUY, 65, 45.0, symbol=PE, strategy="s")
    changes = h.subscriptions()
    assert [(c.add, c.remove) for c in changes] == [
        (((CE, "NFO"),), ()),
        (((PE, "NFO"),), ()),
        ((), ((CE, "NFO"),)),
        ((), ((PE, "NFO"),)),
    ]
    assert all(c.mode == 2 and c.requester == "positions" for c in changes)
    updates = [m.value for m in h.got["health"] if isinstance(m, HealthUpdate)]
    assert updates == [0, 1, 2, 3, 2, 1, 0]


# ---------------------------------------------------------------------------------------------
# Prices: bad values ignored, freshness, quotes fallback
# ---------------------------------------------------------------------------------------------


def test_bad_prices_never_replace_the_last_valid_one(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0)
    h.tick((CE, 90.0))
    pnl = h.pnls()[-1]
    assert (pnl.unrealized, pnl.fresh) == (650.0, True)
    sent = len(h.pnls())
    h.tick((CE, 0.0), (CE, -5.0), (CE, math.nan), (CE, math.inf), (PE, 10.0))
    assert len(h.pnls()) == sent  # nothing valid arrived: nothing re-sent
    pos = h.query()[("s", CE)]
    assert (pos.ltp, pos.unrealized) == (90.0, 650.0)
    assert h.status()["bad_prices"] == {CE: 4}  # PE is not held: ignored, not counted
    h.tick((CE, 0.0), (CE, 95.0))
    assert h.query()[("s", CE)].ltp == 95.0
    assert h.marks()[-1].ltp == 95.0 and h.marks()[-1].unrealized == 325.0
    assert h.marks()[-1].r_multiple == pytest.approx(325.0 / R_UNIT)


def test_stale_prices_flip_the_freshness_and_a_new_tick_restores_it(
        make: Callable[..., Harness]) -> None:
    h = make(with_broker=False)
    h.fill(Action.SELL, 65, 100.0)
    h.fill(Action.SELL, 65, 50.0, symbol=PE)
    # no tick yet: each position is priced at its fill (a traded price), fresh, flat
    assert h.pnls()[-1].fresh and h.pnls()[-1].unrealized == 0.0
    h.advance(6.0)  # the fills' prices are stale now (5 s)
    assert h.pnls()[-1].stale == (CE, PE)
    h.tick((CE, 99.0), (PE, 51.0))
    assert h.pnls()[-1].fresh
    h.advance(3.0)
    h.tick((PE, 52.0))
    sent = len(h.pnls())
    h.advance(2.0)
    assert len(h.pnls()) == sent  # 5 s old is still fresh
    h.advance(1.0)
    stale = h.pnls()[-1]
    assert (stale.fresh, stale.stale, stale.unrealized) == (False, (CE,), 65.0 - 130.0)
    assert len(h.pnls()) == sent + 1  # re-sent once, on the change
    h.advance(3.0)  # PE's price (t=3) is stale after t=8
    assert h.pnls()[-1].stale == (CE, PE)
    assert len(h.pnls()) == sent + 2
    assert h.status()["stale"] == [CE, PE]
    h.tick((CE, 98.0), (PE, 50.0))
    assert h.pnls()[-1].fresh and h.pnls()[-1].unrealized == 130.0
    assert h.query()[("s", CE)].fresh


def test_stale_symbols_are_quoted_within_the_budget(make: Callable[..., Harness]) -> None:
    # prices go stale at once, so there is always more demand than budget (2/s, burst 2)
    h = make(settings=PositionSettings(quotes_per_s=2.0, check_interval_s=0.25,
                                       stale_after_s=0.1))
    symbols = (CE, PE, CE2, PE2)
    for n, sym in enumerate(symbols):
        h.market(sym, 100.0 + n)
        h.fill(Action.SELL, 65, 100.0, symbol=sym)
    h.advance(10.0)
    calls = h.broker.calls
    times = [t for _, t in calls]
    for start in times:  # at most the burst (2) plus 2 per second in any window
        assert len([t for t in times if start <= t < start + 2.0]) <= 2 + 2 * 2
    assert 2 * 10 - 1 <= len(calls) <= 2 + 2 * 10
    assert [s for s, _ in calls[:4]] == sorted(symbols)  # never priced: all tied, then by name
    assert {s for s, _ in calls} == set(symbols)
    marks = h.query()
    assert {sym: marks[("s", sym)].ltp for sym in symbols} == {
        CE: 100.0, PE: 101.0, CE2: 102.0, PE2: 103.0}
    assert h.status()["counts"]["quotes"] == len(calls)


def test_fresh_symbols_are_not_quoted(h: Harness) -> None:
    h.market(CE, 100.0)
    h.fill(Action.SELL, 65, 100.0)
    h.tick((CE, 99.0))
    for _ in range(8):
        h.advance(1.0)
        h.tick((CE, 99.0))
    assert h.broker.calls == []


def test_a_quote_refreshes_a_stale_price(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0)
    h.tick((CE, 99.0))
    h.market(CE, 97.0)
    h.advance(5.0)
    assert h.broker.calls == []
    h.advance(1.0)
    assert [s for s, _ in h.broker.calls] == [CE]
    pnl = h.pnls()[-1]
    assert (pnl.fresh, pnl.unrealized) == (True, 195.0)
    assert h.query()[("s", CE)].ltp == 97.0


def test_a_failing_quotes_call_is_retried_and_never_crashes(h: Harness) -> None:
    h.market(CE, 96.0)
    h.fill(Action.SELL, 65, 100.0)
    h.broker.fail = True
    h.advance(8.0)  # the fill's price goes stale after 5 s; then quotes are asked and fail
    failed = len(h.broker.calls)
    assert failed >= 3
    status = h.status()
    assert status["counts"]["quote_errors"] == failed
    assert status["stale"] == [CE]
    h.broker.fail = False
    h.advance(1.0)
    assert h.query()[("s", CE)].ltp == 96.0
    assert h.pnls()[-1].fresh
    assert h.monitor is not None and h.monitor.is_alive()


def test_a_quote_without_a_price_is_counted_not_used(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0)  # the simulated market has no price for CE yet
    h.advance(6.0)  # the fill's price (5 s fresh) goes stale: the monitor asks for quotes
    assert len(h.broker.calls) >= 1
    assert h.status()["bad_prices"][CE] == len(h.broker.calls)
    assert h.query()[("s", CE)].ltp == 100.0  # still the fill's price: a bad quote is not used


# ---------------------------------------------------------------------------------------------
# Store: batched flushes
# ---------------------------------------------------------------------------------------------


def test_marks_reach_the_store_only_on_the_flush_timer(make: Callable[..., Harness]) -> None:
    h = make(store_collector=True, with_broker=False)
    h.fill(Action.SELL, 65, 100.0)
    h.fill(Action.SELL, 65, 50.0, symbol=PE)
    for n in range(20):
        h.tick((CE, 100.0 - n * 0.05), (PE, 50.0))
    assert h.got["store"] == []
    h.advance(2.0)
    stored = [m for m in h.got["store"] if isinstance(m, PositionMark)]
    assert sorted(m.symbol for m in stored) == sorted([CE, PE])
    assert {m.symbol: m.ltp for m in stored}[CE] == pytest.approx(99.05)
    h.advance(2.0)
    assert len(h.got["store"]) == 2  # nothing changed since: nothing sent


def test_marks_are_written_to_sqlite_after_the_flush(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0)
    h.tick((CE, 95.0))
    h.store_writes_buffered()
    assert h.db.positions(account=ACCOUNT) == []
    h.advance(2.0)
    h.store_writes_buffered()
    [row] = h.db.positions(account=ACCOUNT)
    assert (row.strategy, row.symbol, row.quantity, row.average_price, row.ltp) == (
        "s", CE, -65, 100.0, 95.0)
    assert h.db.last_prices()[CE].ltp == 95.0
    h.fill(Action.BUY, 65, 95.0)
    h.advance(2.0)
    h.store_writes_buffered()
    assert h.db.positions(account=ACCOUNT) == []
    [flat] = h.db.positions(account=ACCOUNT, open_only=False)
    assert (flat.quantity, flat.realized) == (0, 325.0)


# ---------------------------------------------------------------------------------------------
# Corrections from the reconciler
# ---------------------------------------------------------------------------------------------


def test_a_correction_sets_the_broker_quantity_and_realizes_the_difference(h: Harness) -> None:
    h.fill(Action.BUY, 130, 100.0)
    h.send(PositionCorrection("s", ACCOUNT, CE, "NFO", 65, 110.0, "stop filled unseen", T0))
    pos = h.query()[("s", CE)]
    assert (pos.quantity, pos.average_price, pos.realized) == (65, 100.0, 650.0)
    [alert] = h.alerts()
    assert alert.kind == "position_corrected" and "stop filled unseen" in alert.message
    assert h.pnls()[-1].realized == 650.0

    h.tick((CE, 90.0))
    h.send(PositionCorrection("s", ACCOUNT, CE, "NFO", 0, 0.0, "phantom", T0))  # last price
    assert h.query(include_flat=True)[("s", CE)].realized == 650.0 - 650.0
    assert h.subscriptions()[-1].remove == ((CE, "NFO"),)
    h.send(PositionCorrection("s", ACCOUNT, CE, "NFO", 0, 0.0, "again", T0))
    assert len(h.alerts()) == 2  # already right: nothing changed, no alert


def test_a_correction_without_any_price_opens_at_the_first_price(h: Harness) -> None:
    h.send(PositionCorrection("s", ACCOUNT, PE, "NFO", -65, 0.0, "orphan adopted", T0))
    pos = h.query()[("s", PE)]
    assert (pos.quantity, pos.unrealized) == (-65, 0.0)
    assert h.subscriptions()[-1].add == ((PE, "NFO"),)
    h.tick((PE, 40.0))
    pos = h.query()[("s", PE)]
    assert (pos.average_price, pos.unrealized) == (40.0, 0.0)
    h.tick((PE, 38.0))
    assert h.query()[("s", PE)].unrealized == 130.0


# ---------------------------------------------------------------------------------------------
# Recovery and the trading day
# ---------------------------------------------------------------------------------------------


def test_a_restart_rebuilds_positions_and_realized_pnl_from_the_store(h: Harness) -> None:
    h.fill(Action.SELL, 130, 100.0)
    h.fill(Action.BUY, 65, 90.0)
    h.fill(Action.BUY, 65, 40.0, symbol=PE, strategy="t")
    h.tick((CE, 95.0), (PE, 42.0))
    h.advance(2.0)
    h.store_writes_buffered()  # the stored prices are on disk
    before = h.query(include_flat=True)
    h.stop_monitor()
    subscribed = len(h.subscriptions())
    h.start_monitor()
    after = h.query(include_flat=True)
    assert after.keys() == before.keys()
    for key, mark in after.items():
        old = before[key]
        assert (mark.quantity, mark.average_price, mark.realized, mark.ltp) == (
            old.quantity, old.average_price, old.realized, old.ltp)
        assert not mark.fresh  # a stored price is stale until a new one arrives
    assert after[("s", CE)].realized == 650.0
    [resub] = h.subscriptions()[subscribed:]
    assert resub.add == ((CE, "NFO"), (PE, "NFO"))
    assert not h.pnls("s")[-1].fresh and h.pnls("s")[-1].realized == 650.0
    # the stored fills' keys are known again: a repeated report is not applied twice
    h.send(h.db.fills(account=ACCOUNT)[0])
    assert h.query()[("s", CE)].quantity == -65


def test_a_crash_keeps_each_positions_own_risk(make: Callable[..., Harness]) -> None:
    """With ``r_unit = "position"`` a short of 650 whose strategy declared a 4-point stop
    risks ₹2,600: two points against are −0.5 R of its own risk (−2.0 in the fixed R of
    ``R_UNIT``). The monitor crashes and starts again from SQLite, and nobody declares anything
    again: the same R and the same day R at the same price."""
    h = make(r_unit="position", with_broker=False)
    h.send(PositionRisk("s", ACCOUNT, CE, 4.0, h.clock.time()))
    h.fill(Action.SELL, 650, 200.0)
    h.fill(Action.BUY, 65, 196.0, symbol=PE, strategy="t")  # declared nothing: fixed R
    h.tick((CE, 202.0), (PE, 196.0))
    before = h.query()[("s", CE)]
    assert before.r_multiple == -0.5 and h.pnls("s")[-1].r == -0.5
    assert h.db.position_risks(account=ACCOUNT, trading_date=DAY) == [
        PositionRisk("s", ACCOUNT, CE, 4.0, T0)]
    h.crash_monitor()
    h.start_monitor()
    h.tick((CE, 202.0), (PE, 196.0))
    assert h.query()[("s", CE)].r_multiple == before.r_multiple
    assert h.pnls("s")[-1].r == -0.5 and h.pnls("t")[-1].r is None  # t: no R known
    h.fill(Action.BUY, 650, 203.0)  # the peak (650) comes back from the same fills
    assert h.pnls("s")[-1].r == -0.75


def test_yesterdays_risk_declarations_are_not_restored(make: Callable[..., Harness]) -> None:
    h = make(start=T0 - 86_400, r_unit="position", with_broker=False)
    h.send(PositionRisk("s", ACCOUNT, CE, 4.0, h.clock.time()))
    h.stop_monitor()
    h.clock.set_time(T0)
    h.start_monitor()
    h.fill(Action.SELL, 65, 100.0)
    h.fill(Action.BUY, 65, 99.0)
    assert h.pnls()[-1].r == 65.0 / R_UNIT  # measured in the fixed R: nothing declared today


def test_yesterdays_fills_are_not_counted_after_a_restart(make: Callable[..., Harness]) -> None:
    yesterday = T0 - 86_400
    h = make(start=yesterday)
    h.fill(Action.SELL, 65, 100.0)
    h.fill(Action.BUY, 65, 80.0)  # +1300 yesterday
    h.fill(Action.SELL, 65, 60.0, symbol=PE)
    h.stop_monitor()
    h.clock.set_time(T0)
    h.start_monitor()
    assert h.query(include_flat=True) == {}
    h.fill(Action.SELL, 65, 100.0)
    h.fill(Action.BUY, 65, 99.0)
    assert h.pnls()[-1].realized == 65.0


def test_a_new_trading_day_resets_realized_pnl(make: Callable[..., Harness]) -> None:
    h = make(start=ist_epoch(2025, 1, 29, 23, 59, 50), with_broker=False)
    h.fill(Action.SELL, 65, 100.0)
    h.fill(Action.BUY, 65, 80.0)
    h.fill(Action.SELL, 65, 90.0, symbol=PE)
    assert h.pnls()[-1].realized == 1300.0
    h.advance(20.0, step=1.0)
    h.tick((PE, 85.0))
    pnl = h.pnls()[-1]
    assert (pnl.realized, pnl.unrealized, pnl.open_positions) == (0.0, 325.0, 1)
    assert h.query(include_flat=True).keys() == {("s", PE)}
    assert h.status()["trading_date"] == "2025-01-30"


def test_status_reports_positions_and_counts(h: Harness) -> None:
    h.fill(Action.SELL, 65, 100.0)
    h.tick((CE, 0.0), (CE, 98.0))
    status = h.status()
    assert status["account"] == ACCOUNT
    [row] = status["positions"]
    assert (row["symbol"], row["quantity"], row["ltp"], row["unrealized"], row["fresh"]) == (
        CE, -65, 98.0, 130.0, True)
    assert status["strategies"]["s"]["pnl"] == 130.0
    assert status["bad_prices"] == {CE: 1}
    assert status["stale"] == []


def test_a_positions_price_pending_count_follows_its_books() -> None:
    """The running count a position keeps (read on every tick) is the outstanding quantity of
    its books, whichever of the pending report and the priced fill comes first or again."""
    pos = _Position("s1", "NIFTY30JAN2524000CE", "NFO")
    steps = [("pending", Action.SELL, "a", 30), ("pending", Action.SELL, "a", 65),
             ("priced", Action.SELL, "a", 30), ("pending", Action.SELL, "a", 30),
             ("priced", Action.BUY, "b", 20), ("pending", Action.BUY, "b", 65),
             ("priced", Action.SELL, "a", 65), ("pending", Action.BUY, "c", 10),
             ("priced", Action.BUY, "b", 65), ("priced", Action.BUY, "c", 5)]
    for kind, action, orderid, cumulative in steps:
        if kind == "pending":
            pos.add_pending(action, orderid, cumulative)
        else:
            pos.add_priced(action, orderid, cumulative)
        assert pos.pending == outstanding(pos.pending_buy) - outstanding(pos.pending_sell)
    assert pos.pending == 5  # c: 10 filled, 5 of them priced
