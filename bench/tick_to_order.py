"""Tick-to-order latency in paper mode over real sockets, against a loop with no actors.

What is timed, on the monotonic clock, for each trigger tick: from the moment its WebSocket frame
comes off the socket in the engine's ``FeedClient`` (``engine.runtime.probes.tick_received``) to the
moment the ``OpenAlgoClient`` is about to send the placeorder HTTP request it caused
(``engine.runtime.probes.request_sending``, taken just before ``requests`` builds and sends the
request).

The session: a synthetic opening (``engine.market.synth.generate_session``, the real 82-option
universe
plus the index, from 09:15) in which the farthest out-of-the-money call is replaced by trigger
ticks ``spacing`` seconds apart, starting after the bar builders' paced history backfill
(8 s plus an eighth of a second per symbol), whose price rises one tick each time (so each is
a new high of its minute and its ``BarUpdate`` goes out at once). Two sides, each in its own
process, on the same file:

- ``engine``: ``run_paper`` (in-process simulator over loopback sockets, the scaled clock at
  1x) with the bench-only ``ProbeStrategy`` (bench/plugins/probe_strategy.py): feed client →
  Feed actor → bar builder → swing detector → strategy host (its state is committed after the
  intent, off the path) → order manager (commits the intent: the one durable commit on the
  path; rate limit) → REST client. The strategy places a far-away
  LIMIT BUY per trigger tick
  (the limit price encodes the tick's sequence number) and cancels it once open. Triggers are
  spaced well above the order manager's request interval (``[orders] rate_per_s``), so the rate
  limiter never holds a placement (checked: ``held_by_rate_limit``).
- ``plain``: the same simulator and session, one ``FeedClient`` whose reader thread calls the
  REST client directly for each trigger tick (no actors, no store): the floor of parsing the
  frame and entering the HTTP call on this machine. The difference is the actor pipeline.

The same run times the disk's own durable commit (``commit_floor``: a one-row WAL transaction
with ``synchronous=FULL``, every 0.1 s in a thread of this process, on the same filesystem,
for as long as the engine side runs, so both meet the same disk: on a shared VM its stalls
come and go): the engine's p99 minus that commit's p99 is the engine's own share.

Both sides share the process with the simulator (as ``run.py paper`` does), so they compete with
it for the GIL: live, where OpenAlgo runs elsewhere, the figures would be lower if anything.
Usage: python bench/tick_to_order.py [--quick] [--samples N] [--spacing S] [--width W]
       [--set SECTION.KEY=VALUE ...] [--json PATH]   (--set: engine side only)
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser, latency_summary  # noqa: E402
from bench.plugins.probe_strategy import NAME, ProbeSettings, order_sequence, sequence_of  # noqa: E402
from engine.messages import Tick  # noqa: E402

DAY = "2025-09-03"
SEED = 7
TICK = 0.05
TARGET_P99_MS = 5.0
OVERRIDES = {"simulator.rest_port": "0", "simulator.ws_port": "0"}


@dataclass(frozen=True, slots=True)
class Plan:
    """The session file, where its trigger ticks are, and the engine's setting overrides."""

    session: Path
    symbol: str
    exchange: str
    samples: int
    spacing_s: float
    overrides: tuple[tuple[str, str], ...] = ()


def build_session(folder: Path, *, width: int, samples: int, spacing_s: float,
                  lead_s: float | None = None) -> Plan:
    """A synthetic opening whose farthest OTM call is replaced by ``samples`` rising ticks."""
    from engine.market.session_file import SessionReader, SessionWriter
    from engine.market.synth import generate_session

    if lead_s is None:
        # after the bar builders' history backfill: 2·(2·width+1)+1 symbols at 8 reads a second
        lead_s = 8.0 + (2 * (2 * width + 1) + 1) / 8.0
    minutes = int((lead_s + samples * spacing_s) // 60) + 2
    background = generate_session(folder / "background.sqlite", date=DAY, seed=SEED,
                                  width=width, start="09:15", minutes=minutes)
    with SessionReader(background.path) as reader:
        infos = reader.symbols()
        meta = {k: v for k, v in reader.meta().items()
                if k not in ("format", "schema_version", "created")}
        calls = [i for i in infos if i.kind == "CE" and i.strike is not None]
        trigger = max(calls, key=lambda i: i.strike or 0)
        first, _ = reader.time_range()  # type: ignore[misc]
        ticks = [t for t in reader.ticks() if t.symbol != trigger.symbol]
    settings = ProbeSettings(symbol=trigger.symbol, exchange=trigger.exchange)
    t0 = first + lead_s
    for k in range(1, samples + 1):
        at = t0 + k * spacing_s
        price = round(settings.base + k * TICK, 2)
        ticks.append(Tick(trigger.symbol, trigger.exchange, price, at, at - 0.005,
                          1000 * k, round(price - TICK, 2), round(price + TICK, 2), 0))
    ticks.sort(key=lambda t: t.recv_ts)
    path = folder / "session.sqlite"
    with SessionWriter(path, meta=meta, symbols=infos) as writer:
        writer.extend(ticks)
    return Plan(path, trigger.symbol, trigger.exchange, samples, spacing_s)


class Recorder:
    """The two probes: frame arrival per trigger sequence number, request departure per
    placement (paired by the limit price), and every order request's time."""

    def __init__(self, symbol: str, samples: int) -> None:
        self.symbol = symbol
        self.samples = samples
        self.settings = ProbeSettings(symbol=symbol)
        self.received: dict[int, float] = {}
        self.sent: dict[int, float] = {}
        self.held: int = 0
        self.min_interval_s = 0.0
        self._last_request: float | None = None
        self.done = threading.Event()

    def on_tick(self, tick: Tick, now: float) -> None:
        if tick.symbol == self.symbol:
            self.received.setdefault(sequence_of(tick.ltp, self.settings, TICK), now)

    def on_request(self, endpoint: str, fields: Mapping[str, Any], now: float) -> None:
        if endpoint not in ("placeorder", "cancelorder"):
            return
        previous, self._last_request = self._last_request, now
        if endpoint != "placeorder" or fields.get("symbol") != self.symbol:
            return
        if previous is not None and now - previous < self.min_interval_s + 0.005:
            self.held += 1  # sent right when the rate limiter allowed it: maybe queued
        seq = order_sequence(float(fields["price"]), self.settings, TICK)
        self.sent.setdefault(seq, now)
        if seq >= self.samples:
            self.done.set()

    def install(self) -> None:
        from engine.runtime import probes

        probes.tick_received = self.on_tick
        probes.request_sending = self.on_request

    def result(self) -> dict[str, Any]:
        from engine.runtime import probes

        probes.clear()
        paired = sorted(k for k in self.sent if k in self.received)
        latencies = [self.sent[k] - self.received[k] for k in paired]
        return {"latencies_s": latencies, "triggers_received": len(self.received),
                "orders_sent": len(self.sent), "held_by_rate_limit": self.held}


def _quiet_logging() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")


def _stop_when_done(recorder: Recorder, stop: threading.Event, timeout: float) -> None:
    def watch() -> None:
        recorder.done.wait(timeout)
        time.sleep(0.5)  # let the last cancel go out
        stop.set()

    threading.Thread(target=watch, name="bench-watch", daemon=True).start()


def child_engine(plan: Plan) -> dict[str, Any]:
    from engine.app.modes import run_paper
    from engine.app.sections import load_config
    _quiet_logging()
    # the probe is a plugin: found in its folder, like a user's own strategy
    plugin = {"engine.strategy_paths": str(Path(__file__).resolve().parent / "plugins"),
              f"{NAME}.symbol": plan.symbol, f"{NAME}.exchange": plan.exchange}
    cfg = load_config(None, env={}, overrides={**OVERRIDES, **dict(plan.overrides), **plugin})
    recorder = Recorder(plan.symbol, plan.samples)
    recorder.min_interval_s = 1.0 / cfg.section("orders").rate_per_s
    recorder.install()
    stop = threading.Event()
    _stop_when_done(recorder, stop, timeout=plan.samples * plan.spacing_s + 60.0)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_paper(cfg, plan.session, speed=1.0, db_path=Path(tmp) / "engine.db",
                           strategies=(NAME,), stop=stop)
    out = recorder.result()
    out["safe_stop"] = result.safe_stop
    return out


def child_plain(plan: Plan) -> dict[str, Any]:
    from engine.app.sections import load_config
    from engine.market.instruments import round_to_tick
    from engine.market.session_file import SessionReader
    from engine.openalgo.feed import FeedClient
    from engine.openalgo.rest import OpenAlgoClient
    from engine.runtime.clock import ScaledClock
    from engine.sim.server import SimulatorServer

    _quiet_logging()
    cfg = load_config(None, env={}, overrides=OVERRIDES)
    reader = SessionReader(plan.session)
    first, _ = reader.time_range()  # type: ignore[misc]
    pairs = [(i.symbol, i.exchange) for i in reader.symbols()]
    clock = ScaledClock(start=first - 1.0, speed=1.0, paused=True)
    api_key = secrets.token_urlsafe(24)
    spec = cfg.instrument.spec()
    sim = SimulatorServer(cfg.section("simulator"), api_key=api_key, clock=clock,
                          instrument=spec, matching=cfg.section("matching"))
    recorder = Recorder(plan.symbol, plan.samples)
    settings = recorder.settings
    sim.declare_symbols(pairs)
    sim.start()
    client = OpenAlgoClient(replace(cfg.openalgo, host=sim.rest_url), api_key=api_key,
                            clock=clock, account="plain")

    def on_tick(tick: Tick) -> None:
        if tick.symbol != plan.symbol or sequence_of(tick.ltp, settings, TICK) <= 0:
            return
        orderid = client.place_order(strategy="plain", symbol=plan.symbol,
                                     exchange=plan.exchange, action="BUY",
                                     quantity=spec.lot_size, pricetype="LIMIT",
                                     price=round_to_tick(tick.ltp - settings.offset, TICK))
        client.cancel_order(strategy="plain", orderid=orderid)

    feed = FeedClient(replace(cfg.feed, ws_url=sim.ws_url), api_key=api_key, clock=clock,
                      on_tick=on_tick, account="plain")
    recorder.install()
    try:
        feed.subscribe(pairs)
        feed.start()
        deadline = time.monotonic() + 30.0
        while not {s for subs in sim.subscriptions() for s, _, _ in subs} >= \
                {s for s, _ in pairs}:
            if time.monotonic() > deadline:
                raise TimeoutError("the plain feed client did not subscribe within 30 s")
            time.sleep(0.02)
        playback = sim.play(reader.ticks(), clock)
        clock.resume()
        recorder.done.wait(plan.samples * plan.spacing_s + 60.0)
        playback.stop()
    finally:
        feed.stop()
        client.close()
        sim.stop()
        clock.stop()
    return recorder.result()


def commit_floor(folder: Path, samples: int = 300, *, until: threading.Event | None = None,
                 pause_s: float = 0.002) -> list[float]:
    """The disk's own cost of one durable commit: a one-row SQLite transaction in WAL mode
    with ``synchronous=FULL`` (as the store commits an intent), timed ``samples`` times (or
    until ``until`` is set, at least ``samples``) on the same filesystem. The order path needs
    one such commit; its p99 is this disk's."""
    import sqlite3

    conn = sqlite3.connect(folder / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    out = []
    try:
        k = 0
        while k < samples or (until is not None and not until.is_set()):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", (f"intent-{k:05d}" * 8,))
            conn.execute("COMMIT")
            out.append(time.perf_counter() - t0)
            k += 1
            time.sleep(pause_s)
    finally:
        conn.close()
    return out


def setting_pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``SECTION.KEY=VALUE`` strings as (dotted key, value) pairs."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def run_child(kind: str, plan: Plan) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", kind, str(plan.session), plan.symbol,
            plan.exchange, str(plan.samples), str(plan.spacing_s),
            json.dumps(plan.overrides)]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small run for smoke testing")
    p.add_argument("--samples", type=int, help="trigger ticks per side (default 250; quick 10)")
    p.add_argument("--spacing", type=float, default=0.4,
                   help="market seconds between trigger ticks (default 0.4)")
    p.add_argument("--width", type=int, help="strikes each side of ATM (default 20 = 82 "
                   "options; quick 2)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an engine setting on the engine side (repeatable)")
    p.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, session, symbol, exchange, samples, spacing, overrides = args.child
        plan = Plan(Path(session), symbol, exchange, int(samples), float(spacing),
                    tuple((k, v) for k, v in json.loads(overrides)))
        result = child_engine(plan) if kind == "engine" else child_plain(plan)
        print(json.dumps(result))
        return
    samples = args.samples or (10 if args.quick else 250)
    width = args.width if args.width is not None else (2 if args.quick else 20)
    report = Report("tick_to_order", "paper mode over loopback sockets: tick frame received → "
                    "placeorder leaving, engine actors vs a plain loop")
    with tempfile.TemporaryDirectory() as tmp:
        plan = replace(build_session(Path(tmp), width=width, samples=samples,
                                     spacing_s=args.spacing), overrides=setting_pairs(args.set))
        sides = {"plain": run_child("plain", plan)}
        engine_done = threading.Event()
        floor_ts: list[float] = []
        floor_thread = threading.Thread(target=lambda: floor_ts.extend(commit_floor(
            Path(tmp), 100, until=engine_done, pause_s=0.1)), name="commit-floor", daemon=True)
        floor_thread.start()
        try:
            sides["engine"] = run_child("engine", plan)
        finally:
            engine_done.set()
            floor_thread.join()
        floor = latency_summary(floor_ts)
    summaries: dict[str, dict[str, Any]] = {}
    for side, label in (("plain", "plain loop (feed reader → REST, no actors)"),
                        ("engine", "engine (feed → bars → swings → strategy → orders)")):
        res = sides[side]
        stats = latency_summary(res["latencies_s"])
        summaries[side] = stats
        report.row(side=label, samples=stats["n"], p50_ms=stats["p50_ms"],
                   p99_ms=stats["p99_ms"], max_ms=stats["max_ms"], mean_ms=stats["mean_ms"],
                   triggers=res["triggers_received"], orders=res["orders_sent"],
                   held_by_rate_limit=res["held_by_rate_limit"])
        for key in ("p50_ms", "p99_ms", "max_ms", "n"):
            report.figure(f"{side}_{key}", stats[key])
        report.series[f"{side}_latencies_ms"] = [x * 1000.0 for x in res["latencies_s"]]
    engine_ms = report.series["engine_latencies_ms"]
    if len(engine_ms) >= 100:
        # the strategy host's state grows with the day's orders: it must not slow later ones
        report.figure("engine_p50_first_50_ms", statistics.median(engine_ms[:50]))
        report.figure("engine_p50_last_50_ms", statistics.median(engine_ms[-50:]))
    engine_p50, plain_p50 = summaries["engine"]["p50_ms"], summaries["plain"]["p50_ms"]
    report.figure("actor_overhead_p50_ms", None if engine_p50 is None or plain_p50 is None
                  else engine_p50 - plain_p50)
    report.figure("symbols", 2 * (2 * width + 1) + 1)
    report.figure("trigger_spacing_s", args.spacing)
    report.figure("engine_overrides", args.set or "none (defaults)")
    report.figure("target", f"engine p99 < {TARGET_P99_MS:g} ms")
    p99 = summaries["engine"]["p99_ms"]
    report.figure("commit_samples", floor["n"])
    report.figure("commit_p50_ms", floor["p50_ms"])
    report.figure("commit_p99_ms", floor["p99_ms"])
    # one durable commit is on the path by design (the intent): the engine's own share
    report.figure("engine_p99_minus_commit_p99_ms",
                  None if p99 is None or floor["p99_ms"] is None else p99 - floor["p99_ms"])
    if "engine_p50_first_50_ms" in report.figures:
        first, last = report.figures["engine_p50_first_50_ms"], \
            report.figures["engine_p50_last_50_ms"]
        report.figure("p50_drift", round(last / first - 1.0, 3) if first else None)
    report.figure("target_met", p99 is not None and p99 < TARGET_P99_MS)
    report.figure("note", "2-core machine shared with other jobs: figures are noisy")
    report.finish(args.json)



if __name__ == "__main__":
    main()
