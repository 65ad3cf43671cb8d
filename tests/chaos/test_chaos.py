"""The chaos run, short form (CI): a 30-minute synthetic session at 20x (about 100 s) against the
standalone simulator with its faults on a schedule, exceptions injected into every kind of actor
and the engine database locked now and then (tests/chaos/harness.py); then the invariants and
the security checks. The long form and the soak: ``python -m tests.chaos.harness --help``.

``CHAOS_SEED`` (fault seed) and ``CHAOS_SPEED`` come from the environment for other runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosPlan, ChaosResult, run_chaos

SEED = int(os.environ.get("CHAOS_SEED", "2"))
SPEED = float(os.environ.get("CHAOS_SPEED", "20"))


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosResult]:
    out = Path(tmp_path_factory.mktemp("chaos"))
    result = run_chaos(ChaosPlan(speed=SPEED, fault_seed=SEED), out)
    print("\n" + "\n".join(result.lines))
    yield result


@pytest.mark.timeout(400)
def test_faults_cost_nothing(chaos: ChaosResult) -> None:
    failed = [c.line() for c in chaos.checks if not c.passed]
    assert not failed, "\n".join(failed)
    names = {c.name for c in chaos.checks}
    assert {"no duplicate order", "stop within 1 s of fill", "trades match", "positions match",
            "realized P&L matches", "bars complete", "crashes recovered"} <= names


@pytest.mark.timeout(400)
def test_no_secret_leaks_and_nothing_is_exposed(chaos: ChaosResult) -> None:
    failed = [c.line() for c in chaos.security if not c.passed]
    assert not failed, "\n".join(failed)
    assert {c.name for c in chaos.security} >= {"no API key in files", "simulator refuses keys",
                                                "control refuses others", "loopback only"}
