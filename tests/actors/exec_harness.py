"""A small execution stack for the risk manager and reconciler tests: a VirtualClock, a registry,
a real StoreWriter on SQLite, a real OrderManager and PositionMonitor (and, when asked, a
RiskManager and a Reconciler) against a simulated broker: in-process (``SimulatedBroker``, its
order listener standing in for the order-update stream) or over real loopback sockets
(``SimulatorServer`` + the engine's ``OpenAlgoClient``, fills found by polling). Collectors stand
in for ``health``, ``feed`` and the strategy hosts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from actors.order_manager import OrderManager, OrderSettings
from actors.position_monitor import PositionMonitor, PositionSettings
from actors.reconciler import Reconciler, ReconcileSettings
from actors.risk_manager import RiskManager
from actors.store import StoreWriter
from actors.strategy_host import StrategyHost
from engine.broker import BrokerUnavailable, OrderRow, PositionRow, TradeRow
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    Alert,
    Command,
    GateQuery,
    OrderIntent,
    OrderPurpose,
    Ping,
    PositionMark,
    PositionQuery,
    PriceType,
    Severity,
    StatusRequest,
    Tick,
    TradingGate,
)
from engine.openalgo.rest import OpenAlgoClient, RestSettings
from engine.runtime.actor import actor_of
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.sim.matching import MatchingSettings, SimulatedBroker
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.store.database import Database, StoreSettings
from engine.trading.orders import update_from_row
from engine.trading.risk import RiskSettings
from strategies.base import Strategy, StrategyContext
from tests.support import Collector

T0 = ist_epoch(2025, 1, 30, 9, 20)
CE = "NIFTY30JAN2524000CE"
PE = "NIFTY30JAN2524000PE"
ACCOUNT = "acct"
API_KEY = "sim-risk-key-5d1f0a"
R_UNIT = 6500.0
SPEC = InstrumentSpec()
SINKS = ("health", "feed", "strategy.s", "strategy.t")
ORDERS = OrderSettings(rate_per_s=20.0, poll_interval_s=0.5, cancel_confirm_timeout_s=2.0,
                       cancel_poll_s=0.25, resend_attempts=2, start_open=True)
RISK = RiskSettings(daily_r_target=0.0, daily_r_stop=0.0, check_interval_s=5.0,
                    exit_check_s=0.25, exit_settle_s=0.5, exit_retries=3)


class Spy:
    """Delegates every broker call to ``target``, recording (name, kwargs, engine time); a hook
    in ``hooks`` runs instead (it gets the target's method and the call's keywords); an
    endpoint in ``down`` raises ``BrokerUnavailable`` (only where no simulator fault exists)."""

    def __init__(self, target: Any, clock: VirtualClock) -> None:
        self.target = target
        self.clock = clock
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.down: set[str] = set()
        #: hooks of the reads the order manager repeats on its timers (``without_retries``)
        self.read_hooks: dict[str, Callable[..., Any]] = {}

    def _reads(self) -> Any:
        once = getattr(self.target, "without_retries", None)
        reads = Spy(once() if once is not None else self.target, self.clock)
        reads.hooks = self.read_hooks
        return reads

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name == "without_retries":  # the order manager's repeated reads: ``read_hooks``
            return self._reads
        method = getattr(self.target, name)
        if not callable(method):
            return method  # type: ignore[no-any-return]

        def call(**kw: Any) -> Any:
            self.calls.append((name, dict(kw), self.clock.time()))
            if name in self.down:
                raise BrokerUnavailable("connection refused (test)", endpoint=name)
            hook = self.hooks.get(name)
            return hook(method, **kw) if hook is not None else method(**kw)

        return call

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def placed(self) -> list[dict[str, Any]]:
        """The keywords of every place_order call, in order."""
        return [kw for name, kw, _ in self.calls if name == "place_order"]


@dataclass
class Options:
    """What to build: transport, which actors, and their settings."""

    sockets: bool = False
    orders: OrderSettings = ORDERS
    positions: PositionSettings = field(default_factory=PositionSettings)
    risk: RiskSettings | None = RISK
    reconcile: ReconcileSettings | None = None
    monitor_quotes: bool = True
    stream: bool = True  # in-process only: the simulator's order listener feeds the manager
    strategies: tuple[str, ...] = ("s", "t")
    matching: MatchingSettings | None = None  # the simulated broker's (personality: zerodha)
    #: strategies run by a real StrategyHost (``strategy.<name>``) instead of a collector
    hosts: dict[str, Callable[[StrategyContext], Strategy]] = field(default_factory=dict)


class Stack:
    """The running engine slice; see the module docstring."""

    def __init__(self, tmp_path: Path, options: Options | None = None) -> None:
        self.options = opts = options or Options()
        self.clock = VirtualClock(T0)
        self.registry = Registry(self.clock)
        self.db = Database(tmp_path / "engine.db", StoreSettings(flush_interval_s=60.0))
        self.server: SimulatorServer | None = None
        self.client: OpenAlgoClient | None = None
        if opts.sockets:
            self.server = SimulatorServer(
                SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                                  lost_reply_hold_s=1.0),
                api_key=API_KEY, clock=self.clock, instrument=SPEC, matching=opts.matching)
            self.server.start()
            self.sim = self.server.broker
            self.client = OpenAlgoClient(
                RestSettings(host=self.server.rest_url, timeout_s=3.0, retries=1,
                             retry_delay_s=0.0),
                api_key=API_KEY, clock=self.clock, account=ACCOUNT, sleep=lambda _: None)
            target: Any = self.client
        else:
            self.sim = SimulatedBroker(self.clock, SPEC, opts.matching, account="sim")
            target = self.sim
        for sym in (CE, PE):
            self.sim.declare_symbol(sym, "NFO")
        self.broker = Spy(target, self.clock)  # what the order manager and the monitor use
        self.risk_broker = Spy(target, self.clock)  # what the risk manager / reconciler use
        self.got: dict[str, list[Any]] = {name: [] for name in SINKS}
        self.refs: dict[str, pykka.ActorRef[Any]] = {}
        self._register("store", StoreWriter.start(self.db, name="store", registry=self.registry,
                                                  clock=self.clock))
        hosted = {f"strategy.{name}" for name in opts.hosts}
        for name in (n for n in SINKS if n not in hosted):
            self._register(name, Collector.start(self.got[name], name=name,
                                                 registry=self.registry, clock=self.clock))
        self.listening = False
        if not opts.sockets and opts.stream:
            self.listen()
        for sym in (CE, PE):
            self.market(100.0, sym, engine=False)
        self.start_orders()
        self.start_positions()
        for name, factory in opts.hosts.items():
            self.start_host(name, factory)
        if opts.risk is not None:
            self.start_risk()
        if opts.reconcile is not None:
            self.start_reconciler()
        self.settle()

    # -- actors ----------------------------------------------------------------------------------
    def _register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        self.registry.register(name, ref)
        self.refs[name] = ref

    def _start(self, name: str, factory: Callable[[], pykka.ActorRef[Any]]) -> None:
        self.registry.declare(name)
        self._register(name, factory())
        self.settle()

    def start_orders(self) -> None:
        self._start("orders", lambda: OrderManager.start(
            broker=self.broker, account=ACCOUNT, settings=self.options.orders, instrument=SPEC,
            db=self.db, strategies=self.options.strategies, registry=self.registry,
            clock=self.clock))

    def start_positions(self) -> None:
        self._start("positions", lambda: PositionMonitor.start(
            account=ACCOUNT, settings=self.options.positions,
            broker=self.broker if self.options.monitor_quotes else None, db=self.db,
            r_units={"s": R_UNIT}, registry=self.registry, clock=self.clock))

    def start_host(self, name: str, factory: Callable[[StrategyContext], Strategy]) -> None:
        self._start(f"strategy.{name}", lambda: StrategyHost.start(
            strategy_factory=factory, strategy_name=name, account=ACCOUNT, instrument=SPEC,
            load_state=self.db.strategy_state, registry=self.registry, clock=self.clock))

    def start_risk(self, settings: RiskSettings | None = None) -> None:
        chosen = settings or self.options.risk or RISK
        self._start("risk", lambda: RiskManager.start(
            account=ACCOUNT, strategies={"s": R_UNIT, "t": R_UNIT}, settings=chosen,
            instrument=SPEC, broker=self.risk_broker, db=self.db, registry=self.registry,
            clock=self.clock))

    def start_reconciler(self) -> None:
        settings = self.options.reconcile or ReconcileSettings()
        self._start("reconciler", lambda: Reconciler.start(
            account=ACCOUNT, settings=settings, instrument=SPEC, broker=self.risk_broker,
            strategies=self.options.strategies, registry=self.registry, clock=self.clock))

    def stop(self, name: str) -> None:
        self.settle()
        ref = self.refs.pop(name)
        ref.stop()

    def close(self) -> None:
        self.listen(False)
        for name in ("reconciler", "risk", *(f"strategy.{n}" for n in self.options.hosts),
                     "positions", "orders", *SINKS, "store"):
            ref = self.refs.pop(name, None)
            if ref is not None:
                ref.stop()
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
        self.db.close()

    def listen(self, on: bool = True) -> None:
        """Switch the in-process order-update stream on or off."""
        if on and not self.listening:
            self.sim.add_order_listener(self._on_row)
        elif not on and self.listening:
            self.sim.remove_order_listener(self._on_row)
        self.listening = on

    def _on_row(self, row: OrderRow) -> None:
        self.registry.tell("orders", update_from_row(row, self.clock.time(), "stream"))

    # -- driving ---------------------------------------------------------------------------------
    def settle(self, rounds: int = 2) -> None:
        """Return once every actor has handled everything sent to it and nothing moved for
        ``rounds`` consecutive rounds of pings (a round that only handled the pings)."""
        quiet = 0
        for _ in range(400):
            names = list(self.refs)
            before = self._progress(names)
            for name in names:
                self.registry.ask(name, Ping(0), timeout=10)
            if self._progress(names) - before == len(names):
                quiet += 1
                if quiet >= rounds:
                    return
            else:
                quiet = 0
        raise AssertionError("the actors never went quiet")

    def _progress(self, names: list[str]) -> int:
        total = 0
        for name in names:
            actor = actor_of(self.refs[name])
            total += actor.progress if actor is not None else 0
        return total

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move the clock forward in small steps, letting the actors settle after each."""
        end = self.clock.time() + seconds
        while self.clock.time() < end - 1e-9:
            self.clock.advance_to(min(end, self.clock.time() + step))
            self.settle()

    def market(self, ltp: float, symbol: str = CE, *, engine: bool = True) -> None:
        """Move the broker's market (filling what it triggers); ``engine``: the feed's tick
        reaches the position monitor too."""
        now = self.clock.time()
        tick = Tick(symbol, "NFO", ltp, recv_ts=now, exchange_ts=now,
                    bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2))
        if self.server is not None:
            self.server.publish(tick)
        else:
            self.sim.on_tick(tick)
        if engine:
            self.registry.tell("positions", tick)
            self.settle()

    def tell(self, name: str, message: Any) -> None:
        self.registry.tell(name, message)
        self.settle()

    def ask(self, name: str, message: Any) -> Any:
        return self.registry.ask(name, message, timeout=10)

    def order(self, client_id: str, action: Action, quantity: int = 65, *, symbol: str = CE,
              strategy: str = "s", purpose: OrderPurpose = OrderPurpose.ENTRY,
              pricetype: PriceType = PriceType.MARKET, price: float = 0.0,
              trigger: float = 0.0) -> None:
        """Send an intent to the order manager and let it be placed (and filled if it can)."""
        self.tell("orders", OrderIntent(
            client_id=client_id, strategy=strategy, account=ACCOUNT, symbol=symbol,
            exchange="NFO", action=action, quantity=quantity, pricetype=pricetype, price=price,
            trigger_price=trigger, purpose=purpose, created_ts=self.clock.time()))
        self.advance(0.2)

    def short_with_stop(self, strategy: str = "s", symbol: str = CE, quantity: int = 65,
                        trigger: float = 110.0, tag: str = "1") -> None:
        """A filled short and its resting stop-limit BUY at the broker."""
        self.order(f"{strategy}-e{tag}", Action.SELL, quantity, symbol=symbol,
                   strategy=strategy)
        self.order(f"{strategy}-st{tag}", Action.BUY, quantity, symbol=symbol,
                   strategy=strategy, purpose=OrderPurpose.STOP, pricetype=PriceType.SL,
                   price=trigger + 3.0, trigger=trigger)

    def direct(self, action: str, quantity: int = 65, symbol: str = CE) -> str:
        """An order placed straight at the broker, behind the engine's back (filled at once)."""
        return self.sim.place_order(strategy="manual", symbol=symbol, exchange="NFO",
                                    action=action, quantity=quantity)

    # -- observing -------------------------------------------------------------------------------
    def alerts(self, kind: str | None = None) -> list[Alert]:
        return [m for m in list(self.got["health"]) if isinstance(m, Alert)
                and (kind is None or m.kind == kind)]

    def critical(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts(kind) if a.severity is Severity.CRITICAL]

    def seen(self, name: str, kind: type) -> list[Any]:
        return [m for m in list(self.got[name]) if isinstance(m, kind)]

    def commands(self, strategy: str = "s") -> list[Command]:
        return self.seen(f"strategy.{strategy}", Command)

    def gate(self, strategy: str = "s") -> TradingGate:
        return self.ask("orders", GateQuery(strategy))  # type: ignore[no-any-return]

    def held(self, strategy: str = "") -> dict[tuple[str, str], int]:
        marks: tuple[PositionMark, ...] = self.ask("positions", PositionQuery(strategy=strategy))
        return {(m.strategy, m.symbol): m.quantity for m in marks}

    def risk_status(self, strategy: str = "s") -> dict[str, Any]:
        return self.ask("risk", StatusRequest())["strategies"][strategy]  # type: ignore[no-any-return]

    def broker_qty(self, symbol: str = CE) -> int:
        rows: list[PositionRow] = self.sim.positionbook()
        return sum(r.quantity for r in rows if r.symbol == symbol)

    def trades(self, symbol: str = CE, action: str | None = None) -> list[TradeRow]:
        return [t for t in self.sim.tradebook() if t.symbol == symbol
                and (action is None or t.action == action)]

    def broker_orders(self, symbol: str = CE) -> list[OrderRow]:
        return [o for o in self.sim.orderbook() if o.symbol == symbol]
