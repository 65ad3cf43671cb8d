"""Throughput of one BarAggregator fed ticks in a plain single-threaded loop (no actors).

Builds the ticks first (not timed), then times ``on_tick`` over all of them for a few feed
shapes. Prints a table and one JSON line. Usage:

    /work/venv/bin/python bench/bars_plain.py [--ticks 1000000] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date

from engine.market.bars import BarAggregator, BarSettings
from engine.market.instruments import InstrumentSpec, session_bounds
from engine.messages import Bar, BarGap, BarUpdate, Tick

SYMBOL = "NIFTY30JAN2524000CE"


def make_ticks(count: int, session: tuple[float, float], rng: random.Random, *,
               shuffle: bool, quote_mode: bool) -> list[Tick]:
    """A random-walk price on the 0.05 grid, evenly spread over the session, with cumulative
    volume (Quote mode) or without volume and ltt (LTP mode). ``shuffle``: each tick arrives
    up to 1.9 s after its exchange time, delivered in arrival order."""
    open_ts, close_ts = session
    step = (close_ts - open_ts) / count
    price_ticks = 2000
    volume = 0
    rows = []
    for i in range(count):
        ets = open_ts + i * step
        price_ticks = max(1, price_ticks + rng.choice((-1, 0, 0, 1)))
        volume += rng.randrange(0, 200)
        delay = rng.uniform(0.0, 1.9) if shuffle else 0.001
        if quote_mode:
            rows.append(Tick(SYMBOL, "NFO", price_ticks * 0.05, ets + delay, ets, volume))
        else:
            rows.append(Tick(SYMBOL, "NFO", price_ticks * 0.05, ets + delay))
    if shuffle:
        rows.sort(key=lambda t: t.recv_ts)
    return rows


def run(name: str, ticks: list[Tick], session: tuple[float, float]) -> dict[str, object]:
    agg = BarAggregator(SYMBOL, BarSettings(), session)
    on_tick = agg.on_tick
    counts = {Bar: 0, BarUpdate: 0, BarGap: 0}
    started = time.perf_counter()
    for tick in ticks:
        for event in on_tick(tick):
            counts[type(event)] += 1
    elapsed = time.perf_counter() - started
    for event in agg.close_all():
        counts[type(event)] += 1
    return {
        "scenario": name,
        "ticks": len(ticks),
        "seconds": round(elapsed, 3),
        "ticks_per_s": round(len(ticks) / elapsed),
        "us_per_tick": round(elapsed / len(ticks) * 1e6, 3),
        "bars": counts[Bar],
        "updates": counts[BarUpdate],
        "gaps": counts[BarGap],
        "late": agg.stats().late,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    session = session_bounds(date(2025, 1, 30), InstrumentSpec())
    scenarios = [
        ("quote, in order", dict(shuffle=False, quote_mode=True)),
        ("quote, shuffled < grace", dict(shuffle=True, quote_mode=True)),
        ("ltp mode, no ltt/volume", dict(shuffle=False, quote_mode=False)),
    ]
    results = []
    for name, shape in scenarios:
        ticks = make_ticks(args.ticks, session, random.Random(args.seed), **shape)
        results.append(run(name, ticks, session))
    header = f"{'scenario':26} {'ticks':>9} {'seconds':>8} {'ticks/s':>10} {'us/tick':>8} " \
             f"{'bars':>5} {'updates':>8} {'gaps':>5} {'late':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['scenario']:26} {r['ticks']:>9} {r['seconds']:>8} {r['ticks_per_s']:>10} "
              f"{r['us_per_tick']:>8} {r['bars']:>5} {r['updates']:>8} {r['gaps']:>5} "
              f"{r['late']:>5}")
    print(json.dumps({"benchmark": "bars_plain", "python": sys.version.split()[0],
                      "results": results}))


if __name__ == "__main__":
    main()
