"""Risk limits as pure functions: what the risk manager checks, in order, on one strategy's P&L.

Owns the rules of execution-and-risk.md ("Risk manager") that need no actor: max loss, max
profit, the AFL-style trailing stop (its ratchet state), the daily R limit (in the unit of
``r_unit``: the position monitor's sum of each position's own R, or P&L over a fixed R) and
the end-of-day time, and their settings (section ``[risk]``). The ``RiskManager`` actor feeds
them and acts.

The trailing stop works on the P&L of the current *trade cycle* (from the moment the strategy
went from flat to holding something), so a profit realized in an earlier cycle does not count as
a peak of this one: initial stop = −trail (rupees) or −trail_pct % of the premium collected;
peak = max(peak, cycle P&L), starting at 0; stop level = initial + peak, and it only moves up;
cycle P&L ≤ stop level fires. The state resets when the strategy is flat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from engine.market.instruments import parse_hhmm
from engine.messages import StrategyPnl
from engine.settings import setting

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RiskSettings:
    """Section ``[risk]``: limits every strategy runs under, and how exits are carried out."""

    max_loss: float = setting(0.0, "exit all when the day's P&L of a strategy is at or below "
                              "-this (rupees); 0: off", min=0.0)
    max_profit: float = setting(0.0, "exit all when the day's P&L of a strategy reaches this "
                                "(rupees); 0: off", min=0.0)
    trail: float = setting(0.0, "trailing stop distance in rupees below the cycle's peak P&L; "
                           "0: off", min=0.0)
    trail_pct: float = setting(0.0, "trailing stop distance as % of the premium collected "
                               "(used when trail is 0); 0: off", min=0.0, max=100.0)
    daily_r_target: float = setting(5.0, "exit all and stop for the day at this cumulative R "
                                    "(realized + unrealized) / R; 0: off", min=0.0)
    daily_r_stop: float = setting(5.0, "exit all and stop for the day at -this cumulative R; "
                                  "0: off", min=0.0)
    r_unit: str = setting("position", "the unit of R (trade table, summary, report, daily R): "
                          "\"position\": each trade's P&L over its own sized risk (quantity x "
                          "stop distance at entry), the day's R their sum; \"fixed\": P&L "
                          "over one fixed R (the strategy's, else r_rupees)",
                          choices=("position", "fixed"))
    r_rupees: float = setting(6500.0, "rupees of one R for strategies that do not say "
                              "(baseline_v1 uses its risk_per_trade)", min=1.0)
    eod_exit: str = setting("15:15", "end-of-day exit of every strategy, IST (HH:MM)")
    check_interval_s: float = setting(5.0, "backstop evaluation timer, seconds (besides every "
                                      "price update)", min=0.1, max=60.0)
    stale_alert_s: float = setting(60.0, "alert at most this often that prices are unreliable "
                                   "for a strategy, seconds", min=1.0)
    exit_check_s: float = setting(1.0, "exit coordinator: broker verification interval while "
                                  "an exit runs, seconds", min=0.05, max=60.0)
    exit_retries: int = setting(3, "exit coordinator: attempts per position before a critical "
                                "alert asks the operator", min=1, max=10)
    exit_settle_s: float = setting(5.0, "exit coordinator: how long a completed exit may take to "
                                   "show in the broker's positions before it is sent again "
                                   "(verified first), seconds", min=0.1, max=120.0)
    broker_timeout_s: float = setting(15.0, "wait for the order manager's answers, seconds",
                                      min=0.5, max=120.0)

    def problems(self) -> list[tuple[str, str]]:
        """Checks beyond one field's type (the session hours: ``engine.app.sections``)."""
        try:
            parse_hhmm(self.eod_exit)
        except ValueError:
            return [("eod_exit", f"{self.eod_exit!r} is not a time HH:MM")]
        return []


class Trigger(NamedTuple):
    """A limit that fired: its kind (as in ``RiskEvent.kind``), threshold and the value."""

    kind: str
    threshold: float
    value: float


@dataclass(slots=True)
class Trail:
    """The trailing stop's ratchet for one strategy's current trade cycle."""

    base: float = 0.0  # the day's realized P&L when the cycle started
    peak: float = 0.0  # highest cycle P&L seen
    stop_level: float | None = None  # initial + peak; only moves up
    active: bool = False  # a cycle is running (the strategy holds something)

    def update(self, pnl: StrategyPnl, settings: RiskSettings) -> float | None:
        """Advance the ratchet with a (fresh) P&L; returns the cycle P&L, or None when flat
        (the cycle ended: the state resets)."""
        if pnl.open_positions == 0:
            self.active, self.peak, self.stop_level = False, 0.0, None
            return None
        if not self.active:
            # the cycle's P&L counts from its entry: what was realized before it is the base
            # (not the first P&L seen, which already holds the move up to the first price)
            self.active, self.base, self.peak, self.stop_level = True, pnl.realized, 0.0, None
        cycle = pnl.pnl - self.base
        self.peak = max(self.peak, cycle)
        initial = initial_trail(pnl, settings)
        if initial is not None:
            level = initial + self.peak
            self.stop_level = level if self.stop_level is None else max(self.stop_level, level)
        return cycle


def initial_trail(pnl: StrategyPnl, settings: RiskSettings) -> float | None:
    """−trail, or −trail_pct % of the premium collected; None when the trailing stop is off."""
    if settings.trail > 0:
        return -settings.trail
    if settings.trail_pct > 0 and pnl.premium > 0:
        return -settings.trail_pct / 100.0 * pnl.premium
    return None


def day_r(pnl: StrategyPnl, r_unit: float) -> float:
    """The day's R: the position monitor's, in the configured unit (``r_unit = "position"``:
    the sum of each position's P&L over its own risk); P&L over the fixed ``r_unit`` rupees
    when it gave none."""
    return pnl.r if pnl.r is not None else pnl.pnl / r_unit


def check_limits(pnl: StrategyPnl, settings: RiskSettings, r_unit: float,
                 trail: Trail) -> Trigger | None:
    """The first limit ``pnl`` breaches, in the spec's order: max loss, max profit, trailing
    stop, daily R. Only call it with fresh prices; it advances ``trail``."""
    value = pnl.pnl
    cycle = trail.update(pnl, settings)
    if settings.max_loss > 0 and value <= -settings.max_loss + _EPS:
        return Trigger("max_loss", -settings.max_loss, value)
    if settings.max_profit > 0 and value >= settings.max_profit - _EPS:
        return Trigger("max_profit", settings.max_profit, value)
    if cycle is not None and trail.stop_level is not None and cycle <= trail.stop_level + _EPS:
        return Trigger("trailing_stop", trail.stop_level, cycle)
    r = day_r(pnl, r_unit)
    if settings.daily_r_target > 0 and r >= settings.daily_r_target - _EPS:
        return Trigger("daily_r", settings.daily_r_target, r)
    if settings.daily_r_stop > 0 and r <= -settings.daily_r_stop + _EPS:
        return Trigger("daily_r", -settings.daily_r_stop, r)
    return None
