"""The synthetic day's tunables (section ``[synth]``), apart from the generator.

The configuration loads every section's settings at every start; the generator
(``engine.market.synth``) needs numpy, which a command that never generates a day (a replay of
a recorded session, ``status``, ...) should not have to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time

from engine.settings import setting


def parse_clock_time(text: str, what: str) -> time:
    """``HH:MM`` or ``HH:MM:SS`` as a time; ``ValueError`` naming ``what`` otherwise."""
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what}: expected HH:MM or HH:MM:SS, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class SynthSettings:
    """Tunables of the synthetic day (section ``synth``)."""

    default_date: str = setting("2025-09-03", "date of the bundled day (YYYY-MM-DD, a trading day)")
    default_seed: int = setting(1, "seed of the bundled day", min=0, max=2**63 - 1)
    duration_minutes: int = setting(375, "minutes generated from the open (375 = the whole "
                                          "session)", min=1, max=1440)
    width: int = setting(20, "strikes each side of ATM (20 → 82 options)", min=0, max=100)
    # spot
    spot_open: float = setting(24000.0, "NIFTY at the open", min=1000.0, max=1_000_000.0)
    annual_vol: float = setting(0.12, "annualised volatility of the spot's random walk",
                                min=0.01, max=2.0)
    open_boost: float = setting(1.5, "extra activity at the open, relative to midday (U shape)",
                                min=0.0, max=20.0)
    open_decay_min: float = setting(30.0, "minutes over which the opening burst fades",
                                    min=1.0, max=400.0)
    close_boost: float = setting(0.8, "extra activity into the close, relative to midday",
                                 min=0.0, max=20.0)
    close_decay_min: float = setting(45.0, "minutes over which activity builds into the close",
                                     min=1.0, max=400.0)
    regime_mean_min: float = setting(55.0, "mean length of a trend/range regime, minutes",
                                     min=1.0, max=400.0)
    regime_min_min: float = setting(20.0, "shortest regime, minutes", min=1.0, max=400.0)
    trend_pct_per_hour: float = setting(0.3, "typical drift of a trend regime, % per hour",
                                        min=0.0, max=5.0)
    reversal_prob: float = setting(0.6, "chance a trend runs against the previous trend",
                                   min=0.0, max=1.0)
    range_prob: float = setting(0.25, "chance a regime is a driftless range", min=0.0, max=1.0)
    # options
    atm_iv: float = setting(0.13, "implied volatility at the money", min=0.01, max=2.0)
    iv_skew: float = setting(-0.015, "IV change per unit of moneyness z = ln(K/S)/(atm_iv·√T) "
                                     "(negative: OTM puts richer)", min=-0.2, max=0.2)
    iv_smile: float = setting(0.008, "IV curvature per z²", min=0.0, max=0.2)
    smile_wing_z: float = setting(3.0, "|z| beyond which the smile stays flat", min=0.1,
                                  max=10.0)
    min_iv: float = setting(0.05, "floor of the smile", min=0.001, max=2.0)
    rate: float = setting(0.065, "risk-free rate for Black-Scholes", min=0.0, max=0.5)
    half_spread_pct: float = setting(0.1, "half the bid-ask spread, % of price (at least a tick)",
                                     min=0.0, max=50.0)
    # arrivals and volume
    atm_tps: float = setting(3.0, "ticks per second at the money (day average; the U shape "
                                  "scales it)", min=0.001, max=100.0)
    far_tps: float = setting(0.1, "floor of ticks per second far from the money",
                             min=0.0, max=100.0)
    tps_decay_strikes: float = setting(4.5, "strikes over which the tick rate falls by e",
                                       min=0.1, max=1000.0)
    index_tps: float = setting(1.0, "index ticks per second", min=0.001, max=100.0)
    atm_lots: float = setting(8.0, "mean lots per trade at the money", min=1.0, max=1000.0)
    lots_decay_strikes: float = setting(8.0, "strikes over which lots per trade fall by e",
                                        min=0.1, max=1000.0)
    latency_min_ms: float = setting(2.0, "smallest feed latency (receive − exchange time)",
                                    min=0.0, max=1000.0)
    latency_mean_ms: float = setting(15.0, "mean extra feed latency above the minimum",
                                     min=0.0, max=1000.0)
    latency_max_ms: float = setting(120.0, "largest ordinary feed latency", min=0.0, max=5000.0)
    # dirt
    zero_price_rate: float = setting(0.0005, "fraction of ticks with ltp 0", min=0.0, max=1.0)
    duplicate_rate: float = setting(0.001, "fraction of ticks delivered twice", min=0.0, max=1.0)
    late_rate: float = setting(0.001, "fraction of ticks delivered late (out of order)",
                               min=0.0, max=1.0)
    late_min_s: float = setting(0.5, "smallest delay of a late tick, seconds", min=0.0, max=60.0)
    late_max_s: float = setting(3.0, "largest delay of a late tick, seconds", min=0.0, max=60.0)
    silent_start: str = setting("12:20:00", "start of the feed's silent spell, IST (HH:MM:SS)")
    silent_seconds: float = setting(40.0, "length of the silent spell (0: none)", min=0.0,
                                    max=3600.0)
    volume_reset_at: str = setting("13:45:00", "when one near-ATM symbol's cumulative volume "
                                               "restarts from 0, IST ('' for never)")

    def problems(self) -> list[tuple[str | tuple[str, str], str]]:
        """What is wrong beyond single-value ranges, as (key, message) pairs (the keys whose
        values disagree, the one it is about first)."""
        found: list[tuple[str | tuple[str, str], str]] = []
        try:
            date.fromisoformat(self.default_date)
        except ValueError:
            found.append(("default_date", f"expected YYYY-MM-DD, got {self.default_date!r}"))
        for key in ("silent_start", "volume_reset_at"):
            text = getattr(self, key)
            if key == "volume_reset_at" and not text:
                continue
            try:
                parse_clock_time(text, key)
            except ValueError as exc:
                found.append((key, str(exc)))
        if self.regime_min_min > self.regime_mean_min:
            found.append((("regime_min_min", "regime_mean_min"), "must not exceed regime_mean_min"))
        if self.late_min_s > self.late_max_s:
            found.append((("late_min_s", "late_max_s"), "must not exceed late_max_s"))
        return found
