"""Store write throughput: batched rows/s (prices, bars) and immediate commits/s.

Usage: ``python bench/store_write.py [--rows N] [--dir DIR] [--out FILE]``

Measures, on a fresh database in DIR (default: a temporary directory):
- ``db batch``: ``Database.run_write`` + ``WriteTx.write_rows`` directly, per batch size and
  synchronous mode — the raw cost of one batched transaction;
- ``writer``: the whole path through the ``StoreWriter`` actor (tell → buffer → flush on the
  batch size or the timer), for price marks (two upserted rows each, 1000 symbols, coalesced in
  the buffer) and bars (one row each);
- ``immediate``: order intents ``ask``-ed one at a time (one committed transaction each).

Prints a table and writes the numbers as JSON (default: ``store_write.json`` beside this script).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from actors.store import StoreWriter
from engine.messages import Action, Bar, OrderIntent, Ping, PositionMark, PriceType
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.store.database import Database, StoreSettings

T0 = ist_epoch(2025, 1, 30, 9, 15)
SYMBOLS = [f"NIFTY30JAN25{20000 + 50 * i}{'CE' if i % 2 else 'PE'}" for i in range(1000)]



RESULT_JSON = Path(__file__).resolve().parent / "results" / (Path(__file__).stem + ".json")

def bar(i: int) -> Bar:
    return Bar(SYMBOLS[i % len(SYMBOLS)], T0 + 60 * (i // len(SYMBOLS)), 100.0, 101.0, 99.0,
               100.5, 1000, 12, 100.2)


def mark(i: int) -> PositionMark:
    return PositionMark("bench", "main", SYMBOLS[i % len(SYMBOLS)], -65, 100.0,
                        100.0 + (i % 20) * 0.05, 0.0, 0.0, 0.0, T0 + i * 0.001)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_db_batch(workdir: Path, rows: int, batch: int, synchronous: str) -> dict[str, Any]:
    path = workdir / f"db-{batch}-{synchronous}.db"
    with Database(path, StoreSettings(synchronous=synchronous)) as db:
        writes = [db.writes_for(bar(i))[0] for i in range(rows)]

        def run() -> None:
            for lo in range(0, rows, batch):
                db.run_write(lambda tx, lo=lo: tx.write_rows(writes[lo:lo + batch]))

        seconds = timed(run)
    return {"case": "db batch (bars)", "synchronous": synchronous, "batch": batch,
            "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def bench_writer(workdir: Path, name: str, messages: list[Any], rows_per_message: int,
                 batch: int) -> dict[str, Any]:
    path = workdir / f"writer-{name}.db"
    clock = VirtualClock(T0)
    with Database(path, StoreSettings(batch_size=batch)) as db:
        writer = StoreWriter.start(db, name="store", clock=clock)

        def run() -> None:
            for message in messages:
                writer.tell(message)
            clock.advance_to(T0 + 3600)  # the flush timer writes what is left
            writer.ask(Ping(0), timeout=600)

        seconds = timed(run)
        writer.stop(timeout=60)
        stored = len(db.last_prices()) if name == "prices" else sum(
            len(db.bars(s, clock.now().date())) for s in SYMBOLS)
    return {"case": f"writer ({name})", "synchronous": "FULL", "batch": batch,
            "messages": len(messages), "rows_received": len(messages) * rows_per_message,
            "rows_stored": stored, "seconds": seconds,
            "messages_per_s": len(messages) / seconds,
            "rows_per_s": len(messages) * rows_per_message / seconds}


def bench_immediate(workdir: Path, count: int, synchronous: str) -> dict[str, Any]:
    path = workdir / f"immediate-{synchronous}.db"
    clock = VirtualClock(T0)
    with Database(path, StoreSettings(synchronous=synchronous)) as db:
        writer = StoreWriter.start(db, name="store", clock=clock)
        intents = [OrderIntent(f"c{i}", "bench", "main", SYMBOLS[i % 1000], "NFO", Action.SELL,
                               65, PriceType.SL, price=99.95, trigger_price=102.95,
                               created_ts=T0 + i) for i in range(count)]

        def run() -> None:
            for intent in intents:
                writer.ask(intent, timeout=60)

        seconds = timed(run)
        writer.stop(timeout=60)
    return {"case": "immediate (order intents, ask)", "synchronous": synchronous, "batch": 1,
            "rows": count * 2, "seconds": seconds, "commits_per_s": count / seconds,
            "rows_per_s": count * 2 / seconds}


def run_all(workdir: Path, rows: int, intents: int) -> list[dict[str, Any]]:
    results = [bench_db_batch(workdir, rows, batch, sync)
               for sync in ("FULL", "NORMAL") for batch in (100, 500, 5000)]
    results.append(bench_writer(workdir, "prices", [mark(i) for i in range(rows)], 2, 500))
    results.append(bench_writer(workdir, "bars", [bar(i) for i in range(rows)], 1, 500))
    results.extend(bench_immediate(workdir, intents, sync) for sync in ("FULL", "NORMAL"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows per batched case")
    parser.add_argument("--intents", type=int, default=500, help="asked intents")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--out", type=Path, default=RESULT_JSON)
    args = parser.parse_args()
    logger.remove()

    if args.dir is None:
        with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
            results = run_all(Path(tmp), args.rows, args.intents)
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        results = run_all(args.dir, args.rows, args.intents)

    print(f"{'case':32} {'sync':6} {'batch':>6} {'rows/s':>10} {'msgs/s':>10} {'commits/s':>10}")
    for r in results:
        msgs = f"{r['messages_per_s']:10.0f}" if "messages_per_s" in r else f"{'':10}"
        commits = f"{r['commits_per_s']:10.0f}" if "commits_per_s" in r else f"{'':10}"
        print(f"{r['case']:32} {r['synchronous']:6} {r['batch']:>6} {r['rows_per_s']:10.0f} "
              f"{msgs} {commits}")
    report = {"python": platform.python_version(), "machine": platform.machine(),
              "directory": str(args.dir) if args.dir else "(temporary)", "rows": args.rows,
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
