"""Replay throughput: the bundled day through the actors, against a plain single-threaded loop.

Two measurements of the same work on the same session, each in a fresh child process so that
its peak memory is its own:

- ``actors``: the engine's replay (feed actor, one bar-builder actor per symbol, the store
  writer, health, the supervisor tree, the step barrier) on the virtual clock, exactly as
  ``run.py replay`` runs it, without strategies;
- ``plain``: one thread reading the same session file and feeding one ``BarAggregator`` per
  symbol, closing minutes by tick time: the practical limit for this aggregation in Python.

Both include reading the session file. Prints a table and writes JSON (bench/results/).
Usage: python bench/replay_throughput.py [--session FILE] [--step S ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser, peak_rss_mb  # noqa: E402


def child_actors(session: str, step: str) -> dict[str, float]:
    from loguru import logger

    from engine.app.replay import ReplayDriver
    from engine.app.sections import load_config

    logger.remove()
    cfg = load_config(None, env={}, overrides={"replay.step_s": step,
                                               "store.synchronous": "NORMAL"})
    with tempfile.TemporaryDirectory() as tmp:
        summary = ReplayDriver(cfg, Path(session), db_path=Path(tmp) / "bench.db",
                               progress=False).run()
    return {"ticks": summary.ticks, "seconds": summary.elapsed_s, "bars": summary.bars,
            "steps": summary.steps, "peak_mb": peak_rss_mb(), "hash": summary.bars_hash}


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
    return {"ticks": n, "seconds": seconds, "bars": bars, "peak_mb": peak_rss_mb()}


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--session", help="session file (default: the bundled day)")
    p.add_argument("--step", action="append", help="replay step seconds (repeatable; "
                   "default: the configured 1.0 and 5.0)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, session, *rest = args.child
        result = child_actors(session, rest[0]) if kind == "actors" else child_plain(session)
        print(json.dumps(result))
        return
    if args.session:
        session = args.session
    else:
        from engine.market.synth import bundled_day_path

        session = str(bundled_day_path())
    report = Report("replay_throughput", "bundled day: actor pipeline vs plain loop")
    plain = run_child("plain", session)
    plain_rate = plain["ticks"] / plain["seconds"]
    report.row(pipeline="plain loop", step_s="-", ticks=int(plain["ticks"]),
               seconds=plain["seconds"], ticks_per_s=plain_rate, ratio_to_plain=1.0,
               peak_mb=plain["peak_mb"])
    for step in args.step or ["1.0", "5.0"]:
        actors = run_child("actors", session, step)
        rate = actors["ticks"] / actors["seconds"]
        report.row(pipeline="actors (feed + 83 bar builders + store)", step_s=step,
                   ticks=int(actors["ticks"]), seconds=actors["seconds"], ticks_per_s=rate,
                   ratio_to_plain=rate / plain_rate, peak_mb=actors["peak_mb"])
        report.figure(f"actors_step_{step}_ticks_per_s", round(rate))
        report.figure(f"actors_step_{step}_peak_mb", round(actors["peak_mb"], 1))
        report.figure(f"actors_step_{step}_bars_hash", actors["hash"])
    report.figure("plain_ticks_per_s", round(plain_rate))
    report.figure("targets", ">= 200,000 ticks/s through the actors and >= 0.5 x plain")
    report.finish(args.json)



if __name__ == "__main__":
    main()
