"""Running ``run.py`` as a user does, for the command-line tests: a real subprocess, quiet logs,
and the check that a failure is one line on stderr with its exit code and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_cli(*args: str, cwd: Path, api_key: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``run.py ARGS`` in ``cwd`` (logging at ERROR; ``api_key`` as ``OPENALGO_API_KEY``)."""
    env = dict(os.environ)
    if api_key is not None:
        env["OPENALGO_API_KEY"] = api_key
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "--set",
                           "logging.level=ERROR"], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def one_line(done: subprocess.CompletedProcess[str], code: int, start: str = "") -> str:
    """The one stderr line of a run that exited with ``code`` (and no traceback)."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(start), done.stderr
    return done.stderr


def small_day(folder: Path, *, seed: int, minutes: int) -> Path:
    """``folder/s.db``: a small session of 2025-09-03 (one strike each side of ATM)."""
    from datetime import date

    from engine.market.synth import small_session

    path = folder / "s.db"
    small_session(path, date=date(2025, 9, 3), seed=seed, symbols=1, minutes=minutes)
    return path
