"""Replay throughput: the bundled day through the actors, against a plain single-threaded loop.

Measurements of the same ticks, each in a fresh child process so that its peak memory and CPU
time are its own, all in one run so that their ratio holds on a loaded machine:

- ``plain``: one thread reading the same session file and feeding one ``BarAggregator`` per
  symbol, closing minutes by tick time: the practical limit for this aggregation in Python;
- ``replay baseline_v1``: the engine's full replay as ``run.py replay`` runs it (feed, 83 bar
  builders, swing detector, the strategy host, order manager, positions, risk, reconciler,
  store, health, the supervisor tree, the simulated broker), every actor on the calling-thread
  dispatcher;
- ``replay market data``: the same without a strategy (``--no-strategy``);
- with ``--threaded``: the same two on the threaded runtime with the step barrier
  (``replay --threaded``), for comparison (slow: minutes).

Both include reading the session file. ``cpu_s`` is the child's user + system CPU time (what a
loaded machine cannot steal). Prints a table and writes JSON (bench/results/).
Usage: python bench/replay_throughput.py [--session FILE] [--step S] [--threaded]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser, peak_rss_mb  # noqa: E402


def child_actors(session: str, step: str, strategy: str, threaded: str) -> dict[str, Any]:
    from loguru import logger

    from engine.app.replay import ReplayDriver
    from engine.app.sections import load_config

    logger.remove()
    cfg = load_config(None, env={}, overrides={"replay.step_s": step})
    strategies = (strategy,) if strategy != "-" else ()
    cpu0 = cpu_s()
    with tempfile.TemporaryDirectory() as tmp:
        summary = ReplayDriver(cfg, Path(session), db_path=Path(tmp) / "bench.db",
                               progress=False, strategies=strategies,
                               threaded=threaded == "threaded").run()
    return {"ticks": summary.ticks, "seconds": summary.elapsed_s, "cpu_s": cpu_s() - cpu0,
            "bars": summary.bars, "steps": summary.steps, "peak_mb": peak_rss_mb(),
            "hash": summary.bars_hash, "trades": summary.trade_reports[-1:]}


def cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_plain(session: str) -> dict[str, float]:
    from loguru import logger

    from engine.market.bars import BarAggregator, BarSettings
    from engine.market.instruments import InstrumentSpec, is_index, session_bounds, trading_date
    from engine.market.session_file import SessionReader
    from engine.messages import Bar

    logger.remove()
    reader = SessionReader(Path(session))
    first, _ = reader.time_range()  # type: ignore[misc]
    bounds = session_bounds(trading_date(first), InstrumentSpec())
    settings = BarSettings()
    aggs: dict[str, BarAggregator] = {}
    bars = 0
    n = 0
    start = time.perf_counter()
    cpu0 = cpu_s()
    for tick in reader.ticks():
        n += 1
        agg = aggs.get(tick.symbol)
        if agg is None:
            agg = aggs[tick.symbol] = BarAggregator(tick.symbol, settings, bounds,
                                                    traded=not is_index(tick.exchange))
        for event in agg.on_tick(tick):
            if type(event) is Bar:
                bars += 1
    for agg in aggs.values():
        bars += sum(1 for e in agg.close_all() if type(e) is Bar)
    seconds = time.perf_counter() - start
    return {"ticks": n, "seconds": seconds, "cpu_s": cpu_s() - cpu0, "bars": bars,
            "peak_mb": peak_rss_mb()}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--session", help="session file (default: the bundled day)")
    p.add_argument("--step", default="1.0", help="replay step seconds (default: 1.0)")
    p.add_argument("--strategy", default="baseline_v1", help="strategy of the full pipeline")
    p.add_argument("--threaded", action="store_true",
                   help="also run the threaded runtime (replay --threaded): minutes")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, session, *rest = args.child
        result = child_actors(session, *rest) if kind == "actors" else child_plain(session)
        print(json.dumps(result))
        return
    if args.session:
        session = args.session
    else:
        from engine.market.synth import bundled_day_path

        session = str(bundled_day_path())
    report = Report("replay_throughput", "bundled day: the replay against a plain loop")
    plain = run_child("plain", session)
    plain_rate = plain["ticks"] / plain["seconds"]
    plain_cpu_rate = plain["ticks"] / plain["cpu_s"]
    report.row(pipeline="plain loop", runtime="-", ticks=int(plain["ticks"]),
               seconds=plain["seconds"], cpu_s=plain["cpu_s"], ticks_per_s=plain_rate,
               ratio_to_plain=1.0, cpu_ratio_to_plain=1.0, peak_mb=plain["peak_mb"])
    report.figure("plain_ticks_per_s", round(plain_rate))
    runs = [(args.strategy, "one thread"), ("-", "one thread")]
    if args.threaded:
        runs += [(args.strategy, "threaded"), ("-", "threaded")]
    for strategy, runtime in runs:
        result = run_child("actors", session, args.step, strategy,
                           "threaded" if runtime == "threaded" else "calling")
        rate = result["ticks"] / result["seconds"]
        label = f"replay {strategy}" if strategy != "-" else "replay market data"
        report.row(pipeline=label, runtime=runtime, ticks=int(result["ticks"]),
                   seconds=result["seconds"], cpu_s=result["cpu_s"], ticks_per_s=rate,
                   ratio_to_plain=rate / plain_rate,
                   cpu_ratio_to_plain=result["ticks"] / result["cpu_s"] / plain_cpu_rate,
                   peak_mb=result["peak_mb"])
        key = f"{label.replace(' ', '_')}_{runtime.replace(' ', '_')}"
        report.figure(f"{key}_ticks_per_s", round(rate))
        report.figure(f"{key}_ratio_to_plain", round(rate / plain_rate, 3))
        report.figure(f"{key}_bars_hash", result["hash"])
        if result["trades"]:
            report.figure(f"{key}_trades", result["trades"][0].splitlines()[-1])
    report.figure("load_average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    report.figure("targets", "replay baseline_v1 (one thread) >= 0.6 x plain ticks/s")
    report.finish(args.json)


if __name__ == "__main__":
    main()
