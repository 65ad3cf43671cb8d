"""The actor base: dispatch, actor-owned timers, and the replay flush barrier."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.messages import FlushToken, TimerFired
from engine.runtime.actor import EngineActor, handles
from engine.runtime.barrier import StepBarrier
from engine.runtime.clock import ScaledClock, VirtualClock, WallClock
from engine.runtime.registry import Registry


class Relay(EngineActor):
    """Appends what it gets to a shared log, then passes it on to ``downstream`` (if any)."""

    def __init__(self, *, log: list[tuple[str, Any]], downstream: str | None = None,
                 delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log
        self.downstream = downstream
        self.delay = delay

    @handles(int)
    def on_int(self, n: int) -> None:
        if self.delay:
            time.sleep(self.delay)  # simulate slow work so a missing barrier would show
        self.log.append((self.name, n))
        if self.downstream:
            self.tell(self.downstream, n)

    @handles(TimerFired)
    def on_timer(self, t: TimerFired) -> None:
        self.log.append((self.name, f"timer:{t.name}@{t.due}"))
        if self.downstream:
            self.tell(self.downstream, -1)


@pytest.fixture
def registry():
    reg = Registry(VirtualClock(start=0.0))
    refs: list[Any] = []
    yield reg, refs
    for ref in refs:
        ref.stop()


def start(reg: Registry, refs: list[Any], name: str, **kw: Any) -> Any:
    ref = Relay.start(name=name, registry=reg, clock=reg._clock, **kw)
    reg.declare(name)
    reg.register(name, ref)
    refs.append(ref)
    return ref


def test_barrier_waits_for_every_message_a_step_caused(registry) -> None:
    reg, refs = registry
    log: list[tuple[str, Any]] = []
    start(reg, refs, "c", log=log, delay=0.002)
    start(reg, refs, "b", log=log, downstream="c", delay=0.002)
    start(reg, refs, "a", log=log, downstream="b")
    reg.track_external_sends(True)
    for step in range(3):
        for n in range(5):
            reg.tell("a", step * 10 + n)
        barrier = StepBarrier()
        targets = reg.take_external_sends()
        assert targets == {"a"}
        barrier.add(len(targets))
        for name in targets:
            reg.tell(name, FlushToken(step, barrier))
        assert barrier.wait(5.0)
        # everything this step caused has reached the end of the chain already
        assert [n for who, n in log if who == "c"][-5:] == [step * 10 + n for n in range(5)]
    reg.take_external_sends()  # the tokens themselves were told from outside too


def test_barrier_counts_actor_forwarding() -> None:
    b = StepBarrier()
    b.add(1)
    b.add(2)   # the first holder forwarded to two names
    b.done()
    assert not b.wait(0.01) and b.outstanding == 2
    b.done()
    b.done()
    assert b.wait(0.01)


def test_actor_timer_fires_through_the_virtual_clock(registry) -> None:
    reg, refs = registry
    log: list[tuple[str, Any]] = []
    start(reg, refs, "sink", log=log)
    ref = start(reg, refs, "t", log=log, downstream="sink")
    actor = ref._actor_weakref()
    actor.schedule_at(5.0, "close")
    actor.schedule_every(10.0, "beat", first=10.0)
    reg.track_external_sends(True)
    reg._clock.advance_to(25.0)
    assert reg.take_external_sends() == {"t"}  # timer sends count as outside sends
    barrier = StepBarrier()
    barrier.add(1)
    reg.tell("t", FlushToken(0, barrier))
    assert barrier.wait(5.0)
    timers = [x for who, x in log if who == "t"]
    assert timers == ["timer:close@5.0", "timer:beat@10.0", "timer:beat@20.0"]
    assert [x for who, x in log if who == "sink"] == [-1, -1, -1]


def test_timers_do_not_outlive_their_actor() -> None:
    clock = WallClock()
    reg = Registry(clock)
    log: list[tuple[str, Any]] = []
    first = Relay.start(name="t", registry=reg, clock=clock, log=log)
    reg.declare("t")
    reg.register("t", first)
    actor = first._actor_weakref()
    handle = actor.schedule_every(0.02, "beat")
    first.stop()
    second = Relay.start(name="t", registry=reg, clock=clock, log=log)
    reg.register("t", second)
    time.sleep(0.1)
    assert handle.cancelled
    assert not [x for _, x in log if isinstance(x, str)]
    second.stop()
    clock.stop()


class EarlyTimer(Relay):
    """Schedules a timer due at once from ``on_start``, before anyone registered it."""

    def on_start(self) -> None:
        self.schedule_at(self.clock.time(), "startup")


def test_a_timer_due_before_the_actor_is_registered_still_reaches_it() -> None:
    clock = WallClock()
    reg = Registry(clock)
    log: list[tuple[str, Any]] = []
    reg.declare("early")
    ref = EarlyTimer.start(name="early", registry=reg, clock=clock, log=log)
    try:
        time.sleep(0.05)  # the timer fires while the name has no actor yet
        reg.register("early", ref)
        deadline = time.monotonic() + 2.0
        while not log and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [x for _, x in log if str(x).startswith("timer:startup")]
    finally:
        ref.stop()
        clock.stop()


def test_unexpected_message_is_logged_not_fatal(registry, log_capture) -> None:
    reg, refs = registry
    ref = start(reg, refs, "x", log=[])
    assert ref.ask("a string nobody handles", timeout=2) is None
    assert ref.is_alive()
    assert "unexpected message str" in log_capture.getvalue()


class Slow(EngineActor):
    """Handles each timer slowly, as an actor waiting on a slow broker would."""

    def __init__(self, *, got: list[float], **kw: Any) -> None:
        super().__init__(**kw)
        self.got = got

    def on_start(self) -> None:
        self.schedule_every(1.0, "poll")

    @handles(TimerFired)
    def on_timer(self, t: TimerFired) -> None:
        self.got.append(t.due)
        time.sleep(0.05)


def test_a_periodic_timer_never_piles_up_behind_a_slow_actor() -> None:
    """At 1000x a 1 s timer is due every real millisecond; the actor takes 50 ms per firing.
    Firings are skipped while one waits: the inbox holds at most one, not hundreds."""
    clock = ScaledClock(start=0.0, speed=1000.0)
    reg = Registry(clock)
    got: list[float] = []
    ref = Slow.start(name="slow", registry=reg, clock=clock, got=got)
    reg.declare("slow")
    reg.register("slow", ref)
    try:
        time.sleep(0.5)
        assert ref.actor_inbox.qsize() <= 1
        assert len(got) <= 12  # 0.5 s / 50 ms, not 500
    finally:
        ref.stop()
        clock.stop()


def test_real_seconds_scale_with_the_clock_speed() -> None:
    scaled = ScaledClock(start=0.0, speed=60.0)
    try:
        actor = Relay.start(name="r", log=[], clock=scaled).proxy()
        assert actor.real_s(1.0).get() == 60.0
        actor.stop()
        virtual = Relay.start(name="v", log=[], clock=VirtualClock(0.0)).proxy()
        assert virtual.real_s(1.0).get() == 1.0
        virtual.stop()
    finally:
        scaled.stop()
