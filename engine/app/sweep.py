"""Parameter sweeps (``run.py sweep``): every (parameter set × day) replay is one job.

Owns the grid (``--grid section.key=v1,v2``: the cartesian product, in the order given), the
jobs and their cache, and the executors: ``ProcessExecutor`` (a local process pool, one worker per
core) and ``RayExecutor`` (a Ray cluster, or a local Ray). A job carries the configuration with
the parameter set applied (secrets removed) and names its session by content hash; it replays the
session in a fresh engine into a throw-away database (``engine.app.backtest.replay_day``), so the
same job gives the same ``DayResult`` whatever runs it. A finished job's result is stored under
``cache_dir`` keyed by (code version, config hash, session hash): a re-run, or a run after an
interruption, replays only what is missing. Session files reach Ray workers through Ray's object
store (docs/research.md says why).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.config import Config, ConfigError, Secrets
from engine.trading.performance import DayResult, Performance, combine

#: sections that cannot change a replay's result, left out of the config hash
NOT_HASHED = ("logging", "control", "accounts", "report")
_SOURCE_PACKAGES = ("engine", "actors", "strategies")


class SweepError(Exception):
    """The sweep cannot run as asked (a bad grid, Ray missing or unreachable)."""


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GridAxis:
    key: str  # section.key
    values: tuple[str, ...]


def parse_grid(items: Sequence[str]) -> list[GridAxis]:
    """``section.key=v1,v2,…`` items as axes; ``SweepError`` for a malformed one or a key given
    twice."""
    axes: list[GridAxis] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parts = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or "." not in key or not parts:
            raise SweepError(f"--grid expects section.key=v1,v2,..., got {item!r}")
        if any(a.key == key for a in axes):
            raise SweepError(f"--grid: {key} is given twice")
        axes.append(GridAxis(key, tuple(dict.fromkeys(parts))))
    if not axes:
        raise SweepError("give at least one --grid section.key=v1,v2,...")
    return axes


def parameter_sets(axes: Sequence[GridAxis]) -> list[dict[str, str]]:
    """Every combination of the axes' values (the last axis varies fastest)."""
    return [dict(zip([a.key for a in axes], combo, strict=True))
            for combo in itertools.product(*(a.values for a in axes))]


def params_label(params: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------------------------------------
# Jobs, hashes and the cache
# ---------------------------------------------------------------------------------------------


def config_hash(cfg: Config) -> str:
    """A hash of every setting that can change a replay (``NOT_HASHED`` sections and
    ``engine.state_dir`` left out)."""
    data: dict[str, Any] = {}
    for name in cfg.section_names():
        if name in NOT_HASHED:
            continue
        value = cfg.section(name)
        data[name] = asdict(value) if is_dataclass(value) and not isinstance(value, type) \
            else repr(value)
    data.get("engine", {}).pop("state_dir", None)
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def code_version() -> str:
    """A hash of the engine's source (``engine``, ``actors``, ``strategies`` packages)."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Job:
    """One replay: a parameter set on one day. ``config`` is the pickled ``Config`` with the
    parameters applied and no secrets; ``session_hash`` names the session file's content."""

    index: int  # of the parameter set
    params: tuple[tuple[str, str], ...]
    session_name: str
    session_hash: str
    config: bytes
    config_hash: str
    strategy: str
    strategy_paths: tuple[str, ...]

    def key(self, code: str) -> str:
        return hashlib.sha256(f"{code}|{self.config_hash}|{self.session_hash}".encode()) \
            .hexdigest()[:32]


class ResultCache:
    """Finished jobs' results as JSON files ``<key>.json`` under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get(self, key: str) -> DayResult | None:
        path = self.folder / f"{key}.json"
        try:
            return DayResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, result: DayResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.json"
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(result.as_dict(), sort_keys=True), encoding="utf-8")
        partial.replace(path)


def make_jobs(cfg: Config, axes: Sequence[GridAxis], sessions: Sequence[Path], strategy: str,
              load: Callable[[Mapping[str, str]], Config]) -> tuple[list[Job], dict[str, Path]]:
    """Every (parameter set × session) job, and the session files by content hash. ``load``
    builds the configuration for a parameter set (the base overrides plus the set's)."""
    hashes = {file_hash(p): p for p in sessions}
    by_path = {p: h for h, p in hashes.items()}
    jobs: list[Job] = []
    for index, params in enumerate(parameter_sets(axes)):
        try:
            run_cfg = load(params)
        except ConfigError as exc:
            raise SweepError(f"parameter set {params_label(params)}: {exc}") from None
        run_cfg = Config({n: run_cfg.section(n) for n in run_cfg.section_names()},
                         run_cfg.source, Secrets())
        blob = pickle.dumps(run_cfg)
        digest = config_hash(run_cfg)
        for session in sessions:
            jobs.append(Job(index, tuple(params.items()), session.name, by_path[session], blob,
                            digest, strategy, tuple(cfg.engine.strategy_paths)))
    return jobs, hashes


def run_job(job: Job, session: Path) -> DayResult:
    """Replay ``job`` on the local copy ``session`` of its session file (in any process)."""
    from engine.app.backtest import replay_day
    from engine.runtime.logs import setup_logging
    from strategies.registry import discover

    setup_logging(level="ERROR", console=False)
    discover(job.strategy_paths)  # plugin settings classes importable before unpickling
    cfg: Config = pickle.loads(job.config)
    with tempfile.TemporaryDirectory(prefix="nifty-sweep-") as work:
        result = replay_day(cfg, session, Path(work) / "engine.db", job.strategy)
    return DayResult(job.session_name, result.day, result.trades, result.ticks,
                     result.stuck_steps)


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------


class Executor(Protocol):
    name: str

    def run(self, jobs: Sequence[Job], sessions: Mapping[str, Path]) -> Iterator[
            tuple[Job, DayResult]]:
        """Run ``jobs`` (sessions by hash), yielding each (job, result) as it finishes."""
        ...


def _pool_job(job: Job, session: str) -> DayResult:
    return run_job(job, Path(session))


class ProcessExecutor:
    """A local process pool (``workers``: default every core); spawned, not forked, workers."""

    name = "process pool"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def run(self, jobs: Sequence[Job], sessions: Mapping[str, Path]) -> Iterator[
            tuple[Job, DayResult]]:
        if not jobs:
            return
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)),
                                 mp_context=context) as pool:
            pending = {pool.submit(_pool_job, job, str(sessions[job.session_hash])): job
                       for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()


def _ray_job(job: Job, data: bytes) -> DayResult:
    """On a Ray worker: the session's bytes (from the object store) into a local file named
    by its hash (written once per machine), then the replay."""
    folder = Path(tempfile.gettempdir()) / "nifty-engine-sessions"
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / f"{job.session_hash}.db"
    if not local.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, local)
    return run_job(job, local)


class RayExecutor:
    """Ray: ``address`` a running cluster (``ray.init(address=…)``), None a local Ray
    (``num_cpus`` caps it). Each session file is put in the object store once."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SweepError("--ray needs Ray: pip install -e \".[ray]\"") from None
        self.ray = ray
        self.address = address
        self.num_cpus = num_cpus

    def run(self, jobs: Sequence[Job], sessions: Mapping[str, Path]) -> Iterator[
            tuple[Job, DayResult]]:
        if not jobs:
            return
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SweepError(f"cannot start or reach Ray at {self.address or 'local'}: "
                                 f"{exc}") from None
        try:
            remote = ray.remote(_ray_job)
            refs = {h: ray.put(sessions[h].read_bytes())
                    for h in dict.fromkeys(j.session_hash for j in jobs)}
            pending = {remote.remote(job, refs[job.session_hash]): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started_here:
                ray.shutdown()


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamResult:
    """One parameter set over every day."""

    index: int
    params: dict[str, str]
    days: tuple[DayResult, ...]
    performance: Performance


@dataclass(frozen=True, slots=True)
class SweepResult:
    axes: tuple[GridAxis, ...]
    sets: tuple[ParamResult, ...]
    replayed: int  # jobs run now
    cached: int  # jobs taken from the cache


def run_sweep(jobs: Sequence[Job], sessions: Mapping[str, Path], axes: Sequence[GridAxis],
              executor: Executor, cache: ResultCache, *, code: str | None = None,
              on_result: Callable[[Job, DayResult, bool], None] | None = None) -> SweepResult:
    """Run every job not in ``cache`` on ``executor`` (caching each result as it arrives),
    then combine each parameter set's days in session order."""
    code = code or code_version()
    results: dict[tuple[int, str], DayResult] = {}
    todo: list[Job] = []
    for job in jobs:
        hit = cache.get(job.key(code))
        if hit is None:
            todo.append(job)
        else:
            results[(job.index, job.session_hash)] = hit
            if on_result is not None:
                on_result(job, hit, True)
    for job, result in executor.run(todo, sessions):
        cache.put(job.key(code), result)
        results[(job.index, job.session_hash)] = result
        if on_result is not None:
            on_result(job, result, False)
    sets: list[ParamResult] = []
    for index in sorted({j.index for j in jobs}):
        mine = [j for j in jobs if j.index == index]
        days = tuple(results[(j.index, j.session_hash)] for j in mine)
        sets.append(ParamResult(index, dict(mine[0].params), days, combine(days)))
    return SweepResult(tuple(axes), tuple(sets), replayed=len(todo), cached=len(jobs) - len(todo))


# ---------------------------------------------------------------------------------------------
# Results as tables
# ---------------------------------------------------------------------------------------------

METRICS = ("net", "gross", "total_r", "expectancy_r", "sharpe", "sortino", "win_rate",
           "max_drawdown", "max_drawdown_r")
#: metrics where smaller is better
LOWER_IS_BETTER = ("max_drawdown", "max_drawdown_r")


def summary_rows(result: SweepResult) -> list[dict[str, Any]]:
    """One row per parameter set: its parameters then its performance."""
    return [{**s.params, **s.performance.as_dict()} for s in result.sets]


def day_rows(result: SweepResult) -> list[dict[str, Any]]:
    """One row per job: parameters, session, day and the day's numbers."""
    return [{**s.params, "session": d.session, "day": d.day, "trades": len(d.trades),
             "gross": d.gross, "charges": d.charges, "net": d.net, "total_r": d.total_r}
            for s in result.sets for d in s.days]


def ranked(result: SweepResult, metric: str) -> list[ParamResult]:
    """Parameter sets best first by ``metric`` (undefined values last; ties by grid order)."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(s: ParamResult) -> tuple[int, float, int]:
        value = getattr(s.performance, metric)
        return (value is None, sign * (value or 0.0), s.index)

    return sorted(result.sets, key=key)


def write_tables(result: SweepResult, out_dir: Path) -> list[Path]:
    """``sweep.csv`` (per parameter set) and ``sweep-days.csv`` (per job); the same as Parquet
    when pyarrow is installed."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, rows in (("sweep", summary_rows(result)), ("sweep-days", day_rows(result))):
        path = out_dir / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            continue
        parquet = out_dir / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        written.append(parquet)
    return written
