"""The research commands of ``run.py``: ``synth --days``, ``backtest`` and ``sweep``.

Owns their options and thin handlers (the work is in ``engine.market.synth_days``,
``engine.app.backtest`` and ``engine.app.sweep``). Bad input is one line on stderr with exit 2;
a replay that fails is exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from engine.app.command_spec import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from engine.config import Config

if TYPE_CHECKING:
    from engine.app.sweep import SweepResult


@dataclass(frozen=True, slots=True)
class CliHelpers:
    """What the handlers borrow from ``engine.app.commands`` (passed in, so that neither
    module imports the other): logging set-up, the state folder, the strategy choice."""

    init_logging: Callable[..., None]
    state: Callable[[Config], Path]
    strategies: Callable[[Config, str | None], tuple[str, ...]]


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """The ``--set`` values of the command line (as ``engine.app.cli`` reads them), for
    re-loading the configuration with a parameter set on top."""
    out: dict[str, str] = {}
    for item in [*args.overrides, *getattr(args, "command_overrides", [])]:
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def _sessions_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("sessions", nargs="+", metavar="SESSIONS",
                   help="session files, folders of them, or globs (quote them)")
    p.add_argument("--strategy", help="strategy to run (default: engine.strategy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------------------------
# synth --days
# ---------------------------------------------------------------------------------------------


def configure_synth_days(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=int, help="generate this many trading days into --out DIR "
                   "(weekends and holidays skipped; one market regime per day)")
    p.add_argument("--start", help="with --days: first day YYYY-MM-DD (default: "
                   "synth.default_date)")
    p.add_argument("--minutes", type=int, help="with --days: minutes per day from the open "
                   "(default: synth.duration_minutes)")
    p.add_argument("--width", type=int, help="with --days: strikes each side of ATM "
                   "(default: synth.width)")


def run_synth_days(args: argparse.Namespace, cfg: Config, helpers: CliHelpers) -> int:
    from engine.market.synth_days import generate_days, plan_days

    synth = cfg.section("synth")
    seed = synth.default_seed if args.seed is None else args.seed
    if args.date:
        print("synth: --days takes --start, not --date", file=sys.stderr)
        return EXIT_CONFIG
    try:
        start = date.fromisoformat(args.start or synth.default_date)
    except ValueError:
        print(f"synth: bad --start {args.start!r}: expected YYYY-MM-DD", file=sys.stderr)
        return EXIT_CONFIG
    out = (Path(args.out) if args.out else
           helpers.state(cfg) / "sessions" / f"synth-{start}-x{args.days}")
    if out.exists() and not out.is_dir():
        print(f"synth: --out {out} is a file; with --days it is a folder", file=sys.stderr)
        return EXIT_CONFIG
    helpers.init_logging(cfg, console=False)
    spec = cfg.instrument.spec()
    try:
        plans = plan_days(start, args.days, seed, synth, spec)
        existing = [p for p in plans if (out / p.file_name(seed)).exists()]
        if existing and not args.force:
            print(f"synth: {out / existing[0].file_name(seed)} exists (use --force to "
                  f"overwrite)", file=sys.stderr)
            return EXIT_FAILURE
        generate_days(out, plans, seed, spec=spec, width=args.width, minutes=args.minutes,
                      overwrite=args.force,
                      on_day=lambda plan, s: print(
                          f"{plan.day}  {plan.regime:<8}  {s.ticks:>9,} ticks  spot "
                          f"{s.spot_open:,.2f} -> {s.spot_close:,.2f}  {s.path.name}"))
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {len(plans)} days into {out}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# backtest
# ---------------------------------------------------------------------------------------------


def configure_backtest(p: argparse.ArgumentParser) -> None:
    _sessions_options(p)
    p.add_argument("--out", help="folder for the days' databases and reports and "
                   "backtest.html (default: state_dir/backtest)")
    p.add_argument("--no-report", action="store_true", help="no HTML reports")


def run_backtest_cmd(args: argparse.Namespace, cfg: Config, helpers: CliHelpers) -> int:
    from engine.app.backtest import SessionsError, day_table, expand_sessions, run_backtest

    try:
        sessions = expand_sessions(args.sessions)
    except SessionsError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    strategy = helpers.strategies(cfg, args.strategy)[0]
    out = Path(args.out) if args.out else helpers.state(cfg) / "backtest"
    helpers.init_logging(cfg, console=False)
    backtest = run_backtest(cfg, sessions, out, strategy,
                            progress=(not args.no_progress) and sys.stderr.isatty(),
                            reports=not args.no_report)
    results = [d.result for d in backtest.days]
    print(f"[BACKTEST] {strategy}: {len(results)} days")
    print(day_table(results))
    print("\n".join(backtest.performance.lines()))
    if backtest.report is not None:
        print(f"report {backtest.report}")
    stuck = sum(r.stuck_steps for r in results)
    return EXIT_OK if stuck == 0 else EXIT_FAILURE


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------


def configure_sweep(p: argparse.ArgumentParser) -> None:
    from engine.app.sweep import METRICS

    _sessions_options(p)
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                   help="one axis of the grid (repeatable): every combination is a parameter "
                   "set, and every parameter set × day one job")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the jobs on Ray: a cluster at ADDRESS (e.g. ray://head:10001 or "
                   "auto), a local Ray without one (needs pip install -e \".[ray]\")")
    p.add_argument("--workers", type=int, help="process-pool workers (default: every core)")
    p.add_argument("--metric", choices=METRICS, default="net",
                   help="rank parameter sets by this (default: net P&L)")
    p.add_argument("--out", help="folder for the tables and sweep.html (default: "
                   "state_dir/sweep)")
    p.add_argument("--cache", help="job result cache folder (default: state_dir/sweep-cache)")


def run_sweep_cmd(args: argparse.Namespace, cfg: Config, helpers: CliHelpers) -> int:
    from engine.app.backtest import DayProgress, SessionsError, expand_sessions
    from engine.app.sections import load_config
    from engine.app.sweep import (
        ProcessExecutor,
        RayExecutor,
        ResultCache,
        SweepError,
        make_jobs,
        parse_grid,
        run_sweep,
        write_tables,
    )
    from engine.config import default_config_path

    try:
        axes = parse_grid(args.grid)
        sessions = expand_sessions(args.sessions)
        strategy = helpers.strategies(cfg, args.strategy)[0]
        path = Path(args.config) if args.config else default_config_path()
        base = _overrides(args)

        def load(params: Mapping[str, str]) -> Config:
            return load_config(path, env={}, overrides={**base, "engine.strategy": strategy,
                                                        **params})

        jobs, by_hash = make_jobs(cfg, axes, sessions, strategy, load)
        executor = (RayExecutor(args.ray or None) if args.ray is not None
                    else ProcessExecutor(args.workers))
    except (SweepError, SessionsError) as exc:
        print(f"sweep: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    helpers.init_logging(cfg, console=False)
    out = Path(args.out) if args.out else helpers.state(cfg) / "sweep"
    cache = ResultCache(Path(args.cache) if args.cache else helpers.state(cfg) / "sweep-cache")
    with DayProgress((not args.no_progress) and sys.stderr.isatty(), len(jobs), "sweep") as bar:
        try:
            result = run_sweep(jobs, by_hash, axes, executor, cache,
                               on_result=lambda job, r, cached: bar.advance(
                                   f"{r.day} set {job.index + 1}"))
        except SweepError as exc:
            print(f"sweep: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    print(f"[SWEEP] {strategy}: {len(result.sets)} parameter sets x {len(sessions)} days = "
          f"{len(jobs)} jobs on {executor.name} ({result.replayed} replayed, {result.cached} "
          f"from the cache)")
    print(sweep_table(result, args.metric))
    tables = write_tables(result, out)
    page = write_sweep_page(result, args.metric, out / "sweep.html", executor.name)
    print("wrote " + ", ".join(str(p) for p in [*tables, page]))
    return EXIT_OK


def sweep_table(result: SweepResult, metric: str) -> str:
    """The ranking as text."""
    from engine.app.sweep import params_label, ranked

    lines = [f"{'rank':>4}  {metric:>12}  {'trades':>6}  {'net':>12}  {'total R':>8}  parameters"]
    for rank, s in enumerate(ranked(result, metric), start=1):
        value = getattr(s.performance, metric)
        shown = "n/a" if value is None else f"{value:,.4f}"
        p = s.performance
        lines.append(f"{rank:>4}  {shown:>12}  {p.trades:>6}  {p.net:>+12,.2f}  "
                     f"{p.total_r:>+8.2f}  {params_label(s.params)}")
    return "\n".join(lines)


def write_sweep_page(result: SweepResult, metric: str, out: Path, executor: str) -> Path:
    """The sweep's HTML page (``engine.report.sweep``)."""
    from engine.app.sweep import ranked
    from engine.report.sweep import SweepPage, write_sweep_report

    page = SweepPage(
        title="Parameter sweep", metric=metric,
        axes=tuple((a.key, a.values) for a in result.axes),
        ranked=tuple((s.params, s.performance) for s in ranked(result, metric)),
        note=f"{len(result.sets)} parameter sets over {len(result.sets[0].days)} days, run on "
             f"{executor}" if result.sets else "")
    return write_sweep_report(out, page)
