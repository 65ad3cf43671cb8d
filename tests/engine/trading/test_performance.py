"""The research metrics of engine.trading.performance on days worked by hand."""

from __future__ import annotations

import math

from engine.trading.performance import DayResult, TradeOutcome, combine, sharpe, sortino


def day(name: str, *trades: tuple[float, float, float]) -> DayResult:
    return DayResult(name, name, tuple(TradeOutcome("X", pnl, cost, r) for pnl, cost, r in trades))


DAYS = [day("2025-09-01", (1000.0, 50.0, 1.0), (-500.0, 50.0, -0.5)),
        day("2025-09-02", (-400.0, 40.0, -0.4), (-300.0, 40.0, -0.3)),
        day("2025-09-03"),
        day("2025-09-04", (2000.0, 60.0, 2.0))]


def test_combined_numbers_by_hand() -> None:
    p = combine(DAYS)
    assert (p.days, p.trades, p.wins, p.losses) == (4, 5, 2, 3)
    assert p.win_rate == 0.4
    assert p.avg_win == (950.0 + 1940.0) / 2
    assert p.avg_loss == round((-550.0 - 440.0 - 340.0) / 3, 2)
    assert p.expectancy_r == round(1.8 / 5, 4) and p.total_r == 1.8
    assert (p.gross, p.charges, p.net) == (1800.0, 240.0, 1560.0)
    # net equity 950, 400, -40, -380, 1560: peak 950, trough -380
    assert p.max_drawdown == 1330.0 and p.max_drawdown_r == 1.2
    assert p.longest_losing_streak == 3


def test_sharpe_and_sortino_of_daily_net() -> None:
    daily = [r.net for r in DAYS]  # 400, -780, 0, 1940
    mean = sum(daily) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in daily) / 3)
    assert sharpe(daily) == round(mean / sd * math.sqrt(252), 4)
    assert sortino(daily) == round(mean / math.sqrt(780.0 ** 2 / 4) * math.sqrt(252), 4)
    assert sharpe([5.0]) is None and sharpe([1.0, 1.0]) is None and sortino([1.0, 2.0]) is None


def test_no_trades() -> None:
    p = combine([day("2025-09-01")])
    assert p.trades == 0 and p.win_rate is None and p.expectancy_r is None and p.net == 0.0
    assert "n/a" in p.lines()[0]


def test_a_day_result_survives_json() -> None:
    assert DayResult.from_dict(DAYS[0].as_dict()) == DAYS[0]
