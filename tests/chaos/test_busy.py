"""Paper on a busy machine, short form (CI): a 30-minute synthetic session at 120x with two
CPU-bound processes beside it (tests/chaos/busy.py): nothing is lost, nothing is late, every
short is stopped, and the run's own end-of-session checks pass. The long form:
``python -m tests.chaos.harness --hogs 2 --minutes 120`` (or ``--day``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.busy import BusyPlan, run_busy


@pytest.mark.timeout(900)
def test_paper_on_a_busy_machine_loses_nothing(tmp_path: Path) -> None:
    result = run_busy(BusyPlan(minutes=30, speed=120.0, hogs=2), tmp_path / "busy")
    print("\n" + "\n".join(result.lines))
    failed = [c.line() for c in result.checks if not c.passed]
    assert not failed, "\n".join(failed)
