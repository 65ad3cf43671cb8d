"""The console of a replay, counted from the real output of ``run.py replay`` in a subprocess:
a normal day fits on one screen before the trade table, with no WARNING, in market time; ``-q``
keeps only warnings; and in a real terminal (a pty rendered by the ``pyte`` emulator) the
progress bar stays whole at the bottom while log lines scroll above it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from datetime import date
from pathlib import Path

import pyte
import pytest

from engine.market.synth import SynthSettings, generate_session
from tests.engine.app.cli_support import ROOT

DAY = date(2025, 9, 3)
STAMP = re.compile(r"^2025-09-03 (\d\d):(\d\d):\d\d\.\d{3} \| (\w+)\s*\|")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIFTY_ENGINE")}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--state-dir", str(cwd),
                           *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def afternoon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated day, one strike each side of ATM, no silent spell: trades,
    a risk exit and the scheduled 15:15 exit, zero-price ticks (routine dirt)."""
    path = tmp_path_factory.mktemp("console") / "afternoon.db"
    generate_session(path, date=DAY, seed=1, width=1,
                     settings=SynthSettings(silent_seconds=0.0))
    return path


def test_a_normal_day_fits_on_one_screen_in_market_time(afternoon: Path,
                                                        tmp_path: Path) -> None:
    done = _run("replay", str(afternoon), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    before_trades = done.stderr.splitlines() + out[:out.index(next(
        line for line in out if line.startswith("[TRADES]")))]
    assert len(before_trades) <= 60, "\n".join(before_trades)
    levels = [m.group(3) for m in map(STAMP.match, done.stderr.splitlines()) if m]
    assert "WARNING" not in levels and "CRITICAL" not in levels, done.stderr
    # market time (IST) on the engine's lines: the session's day and hours, not the wall clock
    engine_lines = [m for m in map(STAMP.match, done.stderr.splitlines()) if m]
    assert len(engine_lines) >= 5
    assert all(9 <= int(m.group(1)) <= 15 for m in engine_lines)
    text = done.stderr
    assert "the scheduled end-of-day exit" in text  # at INFO
    assert "cover_failed" not in text and "report of" not in text
    assert "dropped invalid tick" not in text  # detail (-v); counted in the table
    table = out[out.index("[DATA QUALITY] rejected ticks by symbol and reason"):]
    assert table[1].split() == ["symbol", "late", "price_not_positive"] or \
        "price_not_positive" in table[1]
    assert table[-1].startswith("total")


def test_quiet_keeps_warnings_only_and_verbose_shows_detail(tmp_path: Path) -> None:
    from engine.market.synth import small_session

    session = tmp_path / "s.db"
    small_session(session, date=DAY, seed=1, symbols=1, minutes=3)
    quiet = _run("-q", "replay", str(session), "--no-strategy", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if "| INFO" in line], quiet.stderr
    assert "[REPLAY]" in quiet.stdout
    verbose = _run("replay", str(session), "--no-strategy", "-v", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "| DEBUG" in verbose.stderr


def _pty_run(args: list[str], cwd: Path, rows: int, cols: int) -> str:
    """The whole output of ``run.py ARGS`` on a pty of ``rows`` x ``cols``."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIFTY_ENGINE")}
    env.update(TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--state-dir", str(cwd),
                             *args], stdin=follower, stdout=follower, stderr=follower,
                            cwd=cwd, env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower side closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
    finally:
        proc.wait(timeout=120)
        os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_stays_whole_below_scrolling_log_lines(tmp_path: Path) -> None:
    from engine.market.synth import small_session

    session = tmp_path / "s.db"
    small_session(session, date=DAY, seed=1, symbols=1, minutes=20)
    rows, cols = 400, 160  # tall: nothing scrolls off, every line printed stays on screen
    output = _pty_run(["replay", str(session), "--no-strategy", "-v", "--speed", "600"],
                      tmp_path, rows, cols)
    screen = pyte.Screen(cols, rows)
    pyte.Stream(screen).feed(output.replace("\n", "\r\n") if "\r\n" not in output else output)
    lines = [line.rstrip() for line in screen.display]
    logs = [i for i, line in enumerate(lines) if STAMP.match(line)]
    bars = [i for i, line in enumerate(lines) if "━" in line]
    assert len(logs) >= 20, "\n".join(lines[:60])  # -v: many lines scrolled while the bar ran
    # exactly one bar, whole (label, market time, count), below every log line
    assert len(bars) == 1, "\n".join(line for line in lines if line)
    bar = lines[bars[0]]
    assert bar.startswith("replay ") and "/" in bar, bar
    assert bars[0] > logs[-1]
    # no log line carries a piece of the bar, no bar text was written over a log line
    assert not any("━" in lines[i] or "ticks/s" in lines[i] for i in logs)
