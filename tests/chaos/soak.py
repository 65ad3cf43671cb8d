"""The multi-day soak: one engine process trading several consecutive simulated days under
faults, judged day by day (issue 22, item 8).

One run (``run_soak``):

1. ``days`` small synthetic sessions on consecutive trading days (the chaos run's session:
   width 2, baseline filters relaxed) and a config for the run (the chaos settings);
2. the standalone simulator, ``run.py simulator --sessions DIR --faults FILE``: the days played
   one after another on a fast-forward clock (nights and quiet afternoons jumped over, the
   broker's books emptied, and kept, each night); the fault schedule holds, for each day, the
   chaos run's faults (tests/chaos/faultplan.py) from a few minutes after the day's selection to
   its last tick, then a ``clear``: random REST faults, the simulator's scenes, exceptions
   injected into every kind of actor, the database locked;
3. the engine, ``run.py paper --attach``, its own process, under the day lifecycle; a watcher
   keeps the last ``status`` of each trading day (with the broker's positions read beside it)
   and samples the engine's RSS and threads from ``/proc`` each time a day reaches ``closed``;
4. after the last day's closing: SIGTERM, then every chaos invariant per trading date
   (tests/chaos/invariants.py over that day's orders, fills, bars, alerts, restarts, the
   broker's books of that day and the faults of that day), and memory across days: the RSS at
   the end of the last day within ``max_rss_growth`` of the end of the first.

Command line: ``python -m tests.chaos.harness --soak-days 5`` (see RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from engine.app.facts import instrument_spec
from engine.app.sections import load_config
from engine.broker import OrderRow, PositionRow, TradeRow
from engine.market.instruments import is_trading_day, minute_start, trading_date
from engine.market.session_file import SessionReader
from engine.market.synth import small_session
from engine.runtime.clock import fmt_ist
from engine.runtime.fastforward import FastForwardClock
from engine.sim.days import MultiDay
from engine.store.database import Database
from tests.chaos.faultplan import (
    CLIENT_TIMEOUT_S,
    Crash,
    DbLock,
    FaultPlan,
    build_fault_plan,
    no_faults,
    with_archives,
)
from tests.chaos.harness import (
    CONFIG,
    POLL_REAL_S,
    RECONCILE_S,
    RUN,
    SMALL_SESSION_STRATEGY,
    Background,
    Injector,
    Operator,
    RssSampler,
    Stages,
    _broker,
    end_checks_failed,
    proc_status,
    process,
    status,
    stop_process,
    wait_for,
)
from tests.chaos.invariants import Check, RunFacts, check_all

#: market seconds after a day's first tick before its faults start (the selection at 09:16
#: and the engine's start are not what the soak breaks)
FAULTS_AFTER_OPEN_S = 5 * 60.0
#: real seconds after the simulator's start before the first faults: the engine attaches and
#: selects meanwhile (the first day starts as the simulator does)
ENGINE_START_S = 30.0


@dataclass(frozen=True, slots=True)
class SoakPlan:
    days: int = 5
    minutes: int = 30  # each day's session (from 09:15)
    speed: float = 30.0
    width: int = 2
    first_date: str = "2025-01-27"
    # each day's session seed: chosen so that every day trades (1-4 trades each in a replay
    # with the soak's strategy settings; a day without an entry proves nothing about stops);
    # days past the list use session_seed + their index
    session_seeds: tuple[int, ...] = (17, 19, 15, 15, 21)
    session_seed: int = 15
    fault_seed: int = 1
    faults: bool = True
    max_rss_growth: float = 0.10
    broker: str = "zerodha"


@dataclass
class DayWatch:
    """What the watcher saw of one trading day."""

    status: dict[str, Any] = field(default_factory=dict)  # the last status while trading
    positions: list[PositionRow] = field(default_factory=list)  # the broker's, beside it
    rss_kb: int | None = None  # at the day's ``closed`` (the lifecycle's count went up)
    threads: int | None = None


@dataclass
class SoakResult:
    out: Path
    days: dict[str, list[Check]]  # ISO date -> that day's checks
    memory: Check
    lines: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.memory.passed and all(c.passed for cs in self.days.values() for c in cs)


# ---------------------------------------------------------------------------------------------
# Pure parts (tests/chaos/test_soak.py)
# ---------------------------------------------------------------------------------------------


def memory_over_days(rss_kb: Sequence[tuple[str, int | None]], limit: float) -> Check:
    """RSS at the end of the last day within ``limit`` of the end of the first."""
    seen = [(d, kb) for d, kb in rss_kb if kb]
    figures = ", ".join(f"{d} {kb / 1024:.1f}" for d, kb in seen)
    if len(seen) < 2 or len(seen) != len(rss_kb):
        return Check("memory flat over days", False,
                     f"RSS sampled at the end of {len(seen)} of {len(rss_kb)} days: {figures}")
    first, last = seen[0][1], seen[-1][1]
    growth = last / first - 1.0
    return Check("memory flat over days", growth <= limit,
                 f"RSS at each day's closed (MiB): {figures}; last/first {growth:+.1%}, "
                 f"limit {limit:+.0%}")


def checks_of_day(failed: Sequence[str], day: str) -> tuple[str, ...]:
    """The engine's ``FAILED D: ...`` end-of-session lines of ``day``, undated (the lifecycle
    dates each day's failures)."""
    prefix = f"FAILED {day}: "
    return tuple("FAILED " + line[len(prefix):] for line in failed if line.startswith(prefix))


def in_window(at: Sequence[float], items: Sequence[Any], lo: float, hi: float) -> list[Any]:
    """``items`` whose time in ``at`` (same order) is in [lo, hi)."""
    return [item for t, item in zip(at, items, strict=False) if lo <= t < hi]


def merge_plans(plans: Sequence[tuple[float, FaultPlan]]) -> FaultPlan:
    """Days' fault plans as one schedule: each day's random REST faults switched on at its
    start (a day's ``clear`` switches them off), its scenes, crashes and locks."""
    events: list[dict[str, Any]] = []
    scenes: list[tuple[float, str]] = []
    crashes: list[Crash] = []
    locks: list[DbLock] = []
    for start, plan in plans:
        random = plan.simulator_json.get("random")
        if random:
            events.append({"at_s": round(start, 2), "fault": "random_rest_faults", **random})
        events += plan.simulator_json["events"]
        scenes += plan.scenes
        crashes += plan.crashes
        locks += plan.db_locks
    events.sort(key=lambda e: e["at_s"])
    return FaultPlan({"events": events}, tuple(scenes), tuple(crashes), tuple(locks))


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SoakLayout:
    out: Path
    config: Path
    faults: Path
    sessions: list[Path]
    dates: list[str]
    db: Path
    state: Path
    sock: str
    atm: int


def trading_dates(first: str, n: int) -> list[str]:
    spec = instrument_spec(load_config(None), None)
    day, found = date.fromisoformat(first), []
    while len(found) < n:
        if is_trading_day(day, spec):
            found.append(day.isoformat())
        day += timedelta(days=1)
    return found


def clock_of(sessions: Sequence[Path], cfg_path: Path, speed: float) -> FastForwardClock:
    """The simulator's clock for ``sessions`` (same skips, paused at its start): its
    ``base_of`` maps market time to real time."""
    cfg = load_config(cfg_path)
    multi = MultiDay(sessions)
    return FastForwardClock(multi.first_ts - 1.0, speed,
                            multi.skips(instrument_spec(cfg, None).calendar), paused=True)


def prepare(plan: SoakPlan, out: Path, sock_dir: Path) -> SoakLayout:
    out.mkdir(parents=True, exist_ok=True)
    dates = trading_dates(plan.first_date, plan.days)
    (out / "sessions").mkdir(exist_ok=True)
    sessions, atms = [], set()
    for i, day in enumerate(dates):
        summary = small_session(out / "sessions" / f"{day}.db", date=day,
                                seed=plan.session_seeds[i] if i < len(plan.session_seeds)
                                else plan.session_seed + i, symbols=plan.width,
                                minutes=plan.minutes)
        sessions.append(Path(summary.path))
        atms.add(summary.atm)
    assert len(atms) == 1, f"the days' sessions have different ATMs {atms}: --atm pins one"
    layout = SoakLayout(out, out / "config.toml", out / "faults.json", sessions, dates,
                        out / "engine.db", out / "var", str(sock_dir / "ctl" / "engine.sock"),
                        atms.pop())
    layout.config.write_text(CONFIG.format(
        state=layout.state, db=layout.db, width=plan.width, sock=layout.sock,
        reconcile=RECONCILE_S, timeout=CLIENT_TIMEOUT_S, broker=plan.broker, poll=POLL_REAL_S)
        + SMALL_SESSION_STRATEGY)
    clock = clock_of(sessions, layout.config, plan.speed)
    origin = clock.base_of(clock.time())
    try:
        days = []
        for i, (path, day) in enumerate(zip(sessions, dates, strict=True)):
            span = SessionReader(path).time_range()
            assert span is not None
            start = max((clock.base_of(span[0] + FAULTS_AFTER_OPEN_S) - origin) / plan.speed,
                        ENGINE_START_S)
            end = (clock.base_of(span[1]) - origin) / plan.speed
            folder = out / f"day-{day}"
            folder.mkdir(exist_ok=True)
            days.append((start, with_archives(build_fault_plan(
                seed=plan.fault_seed + i, start_s=start, market_end_s=end), str(folder))))
    finally:
        clock.stop()
    faults = merge_plans(days) if plan.faults else no_faults()
    layout.faults.write_text(json.dumps(faults.simulator_json, indent=1))
    (out / "plan.json").write_text(json.dumps({"crashes": [asdict(c) for c in faults.crashes],
                                               "db_locks": [asdict(x) for x in faults.db_locks]},
                                              indent=1))
    return layout


# ---------------------------------------------------------------------------------------------
# The watcher
# ---------------------------------------------------------------------------------------------


class Watcher(Background):
    """Every ``every_s``: the engine's status; while a day trades, it is kept (the last one)
    with the broker's positions read beside it; when the lifecycle's count of days traded goes
    up, the engine's RSS and threads are read (that day's ``closed``)."""

    thread_name = "soak-watch"

    def __init__(self, sock: str, pid: int, broker: Any, every_s: float = 0.5) -> None:
        super().__init__()
        self._sock, self._pid, self._broker, self._every = sock, pid, broker, every_s
        self.days: dict[str, DayWatch] = {}
        self.traded = 0

    def _run(self) -> None:
        ended: list[str] = []
        while not self._stop.wait(self._every):
            st = status(self._sock, 5)
            life = (st or {}).get("lifecycle") or {}
            if not life.get("state"):
                continue
            day = str(life.get("trading_date"))
            if life["state"] == "trading":
                watch = self.days.setdefault(day, DayWatch())
                if day not in ended:
                    ended.append(day)
                with suppress(Exception):  # the broker under faults: the next sample
                    positions = list(self._broker.positionbook())
                    watch.status, watch.positions = st or {}, positions
            traded = int(life.get("days_traded") or 0)
            if traded > self.traded and ended:
                self.traded = traded
                proc = proc_status(self._pid)
                closed = self.days.setdefault(ended[-1], DayWatch())
                closed.rss_kb, closed.threads = proc.get("VmRSS"), proc.get("Threads")

    def wait_days(self, n: int, timeout: float, engine: subprocess.Popen[bytes],
                  log: Path) -> None:
        wait_for(f"{n} closed trading days", lambda: self.traded >= n, timeout, engine, log)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_soak(plan: SoakPlan, out: Path) -> SoakResult:
    sock_dir = Path(tempfile.mkdtemp(prefix="neks", dir="/tmp"))
    try:
        return _run(plan, out, sock_dir)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def _run(plan: SoakPlan, out: Path, sock_dir: Path) -> SoakResult:
    stages = Stages()
    layout = prepare(plan, out, sock_dir)
    faults_plan = json.loads((out / "plan.json").read_text())
    crashes = [Crash(**c) for c in faults_plan["crashes"]]
    locks = [DbLock(**x) for x in faults_plan["db_locks"]]
    stages.done("prepare")
    key = secrets.token_urlsafe(24)
    env = {**os.environ, "OPENALGO_API_KEY": key}
    sim_json = layout.state / "simulator.json"
    sim_cmd = [*RUN, "simulator", "--config", str(layout.config), "--sessions",
               str(out / "sessions"), "--speed", str(plan.speed), "--rest-port", "0",
               "--ws-port", "0", "--faults", str(layout.faults)]
    clock = clock_of(layout.sessions, layout.config, plan.speed)
    with process(sim_cmd, out, env, out / "simulator.out") as sim:
        wait_for("simulator", sim_json.exists, 120, sim, out / "simulator.out")
        facts = json.loads(sim_json.read_text())
        # wall time of a market moment: the simulator's clock map (its skips included)
        base0, wall0 = float(facts["base_ts"]), float(facts["wall_ts"])

        def wall(market: float) -> float:
            return wall0 + (clock.base_of(market) - base0) / plan.speed

        t0 = wall(clock.time())  # the schedule's zero: the clock's start
        stages.done("simulator start")
        eng_cmd = [*RUN, "paper", "--config", str(layout.config), "--attach", "--atm",
                   str(layout.atm)]
        with process(eng_cmd, out, env, out / "engine.out", term_timeout=120) as engine:
            wait_for("engine", lambda: status(layout.sock, 5), 120, engine, out / "engine.out")
            stages.done("engine start")
            broker = _broker(facts, key, _as_layout(layout))
            rss = RssSampler(engine.pid, 2.0)
            watcher = Watcher(layout.sock, engine.pid, broker)
            injector = Injector(FaultPlan({"events": []}, (), tuple(crashes), tuple(locks)),
                                layout.sock, layout.db, t0)
            operator = Operator(layout.sock)
            for part in (rss, watcher, injector, operator):
                part.start()
            try:
                last = SessionReader(layout.sessions[-1]).time_range()
                assert last is not None
                watcher.wait_days(plan.days, wall(last[1]) - time.time() + 600, engine,
                                  out / "engine.out")
            finally:
                for part in (operator, injector, watcher, rss):
                    part.stop()
            stages.done("days")
            last_books = (broker.orderbook(), broker.tradebook(), broker.positionbook())
            engine_exit = stop_process(engine, 120)
            stages.done("engine stop")
    clock.stop()
    stages.done("simulator stop")
    failed = end_checks_failed(out / "engine.out")
    day_checks: dict[str, list[Check]] = {}
    for i, day in enumerate(layout.dates):
        books = last_books if i == len(layout.dates) - 1 else None
        day_checks[day] = _day_checks(plan, layout, i, watcher, injector, crashes, operator,
                                      (wall, t0), books, failed, engine_exit)
    memory = memory_over_days([(d, watcher.days.get(d, DayWatch()).rss_kb)
                               for d in layout.dates], plan.max_rss_growth)
    result = SoakResult(out, day_checks, memory)
    result.numbers = {
        "plan": asdict(plan), "elapsed_s": round(time.monotonic() - stages.started, 1),
        "stages_s": stages.seconds, "engine_exit": engine_exit,
        "rss_at_closed_kb": {d: w.rss_kb for d, w in watcher.days.items()},
        "threads_at_closed": {d: w.threads for d, w in watcher.days.items()},
        "engine_rss_mib": _engine_rss(layout), "rss_kb": rss.samples,
        "crashes": Counter(n for n, ok in injector.crashes if ok), "db_locks": injector.locks,
        "finished": fmt_ist(time.time(), with_date=True)}
    result.lines = _lines(plan, result)
    (out / "soak-result.json").write_text(json.dumps(
        {"passed": result.passed, "lines": result.lines, **result.numbers}, indent=1,
        default=str))
    return result


def _as_layout(layout: SoakLayout) -> Any:
    from tests.chaos.harness import Layout

    return Layout(layout.out, layout.config, layout.faults, layout.sessions[0], layout.db,
                  layout.state, layout.sock, layout.atm)


def _books(path: Path) -> tuple[list[OrderRow], list[TradeRow], list[PositionRow]]:
    if not path.exists():
        return [], [], []
    books = json.loads(path.read_text())
    return ([OrderRow(**r) for r in books.get("orders", [])],
            [TradeRow(**r) for r in books.get("trades", [])],
            [PositionRow(**r) for r in books.get("positions", [])])


def _day_checks(plan: SoakPlan, layout: SoakLayout, i: int, watcher: Watcher,
                injector: Injector, crashes: Sequence[Crash], operator: Operator,
                clock_map: tuple[Any, float], last_books: tuple[Any, Any, Any] | None,
                failed: Sequence[str], engine_exit: int | None) -> list[Check]:
    day = layout.dates[i]
    wall, t0 = clock_map
    reader = SessionReader(layout.sessions[i])
    span = reader.time_range()
    assert span is not None
    d = trading_date(span[0])
    # the day's faults: from its selection until the next day's
    lo = wall(span[0]) - t0
    nxt = SessionReader(layout.sessions[i + 1]).time_range() if i + 1 < len(layout.sessions) \
        else None
    hi = (wall(nxt[0]) - t0) if nxt else float("inf")
    day_crashes = in_window([c.at_s for c in crashes], injector.crashes, lo, hi)
    planned = in_window([c.at_s for c in crashes], list(crashes), lo, hi)
    lost_orders: list[OrderRow] = []
    lost_trades: list[TradeRow] = []
    scenes = sorted((layout.out / f"day-{day}").glob("lost-books-*.json"))
    for path in scenes:
        o, t, _p = _books(path)
        lost_orders += o
        lost_trades += t
    if last_books is None:
        orders_b, trades_b, positions_b = _books(layout.state / "sim-books" / f"books-{day}.json")
    else:
        orders_b, trades_b, positions_b = (list(x) for x in last_books)
    watch = watcher.days.get(day, DayWatch())
    with Database(layout.db) as db:
        transitions = [t for t in db.day_transitions() if t.trading_date == d]
        traded_at = min((t.ts for t in transitions if t.state == "trading"), default=span[0])
        orders = db.orders(trading_date=d)
        fills = db.fills(trading_date=d)
        trades = db.trades(trading_date=d)
        symbols = sorted({o.symbol for o in orders} | {t.symbol for t in reader.symbols()
                                                       if t.exchange == "NFO"})
        bars = {s: db.bars(s, d) for s in symbols}
        gaps = {s: db.bar_gaps(s, d) for s in symbols}
        restarts = Counter(r.name for r in db.restarts() if trading_date(r.ts) == d)
        alerts = [a for a in db.alerts() if trading_date(a.ts) == d]
        corrections = sum(1 for c in db.corrections(trading_date=d) if c.action == "corrected")
    minutes: dict[str, set[float]] = {s: set() for s in symbols}
    since = minute_start(traded_at) + 60.0  # the day's engine subscribes at its selection
    for tick in reader.ticks():
        if tick.symbol in minutes and tick.ltp > 0 and tick.ts >= since:
            minutes[tick.symbol].add(minute_start(tick.ts))
    mine = checks_of_day(failed, day)
    exit_code = engine_exit if i == len(layout.dates) - 1 and engine_exit not in (0, 1) \
        else (1 if mine else 0)
    unhalts = [t for t, _ in operator.decisions
               if lo + t0 <= t < hi + t0]
    facts = RunFacts(
        speed=plan.speed, market_origin=(span[0], wall(span[0])), db_locked=injector.locked,
        status=watch.status, broker_positions_live=watch.positions,
        broker_orders=[*lost_orders, *orders_b], broker_trades=[*lost_trades, *trades_b],
        broker_positions=positions_b, orders=orders, fills=fills, trades=trades, bars=bars,
        gaps=gaps, session_minutes=minutes, closed_through=minute_start(span[1]) + 60.0,
        restarts=restarts, crashes=day_crashes, crashes_planned=len(planned),
        engine_exit=exit_code, alerts=alerts, state_losses=len(scenes),
        lost_trade_ids=frozenset(t.orderid for t in lost_trades),
        operator_unhalts=len(unhalts), corrections=corrections, end_checks_failed=mine)
    states = [t.state for t in transitions]
    want = ["sleeping", "pre_open", "waiting_for_broker", "selecting", "trading", "closing",
            "closed"]
    cycle = Check("day lifecycle", all(s in states for s in want),
                  " -> ".join(dict.fromkeys(states)))
    return [cycle, *check_all(facts)]


def _engine_rss(layout: SoakLayout) -> dict[str, Any]:
    """The RSS each day's report recorded (the engine's own reading after its closing)."""
    found: dict[str, Any] = {}
    for path in sorted((layout.state / "reports").glob("day-*.json")):
        with suppress(ValueError, OSError):
            report = json.loads(path.read_text())
            found[report["trading_date"]] = report.get("rss_mib")
    return found


def _lines(plan: SoakPlan, result: SoakResult) -> list[str]:
    n = result.numbers
    lines = [f"[SOAK] {plan.days} days of {plan.minutes}-minute sessions at {plan.speed:g}x, "
             f"faults {'on' if plan.faults else 'off'} (seed {plan.fault_seed}), "
             f"{n['elapsed_s']:.0f} s, finished {n['finished']}",
             "  stages: " + ", ".join(f"{k} {v:g} s" for k, v in n["stages_s"].items()),
             f"  injected: {sum(n['crashes'].values())} exceptions; database locked "
             f"{sum(1 for *_, ok in n['db_locks'] if ok)} times; engine exit {n['engine_exit']}"]
    for day, checks in result.days.items():
        w = n["rss_at_closed_kb"].get(day)
        lines.append(f"[DAY {day}] RSS at closed {w / 1024:.1f} MiB" if w else f"[DAY {day}]")
        lines += [c.line() for c in checks]
    lines += ["[MEMORY]", result.memory.line(),
              f"  threads at closed: {n['threads_at_closed']}; engine's own RSS after each "
              f"closing (MiB): {n['engine_rss_mib']}",
              f"[RESULT] {'PASS' if result.passed else 'FAIL'}; run directory {result.out}"]
    return lines
