"""The long-running commands as a user runs them: ``run.py simulator`` and ``run.py record``."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import requests

from engine.app.sections import load_config
from engine.market.session_file import SessionReader
from engine.market.synth import small_session
from engine.messages import Tick
from engine.runtime.clock import WallClock
from engine.sim.server import SimulatorServer

ROOT = Path(__file__).resolve().parents[3]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NIFTY_ENGINE") and k != "OPENALGO_API_KEY"}
    env.update(extra)
    return env


def test_simulator_command_serves_any_client_and_stops_on_sigterm(tmp_path: Path) -> None:
    session = tmp_path / "s.db"
    small_session(session, date=date(2025, 9, 3), seed=3, symbols=1, minutes=2)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "simulator", "--session", str(session),
         "--rest-port", "0", "--ws-port", "0", "--speed", "1"],
        cwd=tmp_path, env=clean_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        rest_url = None
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while rest_url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            m = re.search(r"REST (http://127\.0\.0\.1:\d+)", line)
            rest_url = m.group(1) if m else None
        assert rest_url, "".join(lines)
        key_file = tmp_path / "var" / "simulator.key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        key = key_file.read_text().strip()
        ok = requests.post(f"{rest_url}/api/v1/ping", json={"apikey": key}, timeout=5)
        assert ok.status_code == 200 and ok.json()["status"] == "success"
        bad = requests.post(f"{rest_url}/api/v1/ping", json={"apikey": "wrong"}, timeout=5)
        assert bad.status_code == 403
        assert key not in "".join(lines)  # the key is in the file, never printed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_record_command_killed_mid_run_leaves_a_sound_file(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"simulator.rest_port": "0",
                                               "simulator.ws_port": "0"})
    key = "record-test-key-42"
    clock = WallClock()
    sim = SimulatorServer(cfg.section("simulator"), api_key=key, clock=clock)
    syms = [("NIFTY09SEP2524000CE", "NFO"), ("NIFTY09SEP2524000PE", "NFO")]
    sim.declare_symbols(syms)
    sim.start()
    stop = threading.Event()

    def pump() -> None:
        price = 100.0
        volume = 1000
        while not stop.is_set():
            for sym, exch in syms:
                now = clock.time()
                price += 0.05
                volume += 65
                sim.publish(Tick(sym, exch, round(price, 2), now, now, volume))
            time.sleep(0.002)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    out = tmp_path / "rec.db"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "record", "--out", str(out),
         "--symbols", ",".join(f"{e}:{s}" for s, e in syms),
         "--set", f"feed.ws_url={sim.ws_url}", "--set", "recorder.batch_size=50",
         "--set", "logging.console=false"],
        cwd=tmp_path, env=clean_env(OPENALGO_API_KEY=key),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        rows = 0
        while time.monotonic() < deadline and rows < 300:
            time.sleep(0.2)
            if out.exists():
                try:
                    with sqlite3.connect(f"file:{out}?mode=ro", uri=True, timeout=1) as conn:
                        rows = conn.execute("select count(*) from ticks").fetchone()[0]
                except sqlite3.Error:
                    rows = 0
        assert rows >= 300, "the recorder wrote nothing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        sim.stop()
        clock.stop()
    with sqlite3.connect(out) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    recorded = list(SessionReader(out).ticks())
    assert len(recorded) >= rows
    assert {t.symbol for t in recorded} == {s for s, _ in syms}
    assert all(t.ltp > 0 and t.recv_ts > 0 for t in recorded)
    assert key not in (tmp_path / "var" / "engine.log").read_text()
