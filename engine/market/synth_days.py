"""Many synthetic trading days in a row for research: one market regime per day.

Owns ``plan_days`` (which trading days, which regime each, and the ``SynthSettings`` that make
it) and ``generate_days`` (writing them as session files). Days are consecutive trading days of
the instrument's calendar (weekends and listed holidays skipped, engine/market/calendar.py); the
index carries over from one day's close to the next day's open (plus the gap of a ``gap`` day).
Deterministic for (start, days, seed, settings): each regime is a deterministic change of the
base settings and every random draw comes from streams seeded by the seed and the date.

Regimes: ``trend`` (long one-way drifts), ``range`` (mostly driftless), ``gap`` (opens 0.8–1.5 %
away from the previous close, with a busy open), ``high_vol`` and ``low_vol`` (spot and implied
volatility up or down), and ``expiry`` (the weekly expiry day: a busier close and decaying
premiums). Non-expiry days cycle through a seed-shuffled order of the first five, so any five of
them in a row show every one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from engine.market.instruments import InstrumentSpec, is_trading_day, next_expiry
from engine.market.synth import SessionSummary, SyntheticDay, SynthSettings, generate_session
from engine.runtime.clock import IST

REGIMES = ("trend", "range", "gap", "high_vol", "low_vol")
EXPIRY = "expiry"
_STREAM_DAYS = 11  # purpose of the regime-order and gap streams (distinct from synth's)


@dataclass(frozen=True, slots=True)
class DayPlan:
    """One research day: its date, regime, and the settings that generate it."""

    day: date
    regime: str
    settings: SynthSettings

    def file_name(self, seed: int) -> str:
        return f"synth-{self.day.isoformat()}-{self.regime}-seed{seed}.db"


def trading_days(start: date, count: int, spec: InstrumentSpec) -> list[date]:
    """The first ``count`` trading days on or after ``start``."""
    days: list[date] = []
    day = start
    while len(days) < count:
        if is_trading_day(day, spec):
            days.append(day)
        day += timedelta(days=1)
    return days


def _regime_settings(base: SynthSettings, regime: str, gap: float) -> SynthSettings:
    change: dict[str, float] = {}
    if regime == "trend":
        change = {"range_prob": 0.0, "reversal_prob": 0.15,
                  "trend_pct_per_hour": 2.0 * base.trend_pct_per_hour}
    elif regime == "range":
        change = {"range_prob": 0.9, "trend_pct_per_hour": 0.3 * base.trend_pct_per_hour}
    elif regime == "gap":
        change = {"spot_open": base.spot_open * (1.0 + gap),
                  "open_boost": 2.0 * base.open_boost}
    elif regime == "high_vol":
        change = {"annual_vol": 1.8 * base.annual_vol, "atm_iv": 1.5 * base.atm_iv}
    elif regime == "low_vol":
        change = {"annual_vol": 0.6 * base.annual_vol, "atm_iv": 0.7 * base.atm_iv}
    elif regime == EXPIRY:
        change = {"close_boost": 2.0 * base.close_boost}
    return dataclasses.replace(base, **change)


def plan_days(start: date, count: int, seed: int, settings: SynthSettings | None = None,
              spec: InstrumentSpec | None = None) -> list[DayPlan]:
    """``count`` trading days from ``start`` with their regimes (see the module docstring)."""
    if count < 1:
        raise ValueError(f"days must be at least 1, got {count}")
    base = settings or SynthSettings()
    spec = spec or InstrumentSpec()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [seed, start.toordinal(), _STREAM_DAYS])))
    order = [REGIMES[i] for i in rng.permutation(len(REGIMES))]
    plans: list[DayPlan] = []
    spot = base.spot_open
    cycle = 0
    for day in trading_days(start, count, spec):
        if next_expiry(day, spec) == day:
            regime = EXPIRY
        else:
            regime = order[cycle % len(order)]
            cycle += 1
        gap = float(rng.choice((-1.0, 1.0)) * rng.uniform(0.008, 0.015))
        today = _regime_settings(dataclasses.replace(base, spot_open=round(spot, 2)), regime,
                                 gap)
        plans.append(DayPlan(day, regime, today))
        synthetic = SyntheticDay(day, seed, today, spec, width=0, minutes=1)
        close = datetime.combine(day, spec.session_close, IST).timestamp()
        spot = float(synthetic.spot_at(close))
    return plans


def generate_days(out_dir: Path, plans: list[DayPlan], seed: int, *,
                  spec: InstrumentSpec | None = None, width: int | None = None,
                  minutes: int | None = None, overwrite: bool = False,
                  on_day: Callable[[DayPlan, SessionSummary], None] | None = None,
                  ) -> list[SessionSummary]:
    """Write each planned day into ``out_dir`` (``DayPlan.file_name``); ``width`` and
    ``minutes`` narrow the days as in ``generate_session``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[SessionSummary] = []
    for plan in plans:
        summary = generate_session(out_dir / plan.file_name(seed), date=plan.day, seed=seed,
                                   settings=plan.settings, spec=spec, width=width,
                                   minutes=minutes, overwrite=overwrite)
        written.append(summary)
        if on_day is not None:
            on_day(plan, summary)
    return written
