"""Issue 16, why 8 and 9: a truthful status and operator controls that do what they say, with the
engine trading against the simulator over real sockets (``run_trading``, as ``live`` and
``paper --attach`` run it; ``run_paper`` for plain paper) and ``run.py`` as the client.

- status: coverage counts only symbols that can tick now; authentication and reachability come
  from the last REST call; the recommendation names a broker that does not answer;
- kill is undone by resume (entries open again), pause shows in status, a refusal has no
  doubled words, ``status`` into a closed pipe is no traceback;
- plain ``paper`` has the control socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from actors.reconciler import ReconcileSettings
from engine.app.control import ControlSettings, recommend, render_status, send_command
from engine.app.live import run_trading
from engine.app.modes import run_paper
from engine.app.sections import load_config
from engine.app.tree import Engine
from engine.app.venues import Venue
from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    next_expiry,
    option_symbol,
    trading_date,
)
from engine.market.synth import small_session
from engine.messages import GateQuery, Tick
from engine.runtime.clock import WallClock
from engine.sim.server import SimulatorServer, SimulatorSettings
from tests.engine.app.test_live import ATM, KEY, SPEC, config
from tests.support import TEST_ENV, until

ROOT = Path(__file__).resolve().parents[3]


class Trading:
    """``run_trading`` at a paper venue on a wall-clock simulator; ``sections`` replace
    configuration sections (``dashboard=...``)."""

    def __init__(self, tmp_path: Path, **sections: object) -> None:
        day = trading_date(time.time())
        self.ce = option_symbol("NIFTY", next_expiry(day, SPEC), ATM, "CE")
        self.sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0,
                                                     rate_limits_enabled=False),
                                   api_key=KEY, clock=WallClock(), instrument=SPEC)
        self.sim.declare_symbols([(self.ce, "NFO"), (INDEX_SYMBOL, INDEX_EXCHANGE)])
        self.sim.start()
        cfg = config(tmp_path, "keep_stops")
        self.cfg = cfg.replace(
            reconcile=ReconcileSettings(interval_s=1.0, startup_retry_s=0.5),
            openalgo=replace(cfg.openalgo, timeout_s=0.5, retries=1),
            feed=replace(cfg.feed, reconnect_base_s=0.2, reconnect_max_s=0.5), **sections)
        self.sock = self.cfg.section("control").socket_path
        venue = Venue("paper", self.sim.rest_url, self.sim.ws_url, KEY, WallClock(), "paper")
        self.stop = threading.Event()
        started: dict[str, Engine] = {}
        self.thread = threading.Thread(target=run_trading, args=(self.cfg, venue), kwargs=dict(
            db_path=tmp_path / "engine.db", strategies=("baseline_v1",), stop=self.stop,
            atm=ATM, on_started=lambda e: started.update(engine=e)), daemon=True)
        self.thread.start()
        until(lambda: "engine" in started, timeout=30)
        self.engine = started["engine"]
        until(lambda: self.status()["api"]["reconciled"], timeout=20)

    def tick(self, ltp: float = 100.0) -> None:
        now = time.time()
        self.sim.publish(Tick(self.ce, "NFO", ltp, recv_ts=now, exchange_ts=now,
                              bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2)))

    def status(self) -> dict:
        return send_command(self.sock, "status")

    def entries_open(self) -> bool:
        return bool(self.engine.ask("orders", GateQuery("baseline_v1")).entries)

    def cli(self, *args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, "--socket",
                                 self.sock], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT, env={**os.environ, "NIFTY_ENGINE__LOGGING__CONSOLE":
                                               "false"})

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.sim.stop()


@pytest.fixture
def trading(tmp_path: Path) -> Iterator[Trading]:
    t = Trading(tmp_path)
    try:
        yield t
    finally:
        t.close()


def test_status_tells_a_dead_broker_from_a_healthy_one(trading: Trading) -> None:
    """Why 8: with the simulator gone, coverage dropped to 0 and authentication was still "ok"
    (the reconciler's first pass); now both follow what the engine can see."""
    until(lambda: (trading.tick(), trading.status()["connection"]["live"] >= 1)[1], timeout=10)
    healthy = trading.status()
    assert healthy["api"]["authenticated"] is True and healthy["api"]["reachable"] is True
    assert "unreachable" not in recommend(healthy)
    trading.sim.stop()  # REST and WebSocket gone
    until(lambda: trading.status()["api"]["reachable"] is False, timeout=15)
    until(lambda: trading.status()["connection"]["live"] == 0, timeout=15)
    down = trading.status()
    assert down["connection"]["coverage"] == 0.0
    assert down["api"]["authenticated"] is None  # nothing is known of the key
    text = render_status(down)
    assert "Authentication:      unknown (the broker did not answer" in text
    assert "UNREACHABLE" in text
    advice = recommend(down)
    assert "market feed is" in advice or "unreachable" in advice


def test_resume_undoes_kill_and_status_shows_pause_and_kill(trading: Trading) -> None:
    """Why 9: after kill, resume said "kill lifted" and entries stayed closed."""
    assert trading.entries_open()
    send_command(trading.sock, "kill")
    until(lambda: not trading.entries_open(), timeout=5)
    status = trading.status()
    assert status["risk"]["strategies"]["baseline_v1"]["state"] == "KILLED"
    assert "KILLED" in render_status(status) and "`run.py resume`" in recommend(status)
    send_command(trading.sock, "resume")
    until(trading.entries_open, timeout=5)
    send_command(trading.sock, "pause")
    until(lambda: trading.status()["risk"]["strategies"]["baseline_v1"]["paused"], timeout=5)
    status = trading.status()
    assert status["risk"]["state"] == "PAUSED"
    assert "Paused:" in render_status(status) and "yes (new entries blocked)" in \
        render_status(status)
    send_command(trading.sock, "resume")
    until(lambda: trading.status()["risk"]["state"] == "ACTIVE", timeout=5)


def test_a_refusal_has_no_doubled_words(
        trading: Trading) -> None:
    proc = trading.cli("pause", "--strategy", "nope")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().startswith("pause: unknown strategy 'nope'") and "pause: pause" not in err


def test_status_into_a_closed_pipe_is_no_traceback(trading: Trading) -> None:
    proc = trading.cli("status")
    assert proc.stdout is not None
    proc.stdout.close()  # the reader went away before the report was written (status | head)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_plain_paper_has_the_control_socket(tmp_path: Path) -> None:
    """Why 9: only ``paper --attach`` and ``live`` listened; plain ``paper`` trades too."""
    session = small_session(tmp_path / "s.db", date="2025-09-03", seed=31, symbols=1,
                            minutes=3).path
    sock = str(Path(tempfile.mkdtemp(dir="/tmp")) / "p.sock")
    cfg = load_config(None, env=TEST_ENV, overrides={
        "simulator.rest_port": "0", "simulator.ws_port": "0", "store.synchronous": "NORMAL"})
    cfg = cfg.replace(control=ControlSettings(socket_path=sock))
    stop = threading.Event()
    seen: dict[str, dict] = {}

    def started(engine: Engine, _sim: SimulatorServer) -> None:
        seen["status"] = send_command(sock, "status")
        seen["pause"] = send_command(sock, "pause")
        stop.set()

    run_paper(cfg, Path(session), speed=60.0, db_path=tmp_path / "e.db",
              strategies=("baseline_v1",), stop=stop, on_started=started)
    assert "connection" in seen["status"]
    assert seen["pause"]["summary"].startswith("pause: new entries blocked")
