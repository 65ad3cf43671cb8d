"""The chaos harness: a paper session over real sockets with faults on a schedule, then the
invariants and the security checks, printed.

One run (``run_chaos``):

1. a session file (a small synthetic session, or the bundled full day) and a config for the run
   (chaos settings: short REST timeouts, fast frozen-feed detection, ``[control]
   chaos_enabled``);
2. the standalone simulator (``run.py simulator --faults FILE``, its own process) playing the
   simulator's part of the fault plan (tests/chaos/faultplan.py): 10% of REST calls answer 500,
   5% time out, and in turn sockets dropped, the feed frozen with sockets open, 429 bursts,
   orders (and cancels) accepted with their replies lost, rejections, zero prices, garbage frames;
3. the engine (``run.py paper --attach``, its own process) while the harness carries out the
   engine's part: an exception injected into every kind of actor in turn (the ``chaos`` control
   command) and the engine database held locked by another process (SQLite busy), once longer
   than the store's retry budget; the engine's RSS is sampled from ``/proc/<pid>/status``;
4. after the market closes and the faults are cleared: the engine's status, the broker's books,
   the security probes, SIGTERM, ``run.py report``, then the invariants (tests/chaos/invariants.py)
   and the security checks (tests/chaos/security.py) over everything collected.

Command line (the long form and the soak; the CI form is tests/chaos/test_chaos.py)::

    python -m tests.chaos.harness --minutes 120 --speed 20       # a longer small session
    python -m tests.chaos.harness --day --speed 60               # soak: the full day, RSS judged
    python -m tests.chaos.harness --broker all                   # every broker personality
    python -m tests.chaos.harness --hogs 2 --minutes 60          # a busy machine (busy.py)
    python -m tests.chaos.harness --soak-days 5                  # 5 days, one process (soak.py)

It prints the checks and writes ``chaos-result.json`` in the run directory (``--out``, default a
new directory under /tmp, kept). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from loguru import logger

from engine.app.control import ControlError, send_command
from engine.app.sections import load_config
from engine.broker import OrderRow, TradeRow
from engine.market.instruments import InstrumentSpec, minute_start, trading_date
from engine.market.session_file import SessionReader
from engine.market.synth import SynthSettings, bundled_day_path, small_session
from engine.market.universe import select_universe, universe_pairs
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.clock import WallClock, fmt_ist
from engine.sim.personalities import NAMES
from engine.store.database import Database
from tests.chaos import security
from tests.chaos.faultplan import (
    CLIENT_TIMEOUT_S,
    FaultPlan,
    build_fault_plan,
    no_faults,
    with_archives,
)
from tests.chaos.invariants import Check, RunFacts, check_all

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "run.py")]
RECONCILE_S = 20.0  # [reconcile] interval_s in a chaos run (market seconds)
SETTLE_MARKET_S = 90.0  # market seconds waited past the last tick
# the orderbook poll, in real seconds as live has it ([orders] poll_interval_s is real time:
# the order manager scales it by the clock speed)
POLL_REAL_S = 1.0

CONFIG = """\
[engine]
state_dir = "{state}"
shutdown_timeout_s = 20
[store]
path = "{db}"
[logging]
console = false
[universe]
width = {width}
[control]
socket_path = "{sock}"
chaos_enabled = true
[reconcile]
interval_s = {reconcile}
[openalgo]
timeout_s = {timeout}
retry_delay_s = 0.2
max_retry_after_s = 1.0
[orders]
poll_interval_s = {poll}
[feed]
frozen_after_s = 2.0
reconnect_base_s = 0.2
reconnect_max_s = 2.0
[simulator]
lost_reply_hold_s = 5.0
[matching]
broker = "{broker}"
"""
# a small session is too short for the baseline's filters to find many trades; these let it
# trade enough for the invariants to mean something (the full day keeps the defaults)
SMALL_SESSION_STRATEGY = """\
[baseline_v1]
vwap_premium_min = -1.0
sl_pct_min = 0.0
sl_pct_max = 0.5
price_min = 1.0
price_max = 10000.0
"""


@dataclass(frozen=True, slots=True)
class ChaosPlan:
    """One chaos run. ``day``: the bundled full day (width 20) instead of a small session."""

    minutes: int = 30
    speed: float = 20.0
    session_seed: int = 15
    width: int = 2
    fault_seed: int = 1
    faults: bool = True  # False: a baseline run with nothing broken
    day: bool = False
    date: str = "2025-01-30"
    rss_every_s: float = 2.0
    warmup_fraction: float = 0.25
    max_rss_growth: float | None = None  # judged when set (the soak)
    broker: str = "zerodha"  # the simulator's broker personality


@dataclass
class ChaosResult:
    """What a run found: its checks, the security checks, the printed lines and its figures."""

    out: Path
    checks: list[Check]
    security: list[Check]
    lines: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in [*self.checks, *self.security])


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a run keeps its files, and the ATM strike the engine trades around."""

    out: Path
    config: Path
    faults: Path
    session: Path
    db: Path
    state: Path
    sock: str
    atm: int


def prepare(plan: ChaosPlan, out: Path, sock_dir: Path) -> tuple[Layout, FaultPlan, float]:
    """Session, config and fault schedule; returns them with the market's real-time length."""
    out.mkdir(parents=True, exist_ok=True)
    if plan.day:
        session = bundled_day_path(settings=SynthSettings())
        atm = int(SessionReader(session).meta()["atm"])
        width = SynthSettings().width
    else:
        summary = small_session(out / "session.db", date=plan.date, seed=plan.session_seed,
                                symbols=plan.width, minutes=plan.minutes)
        session, atm, width = summary.path, summary.atm, plan.width
    layout = Layout(out, out / "config.toml", out / "faults.json", Path(session),
                    out / "engine.db", out / "var", str(sock_dir / "ctl" / "engine.sock"), atm)
    text = CONFIG.format(state=layout.state, db=layout.db, width=width, sock=layout.sock,
                         reconcile=RECONCILE_S, timeout=CLIENT_TIMEOUT_S, broker=plan.broker,
                         poll=POLL_REAL_S)
    layout.config.write_text(text + ("" if plan.day else SMALL_SESSION_STRATEGY))
    span = SessionReader(layout.session).time_range()
    assert span is not None, f"{layout.session} holds no ticks"
    market_s = (span[1] - span[0]) / plan.speed
    faults = (with_archives(build_fault_plan(seed=plan.fault_seed, start_s=5.0,
                                             market_end_s=market_s), str(out))
              if plan.faults else no_faults())
    layout.faults.write_text(json.dumps(faults.simulator_json, indent=1))
    return layout, faults, market_s


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@contextmanager
def process(args: Sequence[str], cwd: Path, env: dict[str, str], log: Path,
            term_timeout: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with stdout and stderr to ``log``; SIGTERM (then SIGKILL) on exit."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc, term_timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def wait_for(what: str, ready: Any, timeout: float, alive: subprocess.Popen[bytes],
             log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if alive.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({alive.returncode}):\n"
                               f"{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.2)


def read_text(path: Path) -> str:
    with suppress(OSError):
        return path.read_text(errors="replace")
    return ""


def tail(path: Path, chars: int = 3000) -> str:
    return read_text(path)[-chars:]


def status(sock: str, timeout: float = 10.0) -> dict[str, Any] | None:
    try:
        return send_command(sock, "status", timeout=timeout)
    except ControlError:
        return None


# ---------------------------------------------------------------------------------------------
# The harness's own faults: injected exceptions, a locked database; and the RSS sampler
# ---------------------------------------------------------------------------------------------


class Injector:
    """Carries out the engine's part of the fault plan on two threads (crashes, DB locks)."""

    def __init__(self, plan: FaultPlan, sock: str, db: Path, t0: float) -> None:
        self.plan = plan
        self._sock = sock
        self._db = db
        self._t0 = t0  # wall time (time.time) of the simulator's start: the plan's zero
        self._stop = threading.Event()
        self.crashes: list[tuple[str, bool]] = []
        self.locks: list[tuple[float, float, bool]] = []
        self.locked: list[tuple[float, float]] = []  # wall-clock spans the database was held
        self._bar_turn = 0
        self._threads = [threading.Thread(target=self._crash_loop, name="chaos-crash",
                                          daemon=True),
                         threading.Thread(target=self._lock_loop, name="chaos-lock",
                                          daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    def _wait_until(self, at_s: float) -> bool:
        return not self._stop.wait(max(0.0, self._t0 + at_s - time.time()))

    def _crash_loop(self) -> None:
        for crash in self.plan.crashes:
            if not self._wait_until(crash.at_s):
                return
            try:
                # asked each time: a day lifecycle builds a new tree (new bar builders) daily
                names = send_command(self._sock, "chaos", timeout=10)["actors"]
                name = self._resolve(crash.kind, names)
                send_command(self._sock, "chaos", {"actor": name,
                                                   "reason": f"chaos harness: {crash.kind}"},
                             timeout=10)
                self.crashes.append((name, True))
            except (ControlError, KeyError, LookupError) as exc:
                self.crashes.append((crash.kind, False))
                print(f"chaos: could not crash {crash.kind}: {exc}", file=sys.stderr)

    def _resolve(self, kind: str, names: list[str]) -> str:
        if kind == "bars":
            builders = sorted(n for n in names if n.startswith("bars."))
            self._bar_turn += 1
            return builders[self._bar_turn % len(builders)]
        if kind == "strategy_host":
            return next(n for n in names if n.startswith("strategy."))
        if kind not in names:
            raise LookupError(f"no actor {kind!r} in {names}")
        return kind

    def _lock_loop(self) -> None:
        for lock in self.plan.db_locks:
            if not self._wait_until(lock.at_s):
                return
            acquired = False
            conn = sqlite3.connect(self._db, timeout=10, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")  # the write lock: the engine's writes get BUSY
                acquired = True
                since = time.time()
                self._stop.wait(lock.seconds)
                conn.execute("ROLLBACK")
                self.locked.append((since, time.time()))
            except sqlite3.Error as exc:
                print(f"chaos: could not lock the database: {exc}", file=sys.stderr)
            finally:
                conn.close()
            self.locks.append((lock.at_s, lock.seconds, acquired))


class Background(ABC):
    """A daemon thread running ``_run`` from ``start`` until ``stop`` (``_stop`` is set)."""

    thread_name = "chaos-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @abstractmethod
    def _run(self) -> None:
        """The thread's work; return when ``_stop`` is set."""


class Operator(Background):
    """The operator's part: when the engine holds entries after reconciliation (the broker lost
    its state, a position it cannot price), look at ``status`` and decide: ``unhalt`` (accept
    the broker's books), ``decide_after_s`` real seconds after the hold was first seen."""

    thread_name = "chaos-operator"

    def __init__(self, sock: str, decide_after_s: float = 1.0) -> None:
        super().__init__()
        self._sock = sock
        self._after = decide_after_s
        self.decisions: list[tuple[float, str]] = []  # (wall time, the hold it lifted)

    def _run(self) -> None:
        seen: float | None = None
        while not self._stop.wait(0.5):
            hold = ((status(self._sock, 5) or {}).get("api") or {}).get("reconcile_hold")
            if not hold:
                seen = None
                continue
            seen = seen or time.time()
            if time.time() - seen < self._after:
                continue
            try:
                send_command(self._sock, "unhalt", timeout=30)
                self.decisions.append((time.time(), str(hold)))
                seen = None
            except ControlError as exc:
                print(f"chaos: operator unhalt failed: {exc}", file=sys.stderr)


class RssSampler(Background):
    """VmRSS (kB) and thread count of one process every ``every_s`` seconds, from
    /proc/<pid>/status."""

    thread_name = "chaos-rss"

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__()
        self._pid = pid
        self._every = every_s
        self._t0 = time.monotonic()
        self.samples: list[tuple[float, int]] = []
        self.threads: list[tuple[float, int]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            status = proc_status(self._pid)
            if "VmRSS" not in status:
                return
            now = time.monotonic() - self._t0
            self.samples.append((now, status["VmRSS"]))
            self.threads.append((now, status.get("Threads", 0)))
            self._stop.wait(self._every)


def proc_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/<pid>/status (kB for sizes); empty once the process is gone."""
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields = value.split()
        if fields and fields[0].isdigit():
            found[name] = int(fields[0])
    return found


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_chaos(plan: ChaosPlan, out: Path) -> ChaosResult:
    """One chaos run in ``out`` (see the module docstring); returns what it found."""
    sock_dir = Path(tempfile.mkdtemp(prefix="nekc", dir="/tmp"))  # a Unix socket path is short
    try:
        return _run(plan, out, sock_dir)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


class Stages:
    """Real seconds each stage of a run took (printed, so a slow run explains itself)."""

    def __init__(self) -> None:
        self.started = self._mark = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self._mark, 1)
        self._mark = now


def _run(plan: ChaosPlan, out: Path, sock_dir: Path) -> ChaosResult:
    stages = Stages()
    layout, faults, market_s = prepare(plan, out, sock_dir)
    stages.done("prepare")
    key = secrets.token_urlsafe(24)
    env = {**os.environ, "OPENALGO_API_KEY": key}
    sim_json = layout.state / "simulator.json"
    sim_cmd = [*RUN, "simulator", "--config", str(layout.config), "--session",
               str(layout.session), "--speed", str(plan.speed), "--rest-port", "0",
               "--ws-port", "0", "--faults", str(layout.faults)]
    with process(sim_cmd, out, env, out / "simulator.out") as sim:
        wait_for("simulator", sim_json.exists, 120, sim, out / "simulator.out")
        facts = json.loads(sim_json.read_text())
        stages.done("simulator start")
        eng_cmd = [*RUN, "paper", "--config", str(layout.config), "--attach", "--atm",
                   str(layout.atm)]
        with process(eng_cmd, out, env, out / "engine.out") as engine:
            wait_for("engine", lambda: status(layout.sock, 5), 120, engine, out / "engine.out")
            stages.done("engine start")
            rss = RssSampler(engine.pid, plan.rss_every_s)
            injector = Injector(faults, layout.sock, layout.db, float(facts["wall_ts"]))
            operator = Operator(layout.sock)
            rss.start()
            injector.start()
            operator.start()
            try:
                _wait_past_the_close(facts, market_s, engine, out)
            finally:
                operator.stop()
                injector.stop()
                rss.stop()
            stages.done("session")
            live = _collect_live(layout, facts, key, engine, sim)
            stages.done("status and probes")
            engine_exit = stop_process(engine, 90)
            stages.done("engine stop")
        broker = _broker(facts, key, layout)
        books = (broker.orderbook(), broker.tradebook(), broker.positionbook())
    stages.done("simulator stop")
    report = subprocess.run([*RUN, "report", "--config", str(layout.config), str(layout.db),
                             "--out", str(out / "report.html")], cwd=out, env=env,
                            capture_output=True, text=True, timeout=300)
    live["security"].append(security.no_key_in_files(key, [out, sock_dir]))
    if report.returncode != 0:
        live["security"].append(Check("day report written", False, report.stderr[-300:]))
    run_facts = _facts(plan, layout, live, books, engine_exit, injector, rss, market_s)
    run_facts.operator_unhalts = len(operator.decisions)
    checks = check_all(run_facts)
    stages.done("report and checks")
    result = ChaosResult(out, checks, live["security"])
    result.numbers = {
        "plan": asdict(plan), "elapsed_s": round(time.monotonic() - stages.started, 1),
        "stages_s": stages.seconds,
        "faults": faults.summary(), "crashes": Counter(n for n, ok in injector.crashes if ok),
        "db_locks": injector.locks, "random_rest_faults": _random_fault_line(out),
        "rss_kb": rss.samples, "threads": rss.threads,
        "finished": fmt_ist(time.time(), with_date=True),
    }
    result.lines = _lines(plan, result, faults)
    (out / "chaos-result.json").write_text(json.dumps(
        {"passed": result.passed, "lines": result.lines, **result.numbers}, indent=1,
        default=str))
    return result


def _wait_past_the_close(facts: dict[str, Any], market_s: float,
                         engine: subprocess.Popen[bytes], out: Path) -> None:
    """Until the market closed, the faults were cleared and reconciliation ran a few times."""
    speed = float(facts["speed"])
    settle = max(SETTLE_MARKET_S / speed, 3 * RECONCILE_S / speed, 4.0)
    until = float(facts["wall_ts"]) + market_s + 0.5 + settle
    while time.time() < until:
        if engine.poll() is not None:
            raise RuntimeError(f"the engine exited ({engine.returncode}) during the run:\n"
                               f"{tail(out / 'engine.out')}\n{tail(out / 'var' / 'engine.log')}")
        time.sleep(0.5)


def _broker(facts: dict[str, Any], key: str, layout: Layout) -> OpenAlgoClient:
    cfg = load_config(layout.config)
    return OpenAlgoClient(replace(cfg.openalgo, host=facts["rest_url"], timeout_s=10.0),
                          api_key=key, clock=WallClock())


def _collect_live(layout: Layout, facts: dict[str, Any], key: str,
                  engine: subprocess.Popen[bytes],
                  sim: subprocess.Popen[bytes]) -> dict[str, Any]:
    """While both processes run: status, the broker's positions, the security probes."""
    seen = None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        seen = status(layout.sock) or seen
        if seen and seen.get("api", {}).get("reconciled"):
            break
        time.sleep(0.2)
    if seen is None:
        raise RuntimeError("the engine never answered status after the run")
    positions = _broker(facts, key, layout).positionbook()
    symbol = select_universe(None, trading_date(float(facts["market_ts"])), InstrumentSpec(),
                             atm=layout.atm, width=0)[0]
    checks = [
        security.no_key_in_files(key, [layout.out]),  # while running: the WAL is there
        security.simulator_refuses_wrong_keys(facts["rest_url"], facts["ws_url"], symbol),
        security.control_refuses_other_users(layout.sock),
        security.loopback_only([("engine", engine.pid), ("simulator", sim.pid)]),
    ]
    checks[0] = replace(checks[0], name="no API key (running)")
    return {"status": seen, "positions": positions, "security": checks, "facts": facts}


def _facts(plan: ChaosPlan, layout: Layout, live: dict[str, Any], books: tuple[Any, Any, Any],
           engine_exit: int | None, injector: Injector, rss: RssSampler,
           market_s: float) -> RunFacts:
    reader = SessionReader(layout.session)
    span = reader.time_range()
    assert span is not None
    day = trading_date(span[0])
    cfg = load_config(layout.config)
    width = cfg.section("universe").width
    symbols = [s for s, _ in universe_pairs(select_universe(
        None, day, cfg.instrument.spec(), atm=layout.atm, width=width))]
    minutes: dict[str, set[float]] = {s: set() for s in symbols}
    for tick in reader.ticks():
        if tick.symbol in minutes and tick.ltp > 0:
            minutes[tick.symbol].add(minute_start(tick.ts))
    with Database(layout.db) as db:
        orders = db.orders(trading_date=day)
        fills = db.fills(trading_date=day)
        trades = db.trades(trading_date=day)
        bars = {s: db.bars(s, day) for s in symbols}
        gaps = {s: db.bar_gaps(s, day) for s in symbols}
        restarts = Counter(r.name for r in db.restarts())
        alerts = db.alerts()
        corrections = sum(1 for c in db.corrections(trading_date=day) if c.action == "corrected")
    lost_orders, lost_trades = lost_books(layout.out)
    broker_orders, broker_trades, broker_positions = books
    return RunFacts(
        speed=plan.speed, status=live["status"], broker_positions_live=live["positions"],
        broker_orders=[*lost_orders, *broker_orders], broker_trades=[*lost_trades, *broker_trades],
        broker_positions=broker_positions, orders=orders, fills=fills, trades=trades,
        bars=bars, gaps=gaps, session_minutes=minutes, alerts=alerts, corrections=corrections,
        state_losses=len(list(layout.out.glob("lost-books-*.json"))),
        lost_trade_ids=frozenset(t.orderid for t in lost_trades),
        closed_through=minute_start(span[1]) + 60.0, restarts=restarts,
        market_origin=(float(live["facts"]["market_ts"]), float(live["facts"]["wall_ts"])),
        db_locked=injector.locked,
        crashes=injector.crashes, crashes_planned=len(injector.plan.crashes),
        engine_exit=engine_exit, rss_kb=rss.samples, threads=rss.threads,
        warmup_s=plan.warmup_fraction * market_s, max_rss_growth=plan.max_rss_growth,
        end_checks_failed=end_checks_failed(layout.out / "engine.out"))


def end_checks_failed(engine_out: Path) -> tuple[str, ...]:
    """The ``FAILED`` lines of the engine's ``[CHECKS]`` block at the end of its run."""
    try:
        lines = engine_out.read_text(errors="replace").splitlines()
    except OSError:
        return ()
    return tuple(line.strip() for line in lines if line.strip().startswith("FAILED "))


def lost_books(out: Path) -> tuple[list[OrderRow], list[TradeRow]]:
    """The orders and trades the simulator lost in its ``lose_state`` scenes, oldest first."""
    orders: list[OrderRow] = []
    trades: list[TradeRow] = []
    for path in sorted(out.glob("lost-books-*.json")):
        books = json.loads(path.read_text())
        orders += [OrderRow(**row) for row in books["orders"]]
        trades += [TradeRow(**row) for row in books["trades"]]
    return orders, trades


def _random_fault_line(out: Path) -> str:
    """The simulator's own count of random REST faults (logged when its schedule stops)."""
    lines = [ln for path in (out / "var" / "engine.log", out / "simulator.out")
             for ln in read_text(path).splitlines() if "random REST faults {" in ln]
    if not lines:
        return "random REST faults: not reported"
    return lines[-1].split("fault schedule: ", 1)[-1]


def _lines(plan: ChaosPlan, result: ChaosResult, faults: FaultPlan) -> list[str]:
    n = result.numbers
    what = "the bundled day" if plan.day else f"a {plan.minutes}-minute session"
    locks = n["db_locks"]
    return [
        f"[CHAOS] {what} at {plan.speed:g}x, fault seed {plan.fault_seed}, "
        f"{n['elapsed_s']:.0f} s, finished {n['finished']}",
        "  stages: " + ", ".join(f"{k} {v:g} s" for k, v in n["stages_s"].items()),
        f"  faults: {faults.summary()}",
        f"  injected: {sum(n['crashes'].values())} exceptions into "
        f"{len(n['crashes'])} actors; database locked {sum(1 for *_, ok in locks if ok)} "
        f"times; {n['random_rest_faults']}",
        "[INVARIANTS]", *(c.line() for c in result.checks),
        "[SECURITY]", *(c.line() for c in result.security),
        f"[RESULT] {'PASS' if result.passed else 'FAIL'}; run directory {result.out}",
    ]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    default = ChaosPlan()
    p = argparse.ArgumentParser(prog="python -m tests.chaos.harness",
                                description="A paper session under faults, then invariants.")
    p.add_argument("--minutes", type=int, default=default.minutes,
                   help="length of the small synthetic session (default %(default)s)")
    p.add_argument("--speed", type=float, default=default.speed,
                   help="market seconds per real second (default %(default)s)")
    p.add_argument("--day", action="store_true",
                   help="soak: the bundled full day (82 options), RSS growth judged")
    p.add_argument("--seed", type=int, default=default.fault_seed, help="fault seed")
    p.add_argument("--no-faults", action="store_true",
                   help="a baseline run: the same session with nothing broken")
    p.add_argument("--session-seed", type=int, default=default.session_seed)
    p.add_argument("--max-rss-growth", type=float, default=None,
                   help="fail above this RSS growth after warm-up (default: 0.10 with --day)")
    p.add_argument("--out", help="run directory (default: a new one under /tmp, kept)")
    p.add_argument("--broker", choices=[*NAMES, "all"], default=default.broker,
                   help="the simulator's broker personality; all: one run per personality "
                   "(the full matrix)")
    p.add_argument("--soak-days", type=int, default=0, metavar="N",
                   help="the multi-day soak (tests/chaos/soak.py): N consecutive simulated "
                   "days of --minutes sessions in one engine process under the day lifecycle, "
                   "faults on, every invariant per day, RSS at each day's close (--speed "
                   "default 30, --minutes default 30)")
    p.add_argument("--hogs", type=int, default=0, metavar="N",
                   help="a busy machine instead of faults: N CPU-bound processes beside an "
                   "in-process paper run (tests/chaos/busy.py); --speed default 120 then")
    args = p.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    given = argv or sys.argv
    if args.soak_days:
        from tests.chaos.soak import SoakPlan, run_soak

        soak = SoakPlan(days=args.soak_days, fault_seed=args.seed, faults=not args.no_faults,
                        broker=args.broker,
                        minutes=args.minutes if "--minutes" in given else SoakPlan().minutes,
                        speed=args.speed if "--speed" in given else SoakPlan().speed,
                        max_rss_growth=args.max_rss_growth if args.max_rss_growth is not None
                        else SoakPlan().max_rss_growth)
        result = run_soak(soak, Path(args.out) if args.out else Path(tempfile.mkdtemp(
            prefix="chaos-soak-", dir="/tmp")))
        print("\n".join(result.lines))
        return 0 if result.passed else 1
    if args.hogs:
        from tests.chaos.busy import BusyPlan, run_busy

        speed = args.speed if "--speed" in given else BusyPlan().speed
        busy = run_busy(BusyPlan(minutes=args.minutes, speed=speed, hogs=args.hogs,
                                 session_seed=args.session_seed, day=args.day),
                        Path(args.out) if args.out else Path(tempfile.mkdtemp(
                            prefix="chaos-busy-", dir="/tmp")))
        print("\n".join(busy.lines))
        return 0 if busy.passed else 1
    growth = args.max_rss_growth if args.max_rss_growth is not None else (
        0.10 if args.day else None)
    plan = ChaosPlan(minutes=args.minutes, speed=args.speed, day=args.day,
                     fault_seed=args.seed, faults=not args.no_faults,
                     session_seed=args.session_seed,
                     max_rss_growth=growth)
    passed = True
    for broker in (NAMES if args.broker == "all" else (args.broker,)):
        out = Path(args.out) / broker if args.out else \
            Path(tempfile.mkdtemp(prefix=f"chaos-{broker}-", dir="/tmp"))
        result = run_chaos(replace(plan, broker=broker), out)
        print(f"[{broker}]")
        print("\n".join(result.lines))
        passed = passed and result.passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
