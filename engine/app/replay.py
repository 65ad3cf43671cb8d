"""Deterministic replay of a recorded session through the real actors, on the virtual clock.

Owns the replay driver. Ticks are read from a session file in arrival order and delivered in
steps of ``step_s`` seconds of market time: the driver advances the virtual clock to the step's
start (firing every timer due by then, in order), feeds the step's ticks to the in-process
simulated broker and, as one ``TickBatch``, to the feed actor, then lets every message the step
caused be handled before the next step starts, so the actors never run ahead of the decisions
earlier ticks caused, and the same session and configuration give the same bars, orders and
fills on every run. Two runtimes, the same actors:

- by default every actor runs on the driver's thread under the calling-thread dispatcher
  (engine.runtime.dispatcher): the driver runs its queue until it is empty. Deterministic by
  construction, and several times faster (no thread wake-ups);
- ``threaded=True`` (``replay --threaded``) runs them as live and paper do, one Pykka thread
  each; the driver then sends a ``FlushToken`` to every actor it told and waits on the
  ``StepBarrier`` (engine.runtime.barrier).

``speed`` 0 runs as fast as the machine allows; ``speed`` N paces steps at N times real time. A
progress bar (rich) shows market time and ticks per second; the summary gives counts, rates and
a hash of every bar, so two replays can be compared by one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from loguru import logger

from engine.app.dashboard.channel import dashboard_channel
from engine.app.facts import instrument_spec, session_facts
from engine.app.tree import Engine, EngineParts, last_close_at
from engine.config import Config
from engine.market.bars import quality_table
from engine.market.instruments import session_bounds, trading_date
from engine.market.session_file import SessionReader
from engine.messages import Bar, FlushToken, Tick, TickBatch
from engine.runtime.barrier import StepBarrier
from engine.runtime.clock import VirtualClock, WallClock, fmt_ist
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.logs import live_bar
from engine.runtime.memory import few_collections
from engine.settings import setting
from engine.sim.matching import SimulatedBroker


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Section ``[replay]``: how a session is stepped through the actors."""

    step_s: float = setting(1.0, "market seconds delivered per step before the actors must "
                            "settle (smaller: finer order timing; larger: faster)",
                            min=0.01, max=60)
    barrier_timeout_s: float = setting(60.0, "real seconds to wait for a step to settle before "
                                       "reporting a stuck actor", min=0.1, max=3600)
    progress: bool = setting(True, "show a progress bar on a terminal")
    store_flush_s: float = setting(300.0, "engine seconds between the store's batched writes "
                                   "in a replay at full speed (one transaction per five "
                                   "market minutes instead of every [store] "
                                   "flush_interval_s); a paced replay (--speed N) writes at "
                                   "least every N x [store] flush_interval_s, as often in "
                                   "real time as live does; orders and fills always commit "
                                   "at once", min=0.05, max=3600.0)
    store_synchronous: str = setting("NORMAL", "SQLite synchronous mode of a replay's database: "
                                     "NORMAL (no disk sync per commit; a replay can be run "
                                     "again) or FULL as [store] synchronous", choices=("FULL",
                                                                                       "NORMAL"))
    store_cache_kib: int = setting(16_384, "SQLite page cache per connection of a replay's "
                                   "database, KiB, instead of [store] cache_kib (each flush's "
                                   "upserts of bars and states would reread their pages from "
                                   "the file; the bundled day's database is about 10 MB)",
                                   min=64, max=1_048_576)


@dataclass
class ReplaySummary:
    session: str
    trading_day: date
    ticks: int = 0
    steps: int = 0
    elapsed_s: float = 0.0
    bars: int = 0
    gaps: int = 0
    symbols: int = 0
    bars_hash: str = ""
    invalid: dict[str, int] = field(default_factory=dict)
    late: int = 0
    stuck_steps: int = 0
    restarts: int = 0
    db_path: str = ""
    trade_reports: list[str] = field(default_factory=list)
    quality: dict[str, dict[str, int]] = field(default_factory=dict)  # symbol -> reason -> n

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        invalid = ", ".join(f"{k} {v}" for k, v in sorted(self.invalid.items())) or "none"
        return [
            f"[REPLAY] {self.session} ({self.trading_day})",
            f"  ticks {self.ticks:,} in {self.elapsed_s:.2f} s = {self.ticks_per_s:,.0f} ticks/s"
            f" ({self.steps:,} steps)",
            f"  bars {self.bars:,} over {self.symbols} symbols, gaps {self.gaps:,}, "
            f"late ticks {self.late:,}, invalid: {invalid}",
            f"  bars hash {self.bars_hash}",
            f"  restarts {self.restarts}, stuck steps {self.stuck_steps}, database "
            f"{self.db_path}",
            *self.trade_reports,
            *quality_table(self.quality),
        ]


def bars_digest(bars: Iterable[Bar]) -> str:
    """A stable hash of bars (sorted by symbol and start; floats by repr)."""
    return bar_rows_digest((b.symbol, b.start, b.open, b.high, b.low, b.close, b.volume,
                            b.ticks, b.vwap, b.source) for b in bars)


def bar_rows_digest(rows: Iterable[tuple[Any, ...]]) -> str:
    """``bars_digest`` of bars given as tuples of their fields in ``Bar``'s order (as
    ``Database.day_bar_rows`` reads them)."""
    h = hashlib.sha256()
    for row in sorted(rows, key=_by_symbol_and_start):
        h.update(repr(row).encode())
    return h.hexdigest()[:16]


_by_symbol_and_start = operator.itemgetter(0, 1)


class ReplayDriver:
    """Runs one session file through a freshly built engine on a virtual clock."""

    def __init__(self, cfg: Config, session: Path, *, db_path: Path, speed: float = 0.0,
                 progress: bool | None = None,
                 on_step: Callable[[Engine, float], None] | None = None,
                 parts_hook: Callable[[EngineParts], None] | None = None,
                 strategies: tuple[str, ...] = (), threaded: bool = False) -> None:
        self.cfg = cfg
        self.settings: ReplaySettings = cfg.section("replay")
        self.session = session
        self.db_path = db_path
        self.speed = speed
        self.progress = self.settings.progress if progress is None else progress
        self.reader = SessionReader(session)
        self.on_step = on_step
        self.parts_hook = parts_hook
        self.strategies = strategies
        self.threaded = threaded
        self._dispatcher: Dispatcher | None = None
        self._last_ts = 0.0  # latest bucketing time (exchange time, else receive) seen

    def _parts(self) -> tuple[EngineParts, VirtualClock, SimulatedBroker]:
        span = self.reader.time_range()
        if span is None:
            raise ValueError(f"{self.session}: the session holds no ticks")
        first, _ = span
        day = trading_date(first)
        facts = session_facts(self.reader)  # the session's own day: its lot size, its expiries
        spec = instrument_spec(self.cfg, facts)
        open_, _close = session_bounds(day, spec)
        clock = VirtualClock(start=min(first, open_) - 1.0)
        symbols = [(info.symbol, info.exchange) for info in self.reader.symbols()]
        broker = SimulatedBroker(clock, spec, self.cfg.section("matching"), account="replay")
        for sym, exch in symbols:
            broker.declare_symbol(sym, exch)
        # threaded: restart backoff and liveness run in real time (hangs are real-time
        # matters); on one thread they run on the virtual clock, in order with everything else
        self._dispatcher = None if self.threaded else Dispatcher()
        parts = EngineParts(mode="replay", clock=clock, symbols=symbols, trading_day=day,
                            broker=broker, db_path=self.db_path,
                            supervision_clock=WallClock() if self.threaded else None,
                            strategies=self.strategies, account="replay",
                            open_gate_at_start=True, facts=facts, dispatcher=self._dispatcher)
        if self.parts_hook is not None:
            self.parts_hook(parts)
        return parts, clock, broker

    def flush_interval_s(self) -> float:
        """Engine seconds between the store's batched writes: ``store_flush_s``, or for a paced
        replay at most ``speed`` times ``[store] flush_interval_s`` (a page watching the
        database sees bars as often, in real time, as in live)."""
        flush = self.settings.store_flush_s
        if self.speed > 0:
            flush = min(flush, self.speed * self.cfg.store.flush_interval_s)
        return flush

    def run(self) -> ReplaySummary:
        parts, clock, broker = self._parts()
        store = dataclasses.replace(self.cfg.store, flush_interval_s=self.flush_interval_s(),
                                    batch_size=max(self.cfg.store.batch_size, 100_000),
                                    synchronous=self.settings.store_synchronous,
                                    cache_kib=self.settings.store_cache_kib)
        engine = Engine(self.cfg.replace(store=store), parts)
        summary = ReplaySummary(str(self.session), parts.trading_day, symbols=len(parts.symbols),
                                db_path=str(self.db_path))
        engine.start()
        engine.registry.track_external_sends(self.threaded)
        started = time.perf_counter()
        try:
            with dashboard_channel(engine, openalgo_url="", replay=True), few_collections():
                self._drive(engine, clock, broker, summary)
                # close the last minute that had ticks (not the rest of the session: a short
                # recording would otherwise end in hours of gaps and heartbeats); minutes are
                # bucketed by exchange time, so that is what decides the last one
                _, close = session_bounds(parts.trading_day, engine.spec_instrument)
                end = last_close_at(self.cfg, clock, min(self._last_ts, close - 1.0))
                self._settle(engine, clock, end, summary)
                summary.elapsed_s = time.perf_counter() - started
                self._collect(engine, summary)
        finally:
            engine.registry.track_external_sends(False)
            engine.stop()
        self._collect_bars(summary, parts.trading_day)
        return summary

    # -- stepping ------------------------------------------------------------------------------
    def _steps(self) -> Iterator[tuple[float, list[Tick]]]:
        """The session's ticks in steps: ``(step start, ticks)``, each step the ticks received
        from its start until ``step_s`` later (a step without ticks is skipped)."""
        step = self.settings.step_s
        current: list[Tick] = []
        boundary = 0.0
        end = -math.inf  # boundary + step: a tick received at or after it starts a new step
        last_ts = self._last_ts
        for tick in self.reader.ticks():
            recv = tick.recv_ts
            if recv >= end:
                if current:
                    self._last_ts = last_ts
                    yield boundary, current
                    current = []
                boundary = recv - (recv % step)
                end = boundary + step
            current.append(tick)
            ts = tick.ts
            if ts > last_ts:
                last_ts = ts
        self._last_ts = last_ts
        if current:
            yield boundary, current

    def _drive(self, engine: Engine, clock: VirtualClock, broker: SimulatedBroker,
               summary: ReplaySummary) -> None:
        total = self.reader.count()
        real0 = time.perf_counter()
        market0: float | None = None
        with _Progress(self.progress, total) as bar:
            for step_start, ticks in self._steps():
                if self.speed > 0:
                    market0 = step_start if market0 is None else market0
                    wait = (step_start - market0) / self.speed - (time.perf_counter() - real0)
                    if wait > 0:
                        time.sleep(wait)
                self._settle(engine, clock, step_start, summary, ticks, broker)
                summary.ticks += len(ticks)
                summary.steps += 1
                if self.on_step is not None:
                    self.on_step(engine, step_start)
                bar.update(len(ticks), step_start)

    def _settle(self, engine: Engine, clock: VirtualClock, until: float,
                summary: ReplaySummary, ticks: list[Tick] | None = None,
                broker: SimulatedBroker | None = None) -> None:
        """Advance to ``until`` (timers), deliver ``ticks``, then wait for the step to settle."""
        registry = engine.registry
        # timers due at different moments are settled one moment at a time, so what one timer
        # causes is handled before a later timer's message goes out (e.g. a strategy's
        # evaluation and the order manager's poll)
        while True:
            due = clock.next_due()
            if due is None or due >= until:
                break
            clock.advance_to(due)
            self._barrier(registry, summary, due)
        clock.advance_to(until)
        if ticks:
            assert broker is not None
            broker.apply_ticks(ticks)
            registry.tell("feed", TickBatch(tuple(ticks)))
        self._barrier(registry, summary, until)

    def _barrier(self, registry: Any, summary: ReplaySummary, until: float) -> None:
        """Wait until every message told from outside actors since the last call is handled,
        and everything those messages caused."""
        if self._dispatcher is not None:
            self._dispatcher.run()  # one thread: handling them all is the wait
            return
        targets = registry.take_external_sends()
        if not targets:
            return
        barrier = StepBarrier()
        barrier.add(len(targets))
        token = FlushToken(summary.steps, barrier)
        for name in targets:
            registry.tell(name, token)
        registry.take_external_sends()  # the tokens themselves
        if not barrier.wait(self.settings.barrier_timeout_s):
            summary.stuck_steps += 1
            logger.error("replay: step at {} did not settle within {:.0f} s ({} token(s) "
                         "outstanding); continuing", fmt_ist(until),
                         self.settings.barrier_timeout_s, barrier.outstanding)
            barrier.reset()

    # -- results -------------------------------------------------------------------------------
    def _collect(self, engine: Engine, summary: ReplaySummary) -> None:
        summary.quality = engine.data_quality()
        for counts in summary.quality.values():
            for reason, n in counts.items():
                if reason == "late":
                    summary.late += n
                else:
                    summary.invalid[reason] = summary.invalid.get(reason, 0) + n
        summary.restarts = engine.restart_count()

    def _collect_bars(self, summary: ReplaySummary, day: date) -> None:
        from engine.store.database import Database

        db = Database(self.db_path, self.cfg.store)
        try:
            # the whole day in two queries (not two per symbol), bars as plain tuples
            symbols = {info.symbol for info in self.reader.symbols()}
            bars = [row for row in db.day_bar_rows(day) if row[0] in symbols]
            gaps = sum(n for symbol, n in db.day_gap_counts(day).items() if symbol in symbols)
            if self.strategies:
                from engine.trading.trades import day_report

                summary.trade_reports = [day_report(db, name, day, "replay",
                                                    self.cfg.section("charges"))
                                         for name in self.strategies]
        finally:
            db.close()
        summary.bars = len(bars)
        summary.gaps = gaps
        summary.bars_hash = bar_rows_digest(bars)


class _Progress:
    """A rich progress bar showing market time and ticks/s (silent when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]replay[/] {task.fields[market]}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                transient=False)
            self._shown = live_bar(self._progress)
            self._task = self._progress.add_task("replay", total=self.total, market="",
                                                 rate="")
            self._t0 = time.perf_counter()
        return self

    def update(self, n: int, market_ts: float) -> None:
        if self._progress is None:
            return
        self._progress.advance(self._task, n)
        now = time.perf_counter()
        if now - self._last >= 0.2:
            self._last = now
            done = self._progress.tasks[0].completed
            rate = done / (now - self._t0) if now > self._t0 else 0.0
            self._progress.update(self._task, market=fmt_ist(market_ts),
                                  rate=f"{rate:,.0f} ticks/s")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._shown.__exit__(*exc)
