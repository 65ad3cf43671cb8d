"""Benchmark and survey of the synthetic trading day (engine.market.synth and
engine.market.session_file).

Generates a day into a session file, reads it back, and prints a table: ticks, file size,
generation time, read throughput, dirt counts, the spot's day, and a survey of what the baseline
strategy would see (swing lows in the premium band with enough VWAP premium, and how many of
them later break with a stop distance in range). The survey builds one-minute bars and runs the
swing procedure of specs/baseline-v1.md in a compact form; it is a tuning aid for the synth
settings, not the engine's bar builder or swing detector. Writes the same numbers as JSON
(default: ``synth_generate.json`` beside this script).

    python bench/synth_generate.py [--date 2025-09-03] [--seed 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.market.instruments import minute_start
from engine.market.session_file import SessionReader
from engine.market.synth import SynthSettings, generate_session

BAND = (100.0, 300.0)
MIN_PREMIUM = 0.04
SL_RANGE = (0.02, 0.10)


@dataclass
class MinuteBar:
    start: float
    high: float
    low: float
    close: float
    vwap: float


@dataclass
class SwingLow:
    bar: int
    price: float
    vwap: float
    confirmed: int



RESULT_JSON = Path(__file__).resolve().parent / "results" / (Path(__file__).stem + ".json")

def build_bars(reader: SessionReader) -> dict[str, list[MinuteBar]]:
    """One-minute bars by exchange time from valid option ticks, with session VWAP."""
    state: dict[str, dict[str, Any]] = defaultdict(lambda: {"bars": [], "cur": None, "vol": None,
                                                            "pv": 0.0, "v": 0})
    for tick in reader.ticks():
        if tick.exchange != "NFO" or tick.ltp <= 0:
            continue
        st = state[tick.symbol]
        prev, vol = st["vol"], tick.volume
        if vol is not None and (prev is None or vol < prev // 2):
            st["vol"] = vol  # the first tick, or a feed restart: re-base
        elif vol is not None and vol >= prev:
            st["pv"] += tick.ltp * (vol - prev)
            st["v"] += vol - prev
            st["vol"] = vol
        # else: a late tick carrying an older cumulative volume adds nothing
        start = minute_start(tick.ts)
        cur = st["cur"]
        if cur is None or start > cur.start:
            if cur is not None:
                st["bars"].append(cur)
            cur = st["cur"] = MinuteBar(start, tick.ltp, tick.ltp, tick.ltp, tick.ltp)
        elif start < cur.start:
            continue  # a late tick for a closed minute
        cur.high = max(cur.high, tick.ltp)
        cur.low = min(cur.low, tick.ltp)
        cur.close = tick.ltp
        cur.vwap = st["pv"] / st["v"] if st["v"] else (cur.high + cur.low + cur.close) / 3
    out: dict[str, list[MinuteBar]] = {}
    for symbol, st in state.items():
        if st["cur"] is not None:
            st["bars"].append(st["cur"])
        out[symbol] = st["bars"]
    return out


def swing_lows(bars: list[MinuteBar]) -> list[SwingLow]:
    """The baseline swing procedure; returns every swing Low in its final (updated) form."""
    low_watch: dict[int, int] = defaultdict(int)
    high_watch: dict[int, int] = defaultdict(int)
    last_kind: str | None = None
    last_index = -1
    last_price = 0.0
    lows: list[SwingLow] = []

    def lowest(a: int, b: int) -> int:
        return min(range(a, b + 1), key=lambda k: (bars[k].low, k))

    def highest(a: int, b: int) -> int:
        return min(range(a, b + 1), key=lambda k: (-bars[k].high, k))

    for i in range(1, len(bars)):
        bi = bars[i]
        lo_from = 0 if last_kind is None else last_index + 1
        for j in range(lo_from, i):
            bj = bars[j]
            low_cond = bi.high > bj.high and bi.close > bj.close
            high_cond = bi.low < bj.low and bi.close < bj.close
            checks = (("L", low_cond), ("H", high_cond)) if last_kind in (None, "H") else \
                     (("H", high_cond), ("L", low_cond))
            done = False
            for kind, cond in checks:
                if not cond:
                    continue
                watch = low_watch if kind == "L" else high_watch
                watch[j] += 1
                if watch[j] < 2:
                    continue
                k = lowest(lo_from, i) if kind == "L" else highest(lo_from, i)
                price = bars[k].low if kind == "L" else bars[k].high
                if kind != last_kind:
                    last_kind, last_index, last_price = kind, k, price
                    low_watch.clear()
                    high_watch.clear()
                    if kind == "L":
                        lows.append(SwingLow(k, price, bars[k].vwap, i))
                    done = True
                elif (kind == "L" and price < last_price) or (kind == "H" and price > last_price):
                    last_index, last_price = k, price
                    if kind == "L":
                        lows[-1] = SwingLow(k, price, lows[-1].vwap, i)
                    done = True
                if done:
                    break
            if done:
                break
    return lows


def survey(bars_by_symbol: dict[str, list[MinuteBar]]) -> dict[str, int]:
    counts = {"swing_lows": 0, "in_band": 0, "premium_ok": 0, "broke": 0, "tradable_breaks": 0}
    for bars in bars_by_symbol.values():
        for swing in swing_lows(bars):
            counts["swing_lows"] += 1
            if not BAND[0] <= swing.price <= BAND[1]:
                continue
            counts["in_band"] += 1
            if (swing.price - swing.vwap) / swing.vwap < MIN_PREMIUM:
                continue
            counts["premium_ok"] += 1
            high = max((b.high for b in bars[swing.bar + 1:swing.confirmed + 1]), default=0.0)
            for k in range(swing.confirmed + 1, len(bars)):
                high = max(high, bars[k].high)
                if bars[k].low <= swing.price:
                    counts["broke"] += 1
                    sl = (high + 1 - swing.price) / swing.price
                    counts["tradable_breaks"] += SL_RANGE[0] <= sl <= SL_RANGE[1]
                    break
    return counts


def main() -> None:
    defaults = SynthSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default=defaults.default_date)
    parser.add_argument("--seed", type=int, default=defaults.default_seed)
    parser.add_argument("--json", type=Path, default=RESULT_JSON,
                        help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "day.sqlite"
        t0 = time.perf_counter()
        summary = generate_session(path, date=args.date, seed=args.seed)
        gen_s = time.perf_counter() - t0
        with SessionReader(path) as reader:
            t0 = time.perf_counter()
            count = sum(1 for _ in reader.ticks())
            read_s = time.perf_counter() - t0
            bars = build_bars(reader)
    found = survey(bars)
    results: dict[str, Any] = {
        "python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__,
        "date": args.date, "seed": args.seed, "ticks": summary.ticks, "symbols": summary.symbols,
        "file_mb": round(summary.file_bytes / 1e6, 1), "generate_s": round(gen_s, 2),
        "read_s": round(read_s, 2), "read_ticks_per_s": round(count / read_s),
        "zero_prices": summary.dirt.zero_prices, "duplicates": summary.dirt.duplicates,
        "late": summary.dirt.late,
        "spot_open": round(summary.spot_open, 2), "spot_close": round(summary.spot_close, 2),
        "spot_range_pct": round(100 * (summary.spot_high - summary.spot_low)
                                / summary.spot_open, 2),
        "close_to_open_pct": round(100 * math.log(summary.spot_close / summary.spot_open), 2),
        **found,
    }
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
