"""The Health actor: heartbeat, coverage and staleness, feed-silent alert, alert throttling."""

from __future__ import annotations

from typing import Any

import pytest

from actors.health import Health, HealthSettings
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Alert,
    FeedHealth,
    HealthUpdate,
    Heartbeat,
    Severity,
    StatusRequest,
)
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from tests.support import Collector, wait_for

T0 = ist_epoch(2025, 9, 3, 10, 0)


@pytest.fixture
def health():
    clock = VirtualClock(start=T0)
    reg = Registry(clock)
    stored: list[Any] = []
    refs = []
    for name, cls, kw in (("store", Collector, {"got": stored, "kinds": (Heartbeat, Alert)}),
                          ("health", Health, {"settings": HealthSettings(),
                                              "instrument": InstrumentSpec(),
                                              "restarts": lambda: 2})):
        ref = cls.start(name=name, registry=reg, clock=clock, **kw)
        reg.declare(name)
        reg.register(name, ref)
        refs.append(ref)
    yield clock, refs[1], stored
    for ref in reversed(refs):
        ref.stop()


def report(ts: float, last: dict[str, float], subscribed: tuple[str, ...]) -> FeedHealth:
    return FeedHealth(ts=ts, connected=True, subscribed=subscribed,
                      last_tick=tuple(sorted(last.items())))


def test_heartbeat_line_counts_live_and_stale_symbols(health, log_capture) -> None:
    clock, ref, stored = health
    syms = ("A", "B", "C", "D")
    # A and B ticked recently, C ticked 6 minutes ago (stale), D never ticked
    ref.tell(report(T0 + 59, {"A": T0 + 58, "B": T0 + 50, "C": T0 - 301}, syms))
    ref.tell(HealthUpdate("positions", 2))
    ref.tell(HealthUpdate("state", "REDUCING"))
    ref.ask(StatusRequest(), timeout=5)
    clock.advance_to(T0 + 60)
    assert wait_for(lambda: any(isinstance(m, Heartbeat) for m in stored))
    beat = next(m for m in stored if isinstance(m, Heartbeat))
    assert beat.line() == ("[HEARTBEAT] Positions: 2 | Data: 2/4 | Coverage: 50.0% | Stale: 2 | "
                           "Restarts: 2 | State: REDUCING")
    assert beat.line() in log_capture.getvalue()
    status = ref.ask(StatusRequest(), timeout=5)
    assert {s["symbol"] for s in status["stale"]} == {"C", "D"}
    assert status["coverage"] == 50.0


def test_feed_silent_alert_in_market_hours_and_throttled(health) -> None:
    clock, ref, stored = health
    ref.tell(report(T0, {"A": T0 - 40}, ("A",)))  # last tick 40 s ago: silent (> 30 s)
    clock.advance_to(T0 + 5)
    assert wait_for(lambda: any(isinstance(m, Alert) for m in stored))
    clock.advance_to(T0 + 600)  # many more checks within the hour: throttled
    status = ref.ask(StatusRequest(), timeout=5)
    assert status["alerts_sent"] == 1 and status["alerts_suppressed"] > 50
    alerts = [m for m in stored if isinstance(m, Alert)]
    assert [a.kind for a in alerts] == ["feed_silent"]


def test_no_feed_silent_alert_outside_market_hours(health) -> None:
    clock, ref, stored = health
    night = ist_epoch(2025, 9, 3, 16, 0)
    clock.advance_to(night)
    ref.tell(report(night, {"A": night - 3600}, ("A",)))
    clock.advance_to(night + 60)
    ref.ask(StatusRequest(), timeout=5)
    assert not [m for m in stored if isinstance(m, Alert) and m.kind == "feed_silent"]


def test_distinct_critical_alerts_are_never_throttled(health) -> None:
    _, ref, stored = health
    for i in range(3):
        ref.tell(Alert("naked_position", f"no stop on X ({i})", T0 + i, Severity.CRITICAL))
        ref.tell(Alert("slow_quote", f"quote late ({i})", T0 + i, Severity.WARNING))
    status = ref.ask(StatusRequest(), timeout=5)
    assert status["alerts_sent"] == 4 and status["alerts_suppressed"] == 2
    # the store is another actor: wait for what health forwarded to reach it
    assert wait_for(lambda: len([m for m in stored if isinstance(m, Alert)]) == 4)
    kinds = [m.kind for m in stored if isinstance(m, Alert)]
    assert kinds.count("naked_position") == 3
    assert kinds.count("slow_quote") == 1


def test_the_same_critical_alert_again_passes_only_at_growing_intervals(health) -> None:
    _, ref, stored = health
    for i in range(360):  # the same failure every 5 s for half an hour
        ref.tell(Alert("reconcile_failed", "broker unreadable", T0 + 5 * i, Severity.CRITICAL))
    status = ref.ask(StatusRequest(), timeout=5)
    # passed at 0, 60, 180, 420 and 900 s (intervals 60 s doubling); the rest counted
    assert status["alerts_sent"] == 5 and status["alerts_suppressed"] == 355
    assert wait_for(lambda: len([m for m in stored if isinstance(m, Alert)]) == 5)
    assert [m.ts - T0 for m in stored if isinstance(m, Alert)] == [0, 60, 180, 420, 900]
