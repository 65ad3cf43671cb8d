"""Replay on one thread (the calling-thread dispatcher) against the threaded runtime: the same
bars, orders and trades; and supervision on one thread: crashes restart from persisted state,
and the run stays deterministic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from actors.bar_builder import builder_name
from actors.order_manager import OrderSettings
from engine.app.replay import ReplayDriver, ReplaySummary
from engine.app.sections import load_config
from engine.app.tree import Engine
from engine.config import Config
from engine.market.synth import small_session
from engine.messages import Crash
from engine.runtime.clock import ist_epoch
from engine.store.database import Database
from tests.strategies.test_baseline_replay import BUSY, orders_and_fills

DAY = date(2025, 1, 30)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dispatch") / "synth.sqlite"
    small_session(path, date=DAY, seed=1, symbols=2, minutes=20, start="09:15")
    return path


def config() -> Config:
    # vwap_cross: its own pick of the ATM call assumes the [instrument] expiry weekday, which
    # is not the generated session's; named, its option crosses VWAP twice in these 20 minutes
    overrides = {"store.synchronous": "NORMAL", "vwap_cross.symbol": "NIFTY04FEB2524000CE"}
    return load_config(None, env={}, overrides=overrides).replace(
        orders=OrderSettings(), baseline_v1=BUSY)


def replay(session: Path, db: Path, strategy: str, *, threaded: bool = False,
           on_step: Callable[[Engine, float], None] | None = None) -> ReplaySummary:
    return ReplayDriver(config(), session, db_path=db, progress=False, strategies=(strategy,),
                        threaded=threaded, on_step=on_step).run()


def outcome(db_path: Path, strategy: str) -> tuple[list[Any], list[Any], str]:
    """Every order (with its final state), every fill and the trade table of the day."""
    return orders_and_fills(db_path, strategy, DAY)


@pytest.mark.parametrize("strategy", ["baseline_v1", "vwap_cross"])
def test_one_thread_and_threaded_replays_agree(session: Path, tmp_path: Path,
                                               strategy: str) -> None:
    one = replay(session, tmp_path / "one.db", strategy)
    threaded = replay(session, tmp_path / "threaded.db", strategy, threaded=True)
    assert one.bars > 0 and one.restarts == 0 and threaded.stuck_steps == 0
    assert (one.bars_hash, one.bars, one.gaps, one.ticks, one.late, one.invalid) == (
        threaded.bars_hash, threaded.bars, threaded.gaps, threaded.ticks, threaded.late,
        threaded.invalid)
    orders, fills, table = outcome(tmp_path / "one.db", strategy)
    assert orders and fills  # the comparison is about real trading
    assert (orders, fills, table) == outcome(tmp_path / "threaded.db", strategy)
    assert one.trade_reports == threaded.trade_reports


# -- supervision on one thread ---------------------------------------------------------------

SYMBOL = "NIFTY04FEB2524000CE"
CRASHES = {  # engine time of the step after which the crash is told → the actor told
    ist_epoch(2025, 1, 30, 9, 19, 30): builder_name(SYMBOL),
    ist_epoch(2025, 1, 30, 9, 23, 10): "swings",
    ist_epoch(2025, 1, 30, 9, 27, 40): "strategy.baseline_v1",
}


def crash_injector() -> Callable[[Engine, float], None]:
    pending = dict(CRASHES)

    def on_step(engine: Engine, step_start: float) -> None:
        for when in [w for w in pending if step_start >= w]:
            engine.tell(pending.pop(when), Crash("test: injected"))

    return on_step


def day_of(db_path: Path, symbols: list[str]) -> dict[str, Any]:
    with Database(db_path) as db:
        return {sym: (db.bars(sym, DAY), [g.start for g in db.bar_gaps(sym, DAY)],
                      db.swings(sym, DAY)) for sym in symbols}


def test_crashes_in_a_one_thread_replay_restart_from_persisted_state(
        session: Path, tmp_path: Path) -> None:
    clean = replay(session, tmp_path / "clean.db", "baseline_v1")
    crashed = replay(session, tmp_path / "crashed.db", "baseline_v1", on_step=crash_injector())
    again = replay(session, tmp_path / "again.db", "baseline_v1", on_step=crash_injector())
    assert clean.restarts == 0 and crashed.restarts == 3

    with Database(tmp_path / "crashed.db") as db:
        restarted = sorted(r.name for r in db.restarts())
    assert restarted == sorted(CRASHES.values())

    from engine.market.session_file import SessionReader

    symbols = [info.symbol for info in SessionReader(session).symbols()]
    before, after = day_of(tmp_path / "clean.db", symbols), day_of(tmp_path / "crashed.db",
                                                                   symbols)
    for sym in symbols:
        if sym == SYMBOL:
            continue
        # the swing detector restored every tracker from its snapshot and got the messages
        # held while it restarted: the same bars and swings as without any crash
        assert after[sym] == before[sym], sym
    # the bar builder resumed from its snapshot: the minute it was building became a gap,
    # every other minute has the prices, volume and ticks of the run without a crash (the
    # day's VWAP goes on without the lost minute, as the builder's rules say)
    def prices(bars: list[Any]) -> list[tuple[Any, ...]]:
        return [(b.start, b.open, b.high, b.low, b.close, b.volume, b.ticks) for b in bars]

    bars, gaps, _ = after[SYMBOL]
    clean_bars, clean_gaps, _ = before[SYMBOL]
    lost = [b for b in prices(clean_bars) if b not in prices(bars)]
    assert len(lost) == 1 and lost[0][0] in gaps and lost[0][0] not in clean_gaps
    assert set(prices(bars)) <= set(prices(clean_bars))
    # the strategy host resumed its sequence: no client id was used twice
    orders, fills, _ = outcome(tmp_path / "crashed.db", "baseline_v1")
    ids = [o[0] for o in orders]
    assert len(ids) == len(set(ids)) and fills
    # and the whole run, crashes included, is the same on every replay
    assert (crashed.bars_hash, outcome(tmp_path / "crashed.db", "baseline_v1")) == (
        again.bars_hash, outcome(tmp_path / "again.db", "baseline_v1"))
