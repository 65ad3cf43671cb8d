"""The research commands end to end: synth --days, backtest over a folder (its combined report
in headless Chromium), and a sweep on the process pool, on a local Ray, and from its cache."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from engine.app.cli import main
from engine.app.sections import load_config
from engine.app.sweep import (
    Job,
    ProcessExecutor,
    ResultCache,
    SweepResult,
    day_rows,
    make_jobs,
    parse_grid,
    run_sweep,
    summary_rows,
)
from engine.config import Config
from engine.trading.performance import DayResult
from tests.engine.browser import Browser, chromium_or_skip

STRATEGY = "vwap_cross"
GRID = ["vwap_cross.stop_points=5,10", "vwap_cross.lots=1,2"]


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five short generated trading days (12 minutes, ATM ± 1 strike)."""
    out = tmp_path_factory.mktemp("research") / "days"
    assert main(["--state-dir", str(out.parent / "state"), "synth", "--days", "5", "--start",
                 "2025-09-01", "--minutes", "12", "--width", "1", "--out", str(out)]) == 0
    return out


def test_synth_days_writes_trading_days_with_their_regimes(days: Path) -> None:
    names = sorted(p.name for p in days.iterdir())
    assert len(names) == 5
    assert {n.split("-")[4] for n in names} >= {"expiry"}


def test_backtest_over_a_folder_prints_days_and_summary_and_its_report_loads(
        days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bt"
    code = main(["--state-dir", str(tmp_path / "state"), "backtest", str(days), "--strategy",
                 STRATEGY, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = printed.splitlines()
    assert lines[0] == f"[BACKTEST] {STRATEGY}: 5 days"
    assert "gross" in lines[1] and "charges" in lines[1] and "net" in lines[1]
    assert sum(1 for line in lines if line.startswith("2025-09-0")) == 5
    for text in ("win rate", "expectancy", "total R", "P&L gross", "charges", "net",
                 "max drawdown", "Sharpe", "Sortino", "longest losing streak"):
        assert text in printed
    report = out / "backtest.html"
    assert report.is_file() and len(list((out / "days").glob("*.html"))) == 5

    executable = chromium_or_skip()
    with Browser(executable, tmp_path) as browser:
        page = browser.load(report.as_uri())
        first_day = browser.load((out / "days" / sorted(
            p.name for p in (out / "days").glob("*.html"))[0]).as_uri())
    assert page.title == f"Backtest {STRATEGY}"
    assert len(page.images) >= 2
    for image in page.images:
        assert image.scheme == "data" and image.complete and image.natural_width > 300
    for text in ("Net P&L", "Gross P&L", "Charges", "Sharpe", "day report", "2025-09-05"):
        assert text in page.text
    assert first_day.title.startswith("Day report 2025-09-01")


def test_backtest_errors_are_one_line_with_exit_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path), "backtest", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backtest: no such session file or folder") and err.count("\n") == 1
    assert main(["--state-dir", str(tmp_path), "sweep", "--grid", "nokey", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("sweep: --grid expects")


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


def _jobs(days: Path) -> tuple[list[Job], dict[str, Path], list]:
    sessions = sorted(days.iterdir())[2::2]  # the two days on which vwap_cross trades
    axes = parse_grid(GRID)
    cfg = load_config(None, env={}, overrides={"engine.strategy": STRATEGY})

    def load(params: Mapping[str, str]) -> Config:
        return load_config(None, env={}, overrides={"engine.strategy": STRATEGY, **params})

    jobs, by_hash = make_jobs(cfg, axes, sessions, STRATEGY, load)
    return jobs, by_hash, axes


@pytest.fixture(scope="module")
def pool_sweep(days: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[SweepResult, Path]:
    jobs, by_hash, axes = _jobs(days)
    cache = tmp_path_factory.mktemp("cache")
    result = run_sweep(jobs, by_hash, axes, ProcessExecutor(2), ResultCache(cache))
    assert result.replayed == 8 and result.cached == 0
    return result, cache


class NoReplay:
    """An executor that must not be asked for anything."""

    name = "none"

    def run(self, jobs: Sequence[Job], sessions: Mapping[str, Path]
            ) -> Iterator[tuple[Job, DayResult]]:
        assert not jobs, f"{len(jobs)} jobs replayed although every result was cached"
        return iter(())


def test_a_rerun_of_a_finished_sweep_replays_nothing(
        days: Path, pool_sweep: tuple[SweepResult, Path]) -> None:
    first, cache = pool_sweep
    jobs, by_hash, axes = _jobs(days)
    again = run_sweep(jobs, by_hash, axes, NoReplay(), ResultCache(cache))
    assert (again.replayed, again.cached) == (0, 8)
    assert summary_rows(again) == summary_rows(first) and day_rows(again) == day_rows(first)
    trades = [len(d.trades) for s in first.sets for d in s.days]
    assert len(first.sets) == 4 and any(trades), "the grid should trade on these days"


def test_a_2x2_sweep_gives_identical_tables_on_the_pool_and_on_local_ray(
        days: Path, pool_sweep: tuple[SweepResult, Path], tmp_path: Path) -> None:
    try:
        import ray
    except ImportError as exc:
        pytest.skip(f"Ray is not installed ({exc}); pip install -e \".[ray]\" to run this test")
    from engine.app.sweep import RayExecutor

    first, _ = pool_sweep
    jobs, by_hash, axes = _jobs(days)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_sweep(jobs, by_hash, axes, RayExecutor(), ResultCache(tmp_path / "c"))
    finally:
        ray.shutdown()
    assert on_ray.replayed == 8
    key = [(r["session"], r["vwap_cross.stop_points"], r["vwap_cross.lots"])
           for r in day_rows(on_ray)]
    assert key == [(r["session"], r["vwap_cross.stop_points"], r["vwap_cross.lots"])
                   for r in day_rows(first)]
    # the replay runs every actor on one thread (no wall clock anywhere): the same job gives
    # the same result whatever runs it, however loaded the machine
    assert day_rows(on_ray) == day_rows(first)
    assert summary_rows(on_ray) == summary_rows(first)


def test_sweep_cli_writes_tables_and_a_ranked_page_with_a_heat_map(
        days: Path, pool_sweep: tuple[SweepResult, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sessions = [str(p) for p in sorted(days.iterdir())[2::2]]
    _, cache = pool_sweep
    args = ["--state-dir", str(tmp_path), "sweep", *[a for g in GRID for a in ("--grid", g)],
            "--strategy", STRATEGY, "--cache", str(cache), "--out", str(tmp_path / "out"),
            "--metric", "total_r", *sessions]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 parameter sets x 2 days = 8 jobs" in printed and "(0 replayed, 8 from the cache)" \
        in printed
    page = (tmp_path / "out" / "sweep.html").read_text(encoding="utf-8")
    assert "Heat map of total_r" in page and 'id="ranking"' in page
    header = (tmp_path / "out" / "sweep.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("vwap_cross.stop_points,vwap_cross.lots,days,trades")
