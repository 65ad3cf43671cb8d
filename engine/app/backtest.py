"""Multi-day backtests (``run.py backtest``): every day one independent replay, then one summary.

Owns finding the session files (files, folders, globs; ordered by trading day), replaying one
day in a fresh engine (``replay_day``: a new database, a new ``ReplayDriver``, nothing carried
over — the strategy is intraday) and the backtest loop with its progress bar over days, its
per-day table and combined summary (``engine.trading.performance``), the day reports and the
combined HTML report (``engine.report.backtest``). Metrics are defined in docs/research.md.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.app.replay import ReplayDriver
from engine.config import Config
from engine.market.instruments import trading_date
from engine.market.session_file import SessionFileError, SessionReader
from engine.runtime.logs import live_bar
from engine.store.database import Database
from engine.trading.performance import DayResult, Performance, combine, day_result

SESSION_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class SessionsError(Exception):
    """The sessions given cannot be used (none found, not a session file)."""


def expand_sessions(items: Sequence[str]) -> list[Path]:
    """Session files from files, folders (their ``*.db``/``*.sqlite`` files) and globs, each once,
    ordered by trading day then name. ``SessionsError`` when one names nothing or none is a
    session file."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix in SESSION_SUFFIXES)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        elif path.is_file():
            matches = [path]
        else:
            raise SessionsError(f"no such session file or folder: {item}")
        if not matches:
            raise SessionsError(f"no session files in {item}")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    days = {p: session_day(p) for p in unique}
    return sorted(unique, key=lambda p: (days[p], p.name))


def session_day(path: Path) -> str:
    """The trading day (YYYY-MM-DD) of a session file's first tick."""
    try:
        with SessionReader(path) as reader:
            span = reader.time_range()
    except SessionFileError as exc:
        raise SessionsError(str(exc)) from None
    if span is None:
        raise SessionsError(f"{path}: the session holds no ticks")
    return trading_date(span[0]).isoformat()


def replay_day(cfg: Config, session: Path, db_path: Path, strategy: str) -> DayResult:
    """Replay ``session`` through a freshly built engine into a new ``db_path``; its result."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    summary = ReplayDriver(cfg, session, db_path=db_path, progress=False,
                           strategies=(strategy,)).run()
    with Database(db_path, cfg.store) as db:
        trades = db.trades(strategy=strategy, trading_date=summary.trading_day)
    return day_result(session.name, summary.trading_day.isoformat(), trades,
                      cfg.section("charges"), ticks=summary.ticks,
                      stuck_steps=summary.stuck_steps)


@dataclass(frozen=True, slots=True)
class BacktestDay:
    """A backtested day: its result and where its database and day report are."""

    result: DayResult
    db_path: Path
    report: Path | None = None


@dataclass(frozen=True, slots=True)
class Backtest:
    """A whole backtest: its days in date order and their combined performance."""

    strategy: str
    days: tuple[BacktestDay, ...]
    performance: Performance
    report: Path | None = None


def run_backtest(cfg: Config, sessions: Sequence[Path], out_dir: Path, strategy: str, *,
                 progress: bool = False, reports: bool = True,
                 on_day: Callable[[BacktestDay], None] | None = None) -> Backtest:
    """Replay every session (in order) into ``out_dir/days``, then write the combined report
    ``out_dir/backtest.html`` (and each day's report beside its database) when ``reports``."""
    from engine.report.page import write_report

    days: list[BacktestDay] = []
    with DayProgress(progress, len(sessions), "backtest") as bar:
        for session in sessions:
            db_path = out_dir / "days" / f"{session.stem}.db"
            result = replay_day(cfg, session, db_path, strategy)
            report = None
            if reports:
                report = write_report(db_path, db_path.with_suffix(".html"),
                                      trading_date=result.day, strategy=strategy,
                                      charges=cfg.section("charges"))
            day = BacktestDay(result, db_path, report)
            days.append(day)
            if on_day is not None:
                on_day(day)
            bar.advance(result.day)
    backtest = Backtest(strategy, tuple(days), combine([d.result for d in days]))
    if reports:
        from engine.report.backtest import write_backtest_report

        path = write_backtest_report(out_dir / "backtest.html", backtest_page_data(backtest, cfg))
        backtest = Backtest(strategy, backtest.days, backtest.performance, path)
    return backtest


def backtest_page_data(backtest: Backtest, cfg: Config) -> object:
    """What the combined report draws (``engine.report.backtest.BacktestData``)."""
    from engine.report.backtest import BacktestData, DayLink

    charts = cfg.section("report")
    return BacktestData(
        title=f"Backtest {backtest.strategy}", strategy=backtest.strategy,
        width_in=charts.chart_width_in, dpi=charts.dpi,
        performance=backtest.performance,
        days=tuple(DayLink(d.result, d.report.name if d.report else None) for d in backtest.days),
        r_unit=cfg.section("risk").r_unit)  # each day's replay recorded its trades in it


def day_table(results: Sequence[DayResult]) -> str:
    """The per-day text table."""
    head = (f"{'day':<10}  {'session':<40}  {'trades':>6}  {'gross':>12}  {'charges':>10}  "
            f"{'net':>12}  {'R':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.day:<10}  {r.session[:40]:<40}  {len(r.trades):>6}  {r.gross:>+12,.2f}"
                     f"  {r.charges:>10,.2f}  {r.net:>+12,.2f}  {r.total_r:>+7.2f}")
    return "\n".join(lines)


class DayProgress:
    """A rich progress bar over days (or jobs); silent when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled = enabled
        self.total = total
        self.label = label
        self._progress: object = None
        self._task: object = None

    def __enter__(self) -> DayProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            progress = Progress(TextColumn(f"[bold]{self.label}[/] {{task.fields[last]}}"),
                                BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn())
            self._shown = live_bar(progress)
            self._task = progress.add_task(self.label, total=self.total, last="")
            self._progress = progress
        return self

    def advance(self, last: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, last=last)  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._shown.__exit__(*exc)
