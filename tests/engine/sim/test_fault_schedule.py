"""Fault schedules (``run.py simulator --faults FILE``): the file format and its validation, the
runner playing a schedule against a real simulator over loopback sockets, and the random REST
faults (a share of calls answering 500 or timing out)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from engine.sim.faults import RandomRestFaults
from engine.sim.schedule import (
    SCHEDULABLE,
    FaultScheduleError,
    FaultScheduleRunner,
    load_fault_schedule,
    parse_fault_schedule,
)
from engine.sim.server import SimulatorServer

from .conftest import API_KEY, SYM

ROOT = Path(__file__).resolve().parents[3]

EVERY_FAULT: dict[str, dict[str, Any]] = {
    "drop_connections": {"abrupt": False}, "freeze_feed": {"frozen": True},
    "zero_prices": {"n": 2}, "malformed_frames": {"n": 1},
    "error_frames": {"n": 1, "code": "BROKER_ERROR", "message": "down"},
    "http_error": {"status": 503, "count": 2, "endpoints": ["funds"]},
    "stall": {"seconds": 0.1, "count": 1, "endpoints": "quotes"},
    "lose_reply": {"count": 1, "endpoints": ["placeorder"]},
    "rate_limit": {"count": 3, "retry_after": 0.5, "endpoints": None},
    "malformed": {"count": 1}, "reject_orders": {"n": 1, "reason": "RMS"},
    "close_by_hand": {}, "cancel_by_hand": {}, "lose_state": {"archive": None},
    "random_rest_faults": {"http_error_rate": 0.1, "timeout_rate": 0.05, "timeout_s": 0.8,
                           "seed": 2},
    "clear": {},
}


def call(sim: SimulatorServer, endpoint: str, timeout: float = 5.0,
         **fields: Any) -> requests.Response:
    return requests.post(f"{sim.rest_url}/api/v1/{endpoint}",
                         json={"apikey": API_KEY, **fields}, timeout=timeout)


def place(sim: SimulatorServer, timeout: float = 5.0) -> requests.Response:
    return call(sim, "placeorder", timeout=timeout, strategy="t", symbol=SYM, exchange="NFO",
                action="BUY", quantity=65, pricetype="MARKET", product="MIS")


# -- the file ---------------------------------------------------------------------------------


def test_every_schedulable_fault_parses_and_events_come_in_time_order() -> None:
    assert set(EVERY_FAULT) == set(SCHEDULABLE)
    events = [{"at_s": 20.0 - i, "fault": name, **args}
              for i, (name, args) in enumerate(EVERY_FAULT.items())]
    schedule = parse_fault_schedule({"random": {"http_error_rate": 0.1, "seed": 3},
                                     "events": events})
    assert [e.at_s for e in schedule.events] == sorted(e["at_s"] for e in events)
    assert schedule.events[0].fault == "clear"
    assert dict(schedule.random) == {"http_error_rate": 0.1, "seed": 3}
    assert dict(schedule.events[-1].args) == {"abrupt": False}


@pytest.mark.parametrize(("data", "message"), [
    ([], "expected a JSON object"),
    ({"evnts": []}, "unknown key(s) ['evnts']"),
    ({"events": {}}, "'events' must be a list"),
    ({"random": []}, "'random' must be an object"),
    ({"random": {"http_eror_rate": 0.1}}, "random: got an unexpected keyword argument"),
    ({"random": {"http_error_rate": 1.5}}, "random: http_error_rate must be within [0, 1]"),
    ({"random": {"timeout_rate": "5%"}}, "random: 'timeout_rate' must be int or float"),
    ({"events": [{"fault": "clear"}]}, "event 0: 'at_s' must be a number of seconds >= 0"),
    ({"events": [{"at_s": -1, "fault": "clear"}]}, "event 0: 'at_s' must be a number"),
    ({"events": [{"at_s": True, "fault": "clear"}]}, "event 0: 'at_s' must be a number"),
    ({"events": [{"at_s": 1, "fault": "reboot"}]}, "event 0: unknown fault 'reboot'"),
    ({"events": [{"at_s": 1, "fault": "clear"},
                 {"at_s": 2, "fault": "stall", "seconds": 1, "secs": 1}]},
     "event 1: got an unexpected keyword argument 'secs'"),
    ({"events": [{"at_s": 1, "fault": "stall"}]}, "event 0: missing a required argument"),
    ({"events": [{"at_s": 1, "fault": "rate_limit", "count": "3"}]},
     "event 0: 'count' must be int, got '3'"),
    ({"events": [{"at_s": 1, "fault": "freeze_feed", "frozen": 1}]},
     "event 0: 'frozen' must be bool, got 1"),
    ({"events": [{"at_s": 1, "fault": "zero_prices", "n": True}]},
     "event 0: 'n' must be int, got True"),
    ({"events": [{"at_s": 1, "fault": "malformed", "endpoints": [1]}]},
     "event 0: 'endpoints' must list endpoint names"),
])
def test_a_bad_schedule_is_refused_with_the_event_named(data: object, message: str) -> None:
    with pytest.raises(FaultScheduleError) as caught:
        parse_fault_schedule(data, "f.json")
    assert str(caught.value).startswith("f.json")
    assert message in str(caught.value)


def test_an_unreadable_file_is_a_schedule_error(tmp_path: Path) -> None:
    with pytest.raises(FaultScheduleError, match="cannot read the fault schedule"):
        load_fault_schedule(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"events": [')
    with pytest.raises(FaultScheduleError, match=r"bad\.json: not JSON"):
        load_fault_schedule(bad)


def test_the_simulator_command_refuses_a_bad_schedule_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "faults.json"
    bad.write_text(json.dumps({"events": [{"at_s": 1, "fault": "reboot"}]}))
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "simulator", "--faults",
                           str(bad), "--state-dir", str(tmp_path / "var")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"simulator: {bad}: event 0: unknown fault 'reboot'; known: {', '.join(SCHEDULABLE)}"]


# -- playing a schedule ------------------------------------------------------------------------


def test_the_runner_plays_events_at_their_time(sim: SimulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"events": [
        {"at_s": 0.4, "fault": "http_error", "status": 503, "count": 1},
        {"at_s": 0.0, "fault": "rate_limit", "count": 2, "retry_after": 0.5,
         "endpoints": ["funds"]},
    ]}))
    runner = FaultScheduleRunner(sim.faults, load_fault_schedule(path))
    started = time.monotonic()
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while runner.applied == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [call(sim, "funds").status_code for _ in range(3)] == [429, 429, 200]
        assert runner.join(5)
        assert time.monotonic() - started >= 0.4
        assert call(sim, "ping").status_code == 503
        assert call(sim, "ping").status_code == 200
        assert (runner.applied, runner.failed) == (2, 0)
    finally:
        runner.stop()


def test_an_event_the_simulator_refuses_is_skipped_and_counted(sim: SimulatorServer) -> None:
    schedule = parse_fault_schedule({"events": [
        {"at_s": 0.0, "fault": "http_error", "status": 200},  # not an error status
        {"at_s": 0.0, "fault": "malformed", "count": 1, "endpoints": "funds"},
    ]})
    runner = FaultScheduleRunner(sim.faults, schedule).start()
    assert runner.join(5)
    runner.stop()
    assert (runner.applied, runner.failed) == (1, 1)
    with pytest.raises(json.JSONDecodeError):
        call(sim, "funds").json()


# -- random REST faults -----------------------------------------------------------------------


def test_random_http_errors_hit_the_share_asked_repeatably(sim: SimulatorServer) -> None:
    def statuses() -> list[int]:
        sim.faults.random_rest_faults(http_error_rate=0.3, http_error_status=500, seed=11)
        return [call(sim, "ping").status_code for _ in range(60)]

    first = statuses()
    assert statuses() == first  # the same seed draws the same calls
    errors = first.count(500)
    assert set(first) == {200, 500} and 8 <= errors <= 30
    assert sim.faults.random_faults_injected() == {"http_error": 2 * errors}
    sim.faults.clear()
    assert {call(sim, "ping").status_code for _ in range(20)} == {200}


def test_a_random_timeout_is_processed_after_the_client_gave_up(sim: SimulatorServer) -> None:
    sim.faults.random_rest_faults(timeout_rate=1.0, timeout_s=0.4, endpoints=["placeorder"])
    assert call(sim, "ping").status_code == 200  # other endpoints are left alone
    with pytest.raises(requests.Timeout):
        place(sim, timeout=0.1)
    assert sim.broker.orderbook() == []  # not yet: the server is still holding it
    deadline = time.monotonic() + 5
    while not sim.broker.orderbook() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sim.broker.orderbook()) == 1
    assert sim.faults.random_faults_injected() == {"timeout": 1}


def test_armed_faults_come_before_the_random_ones(sim: SimulatorServer) -> None:
    sim.faults.random_rest_faults(http_error_rate=1.0, http_error_status=502)
    sim.faults.rate_limit(count=1, retry_after=0.1)
    assert [call(sim, "ping").status_code for _ in range(2)] == [429, 502]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"http_error_rate": -0.1}, "http_error_rate must be within"),
    ({"timeout_rate": 0.6, "http_error_rate": 0.6}, "must not exceed 1"),
    ({"http_error_status": 302}, "must be 4xx or 5xx"),
    ({"timeout_s": -1.0}, "timeout_s must be >= 0"),
])
def test_random_fault_chances_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomRestFaults(**kwargs)
