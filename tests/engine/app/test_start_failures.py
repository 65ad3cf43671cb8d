"""Start-up and I/O failures are one line on stderr and the right exit code, never a traceback
(issue 16, "Why" items 4 and 5): a refused API key (2) or an unreachable broker (1) for
``paper --attach``, with or without ``--atm``; a state directory that cannot be made (1); a
damaged engine database (2); a log file on a full disk (one line, then counted, instead of a
loguru traceback per line)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from engine.app.command_spec import EXIT_CONFIG, EXIT_FAILURE
from engine.app.venues import write_simulator_file
from engine.market.instruments import INDEX_EXCHANGE, INDEX_SYMBOL
from engine.market.synth import small_session
from engine.runtime.clock import WallClock
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.store.database import Database, DatabaseOwner
from tests.engine.app.cli_support import ROOT, one_line, run_cli

KEY = "start-failures-key-5e2a91c7"


def run(*args: str, cwd: Path, key: str = KEY, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, api_key=key, timeout=timeout)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Path]:
    """A simulator serving with ``KEY``, announced in ``tmp_path/var/simulator.json``."""
    clock = WallClock()
    sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0), api_key=KEY, clock=clock)
    sim.declare_symbols([(INDEX_SYMBOL, INDEX_EXCHANGE)])
    sim.start()
    write_simulator_file(tmp_path / "var", rest_url=sim.rest_url, ws_url=sim.ws_url,
                         clock=clock)
    try:
        yield tmp_path
    finally:
        sim.stop()
        clock.stop()


#: pins one trading day (no day lifecycle): a start that cannot go on ends with its exit code
ONE_DAY = ("--expiry", "2025-09-09")


@pytest.mark.parametrize("atm", [(), ("--atm", "24000")])
def test_a_refused_key_is_one_line_and_exit_2(simulator: Path, atm: tuple[str, ...]) -> None:
    done = run("paper", "--attach", *atm, *ONE_DAY, cwd=simulator, key="wrong-key-0123456789",
               timeout=60)
    # the start-up access check (a ping before anything starts) refuses it as configuration
    text = one_line(done, EXIT_CONFIG, "config error: ")
    assert "refused the engine: API key refused" in text and "wrong-key" not in text


def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    clock = WallClock()
    try:
        write_simulator_file(tmp_path / "var", rest_url="http://127.0.0.1:9",
                             ws_url="ws://127.0.0.1:9", clock=clock)
    finally:
        clock.stop()
    done = run("paper", "--attach", "--atm", "24000", *ONE_DAY, "--set", "openalgo.retries=1",
               cwd=tmp_path, timeout=60)
    one_line(done, EXIT_FAILURE, "paper: the broker cannot be reached: ")


def test_a_damaged_engine_database_is_one_line_and_exit_2(simulator: Path) -> None:
    db = simulator / "damaged.db"
    Database(db, owner=DatabaseOwner("paper", date(2025, 9, 3))).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE fills")
    conn.close()
    done = run("paper", "--attach", "--atm", "24000", "--db", str(db), cwd=simulator,
                   timeout=60)
    text = one_line(done, EXIT_CONFIG, f"paper: {db} is a damaged engine database")
    assert "missing table fills" in text


def test_a_state_directory_that_cannot_be_made_is_one_line_and_exit_1(tmp_path: Path) -> None:
    session = tmp_path / "s.db"
    small_session(session, date=date(2025, 9, 3), seed=3, symbols=1, minutes=1)
    (tmp_path / "file").write_text("not a directory")
    done = run("replay", str(session), "--state-dir", "file/var", cwd=tmp_path)
    text = one_line(done, EXIT_FAILURE, "replay: ")
    assert "file/var" in text or "file" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_state_directory_is_one_line_and_exit_1(tmp_path: Path) -> None:
    session = tmp_path / "s.db"
    small_session(session, date=date(2025, 9, 3), seed=3, symbols=1, minutes=1)
    state = tmp_path / "ro"
    state.mkdir()
    state.chmod(0o500)
    try:
        done = run("replay", str(session), "--state-dir", str(state), cwd=tmp_path)
    finally:
        state.chmod(0o700)
    one_line(done, EXIT_FAILURE, "replay: ")


def test_a_full_disk_under_the_log_file_is_reported_once(tmp_path: Path) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk
    script = ("from pathlib import Path\nfrom loguru import logger\n"
              "from engine.runtime.logs import setup_logging\n"
              "setup_logging(level='INFO', log_file=Path('/dev/full'), console=False)\n"
              "for i in range(300):\n    logger.info('line {}', i)\n"
              "logger.remove()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "logging: cannot write /dev/full (No space left on device); lines are lost until it "
        "can (counted)"]


def test_under_the_day_lifecycle_a_refused_key_is_one_line_and_a_wait(simulator: Path) -> None:
    """Without ``--expiry``, ``paper --attach`` runs the day lifecycle (issue 22). OpenAlgo
    refuses a wrong key with the very reply it gives before the morning's broker login, so the
    engine says so in one line and waits for the login instead of exiting; a stop ends it."""
    env = {**os.environ, "OPENALGO_API_KEY": "wrong-key-0123456789"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "paper", "--attach", "--set",
                             "logging.level=WARNING"], cwd=simulator, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the test's timeout bounds a start that never says it
            lines.append(line)
            if "refused" in line:
                break
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    said = [line for line in lines if "refused" in line]
    assert len(said) == 1 and "log in to OpenAlgo" in said[0], lines
    assert alive, "".join(lines) + rest  # waiting for the login, not ended
    assert "wrong-key" not in "".join(lines) + rest and "Traceback" not in rest
    assert proc.returncode == 0, rest
