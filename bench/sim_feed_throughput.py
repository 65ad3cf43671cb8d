"""Simulator feed throughput: ticks/s from ``SimulatorServer`` to one websocket-client client.

The simulator publishes a burst of ticks (``sim.publish`` in a tight loop, round-robin over the
subscribed symbols); one plain ``websocket-client`` connection receives the ``market_data`` frames
and parses each with ``json.loads``. This is the server-side figure (the engine's FeedClient,
which also builds Tick messages, is measured by bench/feed_throughput.py).

Columns per mode:
- ``publish/s``: how fast ``sim.publish`` returned (matching engine + queueing);
- ``sent/s``: frames written to the socket per second (first publish → last frame written);
- ``end_to_end/s``: ticks parsed by the client per second (first publish → last frame parsed).

The client runs in its own process (``--client process``, the default: as in production, it does
not share a GIL with the server) or in a thread of the simulator's process (``--client thread``).
websocket-client validates UTF-8 in pure Python unless told not to; the client skips it by
default, ``--validate-utf8`` measures the SDK's default behaviour.

    /work/venv/bin/python bench/sim_feed_throughput.py [--ticks 200000] [--symbols 82]
        [--modes 1 2 3] [--client process|thread] [--validate-utf8]
        [--json bench/sim_feed_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import websocket
from loguru import logger

from engine.market.instruments import InstrumentSpec, universe_symbols
from engine.messages import Tick
from engine.runtime.clock import WallClock
from engine.sim.server import SimulatorServer, SimulatorSettings

API_KEY = "bench-key-0123456789"
EXPIRY = date(2025, 1, 30)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "sim_feed_throughput.json"
COLUMNS = ("mode", "ticks", "publish/s", "sent/s", "end_to_end/s", "seconds")


def run_client(url: str, symbols: list[str], mode: int, expected: int, validate_utf8: bool,
               conn: Connection) -> None:
    """Connect, authenticate, subscribe, say ready; then parse ``expected`` market_data frames
    and send back (count, first monotonic, last monotonic)."""
    ws = websocket.create_connection(url, timeout=60, skip_utf8_validation=not validate_utf8)
    ws.send(json.dumps({"action": "authenticate", "api_key": API_KEY}))
    assert json.loads(ws.recv())["status"] == "success"
    ws.send(json.dumps({"action": "subscribe", "mode": mode,
                        "symbols": [{"symbol": s, "exchange": "NFO"} for s in symbols]}))
    assert json.loads(ws.recv())["status"] == "success"
    conn.send("ready")
    count = 0
    first = last = 0.0
    loads = json.loads
    while count < expected:
        msg = loads(ws.recv())
        if msg.get("type") == "market_data":
            last = time.monotonic()
            if count == 0:
                first = last
            count += 1
    ws.close()
    conn.send((count, first, last))


def measure(mode: int, n: int, symbols: list[str], client: str,
            validate_utf8: bool) -> dict[str, Any]:
    clock = WallClock()
    settings = SimulatorSettings(rest_port=0, ws_port=0, max_client_backlog=max(n * 2, 10_000),
                                 rate_limits_enabled=False)
    sim = SimulatorServer(settings, api_key=API_KEY, clock=clock, instrument=InstrumentSpec())
    sim.declare_symbols((s, "NFO") for s in symbols)
    sim.start()
    parent, child = multiprocessing.Pipe()
    args = (sim.ws_url, symbols, mode, n, validate_utf8, child)
    worker: threading.Thread | multiprocessing.Process
    if client == "process":
        worker = multiprocessing.get_context("spawn").Process(target=run_client, args=args)
    else:
        worker = threading.Thread(target=run_client, args=args, daemon=True)
    worker.start()
    try:
        assert parent.poll(30) and parent.recv() == "ready"
        now = clock.time()
        ticks = [Tick(symbols[i % len(symbols)], "NFO", round(100.0 + (i % 200) * 0.05, 2),
                      now, now, 1000 + i * 65, 99.0, 101.0) for i in range(n)]
        sent_before = sim.stats()["ws_frames_sent"]
        start = time.monotonic()
        for tick in ticks:
            sim.publish(tick)
        published = time.monotonic()
        while sim.stats()["ws_frames_sent"] - sent_before < n:
            time.sleep(0.0005)
        written = time.monotonic()
        assert parent.poll(120), "client did not finish"
        count, _first, last = parent.recv()
    finally:
        worker.join(timeout=30)
        sim.stop()
        clock.stop()
    return {"mode": mode, "ticks": count, "publish/s": n / (published - start),
            "sent/s": n / (written - start), "end_to_end/s": count / (last - start),
            "seconds": last - start}


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    cells = [[f"{r[c]:,.0f}" if c.endswith("/s") else
              f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print(title)
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=82)
    parser.add_argument("--modes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--client", choices=("process", "thread"), default="process")
    parser.add_argument("--validate-utf8", action="store_true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    symbols = universe_symbols(24000, EXPIRY, InstrumentSpec(), width=20)[: args.symbols]
    title = (f"simulator -> one websocket-client ({args.client}), json-parsed, "
             f"{len(symbols)} symbols, utf8 validation {'on' if args.validate_utf8 else 'off'}")
    rows = [measure(mode, args.ticks, symbols, args.client, args.validate_utf8)
            for mode in args.modes]
    print_table(title, rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "sim_feed_throughput", "setup": title, "rows": rows,
        "command": " ".join(["bench/sim_feed_throughput.py", *sys.argv[1:]]),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
