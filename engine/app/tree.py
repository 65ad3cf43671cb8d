"""The engine runtime: builds the supervisor tree for a mode, starts it, stops it safely.

Owns the assembly of the actors (which actor exists, under which supervisor, with which names and
settings) and the engine's own lifecycle: orderly start and stop, and the safe stop the root
supervisor triggers when it gives up (no new orders, stops left in place, a critical alert, a
non-zero exit). What differs between modes arrives as ``EngineParts``: the clock, the broker,
how the feed connects (or nothing: replay feeds ticks itself), the symbols and the day.

The tree (start order; stop is the reverse):

    engine (one_for_one)
    ├── store                     the single SQLite writer
    ├── health                    heartbeat, coverage, alerts
    ├── execution (rest_for_one)  when trading
    │   ├── orders                the only caller of order endpoints; owns the trading gate
    │   ├── positions             positions from fills, marks, P&L per strategy
    │   ├── risk                  limits, latching states, the exit coordinator
    │   └── reconciler            engine vs broker; opens the gate after startup (fail-closed)
    ├── strategy (one_for_one)    when trading
    │   ├── swings                swing detector for every symbol
    │   └── strategy.<name>       one host per strategy
    └── market_data (one_for_one)
        ├── recorder              when recording: every received tick to a session file
        ├── feed                  the WebSocket (or replay input) and the tick router
        └── bars.<symbol> × N     one bar builder per symbol

Consumers start before producers, so the first bar already finds its swing detector.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from loguru import logger

from actors.bar_builder import BarBuilder, builder_name
from actors.feed import ConnectionFactory, Feed, MarketDataSettings
from actors.health import Health
from actors.notifier import NOTIFIED_TYPES, Notifier
from actors.store import StoreWriter
from engine.app.facts import instrument_spec
from engine.broker import Broker, HistoryBar, OrderRow
from engine.config import Config
from engine.market.instruments import (
    INDEX_SYMBOL,
    InstrumentFacts,
    is_index,
    minute_start,
    session_bounds,
)
from engine.messages import (
    DeadLetter,
    Fill,
    LoadState,
    LoadStates,
    RestartRecord,
    StatusRequest,
    TradingGate,
)
from engine.runtime.clock import Clock
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.logs import use_clock
from engine.runtime.notify import (
    Delivery,
    NotifySettings,
    notify_urls,
    redacted,
    safe_stop_notice,
)
from engine.runtime.registry import Registry
from engine.runtime.supervisor import (
    ChildSpec,
    Strategy,
    SupervisorHandle,
    SupervisorSpec,
    start_tree,
)
from engine.sim.matching import SimulatedBroker
from engine.store.database import (
    Database,
    DatabaseOwner,
    StoredInstrumentFacts,
    StoredOrder,
    StoredStrategyState,
    record,
)

Pair = tuple[str, str]

#: History requests per second when the bar builders backfill over REST at start. OpenAlgo
#: allows 10 calls/s per endpoint when API_RATE_LIMIT is unset (restx_api/history.py; 50 with its
#: sample .env); a burst of one request per symbol draws 429s whose ``retry_after`` a builder
#: would sit out inside its start, long enough for its supervisor to take it for hung (with 82
#: options: market_data gave up).
HISTORY_CALLS_PER_S = 8.0


@dataclass
class EngineParts:
    """What a mode supplies to the runtime."""

    mode: str  # replay | paper | live | record
    clock: Clock
    symbols: Sequence[Pair]
    trading_day: date
    broker: Broker | None = None
    connect: ConnectionFactory | None = None
    db_path: Path | None = None
    bar_downstream: tuple[str, ...] = ()
    # what restart backoff and liveness pings run on (None: the engine clock); replay passes
    # a wall clock, since hangs and crash loops are real-time matters
    supervision_clock: Clock | None = None
    # strategies to run (names registered in strategies.registry); empty: market data only
    strategies: tuple[str, ...] = ()
    account: str = "default"
    # open the trading gate at start (replay); live and paper wait for the reconciler
    open_gate_at_start: bool = False
    # also write every received tick to this session file (record mode, paper --record)
    record_to: Path | None = None
    # the day's instrument facts (broker, session file); None: [instrument] alone
    facts: InstrumentFacts | None = None
    # run every actor on the calling thread (replay); None: a Pykka thread per actor
    dispatcher: Dispatcher | None = None
    # apprise URLs for notices besides NIFTY_ENGINE_NOTIFY_URLS (the config's secrets): the
    # traded account's, from the encrypted account store
    notify_urls: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """One running engine: the registry, the database, the supervisor tree."""

    def __init__(self, cfg: Config, parts: EngineParts) -> None:
        self.cfg = cfg
        self.parts = parts
        self.clock = parts.clock
        self.spec_instrument = instrument_spec(cfg, parts.facts)
        self.session = session_bounds(parts.trading_day, self.spec_instrument)
        db_path = parts.db_path or Path(cfg.store.path)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(db_path, cfg.store,
                           owner=DatabaseOwner(parts.mode, parts.trading_day))
        if parts.facts is not None:  # before the tree starts: no other writer yet
            row = StoredInstrumentFacts.of(parts.facts, trading_date=parts.trading_day,
                                           account=parts.account, underlying=INDEX_SYMBOL,
                                           fetched_ts=self.clock.time())
            self.db.run_write(lambda tx: tx.apply(self.db.writes_for(record(row))))
        self.registry = Registry(self.clock, stash_limit=cfg.supervision.root.stash_limit,
                                 on_dead_letter=self._on_dead_letter,
                                 dispatcher=parts.dispatcher)
        self.supervisor: SupervisorHandle | None = None
        self.safe_stop_reason: str | None = None
        self._log_clock: contextlib.AbstractContextManager[None] | None = None
        self.delivery = self._delivery()
        self.stopped = threading.Event()
        self._switch_before: float | None = None  # the GIL switch interval before start

    # -- the tree --------------------------------------------------------------------------------
    def symbols(self) -> list[str]:
        return [s for s, _ in self.parts.symbols]

    def tree(self) -> SupervisorSpec:
        cfg = self.cfg
        sup = cfg.supervision
        notify = self._notify_name()
        store = ChildSpec("store", lambda s: StoreWriter.start(
            self.db, s, tap=notify, tap_types=NOTIFIED_TYPES))
        health_settings = cfg.section("health")
        health = ChildSpec("health", lambda s: Health.start(
            s, settings=health_settings, instrument=self.spec_instrument,
            restarts=self.restart_count, notify=notify,
            log_every_s=health_settings.replay_heartbeat_log_s
            if self.parts.mode == "replay" else None))
        market = SupervisorSpec("market_data", Strategy.ONE_FOR_ONE,
                                [*self._recorder_spec(), self._feed_spec(), *self._bar_specs()],
                                sup.market_data)
        groups: list[ChildSpec | SupervisorSpec] = [store, health]
        if self.delivery is not None:
            delivery, settings = self.delivery, cfg.section("notify")
            groups.insert(0, ChildSpec("notifier", lambda s: Notifier.start(
                s, settings=settings, delivery=delivery)))
        if self.parts.strategies:
            groups += [self._execution_group(), self._strategy_group()]
        return SupervisorSpec("engine", Strategy.ONE_FOR_ONE, [*groups, market], sup.root)

    def _notify_name(self) -> str | None:
        return "notifier" if self.delivery is not None else None

    def _delivery(self) -> Delivery | None:
        """The notices' delivery thread (``notice_delivery``); it lives outside the tree, so a
        safe stop still reaches the phone."""
        return notice_delivery(self.cfg, self.parts.mode, self.parts.notify_urls)

    def _execution_group(self) -> SupervisorSpec:
        from actors.order_manager import OrderManager
        from actors.position_monitor import PositionMonitor
        from actors.reconciler import Reconciler
        from actors.risk_manager import RiskManager

        cfg = self.cfg
        broker = self.parts.broker
        if broker is None:
            raise ValueError(f"{self.parts.mode}: trading needs a broker")
        account = self.parts.account
        strategies = self.parts.strategies
        exchanges = dict(self.parts.symbols)
        r_units = {name: float(getattr(getattr(cfg, name, None), "risk_per_trade", 0.0))
                   or cfg.section("risk").r_rupees for name in strategies}
        orders = ChildSpec("orders", lambda s: OrderManager.start(
            s, broker=broker, account=account, settings=cfg.section("orders"),
            instrument=self.spec_instrument, db=self.db, strategies=strategies))
        positions = ChildSpec("positions", lambda s: PositionMonitor.start(
            s, account=account, settings=cfg.section("positions"), broker=broker, db=self.db,
            r_units=r_units, r_unit=cfg.section("risk").r_unit, exchanges=exchanges))
        risk = ChildSpec("risk", lambda s: RiskManager.start(
            s, account=account, strategies=r_units, settings=cfg.section("risk"),
            instrument=self.spec_instrument, broker=broker, db=self.db, exchanges=exchanges))
        reconciler = ChildSpec("reconciler", lambda s: Reconciler.start(
            s, account=account, settings=cfg.section("reconcile"),
            instrument=self.spec_instrument, broker=broker, strategies=strategies,
            exchanges=exchanges))
        return SupervisorSpec("execution", Strategy.REST_FOR_ONE,
                              [orders, positions, risk, reconciler], cfg.supervision.execution)

    def _strategy_group(self) -> SupervisorSpec:
        from actors.swing_detector import SwingDetector
        from strategies.registry import strategy_factory

        cfg = self.cfg
        hosts = [f"strategy.{name}" for name in self.parts.strategies]
        swings = ChildSpec("swings", lambda s: SwingDetector.start(
            s, settings=cfg.section("swings"), downstream=tuple(hosts),
            load_states=self.load_states))
        children: list[ChildSpec | SupervisorSpec] = [swings]
        for name in self.parts.strategies:
            factory = strategy_factory(name, cfg)
            children.append(ChildSpec(f"strategy.{name}", _host_factory(
                name, factory, self.parts.account, self.spec_instrument, self.load_state,
                self.load_states, self.journal, cfg.section("risk").r_unit)))
        return SupervisorSpec("strategy", Strategy.ONE_FOR_ONE, children, cfg.supervision.strategy)

    def _feed_spec(self) -> ChildSpec:
        settings: MarketDataSettings = self.cfg.section("market_data")
        tap = "recorder" if self.parts.record_to is not None else None
        orders = "orders" if self.parts.strategies else None
        reconnect = ("reconciler",) if self.parts.strategies else ()
        return ChildSpec("feed", lambda s: Feed.start(
            s, symbols=list(self.parts.symbols), settings=settings, mode=self.cfg.feed.mode,
            connect=self.parts.connect, reconnect_listeners=reconnect, tap=tap, orders=orders))

    def _recorder_spec(self) -> list[ChildSpec]:
        path = self.parts.record_to
        if path is None:
            return []
        from actors.recorder import Recorder

        meta: dict[str, object] = {"mode": self.parts.mode,
                                   "date": self.parts.trading_day.isoformat()}
        if self.parts.facts is not None:
            meta["instrument"] = self.parts.facts.to_meta()
        return [ChildSpec("recorder", lambda s: Recorder.start(
            s, path=path, settings=self.cfg.section("recorder"),
            symbols=list(self.parts.symbols), meta=meta))]

    def _bar_specs(self) -> list[ChildSpec]:
        history = self._history_source()
        downstream = self.parts.bar_downstream or (("swings",) if self.parts.strategies else ())
        margin = close_margin(self.cfg, self.clock)
        return [ChildSpec(builder_name(sym), _bar_factory(
            sym, self.cfg.bars, self.session, downstream, history,
            self.load_state, margin, traded=not is_index(exchange)))
            for sym, exchange in self.parts.symbols]

    def _history_source(self) -> Callable[[str, date], Sequence[HistoryBar]] | None:
        broker = self.parts.broker
        if broker is None:
            return None
        exchanges = dict(self.parts.symbols)
        if isinstance(broker, SimulatedBroker):
            return partial(_history_of, broker, exchanges)
        return rest_history_source(broker, exchanges, HISTORY_CALLS_PER_S,
                                   self.cfg.bars.history_concurrency)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        # lines carry the engine's time: market time in replay and paper
        self._log_clock = use_clock(self.clock.time)
        self._log_clock.__enter__()
        logger.info("engine starting: mode {} with {} symbols, database {}", self.parts.mode,
                    len(self.parts.symbols), self.db.path)
        if self.parts.dispatcher is None and self._switch_before is None:
            # a thread per actor: a woken actor waits for the GIL at most this long (see
            # docs/architecture.md, "Latency")
            self._switch_before = sys.getswitchinterval()
            sys.setswitchinterval(self.cfg.engine.gil_switch_ms / 1000.0)
        self.supervisor = start_tree(self.tree(), registry=self.registry, clock=self.clock,
                                     on_safe_stop=self._safe_stop,
                                     on_restart=self._on_restart,
                                     timer_clock=self.parts.supervision_clock,
                                     # one thread: the same backoff jitter on every run
                                     rng=random.Random(0) if self.parts.dispatcher else None)
        if self.parts.strategies and isinstance(self.parts.broker, SimulatedBroker):
            # in-process broker (replay): its order-state changes are the update stream
            self.parts.broker.add_order_listener(self._on_simulated_order)
        if self.parts.strategies and self.parts.open_gate_at_start:
            # the order manager owns the gate and tells the strategy hosts
            gate = TradingGate(entries=True, reason=f"{self.parts.mode}: open at start")
            self.registry.tell("orders", gate)

    def stop(self, timeout: float | None = None) -> None:
        if self.supervisor is not None:
            self.supervisor.stop(timeout or self.cfg.engine.shutdown_timeout_s)
            self.supervisor = None
        if self.parts.supervision_clock is not None:
            self.parts.supervision_clock.stop()
        self.db.close()
        if self._switch_before is not None:
            sys.setswitchinterval(self._switch_before)
            self._switch_before = None
        if self.delivery is not None:
            self.delivery.stop(self.cfg.section("notify").timeout_s)
        if self._log_clock is not None:
            self._log_clock.__exit__(None, None, None)
            self._log_clock = None
        self.stopped.set()

    def load_state(self, name: str) -> StoredStrategyState | None:
        """A persisted state row, read through the store actor (so it includes what is still
        in its write buffer); actors call this from ``on_start`` to resume after a crash."""
        return self.registry.ask("store", LoadState(name), timeout=30.0)

    def load_states(self, prefix: str) -> list[StoredStrategyState]:
        """``load_state`` for every row whose name starts with ``prefix``, in one ask."""
        return self.registry.ask("store", LoadStates(prefix), timeout=30.0)

    def journal(self, strategy: str, day: date) -> tuple[list[StoredOrder], list[Fill]]:
        """A strategy's stored orders and fills of ``day``: what a restarted host catches up
        from (both are committed before anyone is told of them)."""
        account = self.parts.account
        return (self.db.orders(trading_date=day, strategy=strategy, account=account),
                self.db.fills(strategy=strategy, account=account, trading_date=day))

    def data_quality(self, timeout: float = 10.0) -> dict[str, dict[str, int]]:
        """Rejected ticks per symbol and reason, for the end-of-run table (``quality_table``):
        each bar builder's counts, ``late`` included, and over a real feed the frames its client
        dropped before they became ticks (row ``(feed)``, by reason). A part that does not
        answer is left out, and said so in one line."""
        out: dict[str, dict[str, int]] = {}
        silent = 0
        for sym in self.symbols():
            try:
                stats = self.ask(builder_name(sym), StatusRequest(), timeout=timeout)
            except Exception:
                silent += 1
                continue
            out[sym] = {**stats.invalid, "late": stats.late}
        try:
            dropped = self.ask("feed", StatusRequest(), timeout=timeout).get("dropped") or {}
        except Exception:
            dropped, silent = {}, silent + 1
        if dropped:
            out["(feed)"] = dict(dropped)
        if silent:
            logger.warning("data quality: {} part(s) did not answer; the table leaves them out",
                           silent)
        return out

    def restart_count(self) -> int:
        return self.supervisor.restart_count() if self.supervisor is not None else 0

    def tell(self, name: str, message: Any) -> None:
        self.registry.tell(name, message)

    def ask(self, name: str, message: Any, timeout: float = 5.0) -> Any:
        return self.registry.ask(name, message, timeout=timeout)

    def _on_simulated_order(self, row: OrderRow) -> None:
        from engine.trading.orders import update_from_row

        self.registry.tell("orders", update_from_row(row, self.clock.time(), "stream"))

    # -- supervision hooks -------------------------------------------------------------------------
    def _on_restart(self, rec: RestartRecord) -> None:
        self.registry.tell("store", rec)

    def _on_dead_letter(self, letter: DeadLetter) -> None:
        if letter.name != "store":
            self.registry.tell("store", letter)

    def _safe_stop(self, reason: str) -> None:
        """The root gave up: no new orders, stops stay where they are, alert, exit non-zero."""
        self.safe_stop_reason = reason
        if self.delivery is not None:
            self.delivery.put(safe_stop_notice(reason, self.clock.time()))
        logger.critical("[SAFE STOP] supervisor gave up: {}. No new orders will be placed; "
                        "resting stop orders stay at the broker.", reason)
        self.stopped.set()


def close_margin(cfg: Config, clock: Clock) -> float:
    """Engine seconds a bar-close timer waits past minute end + grace: the real transit time
    a received tick may need to reach its builder, scaled by the clock's speed (a virtual clock
    has no transit: the configured value keeps the timers' order)."""
    transit = cfg.section("market_data").close_transit_s
    return transit * clock.speed if math.isfinite(clock.speed) else transit


def last_close_at(cfg: Config, clock: Clock, last_tick_ts: float) -> float:
    """Engine time by which the minute of ``last_tick_ts`` has surely been closed."""
    return (minute_start(last_tick_ts) + 60.0 + cfg.bars.grace_s + close_margin(cfg, clock)
            + 0.001)


def _history_of(broker: Broker, exchanges: Mapping[str, str], symbol: str,
                day: date) -> Sequence[HistoryBar]:
    iso = day.isoformat()
    return broker.history(symbol=symbol, exchange=exchanges[symbol], interval="1m",
                          start_date=iso, end_date=iso)


def rest_history_source(broker: Broker, exchanges: Mapping[str, str], calls_per_s: float,
                        concurrency: int) -> Callable[[str, date], Sequence[HistoryBar]]:
    """The bar builders' history reads over REST. Every builder asks at once when it starts
    (82 after a restart of the market-data group), so they take turns: at most ``calls_per_s``
    started per second and ``concurrency`` in flight, so that the whole-day answers are not
    all held, parsed, at the same moment (they made the soak's memory climb)."""
    pace = _Pace(calls_per_s)
    in_flight = threading.BoundedSemaphore(concurrency)

    def history(symbol: str, day: date) -> Sequence[HistoryBar]:
        with in_flight:
            pace.wait()
            return _history_of(broker, exchanges, symbol, day)

    return history


class _Pace:
    """Spaces calls from many threads at least ``1 / rate`` seconds apart (real time)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self._interval
        if turn > now:
            time.sleep(turn - now)


def _host_factory(name: str, factory: Any, account: str, instrument: Any,
                  load: Any, load_all: Any, journal: Any, r_unit: str) -> Callable[[Any], Any]:
    from actors.strategy_host import StrategyHost

    return lambda s: StrategyHost.start(s, strategy_factory=factory, strategy_name=name,
                                        account=account, instrument=instrument, load_state=load,
                                        load_states=load_all, journal=journal, r_unit=r_unit)


def _bar_factory(symbol: str, settings: Any, session: tuple[float, float],
                 downstream: tuple[str, ...], history: Any, load: Any,
                 margin: float, *, traded: bool) -> Callable[[Any], Any]:
    return lambda s: BarBuilder.start(s, symbol=symbol, settings=settings, session=session,
                                      downstream=downstream, history=history,
                                      load_snapshot=load, close_margin_s=margin, traded=traded)


def notice_delivery(cfg: Config, mode: str, urls_text: str | None = None) -> Delivery | None:
    """A delivery thread for notices when URLs are set (``NIFTY_ENGINE_NOTIFY_URLS`` and
    ``urls_text``, the account's stored ones) and ``[notify]`` is on (a replay only with
    ``replay = true``)."""
    settings: NotifySettings = cfg.section("notify")
    urls = list(dict.fromkeys(notify_urls(cfg.secrets.notify_urls) + notify_urls(urls_text)))
    if not urls or not settings.enabled or (mode == "replay" and not settings.replay):
        return None
    logger.info("notify: {} URL(s): {}", len(urls), ", ".join(map(redacted, urls)))
    return Delivery(urls, settings)
