"""Feed throughput: ticks/s from the simulator to one FeedClient over loopback, parsed into Ticks.

The simulator publishes a burst of ticks (``sim.publish`` in a tight loop, round-robin over the
subscribed symbols); one ``FeedClient`` receives the ``market_data`` frames and parses each into
an ``engine.messages.Tick`` handed to ``on_ticks``. The rate is end to end: delivered ticks divided
by the time from the first publish to the last tick parsed.

Three setups:
- ``process``: the simulator in its own process (as OpenAlgo is in production, so the client's
  parsing does not share a GIL with the server), ``sim.publish`` in a tight loop;
- ``thread``: the simulator in the client's process;
- ``raw``: the client's own capacity — a child process writes the simulator's frames (encoded
  beforehand by the simulator's ``FrameBuilder``) onto the socket as fast as loopback takes them,
  so the server's cost per tick is out of the measurement.

    /work/venv/bin/python bench/feed_throughput.py [--ticks 200000] [--symbols 82]
        [--modes 1 2 3] [--setups process thread raw] [--out bench/feed_throughput.json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import platform
import socket
import sys
import threading
import time
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loguru import logger

from engine.market.instruments import InstrumentSpec, universe_symbols
from engine.messages import Tick
from engine.openalgo.feed import FeedClient, FeedSettings
from engine.runtime.clock import WallClock
from engine.sim.matching import SimulatedBroker
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.sim.wire import FrameBuilder, text_frame_header

API_KEY = "bench-key-0123456789"
EXPIRY = date(2025, 1, 30)



RESULT_JSON = Path(__file__).resolve().parent / "results" / (Path(__file__).stem + ".json")

def symbols_for(count: int) -> list[str]:
    width = max(1, (count + 1) // 4 + 1)
    return universe_symbols(24000, EXPIRY, InstrumentSpec(), width=width)[:count]


def burst(symbols: list[str], count: int, start: float) -> list[Tick]:
    """``count`` ticks round-robin over ``symbols``, prices moving by a tick."""
    out = []
    for i in range(count):
        ltp = 100.0 + (i % 200) * 0.05
        out.append(Tick(symbols[i % len(symbols)], "NFO", round(ltp, 2), start, start + i * 1e-4,
                        1000 + i, round(ltp - 0.05, 2), round(ltp + 0.05, 2), 5000))
    return out


class SimHost:
    """The simulator plus a command loop: ``publish(n)`` sends a burst and answers its duration."""

    def __init__(self, symbols: list[str]) -> None:
        self.clock = WallClock()
        self.sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0), api_key=API_KEY,
                                   clock=self.clock, instrument=InstrumentSpec(),
                                   tick_source=None)
        self.sim.start()
        self.symbols = symbols
        self.ticks: list[Tick] = []
        now = self.clock.time()
        for tick in burst(symbols, len(symbols), now):
            self.sim.publish(tick)

    def prepare(self, count: int) -> None:
        self.ticks = burst(self.symbols, count, self.clock.time())

    def publish(self) -> float:
        started = time.perf_counter()
        for tick in self.ticks:
            self.sim.publish(tick)
        return time.perf_counter() - started

    def stop(self) -> None:
        self.sim.stop()
        self.clock.stop()


def sim_process(conn: Connection, symbols: list[str]) -> None:
    """Child process: host the simulator and obey ``("publish", n)`` / ``("stop",)``."""
    logger.remove()
    host = SimHost(symbols)
    conn.send(host.sim.ws_url)
    while True:
        command = conn.recv()
        if command[0] == "stop":
            break
        if command[0] == "prepare":
            host.prepare(command[1])
            conn.send(0.0)
        else:
            conn.send(host.publish())
    host.stop()


def raw_process(conn: Connection, symbols: list[str], mode: int) -> None:
    """Child process: a bare WebSocket server that authenticates one client, then on each
    ``("publish", n)`` writes ``n`` pre-encoded simulator frames in one go."""
    logger.remove()
    clock = WallClock()
    broker = SimulatedBroker(clock, InstrumentSpec())
    listener = socket.create_server(("127.0.0.1", 0))
    conn.send(f"ws://127.0.0.1:{listener.getsockname()[1]}")

    def frames(count: int) -> bytes:
        parts = []
        for tick in burst(symbols, count, clock.time()):
            payload = FrameBuilder(broker.on_tick(tick), tick.ltp, tick.ts, 0.05,
                                   broker.level_quantity, "simulator").frame(mode)
            parts += (text_frame_header(len(payload)), payload)
        return b"".join(parts)

    client, _ = listener.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        request += client.recv(4096)
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                              .digest())
    client.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    auth = json.dumps({"type": "auth", "status": "success"}).encode()
    client.sendall(text_frame_header(len(auth)) + auth)
    reader = threading.Thread(target=lambda: all(iter(lambda: client.recv(65536), b"")),
                              daemon=True)  # drain (and ignore) whatever the client sends
    reader.start()
    blob = b""
    while True:
        command = conn.recv()
        if command[0] == "stop":
            break
        if command[0] == "prepare":
            blob = frames(command[1])
            conn.send(0.0)
        else:
            started = time.perf_counter()
            client.sendall(blob)
            conn.send(time.perf_counter() - started)
    client.close()
    clock.stop()


class Counter:
    """``on_ticks`` target: counts delivered ticks and signals when ``target`` is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.last_at = 0.0
        self.done = threading.Event()

    def arm(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done.clear()

    def __call__(self, batch: list[Tick]) -> None:
        self.count += len(batch)
        self.last_at = time.perf_counter()
        if self.count >= self.target:
            self.done.set()


def measure(ws_url: str, sender: Any, symbols: list[str], mode: int, ticks: int,
            setup: str) -> dict[str, Any]:
    """``sender`` has ``prepare(count)`` (build the burst, untimed) and ``publish()`` (send it,
    returns the seconds it took)."""
    counter = Counter()
    clock = WallClock()
    feed = FeedClient(FeedSettings(ws_url=ws_url, mode=mode, frozen_after_s=0.0),
                      api_key=API_KEY, clock=clock, on_ticks=counter)
    feed.subscribe([(s, "NFO") for s in symbols])
    feed.start()
    try:
        # warm up: until every subscription is live and ticks flow
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            counter.arm(len(symbols))
            sender.prepare(len(symbols))
            sender.publish()
            if counter.done.wait(1.0):
                break
        sender.prepare(ticks)
        counter.arm(ticks)
        before = feed.stats()
        started = time.perf_counter()
        publish_s = sender.publish()
        counter.done.wait(60.0)
        time.sleep(0.2)  # anything beyond the target (there should be nothing)
        elapsed = (counter.last_at or time.perf_counter()) - started
        after = feed.stats()
    finally:
        feed.stop()
        clock.stop()
    invalid = sum(after.invalid.values()) - sum(before.invalid.values())
    return {"setup": setup, "mode": mode, "symbols": len(symbols), "published": ticks,
            "delivered": counter.count, "publish_s": round(publish_s, 4),
            "publish_per_s": round(ticks / publish_s), "end_to_end_s": round(elapsed, 4),
            "ticks_per_s": round(counter.count / elapsed) if elapsed > 0 else 0,
            "invalid": invalid, "reconnects": after.reconnects - before.reconnects}


def run_setup(setup: str, symbols: list[str], modes: list[int], ticks: int) -> list[dict[str, Any]]:
    if setup == "thread":
        host = SimHost(symbols)
        try:
            return [measure(host.sim.ws_url, host, symbols, mode, ticks, setup)
                    for mode in modes]
        finally:
            host.stop()
    if setup == "raw":
        return [in_child(raw_process, (symbols, mode), symbols, mode, ticks, setup)
                for mode in modes]
    return [in_child(sim_process, (symbols,), symbols, mode, ticks, setup) for mode in modes]


class ChildSender:
    """The parent's handle on a child process's sending side."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def prepare(self, count: int) -> None:
        self._conn.send(("prepare", count))
        self._conn.recv()

    def publish(self) -> float:
        self._conn.send(("publish",))
        return float(self._conn.recv())


def in_child(target: Any, args: tuple[Any, ...], symbols: list[str], mode: int, ticks: int,
             setup: str) -> dict[str, Any]:
    """Run the sending side in a child process and measure one mode against it."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    try:
        return measure(parent.recv(), ChildSender(parent), symbols, mode, ticks, setup)
    finally:
        parent.send(("stop",))
        process.join(10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=82)
    parser.add_argument("--modes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--setups", nargs="+", default=["process", "thread", "raw"],
                        choices=["process", "thread", "raw"])
    parser.add_argument("--out", type=Path, default=RESULT_JSON)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    symbols = symbols_for(args.symbols)
    runs = [run for setup in args.setups
            for run in run_setup(setup, symbols, args.modes, args.ticks)]
    header = (f"{'setup':<8} {'mode':>4} {'published':>10} {'delivered':>10} {'publish/s':>10} "
              f"{'e2e s':>8} {'ticks/s':>9} {'invalid':>7}")
    print(header)
    print("-" * len(header))
    for r in runs:
        print(f"{r['setup']:<8} {r['mode']:>4} {r['published']:>10} {r['delivered']:>10} "
              f"{r['publish_per_s']:>10} {r['end_to_end_s']:>8.3f} {r['ticks_per_s']:>9} "
              f"{r['invalid']:>7}")
    result = {"benchmark": "feed_throughput", "command": " ".join(sys.argv),
              "python": platform.python_version(), "cpus": multiprocessing.cpu_count(),
              "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
