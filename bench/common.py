"""Shared benchmark plumbing: timing, peak memory, a printed table and a JSON result file.

Every script under bench/ reports through ``Report`` so the figures in the README and in issue
notes all come from the same kind of file: ``bench/results/<name>.json`` (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except OSError:
        return peak_rss_mb()


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99, max and mean of latencies given in seconds, reported in milliseconds
    (nearest-rank percentiles: p99 of 100 samples is the largest but one); None without
    samples."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ordered = sorted(seconds)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)] * 1000.0

    return {"n": len(ordered), "p50_ms": rank(50), "p99_ms": rank(99),
            "max_ms": ordered[-1] * 1000.0, "mean_ms": sum(ordered) / len(ordered) * 1000.0}


@contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds (monotonic)."""
    out: list[float] = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start


@dataclass
class Report:
    name: str
    description: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    # raw samples behind the figures: written to the JSON, not printed
    series: dict[str, list[float]] = field(default_factory=dict)

    def row(self, **values: Any) -> None:
        self.rows.append(values)

    def figure(self, key: str, value: Any) -> None:
        self.figures[key] = value

    def print_table(self) -> None:
        print(f"\n{self.name}: {self.description}")
        if self.rows:
            cols = list(dict.fromkeys(k for r in self.rows for k in r))
            cells = [[_fmt(r.get(c, "")) for c in cols] for r in self.rows]
            widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
            print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
            print("  ".join("-" * w for w in widths))
            for row in cells:
                print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        for k, v in self.figures.items():
            print(f"{k}: {_fmt(v)}")

    def write_json(self, path: Path | None = None) -> Path:
        path = path or RESULTS_DIR / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "name": self.name, "description": self.description, "rows": self.rows,
            "figures": self.figures, "series": self.series, "python": sys.version.split()[0],
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {path}")
        return path

    def finish(self, json_path: Path | None = None) -> Path:
        self.print_table()
        return self.write_json(json_path)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def arg_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="where to write the JSON result")
    return p
