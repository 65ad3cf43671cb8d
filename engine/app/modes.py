"""The run modes that need more than the runtime itself: paper, standalone simulator, recording.

Owns how each mode assembles its ``EngineParts`` and runs until done or told to stop:

- ``run_paper``: the built-in OpenAlgo-compatible simulator runs in-process and plays a session
  file on a scaled clock; the engine talks to it over real loopback sockets (REST + WebSocket),
  exactly as it would to a real OpenAlgo server. Market time is held until the feed has
  subscribed every symbol, so no tick is lost or "late".
- ``run_simulator``: the simulator alone, for any OpenAlgo client (the official SDK included),
  optionally playing a fault schedule (``engine.sim.schedule``) while it serves.
- ``run_record``: the live feed from a user's OpenAlgo server into a session file.

A standalone simulator also writes ``<state_dir>/simulator.json`` (its URLs and market clock)
for engines that attach to it (``engine.app.live``).

Replay lives in ``engine.app.replay``; live trading is assembled in ``engine.app.live``.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from types import FrameType

from loguru import logger

from actors.feed import FeedCallbacks
from engine.app.accounts import env_basic_auth, proxy_access
from engine.app.dashboard.channel import dashboard_channel
from engine.app.facts import broker_facts, instrument_spec, session_facts
from engine.app.operator import control_channel, graceful_stop
from engine.app.session_end import (
    SessionChecks,
    cancel_entries_at_safe_stop,
    check_dead_letters,
    check_session,
)
from engine.app.tree import Engine, EngineParts, last_close_at
from engine.app.venues import write_simulator_file
from engine.config import Config
from engine.market.instruments import trading_date
from engine.market.session_file import SessionReader
from engine.messages import Tick
from engine.openalgo.access import ProxyAccess
from engine.openalgo.feed import FeedClient
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.clock import IST, Clock, ScaledClock, WallClock
from engine.runtime.fastforward import FastForwardClock
from engine.runtime.pacing import Pacer
from engine.sim.days import MultiDay
from engine.sim.schedule import FaultSchedule, FaultScheduleRunner
from engine.sim.server import SimulatorServer, serve_forever
from engine.store.database import Database

Pair = tuple[str, str]


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set ``stop`` (only from the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        # Never log inside the handler: it runs between two bytecodes of the main thread, which
        # may be inside the logger; loguru refuses the re-entry and prints the record it was
        # writing, traceback and all. A thread logs it once the logger is free.
        threading.Thread(target=logger.warning, args=("received {}; stopping gracefully",
                                                      signal.Signals(signum).name),
                         name="signal-log", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def feed_connector(cfg: Config, *, api_key: str, clock: Clock, ws_url: str | None = None,
                   account: str = "default", access: ProxyAccess | None = None,
                   pacer: Pacer | None = None) -> Callable[[FeedCallbacks], FeedClient]:
    """A factory the Feed actor calls (on every start) to get a fresh feed client. With a
    ``pacer`` (paper), every received batch of ticks is reported to it."""
    settings = cfg.feed if ws_url is None else replace(cfg.feed, ws_url=ws_url)

    def connect(cb: FeedCallbacks) -> FeedClient:
        on_ticks = cb.on_ticks
        if pacer is not None:
            def on_ticks(ticks: list[Tick], _inner: Callable[[list[Tick]], None] = on_ticks
                         ) -> None:
                _inner(ticks)
                if ticks:
                    pacer.consumed(max(t.ts for t in ticks), len(ticks))
        return FeedClient(settings, api_key=api_key, clock=clock, on_ticks=on_ticks,
                          on_status=cb.on_status, on_order_update=cb.on_order_update,
                          account=account, access=access)

    return connect


@dataclass
class PaperResult:
    session: str
    ticks_published: int
    db_path: Path
    record_to: Path | None
    stopped_early: bool
    safe_stop: str | None
    checks: SessionChecks = field(default_factory=SessionChecks)
    strategies: tuple[str, ...] = ()
    trading_day: date | None = None
    quality: dict[str, dict[str, int]] = field(default_factory=dict)  # symbol -> reason -> n


def run_paper(cfg: Config, session: Path, *, speed: float, db_path: Path,
              record_to: Path | None = None, strategies: tuple[str, ...] = (),
              stop: threading.Event | None = None,
              on_started: Callable[[Engine, SimulatorServer], None] | None = None,
              subscribe_timeout_s: float = 30.0) -> PaperResult:
    """Play ``session`` through the in-process simulator and trade it over real sockets."""
    reader = SessionReader(session)
    span = reader.time_range()
    if span is None:
        raise ValueError(f"{session}: the session holds no ticks")
    first, last = span
    symbols: list[Pair] = [(i.symbol, i.exchange) for i in reader.symbols()]
    clock = ScaledClock(start=first - 1.0, speed=speed, paused=True)
    api_key = secrets.token_urlsafe(24)  # a private key for this run's simulator
    # the simulator serves the session's own facts; the engine reads them back over REST
    sim = SimulatorServer(cfg.section("simulator"), api_key=api_key, clock=clock,
                          instrument=instrument_spec(cfg, session_facts(reader)),
                          matching=cfg.section("matching"))
    stop = stop or threading.Event()
    checks = SessionChecks()
    engine: Engine | None = None
    published = 0
    quality: dict[str, dict[str, int]] = {}
    # the market waits for the machine: never ahead of what the engine has taken in
    pacer = Pacer(backlog=lambda: sim.pending_ticks() + (
        engine.registry.backlog() if engine is not None else 0))
    try:
        sim.declare_symbols(symbols)
        sim.start()
        broker = OpenAlgoClient(replace(cfg.openalgo, host=sim.rest_url), api_key=api_key,
                                clock=clock, account="paper")
        day = trading_date(first)
        facts, _spot = broker_facts(cfg, broker, day, db_path=db_path, account="paper")
        parts = EngineParts(mode="paper", clock=clock, symbols=symbols,
                            trading_day=day, broker=broker, facts=facts,
                            connect=feed_connector(cfg, api_key=api_key, clock=clock,
                                                   ws_url=sim.ws_url, account="paper",
                                                   pacer=pacer),
                            db_path=db_path, record_to=record_to, strategies=strategies,
                            account="paper", open_gate_at_start=bool(strategies))
        engine = Engine(cfg, parts)
        engine.start()
        with ExitStack() as channel:
            if strategies:  # a paper run that trades is operated like live
                channel.enter_context(control_channel(engine, openalgo_url=sim.rest_url))
            channel.enter_context(dashboard_channel(engine, openalgo_url=sim.rest_url))
            _wait_for_subscriptions(sim, {s for s, _ in symbols}, subscribe_timeout_s)
            if on_started is not None:
                on_started(engine, sim)
            playback = sim.play(reader.ticks(), clock, pacer=pacer)
            clock.resume()
            logger.info("paper: playing {} ({} symbols) at {}x", session.name, len(symbols),
                        speed)
            while not stop.is_set() and not playback.join(0.2):
                if engine.stopped.is_set():
                    break
            published = playback.published
            if pacer.waits:
                logger.info("paper: the machine could not keep up at {}x: market time stood "
                            "still {:.0f} s (engine) while the engine caught up ({} waits, "
                            "{:.1f} s real)", speed, clock.held_s, pacer.waits, pacer.waited_s)
            if not stop.is_set():
                # let the last minute close on the engine clock (minute end + grace)
                end = last_close_at(cfg, clock, last) + 0.5
                while clock.time() < end and not stop.is_set():
                    time.sleep(min(0.05, max(0.0, (end - clock.time()) / speed)))
            else:
                playback.stop()
                if not engine.safe_stop_reason:
                    graceful_stop(engine, cfg.engine.on_signal,
                                  timeout_s=cfg.engine.shutdown_timeout_s)
            if strategies and not engine.safe_stop_reason:
                check_session(checks, registry=engine.registry, db=engine.db, broker=broker,
                              account="paper", day_over=not stop.is_set()
                              and past_eod(cfg, last), trading_day=day)
            if not engine.safe_stop_reason:
                quality = engine.data_quality()
    finally:
        safe = engine.safe_stop_reason if engine is not None else None
        if engine is not None:
            engine.stop()
            if safe:
                entries_at_safe_stop(cfg, db_path, "paper", checks, lambda: OpenAlgoClient(
                    replace(cfg.openalgo, host=sim.rest_url), api_key=api_key, clock=clock,
                    account="paper"))
            if strategies:
                check_dead_letters(checks, engine.registry)
        sim.stop()
        clock.stop()
    return PaperResult(str(session), published, db_path, record_to, stop.is_set(), safe,
                       checks, strategies, trading_date(first), quality)


def past_eod(cfg: Config, ts: float) -> bool:
    """Whether ``ts`` is at or after the risk manager's end-of-day exit on its day."""
    eod = dtime.fromisoformat(cfg.section("risk").eod_exit)
    return ts >= datetime.combine(trading_date(ts), eod, IST).timestamp()


def entries_at_safe_stop(cfg: Config, db_path: Path, account: str, checks: SessionChecks,
                         connect: Callable[[], OpenAlgoClient]) -> None:
    """A safe stop: working entries are cancelled from the database, each verified."""
    db = Database(db_path, cfg.store)
    try:
        cancel_entries_at_safe_stop(db, connect, account, checks)
    finally:
        db.close()


def _wait_for_subscriptions(sim: SimulatorServer, wanted: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        subscribed = {sym for subs in sim.subscriptions() for sym, _, _ in subs}
        if wanted <= subscribed:
            return
        time.sleep(0.02)
    raise TimeoutError(f"the feed did not subscribe every symbol within {timeout:.0f} s")


def run_simulator(cfg: Config, session: Path, *, speed: float, api_key: str,
                  rest_port: int | None = None, ws_port: int | None = None,
                  on_started: Callable[[SimulatorServer], None] | None = None,
                  stop: threading.Event | None = None,
                  faults: FaultSchedule | None = None,
                  days: Sequence[Path] = ()) -> int:
    """Serve ``session`` to any OpenAlgo client until interrupted; returns ticks published.
    ``faults`` is played from the moment the simulator listens. ``days``: several sessions
    played one after another instead, the nights and holidays between them skipped
    (``engine.sim.days``) on a ``FastForwardClock`` that attached engines share."""
    settings = cfg.section("simulator")
    changes = {k: v for k, v in (("rest_port", rest_port), ("ws_port", ws_port)) if v is not None}
    if changes:
        settings = replace(settings, **changes)
    reader = SessionReader(session)
    runners: list[FaultScheduleRunner] = []
    multi = MultiDay(days) if days else None
    calendar = instrument_spec(cfg, None).calendar
    clock = FastForwardClock(multi.first_ts - 1.0, speed, multi.skips(calendar)) \
        if multi else None

    def started(sim: SimulatorServer) -> None:
        if multi is not None and clock is not None:
            # each closed day's books are kept (<state_dir>/sim-books/books-DATE.json)
            multi.schedule_rollovers(clock, sim.broker.lose_state, calendar,
                                     archive=Path(cfg.engine.state_dir) / "sim-books")
        if faults is not None:
            runners.append(FaultScheduleRunner(sim.faults, faults).start())
        # engines that attach (run.py paper --attach) run on this simulator's market clock
        write_simulator_file(Path(cfg.engine.state_dir), rest_url=sim.rest_url,
                             ws_url=sim.ws_url, clock=sim.clock)
        if on_started is not None:
            on_started(sim)

    try:
        if multi is not None:  # each day's facts are the calendar's: [instrument] alone
            return serve_forever(settings, api_key, multi.ticks(), clock, speed,
                                 symbols=multi.symbols(), instrument=instrument_spec(cfg, None),
                                 matching=cfg.section("matching"), on_started=started,
                                 stop_event=stop)
        return serve_forever(settings, api_key, reader.ticks(), speed=speed,
                             symbols=[(i.symbol, i.exchange) for i in reader.symbols()],
                             instrument=instrument_spec(cfg, session_facts(reader)),
                             matching=cfg.section("matching"),
                             on_started=started, stop_event=stop)
    finally:
        for runner in runners:
            runner.stop()
        if clock is not None:
            clock.stop()


def run_record(cfg: Config, out: Path, *, symbols: list[Pair], db_path: Path,
               stop: threading.Event) -> Path:
    """Record the live feed of ``symbols`` into ``out`` until ``stop`` is set."""
    api_key = cfg.secrets.require("openalgo_api_key", "recording reads your OpenAlgo feed")
    clock = WallClock()
    day = trading_date(clock.time())
    access = proxy_access(cfg, env_basic_auth(os.environ), cfg.openalgo.host, cfg.feed.ws_url)
    client = OpenAlgoClient(cfg.openalgo, api_key=api_key, clock=clock, access=access)
    try:  # the session file records the day's facts, so a replay trades the day's lots
        facts, _spot = broker_facts(cfg, client, day, db_path=db_path, account="default")
    finally:
        client.close()
    parts = EngineParts(mode="record", clock=clock, symbols=symbols, trading_day=day,
                        facts=facts,
                        connect=feed_connector(cfg, api_key=api_key, clock=clock,
                                               access=access),
                        db_path=db_path, record_to=out)
    engine = Engine(cfg, parts)
    engine.start()
    try:
        while not stop.wait(0.5):
            if engine.stopped.is_set():
                break
    finally:
        engine.stop()
        clock.stop()
    return out
