"""Replay: deterministic, stepped through the real actors, with clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from engine.app.replay import ReplayDriver
from engine.app.sections import load_config
from engine.market.session_file import SessionFileError, SessionWriter
from engine.market.synth import small_session
from engine.store.database import Database

DAY = date(2025, 9, 3)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "s.db"
    small_session(path, date=DAY, seed=21, symbols=3, minutes=4)
    return path


def cfg(**overrides: str):
    return load_config(None, env={}, overrides={"store.synchronous": "NORMAL", **overrides})


def test_two_replays_give_identical_bars_and_counts(session: Path, tmp_path: Path) -> None:
    a = ReplayDriver(cfg(), session, db_path=tmp_path / "a.db", progress=False).run()
    b = ReplayDriver(cfg(), session, db_path=tmp_path / "b.db", progress=False).run()
    assert a.bars > 0 and a.ticks > 1000
    assert (a.bars_hash, a.bars, a.gaps, a.ticks, a.late, a.invalid) == (
        b.bars_hash, b.bars, b.gaps, b.ticks, b.late, b.invalid)
    assert a.symbols == 15  # 3 strikes each side of ATM, CE+PE, plus the index
    assert a.stuck_steps == 0 and a.restarts == 0


def test_the_summary_counts_and_hashes_every_bar_and_gap_of_the_sessions_symbols(
        session: Path, tmp_path: Path) -> None:
    from engine.app.replay import bars_digest
    from engine.market.session_file import SessionReader

    s = ReplayDriver(cfg(), session, db_path=tmp_path / "h.db", progress=False).run()
    with Database(tmp_path / "h.db", cfg().store) as db:
        symbols = [info.symbol for info in SessionReader(session).symbols()]
        bars = [b for symbol in symbols for b in db.bars(symbol, DAY)]
        gaps = sum(len(db.bar_gaps(symbol, DAY)) for symbol in symbols)
    assert (s.bars, s.gaps, s.bars_hash) == (len(bars), gaps, bars_digest(bars))
    assert s.bars > 0


def test_a_replays_database_uses_the_replay_page_cache_and_sync_mode(
        session: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    def look(engine, _ts: float) -> None:
        if not seen:
            with engine.db._engine.connect() as conn:  # a connection of the writer's pool
                seen.append((conn.exec_driver_sql("PRAGMA cache_size").scalar_one(),
                             conn.exec_driver_sql("PRAGMA synchronous").scalar_one()))

    ReplayDriver(cfg(**{"replay.store_cache_kib": "4096"}), session,
                 db_path=tmp_path / "k.db", progress=False, on_step=look).run()
    assert seen == [(-4096, 1)]  # KiB (a negative cache_size), NORMAL
    assert cfg().store.cache_kib == 512  # paper and live: [store] as it is


def test_a_replay_imports_no_http_client_no_generator_and_no_pandas() -> None:
    """Start-up: the configuration names every section's settings, but the HTTP client
    (requests), the synthetic-day generator, pandas, the dashboard's server and page and the
    control socket are imported only where used."""
    unused = {"engine.market.synth", "engine.app.dashboard.server", "engine.app.dashboard.view",
              "engine.app.operator", "engine.app.control"}
    code = ("import sys, engine.app.cli, engine.app.replay, engine.app.tree, engine.app.facts; "
            "print(sorted({m for m in sys.modules if m.split('.')[0] in "
            "('requests', 'urllib3', 'pandas', 'starlette', 'uvicorn')} | "
            f"({unused!r} & set(sys.modules))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_step_size_does_not_change_the_bars(session: Path, tmp_path: Path) -> None:
    fine = ReplayDriver(cfg(**{"replay.step_s": "0.5"}), session, db_path=tmp_path / "f.db",
                        progress=False).run()
    coarse = ReplayDriver(cfg(**{"replay.step_s": "10"}), session, db_path=tmp_path / "c.db",
                          progress=False).run()
    assert fine.bars_hash == coarse.bars_hash
    assert fine.steps > coarse.steps


def test_every_minute_of_every_symbol_is_a_bar_or_a_gap(session: Path, tmp_path: Path) -> None:
    s = ReplayDriver(cfg(), session, db_path=tmp_path / "e.db", progress=False).run()
    db = Database(tmp_path / "e.db", cfg().store)
    try:
        from engine.market.session_file import SessionReader

        for info in SessionReader(session).symbols():
            starts = [b.start for b in db.bars(info.symbol, DAY)]
            starts += [g.start for g in db.bar_gaps(info.symbol, DAY)]
            assert len(starts) == len(set(starts)), "a minute is both a bar and a gap"
            if starts:
                span = (max(starts) - min(starts)) / 60 + 1
                assert len(starts) == span, f"{info.symbol}: a minute is missing"
    finally:
        db.close()
    assert s.bars > 0


def test_speed_paces_the_replay(session: Path, tmp_path: Path) -> None:
    # 4 market minutes at 1200x: at least 0.2 s of real time (pacing is a lower bound)
    start = time.perf_counter()
    ReplayDriver(cfg(), session, db_path=tmp_path / "p.db", speed=1200, progress=False).run()
    assert time.perf_counter() - start >= 0.18


def test_a_session_without_ticks_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    SessionWriter(empty).close()
    with pytest.raises(SessionFileError, match="holds no ticks"):
        ReplayDriver(cfg(), empty, db_path=tmp_path / "x.db", progress=False).run()


def test_not_a_session_file_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_text("not sqlite at all")
    with pytest.raises(SessionFileError, match=r"bogus\.db"):
        ReplayDriver(cfg(), bogus, db_path=tmp_path / "x.db", progress=False)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_cli_replay_prints_the_summary(session: Path, tmp_path: Path) -> None:
    proc = run_cli("replay", str(session), "--set", "logging.level=ERROR", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[REPLAY]" in proc.stdout and "bars hash" in proc.stdout
    assert (tmp_path / "var" / "replay-s.db").exists()


def test_cli_replay_of_a_missing_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = run_cli("replay", "nope.db", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "replay: session file not found: nope.db"


def test_cli_synth_writes_a_replayable_session(tmp_path: Path) -> None:
    proc = run_cli("synth", "--seed", "4", "--date", "2025-09-04", "--out", "d.db",
                   "--set", "synth.duration_minutes=3", "--set", "synth.width=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote d.db" in proc.stdout
    again = run_cli("synth", "--seed", "4", "--date", "2025-09-04", "--out", "d.db", cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr
    s = ReplayDriver(cfg(), tmp_path / "d.db", db_path=tmp_path / "r.db", progress=False).run()
    assert s.bars > 0


def test_every_minute_with_a_valid_tick_yields_a_bar(session: Path, tmp_path: Path) -> None:
    """Independent of any other run: the minutes come straight from the session file."""
    from engine.market.instruments import minute_start
    from engine.market.session_file import SessionReader

    ReplayDriver(cfg(), session, db_path=tmp_path / "m.db", progress=False).run()
    expected: dict[str, set[float]] = {}
    for t in SessionReader(session).ticks():
        if t.ltp > 0:
            expected.setdefault(t.symbol, set()).add(minute_start(t.ts))
    db = Database(tmp_path / "m.db", cfg().store)
    try:
        for symbol, minutes in expected.items():
            got = {b.start for b in db.bars(symbol, DAY)}
            # a tick that arrived after its minute closed is late (counted, not applied): its
            # minute can only be missing if every tick of it was late, which the generator's
            # rare late ticks never make happen here
            assert got == minutes, symbol
    finally:
        db.close()


def test_a_replay_at_full_speed_writes_its_batches_every_five_market_minutes(
        session: Path, tmp_path: Path) -> None:
    """One transaction per ``[replay] store_flush_s`` (300 s) at full speed; a paced replay
    writes at least every ``speed`` x ``[store] flush_interval_s`` (a watched page keeps the
    rhythm it has in live)."""
    seen: list[float] = []
    ReplayDriver(cfg(), session, db_path=tmp_path / "f.db", progress=False,
                 on_step=lambda engine, _ts: seen.append(engine.db.settings.flush_interval_s)
                 ).run()
    assert set(seen) == {300.0}
    base = cfg().store.flush_interval_s

    def interval(speed: float) -> float:
        return ReplayDriver(cfg(), session, db_path=tmp_path / "p.db", speed=speed,
                            progress=False).flush_interval_s()

    assert interval(0.0) == 300.0
    assert interval(60.0) == 60.0 * base < 300.0
    assert interval(1000.0) == 300.0
