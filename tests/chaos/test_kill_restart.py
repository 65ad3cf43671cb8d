"""Recovery under SIGKILL: a paper session against a standalone simulator (its own process, so
orders, positions and the market outlive the engine); the engine process is SIGKILLed at 20
random moments and restarted each time, then runs past the end of the session.

At the end (issue 6's acceptance), checked against the simulator over REST with the chaos
harness's invariants (``tests/chaos/invariants.py``):
- no duplicate orders: every order at the broker is exactly one engine order (by broker order
  id), none left unresolved;
- every open short has exactly one resting stop, for its whole quantity;
- realized P&L (the position monitor's, which the risk manager's R is made of) equals the sum of
  the closed trades and the broker's realized P&L; the engine's fills equal the broker's trades;
- every engine fill's price is the broker's tradebook price for its part of the order;
- the broker's positions and the engine's are the same.

The simulator's broker personality is the harness's default, ``zerodha`` (no fill fields in its
orderbook rows, CANCEL PENDING carried over); ``python -m tests.chaos.harness --broker all`` runs
the chaos run under every personality, and ``BROKER=NAME pytest tests/chaos/test_kill_restart.py``
this test under another.

The set-up (session, configuration) is the chaos harness's, with its faults off: the kills are
the fault here. ``KILLS`` and ``SPEED`` come from the environment for longer runs (defaults 20
and 20)."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from engine.market.instruments import trading_date
from engine.store.database import Database
from tests.chaos.harness import (
    RUN,
    ChaosPlan,
    _broker,
    prepare,
    process,
    status,
    tail,
    wait_for,
)
from tests.chaos.invariants import (
    Check,
    RunFacts,
    _uncovered_shorts,
    fill_prices_match,
    no_duplicate_orders,
    positions_match,
    realized_pnl_matches,
)

KILLS = int(os.environ.get("KILLS", "20"))
SPEED = float(os.environ.get("SPEED", "20"))
#: the simulator's broker personality (``BROKER=angel`` etc. runs the test under another one)
BROKER = os.environ.get("BROKER", "zerodha")
PLAN = ChaosPlan(minutes=24, speed=SPEED, session_seed=15, width=1, faults=False, broker=BROKER)


@pytest.mark.timeout(900)
def test_twenty_sigkills_lose_nothing(tmp_path: Path) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="nek", dir="/tmp"))
    try:
        checks = kill_and_restart(tmp_path, sock_dir)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    assert not failed, "\n".join(failed)


def kill_and_restart(out: Path, sock_dir: Path) -> list[Check]:
    layout, _, market_s = prepare(PLAN, out, sock_dir)
    key = secrets.token_urlsafe(24)
    env = {**os.environ, "OPENALGO_API_KEY": key}
    sim_cmd = [*RUN, "simulator", "--config", str(layout.config), "--session",
               str(layout.session), "--speed", str(SPEED), "--rest-port", "0", "--ws-port", "0"]
    engine_cmd = [*RUN, "paper", "--config", str(layout.config), "--attach", "--atm",
                  str(layout.atm)]
    sim_json = layout.state / "simulator.json"
    rng = random.Random(20251130)
    with process(sim_cmd, out, env, out / "simulator.out") as sim:
        wait_for("simulator", sim_json.exists, 120, sim, out / "simulator.out")
        facts = json.loads(sim_json.read_text())
        for n in range(KILLS):
            log = out / f"engine-{n:02d}.out"
            with process(engine_cmd, out, env, log) as engine:
                time.sleep(rng.uniform(0.5, 4.5))  # start-up, reconciliation or trading
                assert engine.poll() is None, tail(log)
                engine.send_signal(signal.SIGKILL)
                engine.wait(10)
        log = out / "engine-final.out"
        with process(engine_cmd, out, env, log) as engine:
            # past the session's end and a reconciliation, so everything has settled
            until = float(facts["wall_ts"]) + market_s + 90.0 / SPEED + 2.0
            while time.time() < until:
                assert engine.poll() is None, tail(log)
                time.sleep(0.5)
            seen = wait_for("reconciled status",
                            lambda: (s := status(layout.sock)) and s["api"].get("reconciled")
                            and s, 30, engine, log)
            live_positions = _broker(facts, key, layout).positionbook()
        # the final engine stopped by SIGTERM (keep_stops): its stops must still rest
        broker = _broker(facts, key, layout)
        books = (broker.orderbook(), broker.tradebook(), broker.positionbook())
    day = trading_date(float(facts["market_ts"]))
    with Database(layout.db) as db:
        run = RunFacts(
            speed=SPEED, market_origin=(float(facts["market_ts"]), float(facts["wall_ts"])),
            db_locked=(), status=seen, broker_positions_live=live_positions,
            broker_orders=books[0], broker_trades=books[1], broker_positions=books[2],
            orders=db.orders(trading_date=day), fills=db.fills(trading_date=day),
            trades=db.trades(trading_date=day), bars={}, gaps={}, session_minutes={},
            closed_through=0.0, restarts={}, crashes=(), crashes_planned=0, engine_exit=0)
    uncovered = _uncovered_shorts(run)
    return [no_duplicate_orders(run), positions_match(run), realized_pnl_matches(run),
            fill_prices_match(run),
            Check("one resting stop per open short", not uncovered,
                  "; ".join(uncovered) or "every open short has its one stop")]
