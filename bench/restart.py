"""Restart: from SIGKILL of a trading engine to its successor being reconciled and ready.

The setup is that of the SIGKILL recovery test: a standalone simulator process (``run.py
simulator``, a synthetic session from 09:15 at ``--speed``) and the engine as its own process
(``run.py paper --attach``, the configured strategy baseline_v1 with permissive entry filters so
it trades early, the default universe of 82 options + the index). The first engine is left to
run until it holds a position (or ``--warmup`` seconds pass); then, ``--runs``
times: SIGKILL the engine, start a new one at once, and poll its control socket
(``engine.app.control.send_command(sock, "status")``, every ``--poll`` seconds) until
``api.reconciled`` is true — the reconciler's startup pass is done and entries are open.

Timed (wall clock for log stamps, monotonic otherwise), per restart:

- ``ready_s``: SIGKILL sent → the first status answer with ``reconciled`` true;
- breakdown from the new process's log (``--set logging.file=engine-NN.log``, IST stamps to the
  millisecond): ``process_s`` SIGKILL → "engine starting" (interpreter, imports, configuration,
  attaching, universe, database open); ``engine_s`` → "startup reconciliation done" (the
  supervisor tree starts and the reconciler's first pass against the broker runs, concurrently);
  ``observed_s`` → the status answer (control socket up, polling granularity);
- ``imports_s`` (once, separately): a fresh interpreter importing the modules a paper run loads.

Also recorded: the open positions and resting orders at the broker at each kill.
Usage: python bench/restart.py [--quick] [--runs N] [--json PATH]
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Report, arg_parser  # noqa: E402

RUN = [sys.executable, str(ROOT / "run.py")]
DAY = "2025-09-03"
SEED = 11
TARGET_S = 5.0
IMPORTS = ("engine.app.commands, engine.app.live, engine.app.modes, engine.app.tree, "
           "engine.app.control, engine.app.operator, actors.order_manager, "
           "actors.position_monitor, actors.risk_manager, "
           "actors.reconciler, actors.strategy_host, actors.swing_detector, actors.bar_builder, "
           "actors.feed, actors.store, actors.health, strategies.baseline_v1")
CONFIG = """
[engine]
state_dir = "{state}"
shutdown_timeout_s = 20
[store]
path = "{db}"
[logging]
console = false
file = "{log}"
[universe]
width = {width}
[control]
socket_path = "{sock}"
[baseline_v1]
vwap_premium_min = -1.0
sl_pct_min = 0.0
sl_pct_max = 0.5
price_min = 1.0
price_max = 10000.0
"""
MARKS = {"start": "engine starting:", "reconciled": "startup reconciliation done"}


def log_stamp(line: str) -> float | None:
    """Epoch seconds of a log line's IST stamp (``YYYY-MM-DD HH:MM:SS.mmm | ...``)."""
    from engine.runtime.clock import IST

    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(
            tzinfo=IST).timestamp()
    except ValueError:
        return None


def log_marks(path: Path) -> dict[str, float]:
    """The first stamp of each of ``MARKS`` in an engine log."""
    found: dict[str, float] = {}
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        for key, text in MARKS.items():
            if key not in found and text in line:
                stamp = log_stamp(line)
                if stamp is not None:
                    found[key] = stamp
    return found


def import_seconds(repeats: int) -> float:
    """Median wall time of a fresh interpreter importing what a paper run imports."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {IMPORTS}"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Venue:
    """The simulator process, the engine processes and their files."""

    def __init__(self, folder: Path, short: Path, *, width: int, speed: float,
                 minutes: int) -> None:
        from engine.market.synth import generate_session

        self.folder = folder
        self.state = folder / "var"
        self.sock = str(short / "ctl" / "engine.sock")
        self.env = {**os.environ, "OPENALGO_API_KEY": secrets.token_urlsafe(24)}
        common = {"state": self.state, "db": folder / "engine.db", "width": width,
                  "sock": self.sock}
        self.engine_cfg = folder / "engine.toml"
        self.engine_cfg.write_text(CONFIG.format(log="engine.log", **common))
        sim_cfg = folder / "simulator.toml"
        sim_cfg.write_text(CONFIG.format(log="simulator.log", **common))
        summary = generate_session(folder / "session.sqlite", date=DAY, seed=SEED, width=width,
                                   start="09:15", minutes=minutes)
        self.atm = summary.atm
        self.sim = subprocess.Popen(
            [*RUN, "simulator", "--config", str(sim_cfg), "--session", str(summary.path),
             "--speed", str(speed), "--rest-port", "0", "--ws-port", "0"], cwd=folder,
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (self.state / "simulator.json").exists():
            if self.sim.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.05)
        self.facts = json.loads((self.state / "simulator.json").read_text())
        self.engine: subprocess.Popen[bytes] | None = None

    def start_engine(self, n: int) -> Path:
        log = f"engine-{n:02d}.log"
        self.engine = subprocess.Popen(
            [*RUN, "paper", "--config", str(self.engine_cfg), "--set", f"logging.file={log}",
             "--attach", "--atm", str(self.atm)], cwd=self.folder, env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self.state / log

    def kill_engine(self) -> None:
        assert self.engine is not None
        self.engine.send_signal(signal.SIGKILL)
        self.engine.wait(10)

    def status(self) -> dict[str, Any] | None:
        from engine.app.control import ControlError, send_command

        try:
            return send_command(self.sock, "status", timeout=5)
        except ControlError:
            return None

    def wait_ready(self, poll: float, timeout: float) -> float:
        """Monotonic time of the first status with ``reconciled`` true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.engine is not None and self.engine.poll() is not None:
                raise RuntimeError(f"the engine exited with {self.engine.returncode}")
            seen = self.status()
            if seen and seen["api"].get("reconciled"):
                return time.monotonic()
            time.sleep(poll)
        raise TimeoutError(f"the engine was not reconciled within {timeout} s")

    def broker_book(self) -> tuple[int, int]:
        """(open positions, resting orders) at the simulator."""
        from engine.app.sections import load_config
        from engine.openalgo.rest import OpenAlgoClient
        from engine.runtime.clock import WallClock

        cfg = load_config(self.engine_cfg, env={})
        clock = WallClock()
        client = OpenAlgoClient(replace(cfg.openalgo, host=self.facts["rest_url"]),
                                api_key=self.env["OPENALGO_API_KEY"], clock=clock)
        try:
            positions = sum(1 for p in client.positionbook() if p.quantity)
            resting = sum(1 for o in client.orderbook()
                          if o.status.lower() in ("open", "trigger pending"))
        finally:
            client.close()
            clock.stop()
        return positions, resting

    def close(self) -> None:
        for proc in (self.engine, self.sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small run for smoke testing")
    p.add_argument("--runs", type=int, help="SIGKILL + restart cycles (default 8; quick 2)")
    p.add_argument("--width", type=int, help="strikes each side of ATM (default 20; quick 2)")
    p.add_argument("--speed", type=float, default=10.0, help="simulator speed (default 10)")
    p.add_argument("--warmup", type=float, help="most seconds to wait for the first engine to "
                   "hold a position before the first kill (default 120; quick 3)")
    p.add_argument("--poll", type=float, default=0.05, help="status poll interval, seconds")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    runs = args.runs or (2 if args.quick else 8)
    width = args.width if args.width is not None else (2 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 120.0)
    rng = random.Random(args.seed)
    imports = import_seconds(1 if args.quick else 3)
    report = Report("restart", "SIGKILL of `run.py paper --attach` → successor reconciled and "
                    "ready (control socket status)")
    folder = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    short = Path(tempfile.mkdtemp(prefix="nek", dir="/tmp"))
    venue: Venue | None = None
    readies: list[float] = []
    try:
        venue = Venue(folder, short, width=width, speed=args.speed, minutes=90)
        venue.start_engine(0)
        venue.wait_ready(args.poll, 120.0)
        deadline = time.monotonic() + warmup
        while time.monotonic() < deadline and venue.broker_book()[0] == 0:
            time.sleep(0.5)
        for n in range(1, runs + 1):
            positions, resting = venue.broker_book()
            killed_wall = time.time()
            venue.kill_engine()
            killed = time.monotonic()
            log = venue.start_engine(n)
            ready = venue.wait_ready(args.poll, 120.0)
            ready_wall = killed_wall + (ready - killed)
            marks = log_marks(log)
            start, recon = marks.get("start"), marks.get("reconciled")
            readies.append(ready - killed)
            report.row(run=n, open_positions=positions, resting_orders=resting,
                       ready_s=ready - killed,
                       process_s=None if start is None else start - killed_wall,
                       engine_s=None if start is None or recon is None else recon - start,
                       observed_s=None if recon is None else ready_wall - recon)
            time.sleep(rng.uniform(0.5, 2.0))  # trade on a little before the next kill
    finally:
        if venue is not None:
            venue.close()
        shutil.rmtree(short, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    ordered = sorted(readies)
    report.figure("runs", len(readies))
    report.figure("ready_p50_s", statistics.median(ordered) if ordered else None)
    report.figure("ready_max_s", ordered[-1] if ordered else None)
    for key in ("process_s", "engine_s", "observed_s"):
        values = [r[key] for r in report.rows if r.get(key) is not None]
        report.figure(f"{key[:-2]}_p50_s", statistics.median(values) if values else None)
    report.figure("imports_s", imports)
    report.figure("symbols", 2 * (2 * width + 1) + 1)
    report.figure("target", f"ready < {TARGET_S:g} s")
    report.figure("target_met", bool(ordered) and ordered[-1] < TARGET_S)
    report.figure("note", "2-core machine shared with other jobs (and with the simulator "
                  "process): figures are noisy")
    report.finish(args.json)


if __name__ == "__main__":
    main()
