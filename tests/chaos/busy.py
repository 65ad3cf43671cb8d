"""Paper on a busy machine: the in-process paper run with CPU hogs beside it, then invariants.

A trader's VPS is a machine where other jobs take the CPU. One run (``run_busy``):

1. a session file (a small synthetic session, or the bundled day with ``day``) and a config
   (the baseline's small-session settings; the end-of-day exit a few minutes before the
   session ends, so exits happen and "nothing left open" is checked);
2. a replay of the same session without a strategy (nothing busy yet): the reference bars;
3. ``hogs`` busy-loop processes (``sh -c 'while :; do :; done'``), then ``run.py paper`` at
   ``speed`` (its own process, the simulator in-process), then the hogs are killed, always;
4. the invariants: the run exited 0 with every end-of-session check passed (no lost fill
   against the broker's tradebook, no orphan or phantom, no order ``unknown``, no trading dead
   letter, nothing open after the day), the bars equal the replay's (no tick lost or late),
   every entry fill was followed by a stop, and the reconciler never found the engine and the
   broker apart.

Command line: ``python -m tests.chaos.harness --hogs 2 [--minutes N] [--speed S] [--day]``
(the long form); the short form is ``tests/chaos/test_busy.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from engine.market.bars import BarSettings
from engine.market.instruments import minute_start
from engine.market.session_file import SessionReader
from engine.market.synth import SynthSettings, bundled_day_path, small_session
from engine.messages import OrderPurpose
from engine.runtime.clock import IST
from engine.store.database import Database
from tests.chaos.harness import SMALL_SESSION_STRATEGY
from tests.chaos.invariants import Check

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "run.py")]
HOG = ["sh", "-c", "while :; do :; done"]
CONFIG = """\
[engine]
state_dir = "{state}"
shutdown_timeout_s = 30
[logging]
console = false
[universe]
width = {width}
[risk]
eod_exit = "{eod}"
"""
DIVERGENCE = ("reconcile_orphan", "reconcile_phantom", "reconcile_mismatch")
#: market seconds the clock may run past a tick in transit (engine.runtime.pacing.Pacer's
#: ``transit_s``; a constant here so this module also runs against code without a pacer)
TRANSIT_S = 0.25


@dataclass(frozen=True, slots=True)
class BusyPlan:
    minutes: int = 20
    speed: float = 120.0
    hogs: int = 2
    session_seed: int = 15
    width: int = 2
    date: str = "2025-01-30"
    day: bool = False


@dataclass
class BusyResult:
    out: Path
    checks: list[Check]
    lines: list[str] = field(default_factory=list)
    paper_exit: int | None = None
    real_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def run_busy(plan: BusyPlan, out: Path) -> BusyResult:
    out.mkdir(parents=True, exist_ok=True)
    if plan.day:
        session, width = bundled_day_path(settings=SynthSettings()), SynthSettings().width
    else:
        session = small_session(out / "session.db", date=plan.date, seed=plan.session_seed,
                                symbols=plan.width, minutes=plan.minutes).path
        width = plan.width
    span = SessionReader(session).time_range()
    assert span is not None, f"{session} holds no ticks"
    eod = (datetime.fromtimestamp(span[1], IST) - timedelta(minutes=3)).strftime("%H:%M")
    config = out / "config.toml"
    config.write_text(CONFIG.format(state=out / "var", width=width, eod=eod)
                      + ("" if plan.day else SMALL_SESSION_STRATEGY))
    replay_db, paper_db = out / "replay.db", out / "engine.db"
    subprocess.run([*RUN, "--config", str(config), "replay", str(session), "--no-strategy",
                    "--db", str(replay_db)], cwd=ROOT, capture_output=True, check=True,
                   timeout=1800)
    hogs = [subprocess.Popen(HOG) for _ in range(plan.hogs)]
    t0 = time.monotonic()
    try:
        paper = subprocess.run(
            [*RUN, "--config", str(config), "paper", "--session", str(session),
             "--speed", str(plan.speed),
             "--db", str(paper_db)], cwd=ROOT, capture_output=True, text=True,
            timeout=(span[1] - span[0]) / plan.speed * 40 + 600)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    real_s = time.monotonic() - t0
    (out / "paper.out").write_text(paper.stdout)
    (out / "paper.err").write_text(paper.stderr[-200_000:])
    checks = [_ended_clean(paper.returncode, paper.stdout),
              *_from_db(paper_db, replay_db, session)]
    result = BusyResult(out, checks, paper_exit=paper.returncode, real_s=real_s)
    market_s = span[1] - span[0]
    result.lines = [
        f"[BUSY] {Path(session).name}: {market_s / 60:.0f} market minutes at {plan.speed:g}x "
        f"with {plan.hogs} CPU hog(s): {real_s:.0f} s real (unpaced {market_s / plan.speed:.0f}"
        f" s), paper exit {paper.returncode}",
        *(c.line() for c in checks),
        f"[RESULT] {'PASS' if result.passed else 'FAIL'}; run directory {out}",
    ]
    return result


def _ended_clean(code: int, stdout: str) -> Check:
    passed = code == 0 and "[CHECKS] end of session: all passed" in stdout
    checks = [line.strip() for line in stdout.splitlines() if "[CHECKS]" in line
              or line.strip().startswith("FAILED")]
    return Check("end-of-session checks", passed,
                 f"exit {code}; " + ("; ".join(checks) or "no end-of-session checks printed"))


def _borderline(reader: SessionReader) -> set[tuple[str, float]]:
    """(symbol, minute) pairs with a tick recorded as arriving within ``TRANSIT_S`` before its
    minute's grace deadline: the engine stamps arrival on its own clock, and the pacer lets
    market time run at most that far past a tick still in transit, so such a tick may count
    as late in paper (on an idle machine too) where the replay takes it."""
    grace = BarSettings().grace_s
    margin = TRANSIT_S
    found = set()
    for tick in reader.ticks():
        minute = minute_start(tick.ts)
        deadline = minute + 60.0 + grace
        if deadline - margin < tick.recv_ts <= deadline:
            found.add((tick.symbol, minute))
    return found


def _from_db(paper_db: Path, replay_db: Path, session: Path) -> list[Check]:
    reader = SessionReader(session)
    symbols = [i.symbol for i in reader.symbols()]
    span = reader.time_range()
    assert span is not None
    day = datetime.fromtimestamp(span[0], IST).date()
    excused = _borderline(reader)
    paper, replay = Database(paper_db), Database(replay_db)
    try:
        differ = []
        total = 0
        borderline = 0
        for symbol in symbols:
            # volume is left out: the simulator's frames carry its own cumulative volume
            mine = {b.start: (b.ticks, b.open, b.high, b.low, b.close)
                    for b in paper.bars(symbol, day)}
            ref = {b.start: (b.ticks, b.open, b.high, b.low, b.close)
                   for b in replay.bars(symbol, day)}
            total += len(ref)
            bad = sorted(s for s in mine.keys() | ref.keys() if mine.get(s) != ref.get(s))
            borderline += sum(1 for s in bad if (symbol, s) in excused)
            bad = [s for s in bad if (symbol, s) not in excused]
            if bad:
                differ.append(f"{symbol}: {len(bad)} bar(s) differ, first at "
                              f"{datetime.fromtimestamp(bad[0], IST):%H:%M}: paper "
                              f"{mine.get(bad[0])} replay {ref.get(bad[0])}")
        bars = Check("bars complete", not differ, "; ".join(differ[:5]) or
                     f"{total} bars over {len(symbols)} symbols equal the replay's"
                     + (f" ({borderline} differ by a tick recorded at its grace deadline: "
                        f"transit)" if borderline else ""))
        orders, fills = paper.orders(), paper.fills()
        covers: dict[str, list[float]] = defaultdict(list)
        for o in orders:
            if o.purpose in (OrderPurpose.STOP, OrderPurpose.EXIT):
                covers[o.symbol].append(o.created_ts)
        entries = [f for f in fills if f.purpose is OrderPurpose.ENTRY]
        naked = [f"{f.symbol} {f.quantity} at {datetime.fromtimestamp(f.ts, IST):%H:%M:%S}"
                 for f in entries if not any(t >= f.ts - 1e-6 for t in covers[f.symbol])]
        stopped = Check("every short stopped", not naked,
                        "; ".join(naked) or f"{len(entries)} entry fill(s), each followed by a "
                        f"stop" + (" (no entry filled: proves little)" if not entries else ""))
        apart = [f"{a.kind}: {a.message[:120]}" for a in paper.alerts() if a.kind in DIVERGENCE]
        together = Check("engine and broker never apart", not apart,
                         "; ".join(apart[:3]) or "no orphan, phantom or mismatch found by the "
                         "reconciler")
    finally:
        paper.close()
        replay.close()
    return [bars, stopped, together]
