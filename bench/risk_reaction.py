"""Risk reaction: from the first price past max loss to the first exit request, against polling.

Engine side, repeated ``--trials`` times on a fresh stack each time: the real ``OrderManager``,
``PositionMonitor``, ``RiskManager`` and ``StoreWriter`` actors (SQLite in a temporary folder,
the configured defaults: synchronous FULL) on a clock that runs at real speed (``ScaledClock``
at 1x from 10:00 IST on a trading day, so the end-of-day exit stays out of the way), against
the in-process ``SimulatedBroker`` (its order listener stands in for the order-update stream, as
in replay). Each trial opens a one-lot short at 100 with a resting stop-limit BUY at 130 through
the order manager, then moves the price up in ticks 5-20 ms apart (each applied to the broker,
then told to the position monitor as the feed does) until one crosses ``max_loss``. Timed on
the monotonic clock:

- ``first exit request``: from just before the crossing tick is told to the position monitor
  to the exit coordinator's first broker order call (the cancel of the resting stop, whose
  verified replacement is the market exit): monitor → StrategyPnl → risk check → HALTED
  committed → positionbook read → CancelIntent → order manager → ``cancel_order``;
- ``exit order placed``: to the market BUY exit's ``place_order`` (after the broker confirmed
  the stop cancelled).

Baseline: how scripts watch a limit: a loop that reads the positionbook every 5 s and compares
the P&L with max loss, then sends the same first exit request (cancel of the stop). Measured for
real, not computed: ``--pollers`` independent loops (each with its own simulated broker, started
at random moments, so the crossing falls at a random phase of its poll cycle) run concurrently
for one crossing each; its reaction is crossing → the ``cancel_order`` after the poll that saw
it. With a uniform phase one expects mean ≈ interval/2 and p99 ≈ 0.99·interval; the table shows
both the measured and that expectation.
Usage: python bench/risk_reaction.py [--quick] [--trials N] [--pollers N] [--json PATH]
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser, latency_summary  # noqa: E402
from engine.market.instruments import InstrumentSpec  # noqa: E402
from engine.messages import (  # noqa: E402
    Action,
    OrderIntent,
    OrderPurpose,
    PositionQuery,
    PriceType,
    Tick,
    WorkingOrdersQuery,
)
from engine.runtime.actor import EngineActor  # noqa: E402
from engine.runtime.clock import ScaledClock, ist_epoch  # noqa: E402
from engine.sim.matching import SimulatedBroker  # noqa: E402

T0 = ist_epoch(2025, 9, 3, 10, 0)
SYMBOL = "NIFTY09SEP2525000CE"
EXCHANGE = "NFO"
ACCOUNT = "bench"
STRATEGY = "s"
SPEC = InstrumentSpec()
LOT = SPEC.lot_size
ENTRY = 100.0
STOP_TRIGGER = 130.0
MAX_LOSS = 650.0  # crossed at 110.00 for one lot short at 100
R_RUPEES = 6500.0
POLL_INTERVAL_S = 5.0
TARGET_P99_MS = 50.0


def _tick(price: float, clock: ScaledClock) -> Tick:
    now = clock.time()
    return Tick(SYMBOL, EXCHANGE, price, now, now, None, round(price - 0.05, 2),
                round(price + 0.05, 2))


def _path_to_cross(rng: random.Random) -> list[float]:
    """Prices from the entry up to (and ending with) the first one past max loss."""
    threshold = round(ENTRY + MAX_LOSS / LOT, 2)
    below = [round(ENTRY + 0.5 * i, 2) for i in range(1, rng.randint(5, 19) + 1)]  # < 110
    return [*below, round(threshold + 0.05 * rng.randint(0, 4), 2)]


class ExitSpy:
    """The broker the actors see: delegates to the simulated broker and stamps order calls."""

    def __init__(self, target: SimulatedBroker) -> None:
        self._target = target
        self.armed = False
        self.first_request: float | None = None
        self.exit_placed: float | None = None
        self.done = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def cancel_order(self, **kw: Any) -> str:
        if self.armed and self.first_request is None:
            self.first_request = time.monotonic()
        return self._target.cancel_order(**kw)

    def place_order(self, **kw: Any) -> str:
        if self.armed:
            now = time.monotonic()
            if self.first_request is None:
                self.first_request = now
            if kw.get("action") == "BUY" and self.exit_placed is None:
                self.exit_placed = now
                self.done.set()
        return self._target.place_order(**kw)


class Sink(EngineActor):
    """Stands in for health, the feed and the strategy host: takes every message, does nothing."""

    def handle(self, message: Any) -> None:
        return None


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"risk_reaction: {what} within {timeout} s")
        time.sleep(0.002)


def engine_trial(folder: Path, rng: random.Random) -> tuple[float, float | None]:
    """One fresh stack, one crossing; returns (first exit request, exit placed) in seconds."""
    from actors.order_manager import OrderManager, OrderSettings
    from actors.position_monitor import PositionMonitor, PositionSettings
    from actors.risk_manager import RiskManager
    from actors.store import StoreWriter
    from engine.runtime.registry import Registry
    from engine.store.database import Database, StoreSettings
    from engine.trading.orders import update_from_row
    from engine.trading.risk import RiskSettings

    clock = ScaledClock(start=T0, speed=1.0)
    sim = SimulatedBroker(clock, SPEC, account="sim")
    sim.declare_symbol(SYMBOL, EXCHANGE)
    sim.on_tick(_tick(ENTRY, clock))
    spy = ExitSpy(sim)
    registry = Registry(clock)
    db = Database(folder / "engine.db", StoreSettings())
    refs: list[Any] = []

    def start(name: str, factory: Callable[[], Any]) -> None:
        registry.declare(name)
        ref = factory()
        registry.register(name, ref)
        refs.append(ref)

    def on_row(row: Any) -> None:
        registry.tell("orders", update_from_row(row, clock.time(), "stream"))

    try:
        start("store", lambda: StoreWriter.start(db, name="store", registry=registry,
                                                 clock=clock))
        for name in ("health", "feed", f"strategy.{STRATEGY}"):
            start(name, lambda n=name: Sink.start(name=n, registry=registry, clock=clock))
        sim.add_order_listener(on_row)
        start("orders", lambda: OrderManager.start(
            broker=spy, account=ACCOUNT, settings=OrderSettings(start_open=True),
            instrument=SPEC, db=db, strategies=(STRATEGY,), name="orders", registry=registry,
            clock=clock))
        start("positions", lambda: PositionMonitor.start(
            account=ACCOUNT, settings=PositionSettings(), broker=spy, db=db,
            r_units={STRATEGY: R_RUPEES}, exchanges={SYMBOL: EXCHANGE}, name="positions",
            registry=registry, clock=clock))
        start("risk", lambda: RiskManager.start(
            account=ACCOUNT, strategies={STRATEGY: R_RUPEES},
            settings=RiskSettings(max_loss=MAX_LOSS), instrument=SPEC, broker=spy, db=db,
            exchanges={SYMBOL: EXCHANGE}, name="risk", registry=registry, clock=clock))
        _open_short_with_stop(registry, clock)
        time.sleep(0.15)  # past the order manager's request interval: the exit is not queued
        path = _path_to_cross(rng)
        for price in path[:-1]:
            tick = _tick(price, clock)
            sim.on_tick(tick)
            registry.tell("positions", tick)
            time.sleep(rng.uniform(0.005, 0.02))
        tick = _tick(path[-1], clock)
        sim.on_tick(tick)
        spy.armed = True
        crossed = time.monotonic()
        registry.tell("positions", tick)
        if not spy.done.wait(10.0) and spy.first_request is None:
            raise TimeoutError("risk_reaction: no exit request within 10 s of the crossing")
        assert spy.first_request is not None
        placed = None if spy.exit_placed is None else spy.exit_placed - crossed
        return spy.first_request - crossed, placed
    finally:
        sim.remove_order_listener(on_row)
        for ref in reversed(refs):
            ref.stop()
        db.close()
        clock.stop()


def _open_short_with_stop(registry: Any, clock: ScaledClock) -> None:
    def intent(cid: str, action: Action, pricetype: PriceType, purpose: OrderPurpose,
               price: float = 0.0, trigger: float = 0.0) -> OrderIntent:
        return OrderIntent(client_id=cid, strategy=STRATEGY, account=ACCOUNT, symbol=SYMBOL,
                           exchange=EXCHANGE, action=action, quantity=LOT, pricetype=pricetype,
                           price=price, trigger_price=trigger, purpose=purpose,
                           created_ts=clock.time())

    registry.tell("orders", intent("s-entry", Action.SELL, PriceType.MARKET, OrderPurpose.ENTRY))
    _wait(lambda: any(m.quantity == -LOT for m in
                      registry.ask("positions", PositionQuery(strategy=STRATEGY), timeout=5)),
          10.0, "the short was not filled")
    time.sleep(0.15)  # the order manager's request interval
    registry.tell("orders", intent("s-stop", Action.BUY, PriceType.SL, OrderPurpose.STOP,
                                   price=STOP_TRIGGER + 3.0, trigger=STOP_TRIGGER))
    _wait(lambda: any(w.broker_order_id for w in
                      registry.ask("orders", WorkingOrdersQuery(STRATEGY), timeout=5)),
          10.0, "the stop was not placed")


class Poller:
    """The baseline: a script that reads the positionbook every ``interval`` seconds."""

    def __init__(self, interval: float, rng: random.Random) -> None:
        self.interval = interval
        self.clock = ScaledClock(start=T0, speed=1.0)
        self.sim = SimulatedBroker(self.clock, SPEC, account="poller")
        self.sim.declare_symbol(SYMBOL, EXCHANGE)
        self.sim.on_tick(_tick(ENTRY, self.clock))
        self.sim.place_order(strategy="script", symbol=SYMBOL, exchange=EXCHANGE,
                             action="SELL", quantity=LOT)
        self.stop_id = self.sim.place_order(strategy="script", symbol=SYMBOL,
                                            exchange=EXCHANGE, action="BUY", quantity=LOT,
                                            pricetype="SL", price=STOP_TRIGGER + 3.0,
                                            trigger_price=STOP_TRIGGER)
        self.rng = rng
        self.crossed: float | None = None
        self.reacted: float | None = None
        self.polls = 0

    def run(self, cross_after: float) -> None:
        """Poll until the crossing is seen and the exit request sent; the market moves on a
        second thread and crosses ``cross_after`` seconds after the first poll."""
        mover = threading.Thread(target=self._move, args=(cross_after,), daemon=True)
        mover.start()
        while self.reacted is None:
            self.polls += 1
            pnl = sum(row.pnl for row in self.sim.positionbook())
            if pnl <= -MAX_LOSS:
                self.reacted = time.monotonic()
                self.sim.cancel_order(strategy="script", orderid=self.stop_id)
                break
            time.sleep(self.interval)
        mover.join()
        self.clock.stop()

    def _move(self, cross_after: float) -> None:
        path = _path_to_cross(self.rng)
        pause = cross_after / len(path)
        for price in path:
            time.sleep(pause)
            if price == path[-1]:
                self.crossed = time.monotonic()
            self.sim.on_tick(_tick(price, self.clock))


def run_pollers(count: int, interval: float, seed: int) -> list[float]:
    """``count`` concurrent pollers, one crossing each at a random phase; their reactions."""
    rng = random.Random(seed)
    pollers = [Poller(interval, random.Random(rng.random())) for _ in range(count)]
    threads = []
    for poller in pollers:
        delay, cross_after = rng.uniform(0.0, interval), rng.uniform(0.5, interval)

        def run(p: Poller = poller, d: float = delay, c: float = cross_after) -> None:
            time.sleep(d)
            p.run(c)

        thread = threading.Thread(target=run, name="bench-poller", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(3 * interval + 10)
    return [p.reacted - p.crossed for p in pollers
            if p.reacted is not None and p.crossed is not None]


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small run for smoke testing")
    p.add_argument("--trials", type=int, help="engine crossings (default 200; quick 15)")
    p.add_argument("--pollers", type=int, help="concurrent 5 s pollers (default 60; quick 10)")
    p.add_argument("--poll-interval", type=float,
                   help="the baseline's poll interval, seconds (default 5; quick 1)")
    p.add_argument("--seed", type=int, default=20250903)
    args = p.parse_args()
    from loguru import logger

    logger.remove()
    # every trial fires max loss on purpose: its critical alert is expected, not news
    logger.add(sys.stderr, level="ERROR", filter=lambda r: r["name"] != "actors.risk_manager")
    trials = args.trials or (10 if args.quick else 200)
    pollers = args.pollers or (10 if args.quick else 60)
    interval = args.poll_interval or (1.0 if args.quick else POLL_INTERVAL_S)
    rng = random.Random(args.seed)
    first: list[float] = []
    placed: list[float] = []
    started = time.perf_counter()
    for n in range(trials):
        with tempfile.TemporaryDirectory() as tmp:
            request, exit_placed = engine_trial(Path(tmp), rng)
        first.append(request)
        if exit_placed is not None:
            placed.append(exit_placed)
        if (n + 1) % 50 == 0:
            print(f"  {n + 1}/{trials} engine trials", file=sys.stderr)
    engine_s = time.perf_counter() - started
    polled = run_pollers(pollers, interval, args.seed)
    report = Report("risk_reaction", "first price past max loss → first exit request: engine "
                    f"actors vs a {interval:g} s positionbook poll")
    rows = (("engine: first exit request (cancel of the stop)", first),
            ("engine: market exit placed (stop cancel confirmed)", placed),
            (f"{interval:g} s polling loop: first exit request", polled))
    for label, values in rows:
        stats = latency_summary(values)
        report.row(measure=label, samples=stats["n"], p50_ms=stats["p50_ms"],
                   p99_ms=stats["p99_ms"], max_ms=stats["max_ms"], mean_ms=stats["mean_ms"])
    engine_stats = latency_summary(first)
    exit_stats = latency_summary(placed)
    poll_stats = latency_summary(polled)
    for prefix, stats in (("engine_first_request", engine_stats),
                          ("engine_exit_placed", exit_stats), ("polling", poll_stats)):
        for key in ("p50_ms", "p99_ms", "max_ms", "n"):
            report.figure(f"{prefix}_{key}", stats[key])
    report.figure("poll_interval_s", interval)
    report.figure("polling_expected_p50_ms", interval / 2 * 1000.0)
    report.figure("polling_expected_p99_ms", interval * 0.99 * 1000.0)
    p50 = engine_stats["p50_ms"]
    poll50 = poll_stats["p50_ms"]
    report.figure("speedup_p50", None if not p50 or poll50 is None else poll50 / p50)
    report.figure("engine_trials_seconds", engine_s)
    report.figure("target", f"engine first exit request p99 < {TARGET_P99_MS:g} ms")
    p99 = engine_stats["p99_ms"]
    report.figure("target_met", p99 is not None and p99 < TARGET_P99_MS)
    report.figure("note", "2-core machine shared with other jobs: figures are noisy")
    report.finish(args.json)


if __name__ == "__main__":
    main()
