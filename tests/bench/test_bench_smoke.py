"""Smoke test of the benchmarks: each script runs end to end with ``--quick`` and writes the
JSON the README's figures are read from. The five run at once (they mostly wait on real time),
so the numbers they print mean nothing here and are never checked; only the keys are."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: script → figures its JSON must hold
EXPECTED: dict[str, tuple[str, ...]] = {
    "tick_to_order": ("engine_p50_ms", "engine_p99_ms", "engine_max_ms", "engine_n",
                      "plain_p50_ms", "plain_p99_ms", "actor_overhead_p50_ms", "target_met"),
    "risk_reaction": ("engine_first_request_p50_ms", "engine_first_request_p99_ms",
                      "engine_first_request_max_ms", "engine_exit_placed_p99_ms",
                      "polling_p50_ms", "polling_p99_ms", "poll_interval_s", "target_met"),
    "restart": ("runs", "ready_p50_s", "ready_max_s", "process_p50_s", "engine_p50_s",
                "imports_s", "target_met"),
    "scaling": ("options_22_ticks_per_s", "options_22_threads", "options_22_peak_mb",
                "options_82_ticks_per_s", "options_82_ratio_to_plain", "options_82_threads",
                "options_82_peak_mb"),
    "dispatch_throughput": ("delivery_cost_in_plain_calls",),
}
#: counts that must not be zero: the measured path really ran (no timing is checked)
SAMPLES = {"tick_to_order": ("engine_n", "plain_n"),
           "risk_reaction": ("engine_first_request_n", "polling_n"), "restart": ("runs",)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("bench")
    procs = {}
    for name in EXPECTED:
        log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - closed below
        procs[name] = (subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick", "--json",
             str(folder / f"{name}.json")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT),
            log)
    try:
        yield {"folder": folder, "procs": procs}
    finally:
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_quick_run_writes_its_json(runs: dict[str, Any], name: str) -> None:
    proc, _ = runs["procs"][name]
    try:
        code = proc.wait(85)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} --quick did not finish within 85 s")
    output = (runs["folder"] / f"{name}.log").read_text()
    assert code == 0, output[-3000:]
    result = json.loads((runs["folder"] / f"{name}.json").read_text())
    assert result["name"] == name
    assert result["rows"], "no table rows"
    missing = [key for key in EXPECTED[name] if key not in result["figures"]]
    assert not missing, f"{name}: figures missing {missing}"
    empty = [key for key in SAMPLES.get(name, ()) if not result["figures"][key]]
    assert not empty, f"{name}: no samples for {empty}"
    assert name in output  # the table was printed
