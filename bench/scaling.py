"""Scaling: 82, 500 and 1,000 option symbols through the full replay pipeline.

For each size, a synthetic session from the open (``engine.market.synth.generate_session``: ATM ±
``width`` strikes, calls and puts, plus the index) is replayed twice, each in a fresh child
process so that its peak memory is its own:

- ``engine``: ``ReplayDriver`` exactly as ``run.py replay`` runs it with the configured strategy
  (feed actor, one bar builder per symbol, swing detector, strategy host baseline_v1, order
  manager, position monitor, risk manager, reconciler, simulated broker, store, health, the
  supervisor tree) on the virtual clock;
- ``plain``: one thread feeding one ``BarAggregator`` per symbol from the same file (the
  baseline of bench/replay_throughput.py), the practical limit for the aggregation alone.

Measured: ticks/s (session read included, engine start and stop excluded), the number of live
threads at its peak (sampled every 20 ms), peak RSS (``ru_maxrss`` of the child), and the
engine's start-up time (building and starting the tree). Minutes per size are chosen so each
size runs well under two minutes.
Usage: python bench/scaling.py [--quick] [--sizes 82,500,1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser, peak_rss_mb  # noqa: E402
from bench.replay_throughput import child_plain  # noqa: E402

DAY = "2025-09-03"
SEED = 5
#: options in the universe → (strikes each side of ATM, minutes replayed)
SIZES = {82: (20, 30), 500: (125, 10), 1000: (250, 8)}
QUICK = {22: (5, 1), 82: (20, 1)}
TARGET_TICKS_PER_S = 200_000
TARGET_MB = {82: 250.0, 1000: 1500.0}


class ThreadPeak:
    """Samples ``threading.active_count()`` on a daemon thread until stopped."""

    def __init__(self, interval: float = 0.02) -> None:
        self.peak = threading.active_count()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-thread-peak", daemon=True)

    def __enter__(self) -> ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, threading.active_count() - 1)  # not counting itself


def child_engine(session: str) -> dict[str, Any]:
    from loguru import logger

    from engine.app.replay import ReplayDriver
    from engine.app.sections import load_config

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    cfg = load_config(None, env={})
    strategy = cfg.engine.strategy
    with tempfile.TemporaryDirectory() as tmp, ThreadPeak() as threads:
        wall = time.perf_counter()
        summary = ReplayDriver(cfg, Path(session), db_path=Path(tmp) / "bench.db",
                               progress=False, strategies=(strategy,)).run()
        wall = time.perf_counter() - wall
    return {"ticks": summary.ticks, "seconds": summary.elapsed_s, "wall_s": wall,
            "bars": summary.bars, "threads": threads.peak, "peak_mb": peak_rss_mb(),
            "stuck_steps": summary.stuck_steps, "restarts": summary.restarts,
            "strategy": strategy}


def run_child(kind: str, session: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(session)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def parse_sizes(text: str) -> dict[int, tuple[int, int]]:
    """``82,500,1000`` → the table rows; any option count 2·(2w+1) is accepted."""
    chosen = {}
    for item in text.split(","):
        options = int(item)
        width = max(0, round((options / 2 - 1) / 2))
        chosen[options] = SIZES.get(options, (width, 2))
    return chosen


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small run for smoke testing")
    p.add_argument("--sizes", help="option counts, comma-separated (default 82,500,1000)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, session = args.child
        result = child_engine(session) if kind == "engine" else child_plain(session)
        print(json.dumps(result))
        return
    from engine.market.synth import generate_session

    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK if args.quick else SIZES)
    report = Report("scaling", "full replay pipeline (with the strategy) vs a plain loop, by "
                    "universe size")
    with tempfile.TemporaryDirectory() as tmp:
        for options, (width, minutes) in sizes.items():
            summary = generate_session(Path(tmp) / f"session-{width}.sqlite", date=DAY,
                                       seed=SEED, width=width, start="09:15", minutes=minutes)
            plain = run_child("plain", summary.path)
            engine = run_child("engine", summary.path)
            rate = engine["ticks"] / engine["seconds"]
            plain_rate = plain["ticks"] / plain["seconds"]
            report.row(options=2 * (2 * width + 1), symbols=summary.symbols, minutes=minutes,
                       ticks=int(engine["ticks"]), engine_ticks_per_s=rate,
                       plain_ticks_per_s=plain_rate, ratio=rate / plain_rate,
                       threads=engine["threads"], engine_peak_mb=engine["peak_mb"],
                       plain_peak_mb=plain["peak_mb"],
                       start_stop_s=engine["wall_s"] - engine["seconds"],
                       stuck_steps=engine["stuck_steps"])
            report.figure(f"options_{options}_ticks_per_s", round(rate))
            report.figure(f"options_{options}_ratio_to_plain", round(rate / plain_rate, 3))
            report.figure(f"options_{options}_threads", engine["threads"])
            report.figure(f"options_{options}_peak_mb", round(engine["peak_mb"], 1))
            print(f"  {options} options done", file=sys.stderr)
    report.figure("strategy", engine["strategy"])
    report.figure("targets", f">= {TARGET_TICKS_PER_S:,} ticks/s and >= 0.5 x plain; peak "
                  + ", ".join(f"{n} options < {mb:,.0f} MB" for n, mb in TARGET_MB.items()))
    report.figure("note", "2-core machine shared with other jobs: figures are noisy")
    report.finish(args.json)



if __name__ == "__main__":
    main()
