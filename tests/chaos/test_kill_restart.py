"""Recovery under SIGKILL: a paper session against a standalone simulator (its own process, so
orders, positions and the market outlive the engine); the engine process is SIGKILLed at 20
random moments and restarted each time, then runs to the end of the session.

At the end (issue 6's acceptance), checked against the simulator over REST:
- no duplicate orders: every order at the broker is exactly one engine order (by broker order
  id), and no engine order was sent twice;
- every open short has exactly one resting stop, for its whole quantity;
- realized P&L (the position monitor's, which the risk manager's R is made of) equals the sum of
  the closed trades, and each closed trade equals what the broker's trades say;
- the broker's positions and the engine's are the same.

``KILLS`` and ``SPEED`` come from the environment for longer runs (defaults 20 and 20)."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.clock import WallClock
from engine.config import load_config
from engine.control import ControlError, send_command
from engine.openalgo.rest import OpenAlgoClient
from engine.store import Database
from engine.synth import small_session

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "run.py")]
KILLS = int(os.environ.get("KILLS", "20"))
SPEED = float(os.environ.get("SPEED", "20"))
MINUTES = 24
DAY = "2025-01-30"

CONFIG = """
[engine]
state_dir = "{state}"
shutdown_timeout_s = 20
[store]
path = "{db}"
[logging]
console = false
[universe]
width = 1
[control]
socket_path = "{sock}"
[reconcile]
interval_s = 20
[baseline_v1]
vwap_premium_min = -1.0
sl_pct_min = 0.0
sl_pct_max = 0.5
price_min = 1.0
price_max = 10000.0
"""


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[dict[str, Any]]:
    short = Path(tempfile.mkdtemp(prefix="nek", dir="/tmp"))
    state = tmp_path / "var"
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(CONFIG.format(state=state, db=tmp_path / "engine.db",
                                      sock=short / "ctl" / "engine.sock"))
    summary = small_session(tmp_path / "session.db", date=DAY, seed=15, symbols=1,
                            minutes=MINUTES)
    env = {**os.environ, "OPENALGO_API_KEY": secrets.token_urlsafe(24)}
    with open(tmp_path / "sim.log", "w") as log:
        sim = subprocess.Popen([*RUN, "--config", str(cfg_path), "simulator", "--session",
                                str(summary.path), "--speed", str(SPEED), "--rest-port", "0",
                                "--ws-port", "0"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not (state / "simulator.json").exists():
            assert sim.poll() is None, (tmp_path / "sim.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.1)
        facts = json.loads((state / "simulator.json").read_text())
        yield {"tmp": tmp_path, "cfg": cfg_path, "env": env, "atm": summary.atm,
               "facts": facts, "sock": str(short / "ctl" / "engine.sock"),
               "db": tmp_path / "engine.db", "end": summary_end(summary.path)}
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(20)
        except subprocess.TimeoutExpired:
            sim.kill()
        shutil.rmtree(short, ignore_errors=True)


def summary_end(path: Path) -> float:
    from engine.session_file import SessionReader

    span = SessionReader(path).time_range()
    assert span is not None
    return span[1]


def market_now(facts: dict[str, Any]) -> float:
    return float(facts["market_ts"]) + (time.time() - float(facts["wall_ts"])) * facts["speed"]


def start_engine(v: dict[str, Any], n: int) -> subprocess.Popen[bytes]:
    with open(v["tmp"] / f"engine-{n:02d}.log", "w") as log:
        return subprocess.Popen([*RUN, "--config", str(v["cfg"]), "paper", "--attach",
                                 "--atm", str(v["atm"])], cwd=v["tmp"], env=v["env"],
                                stdout=log, stderr=subprocess.STDOUT)


def status(v: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return send_command(v["sock"], "status", timeout=10)
    except ControlError:
        return None


@pytest.mark.timeout(900)
def test_twenty_sigkills_lose_nothing(venue: dict[str, Any]) -> None:
    v = venue
    rng = random.Random(20251130)
    for n in range(KILLS):
        proc = start_engine(v, n)
        time.sleep(rng.uniform(0.5, 4.5))  # during start-up, reconciliation or trading
        assert proc.poll() is None, (v["tmp"] / f"engine-{n:02d}.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    final = start_engine(v, KILLS)
    try:
        # run past the session's end (and one reconciliation) so everything has settled
        while market_now(v["facts"]) < v["end"] + 90:
            assert final.poll() is None, (v["tmp"] / f"engine-{KILLS:02d}.log").read_text()[-3000:]
            time.sleep(0.5)
        seen = None
        for _ in range(50):
            seen = status(v)
            if seen and seen["api"].get("reconciled"):
                break
            time.sleep(0.2)
        assert seen is not None, "the final engine never answered status"
    finally:
        final.send_signal(signal.SIGTERM)
        final.wait(60)
    check_invariants(v, seen)


def check_invariants(v: dict[str, Any], seen: dict[str, Any]) -> None:
    cfg = load_config(v["cfg"])
    broker = OpenAlgoClient(replace(cfg.openalgo, host=v["facts"]["rest_url"]),
                            api_key=v["env"]["OPENALGO_API_KEY"], clock=WallClock())
    book = broker.orderbook()
    trades_at_broker = broker.tradebook()
    positions = {p.symbol: p.quantity for p in broker.positionbook() if p.quantity}
    with Database(v["db"]) as db:
        orders = db.orders()
        trades = db.trades()
    # 1. no duplicate orders
    ids = [o.broker_order_id for o in orders if o.broker_order_id]
    assert len(ids) == len(set(ids)), "two engine orders share a broker order"
    unknown = [r for r in book if r.orderid not in set(ids)]
    assert not unknown, f"orders at the broker the engine does not know: {unknown}"
    assert len(book) == len(ids)
    assert orders, "the session placed no order: the test proves nothing"
    # 2. every open short has exactly one resting stop for its whole quantity
    resting = [r for r in book if r.status.lower() in ("open", "trigger pending")]
    for symbol, qty in positions.items():
        assert qty < 0, f"{symbol}: a long position ({qty}) in a short-only strategy"
        stops = [r for r in resting if r.symbol == symbol and r.action == "BUY"]
        assert len(stops) == 1 and stops[0].quantity == -qty, (symbol, qty, stops)
    # 3. realized P&L = the closed trades; each closed trade = the broker's trades
    realized = seen["risk"]["realized_pnl"] or 0.0
    assert realized == pytest.approx(sum(t.pnl for t in trades), abs=0.05)
    for t in trades:
        fills = [x for x in trades_at_broker if x.symbol == t.symbol]
        sold = sum(x.quantity * x.average_price for x in fills if x.action == "SELL")
        bought = sum(x.quantity * x.average_price for x in fills if x.action == "BUY")
        assert t.pnl == pytest.approx(sold - bought, abs=0.05), t
    # 4. the broker's positions = the engine's
    engine = {p["symbol"]: p["quantity"] for p in seen["positions"] if p["quantity"]}
    assert engine == positions
