"""The pure risk rules of engine.trading.risk: max loss, max profit, the AFL-style trailing stop
(its
ratchet over one trade cycle, reset when flat, in rupees or % of the premium), the daily R limit
and the order in which they are checked; each just inside its threshold (no fire) and at it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.messages import StrategyPnl
from engine.trading.risk import RiskSettings, Trail, Trigger, check_limits, initial_trail

OFF = RiskSettings(daily_r_target=0.0, daily_r_stop=0.0)
R = 1000.0


def pnl(value: float, *, realized: float = 0.0, open_positions: int = 1,
        premium: float = 0.0) -> StrategyPnl:
    """A fresh P&L of ``value`` rupees for the day (``realized`` of it already booked)."""
    return StrategyPnl(strategy="s", account="a", realized=realized,
                       unrealized=value - realized, open_positions=open_positions, fresh=True,
                       ts=0.0, premium=premium)


def check(value: float, settings: RiskSettings, trail: Trail | None = None, *,
          r_unit: float = R, **kw: float) -> Trigger | None:
    return check_limits(pnl(value, **kw), settings, r_unit, trail or Trail())


# ---------------------------------------------------------------------------------------------
# Max loss, max profit
# ---------------------------------------------------------------------------------------------


def test_max_loss_fires_at_the_threshold_not_just_inside() -> None:
    settings = replace(OFF, max_loss=5000.0)
    assert check(-4999.95, settings) is None
    assert check(-5000.0, settings) == Trigger("max_loss", -5000.0, -5000.0)
    assert check(-7000.0, settings) == Trigger("max_loss", -5000.0, -7000.0)


def test_max_loss_counts_the_realized_part_of_the_day_even_when_flat() -> None:
    settings = replace(OFF, max_loss=5000.0)
    assert check(-5000.0, settings, realized=-5000.0, open_positions=0) == Trigger(
        "max_loss", -5000.0, -5000.0)
    assert check(-4000.0, settings, realized=-3000.0) is None


def test_max_profit_fires_at_the_threshold_not_just_inside() -> None:
    settings = replace(OFF, max_profit=8000.0)
    assert check(7999.95, settings) is None
    assert check(8000.0, settings) == Trigger("max_profit", 8000.0, 8000.0)


def test_zero_limits_are_off() -> None:
    assert check(-1e9, OFF) is None
    assert check(1e9, OFF) is None


# ---------------------------------------------------------------------------------------------
# Trailing stop
# ---------------------------------------------------------------------------------------------


def test_the_initial_trailing_stop_is_minus_trail() -> None:
    settings = replace(OFF, trail=1000.0)
    assert check(-999.95, settings) is None
    assert check(-1000.0, settings) == Trigger("trailing_stop", -1000.0, -1000.0)


def test_the_cycle_counts_from_its_entry_not_from_the_first_price_seen() -> None:
    """The first fresh P&L of a cycle may come after the price moved (the fill's own P&L is
    stale until a tick arrives): that move is part of the cycle."""
    settings = replace(OFF, trail=1000.0)
    trail = Trail()
    assert check(-1200.0, settings, trail) == Trigger("trailing_stop", -1000.0, -1200.0)
    assert trail.base == 0.0
    trail = Trail()  # with 500 realized in an earlier cycle
    assert check(-400.0, settings, trail, realized=500.0) is None  # cycle -900
    assert check(-500.0, settings, trail, realized=500.0) == Trigger(
        "trailing_stop", -1000.0, -1000.0)


def test_the_ratchet_moves_the_stop_up_with_the_peak_and_never_down() -> None:
    settings = replace(OFF, trail=1000.0)
    trail = Trail()
    assert check(0.0, settings, trail) is None
    assert (trail.peak, trail.stop_level) == (0.0, -1000.0)
    assert check(1500.0, settings, trail) is None  # a new peak: stop 500
    assert (trail.peak, trail.stop_level) == (1500.0, 500.0)
    assert check(800.0, settings, trail) is None  # a pullback moves nothing
    assert (trail.peak, trail.stop_level) == (1500.0, 500.0)
    assert check(2500.0, settings, trail) is None
    assert trail.stop_level == 1500.0
    assert check(1500.05, settings, trail) is None  # just above the stop
    assert check(1500.0, settings, trail) == Trigger("trailing_stop", 1500.0, 1500.0)
    assert (trail.peak, trail.stop_level) == (2500.0, 1500.0)


def test_the_trail_runs_on_the_cycle_pnl_not_the_days() -> None:
    settings = replace(OFF, trail=1000.0)
    trail = Trail()
    # an earlier cycle made 3000 (realized); a new one starts with the day at 3000
    assert check(3000.0, settings, trail, realized=3000.0, open_positions=0) is None
    assert check(3000.0, settings, trail, realized=3000.0) is None
    assert (trail.base, trail.peak, trail.stop_level) == (3000.0, 0.0, -1000.0)
    # the day is still +2000.05, but the cycle is -999.95 / -1000
    assert check(2000.05, settings, trail, realized=3000.0) is None
    assert check(2000.0, settings, trail, realized=3000.0) == Trigger(
        "trailing_stop", -1000.0, -1000.0)


def test_the_trail_resets_when_the_strategy_is_flat() -> None:
    settings = replace(OFF, trail=1000.0)
    trail = Trail()
    check(0.0, settings, trail)
    check(2000.0, settings, trail)
    assert trail.stop_level == 1000.0
    assert check(2000.0, settings, trail, realized=2000.0, open_positions=0) is None
    assert (trail.active, trail.peak, trail.stop_level) == (False, 0.0, None)
    # the next cycle starts from the day's 2000: its stop is back at -1000 (cycle)
    assert check(2000.0, settings, trail, realized=2000.0) is None
    assert (trail.base, trail.stop_level) == (2000.0, -1000.0)
    assert check(1000.05, settings, trail, realized=2000.0) is None
    assert check(1000.0, settings, trail, realized=2000.0) is not None


def test_trail_pct_is_a_percentage_of_the_premium_collected() -> None:
    settings = replace(OFF, trail_pct=20.0)
    premium = 100.0 * 65  # one lot sold at 100
    assert initial_trail(pnl(0.0, premium=premium), settings) == pytest.approx(-1300.0)
    trail = Trail()
    assert check(-1299.95, settings, trail, premium=premium) is None
    assert check(-1300.0, settings, trail, premium=premium) == Trigger(
        "trailing_stop", pytest.approx(-1300.0), -1300.0)


def test_trail_pct_does_not_lower_the_stop_when_more_premium_is_collected() -> None:
    settings = replace(OFF, trail_pct=20.0)
    trail = Trail()
    check(0.0, settings, trail, premium=6500.0)  # stop -1300
    check(1000.0, settings, trail, premium=6500.0)  # peak 1000: stop -300
    assert trail.stop_level == pytest.approx(-300.0)
    check(1000.0, settings, trail, premium=13000.0)  # a second lot: -2600 + 1000 = -1600
    assert trail.stop_level == pytest.approx(-300.0)  # only moves up
    assert check(-299.95, settings, trail, premium=13000.0) is None
    assert check(-300.0, settings, trail, premium=13000.0) is not None


def test_trail_rupees_win_over_trail_pct_and_no_premium_means_no_pct_trail() -> None:
    assert initial_trail(pnl(0.0, premium=6500.0), replace(OFF, trail=700.0, trail_pct=50.0)) \
        == -700.0
    assert initial_trail(pnl(0.0, premium=0.0), replace(OFF, trail_pct=50.0)) is None
    assert initial_trail(pnl(0.0, premium=6500.0), OFF) is None
    assert check(-1e6, replace(OFF, trail_pct=50.0)) is None  # a long-only cycle: no premium


# ---------------------------------------------------------------------------------------------
# Daily R
# ---------------------------------------------------------------------------------------------


def test_daily_r_fires_at_plus_and_minus_five_r() -> None:
    settings = replace(OFF, daily_r_target=5.0, daily_r_stop=5.0)
    assert check(4999.99, settings) is None
    assert check(5000.0, settings) == Trigger("daily_r", 5.0, 5.0)
    assert check(-4999.99, settings) is None
    assert check(-5000.0, settings) == Trigger("daily_r", -5.0, -5.0)


def test_daily_r_uses_the_strategys_r_unit() -> None:
    settings = replace(OFF, daily_r_target=5.0, daily_r_stop=5.0)
    assert check(32_499.0, settings, r_unit=6500.0) is None
    assert check(32_500.0, settings, r_unit=6500.0) == Trigger("daily_r", 5.0, 5.0)
    assert check(-32_500.0, settings, r_unit=6500.0) == Trigger("daily_r", -5.0, -5.0)


def test_the_default_settings_have_the_five_r_limit() -> None:
    defaults = RiskSettings()
    assert (defaults.daily_r_target, defaults.daily_r_stop) == (5.0, 5.0)
    assert check(5 * R, defaults) == Trigger("daily_r", 5.0, 5.0)


# ---------------------------------------------------------------------------------------------
# Order of the checks
# ---------------------------------------------------------------------------------------------


def test_max_loss_is_checked_before_the_trailing_stop_and_daily_r() -> None:
    settings = replace(OFF, max_loss=3000.0, trail=1000.0, daily_r_stop=3.0)
    trigger = check(-3000.0, settings)
    assert trigger is not None and trigger.kind == "max_loss"


def test_max_profit_is_checked_before_the_trailing_stop_and_daily_r() -> None:
    settings = replace(OFF, max_profit=3000.0, trail=1000.0, daily_r_target=3.0)
    trail = Trail()
    check(0.0, settings, trail)
    check(5000.0, settings, trail)  # would be max profit already: the peak is still set
    trigger = check(3000.0, settings, trail)  # at the trailing stop (4000) too
    assert trigger is not None and trigger.kind == "max_profit"


def test_the_trailing_stop_is_checked_before_daily_r() -> None:
    settings = replace(OFF, trail=1000.0, daily_r_stop=1.0)
    trigger = check(-1000.0, settings)
    assert trigger == Trigger("trailing_stop", -1000.0, -1000.0)


def test_every_check_still_advances_the_trail() -> None:
    settings = replace(OFF, max_profit=3000.0, trail=1000.0)
    trail = Trail()
    assert check(4000.0, settings, trail) == Trigger("max_profit", 3000.0, 4000.0)
    assert (trail.peak, trail.stop_level) == (4000.0, 3000.0)


def test_a_bad_eod_time_is_a_settings_problem() -> None:
    assert RiskSettings().problems() == []
    assert RiskSettings(eod_exit="25:99").problems() == [
        ("eod_exit", "'25:99' is not a time HH:MM")]
