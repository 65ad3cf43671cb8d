"""The multi-day soak's per-day logic (tests/chaos/soak.py): memory judged across days, the
engine's dated end-of-session failures given to their day, faults given to the day whose
window holds them, and the days' fault plans merged into one schedule the simulator takes.
The soak itself (5 days, ~15 min) is run by hand: RELIABILITY.md."""

from __future__ import annotations

from engine.sim.schedule import parse_fault_schedule
from tests.chaos.faultplan import build_fault_plan
from tests.chaos.invariants import _lost_fill_check
from tests.chaos.soak import checks_of_day, in_window, memory_over_days, merge_plans

MIB = 1024


def test_memory_is_judged_from_the_first_days_close_to_the_last() -> None:
    flat = memory_over_days([("d1", 120 * MIB), ("d2", 150 * MIB), ("d3", 130 * MIB)], 0.10)
    assert flat.passed, flat.detail  # a peak in between is not growth
    assert "last/first +8.3%" in flat.detail
    grown = memory_over_days([("d1", 120 * MIB), ("d2", 125 * MIB), ("d3", 133 * MIB)], 0.10)
    assert not grown.passed and "+10.8%" in grown.detail
    missing = memory_over_days([("d1", 120 * MIB), ("d2", None)], 0.10)
    assert not missing.passed and "end of 1 of 2 days" in missing.detail


def test_dated_failures_go_to_their_day_undated() -> None:
    failed = ("FAILED 2025-01-27: fills of broker order 7: engine 65, broker tradebook 0",
              "FAILED 2025-01-28: 1 order(s) in unknown state: s-3")
    mine = checks_of_day(failed, "2025-01-27")
    assert mine == ("FAILED fills of broker order 7: engine 65, broker tradebook 0",)
    # undated, a lost fill of a state-loss scene is recognised as on a one-day run
    assert _lost_fill_check(mine[0], frozenset({"7"}))
    # a one-day chaos run under the lifecycle sees the dated line itself
    assert _lost_fill_check(failed[0], frozenset({"7"}))
    assert not _lost_fill_check(failed[0], frozenset({"8"}))
    assert checks_of_day(failed, "2025-01-29") == ()


def test_faults_belong_to_the_day_whose_window_holds_them() -> None:
    at = [5.0, 60.0, 119.9, 120.0, 300.0]
    assert in_window(at, list("abcde"), 0.0, 120.0) == ["a", "b", "c"]
    assert in_window(at, list("abcde"), 120.0, float("inf")) == ["d", "e"]


def test_days_plans_merge_into_one_schedule_with_random_faults_per_day() -> None:
    day1 = build_fault_plan(seed=1, start_s=30.0, market_end_s=80.0)
    day2 = build_fault_plan(seed=2, start_s=200.0, market_end_s=250.0)
    merged = merge_plans([(30.0, day1), (200.0, day2)])
    events = merged.simulator_json["events"]
    assert "random" not in merged.simulator_json  # switched on per day, off by each clear
    on = [e["at_s"] for e in events if e["fault"] == "random_rest_faults"]
    off = [e["at_s"] for e in events if e["fault"] == "clear"]
    assert on == [30.0, 200.0] and off == [80.5, 250.5]
    assert [e["at_s"] for e in events] == sorted(e["at_s"] for e in events)
    assert len(merged.crashes) == len(day1.crashes) + len(day2.crashes)
    assert all(30.0 <= c.at_s < 80.0 for c in merged.crashes[:len(day1.crashes)])
    schedule = parse_fault_schedule(merged.simulator_json)  # the simulator takes it
    assert len(schedule.events) == len(events)
