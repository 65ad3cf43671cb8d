"""Many research days: trading days only, varied regimes, the index carried over, deterministic."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from engine.market.instruments import InstrumentSpec
from engine.market.session_file import SessionReader
from engine.market.synth_days import EXPIRY, REGIMES, generate_days, plan_days


def test_weekends_and_holidays_are_skipped_and_regimes_vary() -> None:
    spec = InstrumentSpec(holidays=frozenset({date(2025, 10, 2)}))
    plans = plan_days(date(2025, 9, 27), 8, seed=3, spec=spec)  # a Saturday
    days = [p.day for p in plans]
    assert days[0] == date(2025, 9, 29) and date(2025, 10, 2) not in days
    assert all(d.weekday() < 5 for d in days)
    regimes = [p.regime for p in plans]
    assert set(REGIMES) <= set(regimes)  # five non-expiry days in a row show all five
    assert all((p.regime == EXPIRY) == (p.day.weekday() == spec.expiry_weekday) for p in plans
               if p.day != date(2025, 10, 1))  # (the 2nd is a holiday: no expiry moves here)
    # the index carries over: a day opens where the previous one closed (a gap day: beyond it)
    assert plans[1].settings.spot_open != plans[0].settings.spot_open


def test_the_same_seed_gives_the_same_files(tmp_path: Path) -> None:
    plans = plan_days(date(2025, 9, 1), 2, seed=5)
    a = generate_days(tmp_path / "a", plans, 5, width=0, minutes=2)
    b = generate_days(tmp_path / "b", plan_days(date(2025, 9, 1), 2, seed=5), 5, width=0,
                      minutes=2)
    for x, y in zip(a, b, strict=True):
        assert x.path.name == y.path.name
        with SessionReader(x.path) as rx, SessionReader(y.path) as ry:
            assert list(rx.ticks()) == list(ry.ticks())
    assert plan_days(date(2025, 9, 1), 5, seed=6) != plan_days(date(2025, 9, 1), 5, seed=5)
