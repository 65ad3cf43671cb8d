"""The BarBuilder actor: clock-driven closes, publishing, and surviving a crash mid-minute."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from actors.bar_builder import BarBuilder, builder_name
from engine.app.replay import ReplayDriver
from engine.app.sections import load_config
from engine.market.bars import BarSettings
from engine.market.instruments import InstrumentSpec, session_bounds
from engine.market.synth import small_session
from engine.messages import Bar, BarUpdate, Crash, FlushToken, Tick, TickBatch
from engine.runtime.barrier import StepBarrier
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.store.database import Database
from tests.support import Collector

DAY = date(2025, 9, 3)
SYM = "NIFTY09SEP2524000CE"


def at(h: int, m: int, s: float = 0.0) -> float:
    return ist_epoch(2025, 9, 3, h, m, s)


@pytest.fixture
def wired():
    clock = VirtualClock(start=at(9, 14, 59))
    reg = Registry(clock)
    got: list[Any] = []
    refs = []
    for name, cls, kw in (("sink", Collector, {"got": got, "kinds": (Bar, BarUpdate)}),
                          (builder_name(SYM), BarBuilder, {
                              "symbol": SYM, "settings": BarSettings(),
                              "session": session_bounds(DAY, InstrumentSpec()),
                              "downstream": ("sink",), "store": None})):
        ref = cls.start(name=name, registry=reg, clock=clock, **kw)
        reg.declare(name)
        reg.register(name, ref)
        refs.append(ref)
    reg.track_external_sends(True)
    yield clock, reg, got
    for ref in refs:
        ref.stop()


def settle(reg: Registry) -> None:
    targets = reg.take_external_sends()
    barrier = StepBarrier()
    barrier.add(len(targets))
    for name in targets:
        reg.tell(name, FlushToken(0, barrier))
    reg.take_external_sends()
    assert barrier.wait(5.0)


def test_clock_closes_the_bar_without_a_later_tick(wired) -> None:
    clock, reg, got = wired
    ticks = (Tick(SYM, "NFO", 100.0, at(9, 15, 1), at(9, 15, 1), 1000),
             Tick(SYM, "NFO", 103.0, at(9, 15, 20), at(9, 15, 20), 1500),
             Tick(SYM, "NFO", 101.0, at(9, 15, 40), at(9, 15, 40), 1800))
    clock.advance_to(at(9, 15, 1))
    reg.tell(builder_name(SYM), TickBatch(ticks))
    settle(reg)
    assert [type(e) for e in got] and all(isinstance(e, BarUpdate) for e in got)
    clock.advance_to(at(9, 16, 1.9))  # before minute end + grace: still open
    settle(reg)
    assert not [e for e in got if isinstance(e, Bar)]
    clock.advance_to(at(9, 16, 2.0))  # the close timer fires at minute end + 2 s grace
    settle(reg)
    (bar,) = [e for e in got if isinstance(e, Bar)]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.ticks) == (
        100.0, 103.0, 100.0, 101.0, 800, 3)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bb") / "s.db"
    small_session(path, date=DAY, seed=11, symbols=20, minutes=6)
    return path


def test_a_builder_crashed_mid_minute_restarts_while_the_others_keep_going(
        session: Path, tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"store.synchronous": "NORMAL"})
    clean = ReplayDriver(cfg, session, db_path=tmp_path / "clean.db", progress=False).run()
    assert clean.restarts == 0 and clean.symbols == 83

    crash_at = at(9, 17, 30)
    crashed: list[float] = []

    def crash_once(engine: Any, step: float) -> None:
        if step >= crash_at and not crashed:
            crashed.append(step)
            engine.tell(builder_name(SYM), Crash("test: mid-minute"))

    hurt = ReplayDriver(cfg, session, db_path=tmp_path / "hurt.db", progress=False,
                        on_step=crash_once).run()
    assert crashed and hurt.restarts == 1
    assert hurt.stuck_steps == 0

    def load(path: Path) -> dict[str, list[Bar]]:
        db = Database(path, cfg.store)
        try:
            from engine.market.session_file import SessionReader

            return {i.symbol: db.bars(i.symbol, DAY) for i in SessionReader(session).symbols()}
        finally:
            db.close()

    a, b = load(tmp_path / "clean.db"), load(tmp_path / "hurt.db")
    # the other 82 builders produced exactly the same bars
    others = [s for s in a if s != SYM]
    assert len(others) == 82
    assert all(a[s] == b[s] for s in others)
    # the crashed one: every minute before the crash minute is untouched, the crash minute is
    # the documented casualty, and every later minute has the same prices, ticks and volume as
    # the clean run
    crash_minute = at(9, 17)
    before = [x for x in a[SYM] if x.start < crash_minute]
    assert [x for x in b[SYM] if x.start < crash_minute] == before
    later_a = [(x.start, x.open, x.high, x.low, x.close, x.volume, x.ticks)
               for x in a[SYM] if x.start > crash_minute]
    later_b = [(x.start, x.open, x.high, x.low, x.close, x.volume, x.ticks)
               for x in b[SYM] if x.start > crash_minute]
    assert later_b == later_a and later_a
    partial = [x for x in b[SYM] if x.start == crash_minute]
    full = [x for x in a[SYM] if x.start == crash_minute]
    # the minute in progress at the crash is never invented: no bar, one recorded gap
    assert full and not partial
    db = Database(tmp_path / "hurt.db", cfg.store)
    try:
        assert [g.start for g in db.bar_gaps(SYM, DAY)] == [crash_minute]
        (rec,) = db.restarts(builder_name(SYM))
        assert "test: mid-minute" in rec.reason
    finally:
        db.close()
