"""Paper mode over real loopback sockets: recording round trip and a mid-session start."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from engine.app.modes import feed_connector, run_paper
from engine.app.replay import ReplayDriver, bars_digest
from engine.app.sections import load_config
from engine.app.tree import Engine, EngineParts, last_close_at
from engine.market.instruments import minute_start, trading_date
from engine.market.session_file import SessionReader
from engine.market.synth import small_session
from engine.messages import Bar
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.clock import ScaledClock
from engine.sim.personalities import NAMES
from engine.sim.server import SimulatorServer
from engine.store.database import Database
from tests.support import TEST_ENV

DAY = date(2025, 9, 3)


def cfg(broker: str = "zerodha"):
    return load_config(None, env=TEST_ENV, overrides={
        "simulator.rest_port": "0", "simulator.ws_port": "0", "store.synchronous": "NORMAL",
        "openalgo.retry_delay_s": "0.05", "matching.broker": broker})


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("paper") / "s.db"
    small_session(path, date=DAY, seed=31, symbols=2, minutes=5)
    return path


def all_bars(db_path: Path, session: Path) -> list[Bar]:
    db = Database(db_path, cfg().store)
    try:
        return [b for i in SessionReader(session).symbols() for b in db.bars(i.symbol, DAY)]
    finally:
        db.close()


@pytest.mark.parametrize("broker", NAMES)
def test_recording_replays_to_the_bars_built_live_in_paper_mode(
        session: Path, tmp_path: Path, broker: str) -> None:
    """Under every broker personality: its frames (ltt in seconds or milliseconds, its field
    names) give the same bars live as the recording gives in replay."""
    result = run_paper(cfg(broker), session, speed=60, db_path=tmp_path / "paper.db",
                       record_to=tmp_path / "rec.db")
    assert not result.stopped_early and result.safe_stop is None
    assert result.ticks_published == SessionReader(session).count()
    recorded = SessionReader(tmp_path / "rec.db")
    # the feed client refuses zero prices, so the recording holds every tick but those
    assert 0 < result.ticks_published - recorded.count() < 50
    live = all_bars(tmp_path / "paper.db", session)
    summary = ReplayDriver(cfg(), tmp_path / "rec.db", db_path=tmp_path / "replayed.db",
                           progress=False).run()
    replayed = all_bars(tmp_path / "replayed.db", session)
    assert len(live) > 40
    assert bars_digest(live) == bars_digest(replayed) == summary.bars_hash


def test_mid_session_start_backfills_history_with_no_duplicate_and_no_hole(
        session: Path, tmp_path: Path) -> None:
    c = cfg()
    reader = SessionReader(session)
    first, last = reader.time_range()  # type: ignore[misc]
    symbols = [(i.symbol, i.exchange) for i in reader.symbols()]
    clock = ScaledClock(start=first - 1.0, speed=60.0)
    key = secrets.token_urlsafe(16)
    sim = SimulatorServer(c.section("simulator"), api_key=key, clock=clock,
                          instrument=c.instrument.spec(), matching=c.section("matching"))
    sim.declare_symbols(symbols)
    sim.start()
    engine: Engine | None = None
    try:
        playback = sim.play(reader.ticks(), clock)
        started_at = first + 150.0  # the engine comes up 2.5 market minutes late
        while clock.time() < started_at:
            time.sleep(0.01)
        broker = OpenAlgoClient(replace(c.openalgo, host=sim.rest_url), api_key=key,
                                clock=clock, account="paper")
        engine = Engine(c, EngineParts(
            mode="paper", clock=clock, symbols=symbols, trading_day=trading_date(first),
            broker=broker, connect=feed_connector(c, api_key=key, clock=clock,
                                                  ws_url=sim.ws_url),
            db_path=tmp_path / "late.db", record_to=tmp_path / "late_rec.db"))
        engine.start()
        assert playback.join(60)
        end = last_close_at(c, clock, last) + 0.5
        while clock.time() < end:
            time.sleep(0.01)
    finally:
        if engine is not None:
            engine.stop()
        sim.stop()
        clock.stop()
    ReplayDriver(c, session, db_path=tmp_path / "clean.db", progress=False).run()
    ReplayDriver(c, tmp_path / "late_rec.db", db_path=tmp_path / "seen.db", progress=False).run()
    late = {(b.symbol, b.start): b for b in all_bars(tmp_path / "late.db", session)}
    clean = {(b.symbol, b.start): b for b in all_bars(tmp_path / "clean.db", session)}
    seen = {(b.symbol, b.start): b for b in all_bars(tmp_path / "seen.db", session)}
    start_minute = minute_start(started_at)
    history = [b for b in late.values() if b.source == "history"]
    assert history, "nothing was backfilled"
    assert all(b.start < start_minute for b in history)
    for sym, _ in symbols:
        starts = sorted(s for (x, s) in late if x == sym)
        assert len(starts) == len(set(starts))  # no duplicate
        expected = sorted(s for (x, s) in clean if x == sym)
        assert starts == expected, f"{sym}: minutes differ (hole or extra)"
        for s in starts:
            a = late[(sym, s)]
            if s < start_minute:  # backfilled: the vendor's bars of the session itself
                b = clean[(sym, s)]
                assert a.source == "history"
                assert (a.open, a.high, a.low, a.close, a.volume) == (
                    b.open, b.high, b.low, b.close, b.volume), (sym, s)
            elif s > start_minute:  # live: exactly what replaying what the engine got gives
                b = seen[(sym, s)]
                assert (a.open, a.high, a.low, a.close, a.volume, a.ticks) == (
                    b.open, b.high, b.low, b.close, b.volume, b.ticks), (sym, s)
            else:  # the minute in progress at start: only the part seen live
                assert a.source == "live" and a.ticks <= clean[(sym, s)].ticks


def test_a_paper_run_ends_with_the_data_quality_table(session: Path, tmp_path: Path) -> None:
    """As a replay does: rejected ticks by reason and symbol after the trade table. In paper the
    feed client refuses the zero prices before they are ticks (row ``(feed)``), and says so at
    DEBUG only: routine dirt is no WARNING on the console."""
    import os
    import subprocess
    import sys

    from tests.engine.app.cli_support import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("NIFTY_ENGINE")} | TEST_ENV
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--state-dir", str(tmp_path), "paper",
         "--session", str(session), "--speed", "600", "--set", "simulator.rest_port=0",
         "--set", "simulator.ws_port=0"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    start = out.index("[DATA QUALITY] rejected ticks by symbol and reason")
    assert start > out.index(next(line for line in out if line.startswith("[TRADES]")))
    rows = {line.split()[0]: line.split()[1:] for line in out[start + 2:]}
    header = out[start + 1].split()
    zero = int(rows["(feed)"][header.index("non_positive_price") - 1])
    reader = SessionReader(session)
    assert zero == sum(1 for t in reader.ticks() if t.ltp <= 0) > 0
    assert rows["total"][header.index("non_positive_price") - 1] == str(zero)
    assert "non_positive_price" not in done.stderr  # no per-drop line on the console
