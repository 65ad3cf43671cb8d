"""Supervisor tree with real Pykka actors and threads: strategies, restart types, intensity and
escalation, backoff, stashing across restarts, hang detection, nesting, orderly stop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import pykka
import pytest

from engine.messages import DeadLetter, RestartRecord
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.clock import Clock, VirtualClock, WallClock
from engine.runtime.registry import Registry
from engine.runtime.supervisor import (
    ChildSpec,
    ChildStatus,
    RestartType,
    Strategy,
    SupervisionSettings,
    SupervisorHandle,
    SupervisorSpec,
    start_tree,
)

WAIT = 5.0

FAST = SupervisionSettings(max_restarts=20, within_seconds=60.0, backoff_min=0.005,
                           backoff_max=0.02, backoff_jitter=0.0, stable_after=30.0,
                           liveness_interval=0.05, liveness_timeout=0.3, stash_limit=100)
QUIET = replace(FAST, liveness_interval=1000.0, liveness_timeout=1000.0)  # no liveness pings


# -- test actors --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crash:
    why: str = "boom"


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Note:
    value: Any


@dataclass(frozen=True)
class Hold:
    release: threading.Event = field(compare=False)


@dataclass(frozen=True)
class Work:
    seconds: float


@dataclass(frozen=True)
class Echo:
    value: Any


@dataclass(frozen=True)
class AskOf:
    name: str


class Journal:
    """What the actors did, in order, across every generation (the test's durable record)."""

    def __init__(self) -> None:
        self._events: list[tuple[Any, ...]] = []
        self._cond = threading.Condition()

    def add(self, *event: Any) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def events(self) -> list[tuple[Any, ...]]:
        with self._cond:
            return list(self._events)

    def wait_for(self, predicate: Callable[[list[tuple[Any, ...]]], bool],
                 timeout: float = WAIT) -> list[tuple[Any, ...]]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self._events), timeout)
            assert ok, f"timed out; journal: {self._events}"
            return list(self._events)

    def wait_event(self, *event: Any, times: int = 1) -> list[tuple[Any, ...]]:
        return self.wait_for(lambda evs: evs.count(event) >= times)


class Worker(EngineActor):
    def __init__(self, supervision: Supervision, journal: Journal) -> None:
        super().__init__(supervision)
        self.journal = journal

    def on_start(self) -> None:
        self.journal.add("start", self.name)

    def on_stop(self) -> None:
        self.journal.add("stop", self.name)

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        self.journal.add("crash", self.name)

    @handles(Crash)
    def on_crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.why)

    @handles(Quit)
    def on_quit(self, msg: Quit) -> None:
        self.stop()

    @handles(Note)
    def on_note(self, msg: Note) -> None:
        self.journal.add("note", self.name, self.generation, msg.value)

    @handles(Hold)
    def on_hold(self, msg: Hold) -> None:
        msg.release.wait(WAIT)
        self.journal.add("held", self.name, self.generation)

    @handles(Work)
    def on_work(self, msg: Work) -> None:
        time.sleep(msg.seconds)
        self.journal.add("worked", self.name)

    @handles(Echo)
    def on_echo(self, msg: Echo) -> Any:
        return msg.value

    @handles(AskOf)
    def on_ask_of(self, msg: AskOf) -> None:
        assert self.registry is not None
        self.journal.add("asking", self.name, msg.name)
        try:
            self.registry.ask(msg.name, Echo("hi"), timeout=30.0)
            self.journal.add("answered", self.name)
        except pykka.Timeout as exc:
            self.journal.add("gave up", self.name, type(exc).__name__)


def worker(name: str, journal: Journal,
           restart: RestartType = RestartType.PERMANENT) -> ChildSpec:
    return ChildSpec(name, lambda sup: Worker.start(sup, journal), restart=restart,
                     shutdown_timeout=2.0)


# -- harness -----------------------------------------------------------------------------------
@dataclass
class Tree:
    handle: SupervisorHandle
    registry: Registry
    clock: Clock
    journal: Journal
    safe_stops: list[str]
    restarts: list[RestartRecord]
    dead: list[DeadLetter]

    def status(self, name: str) -> ChildStatus:
        return next(s for s in self.handle.status() if s.name == name)

    def wait_status(self, name: str, predicate: Callable[[ChildStatus], bool],
                    timeout: float = WAIT) -> ChildStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if predicate(status):
                return status
            assert time.monotonic() < deadline, f"timed out; {name}: {status}"
            time.sleep(0.002)

    def since(self, mark: int) -> list[tuple[Any, ...]]:
        return self.journal.events()[mark:]


@pytest.fixture
def grow() -> Iterator[Callable[..., Tree]]:
    """Start a tree; stop it (and its clock) after the test."""
    started: list[Tree] = []

    def _grow(spec: SupervisorSpec, journal: Journal, *, clock: Clock | None = None,
              stash_limit: int = 100, rng: random.Random | None = None) -> Tree:
        clock = clock or WallClock()
        dead: list[DeadLetter] = []
        registry = Registry(clock, stash_limit=stash_limit, on_dead_letter=dead.append)
        safe_stops: list[str] = []
        restarts: list[RestartRecord] = []
        handle = start_tree(spec, registry=registry, clock=clock,
                            on_safe_stop=safe_stops.append, on_restart=restarts.append,
                            rng=rng or random.Random(1))
        tree = Tree(handle, registry, clock, journal, safe_stops, restarts, dead)
        started.append(tree)
        return tree

    yield _grow
    for tree in started:
        tree.handle.stop(timeout=WAIT)
        tree.clock.stop()


def flat(strategy: Strategy, journal: Journal, names: str = "a b c",
         settings: SupervisionSettings = FAST) -> SupervisorSpec:
    """A root over workers named by the space-separated ``names``."""
    return SupervisorSpec("root", strategy, [worker(n, journal) for n in names.split()],
                          settings)


# -- starting and stopping ------------------------------------------------------------------------
def test_children_start_in_order_and_an_orderly_stop_goes_in_reverse_restarting_nothing(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ALL, journal), journal)
    assert journal.events() == [("start", "a"), ("start", "b"), ("start", "c")]
    assert [(s.name, s.alive, s.restarts) for s in tree.handle.status()] == [
        ("a", True, 0), ("b", True, 0), ("c", True, 0)]

    assert tree.handle.stop(timeout=WAIT)
    assert tree.handle.wait_until_stopped(0)
    assert journal.events()[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert tree.handle.restart_count() == 0
    assert tree.safe_stops == []
    assert not any(s.alive for s in tree.handle.status())
    tree.registry.tell("a", Note("after the end"))
    assert tree.dead[-1].reason == "retired"


def test_names_must_be_unique_across_the_tree() -> None:
    journal = Journal()
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE, [
        worker("a", journal),
        SupervisorSpec("sub", Strategy.ONE_FOR_ONE, [worker("a", journal)])])
    clock = VirtualClock()
    with pytest.raises(ValueError, match="unique"):
        start_tree(spec, registry=Registry(clock), clock=clock, on_safe_stop=print)


def test_settings_cross_checks() -> None:
    assert SupervisionSettings().problems() == []
    bad = SupervisionSettings(backoff_min=5, backoff_max=1, liveness_interval=5,
                              liveness_timeout=1)
    assert [keys[0] for keys, _ in bad.problems()] == ["backoff_max", "liveness_timeout"]


# -- strategies ---------------------------------------------------------------------------------
def test_one_for_one_restarts_only_the_failed_child(grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal), journal)
    before = {s.name: s.generation for s in tree.handle.status()}
    mark = len(journal.events())
    tree.registry.tell("b", Crash("bad bar"))
    journal.wait_event("start", "b", times=2)
    assert tree.since(mark) == [("crash", "b"), ("start", "b")]
    b = tree.wait_status("b", lambda s: s.alive and s.generation != before["b"])
    assert b.restarts == 1
    after = {s.name: s.generation for s in tree.handle.status()}
    assert after["a"] == before["a"] and after["c"] == before["c"]
    [record] = tree.handle.restart_history()
    assert (record.name, record.supervisor, record.reason, record.attempt) == (
        "b", "root", "RuntimeError: bad bar", 1)
    assert tree.restarts == [record]  # the on_restart hook saw it too


def test_one_for_all_stops_all_in_reverse_and_restarts_all_in_order(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ALL, journal), journal)
    mark = len(journal.events())
    tree.registry.tell("b", Crash())
    journal.wait_event("start", "c", times=2)
    assert tree.since(mark) == [("crash", "b"), ("stop", "c"), ("stop", "a"),
                                ("start", "a"), ("start", "b"), ("start", "c")]
    reasons = {r.name: r.reason for r in tree.handle.restart_history()}
    assert reasons == {"a": "one_for_all after b failed: RuntimeError: boom",
                       "b": "RuntimeError: boom",
                       "c": "one_for_all after b failed: RuntimeError: boom"}


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.REST_FOR_ONE, journal, names="a b c d"), journal)
    mark = len(journal.events())
    tree.registry.tell("b", Crash())
    journal.wait_event("start", "d", times=2)
    assert tree.since(mark) == [("crash", "b"), ("stop", "d"), ("stop", "c"),
                                ("start", "b"), ("start", "c"), ("start", "d")]
    assert tree.status("a").restarts == 0
    assert tree.handle.restart_count() == 3


def test_a_sibling_asking_the_failed_child_does_not_hold_its_restart(
        grow: Callable[..., Tree]) -> None:
    """rest_for_one: ``b`` waits for ``a``'s next incarnation inside an ask when ``a`` crashes;
    the supervisor must stop ``b`` before it restarts ``a``. Its ask gives up at once
    (``WaitCancelled``), so the restart does not wait for ``b``'s stop timeout (30 s here; the
    chaos run saw the order manager down 5 s this way, and the stop of a fill with it)."""
    journal = Journal()
    slow = [ChildSpec(n, lambda sup: Worker.start(sup, journal), shutdown_timeout=30.0)
            for n in ("a", "b")]
    tree = grow(SupervisorSpec("root", Strategy.REST_FOR_ONE, slow, FAST), journal)
    mark = len(journal.events())
    release = threading.Event()
    tree.registry.tell("a", Hold(release))
    tree.registry.tell("a", Crash())
    tree.registry.tell("b", AskOf("a"))
    journal.wait_event("asking", "b", "a")
    release.set()
    journal.wait_event("start", "b", times=2)  # WAIT (5 s) < b's stop timeout (30 s)
    events = tree.since(mark)
    assert ("gave up", "b", "WaitCancelled") in events
    assert events.index(("stop", "b")) < events.index(("start", "a"))
    assert tree.wait_status("b", lambda st: st.alive).restarts == 1


# -- restart types --------------------------------------------------------------------------------
def test_transient_is_restarted_after_a_crash_but_not_after_a_normal_stop(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE,
                          [worker("t", journal, RestartType.TRANSIENT)], FAST)
    tree = grow(spec, journal)
    tree.registry.tell("t", Crash())
    journal.wait_event("start", "t", times=2)
    tree.wait_status("t", lambda s: s.alive)

    tree.registry.tell("t", Quit())
    journal.wait_event("stop", "t")
    status = tree.wait_status("t", lambda s: s.state == "done")
    assert not status.alive
    assert tree.handle.restart_count() == 1
    tree.registry.tell("t", Note("anyone?"))
    assert tree.dead[-1].name == "t" and tree.dead[-1].reason.startswith("retired")


def test_temporary_is_never_restarted(grow: Callable[..., Tree]) -> None:
    journal = Journal()
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ALL,
                          [worker("a", journal), worker("tmp", journal, RestartType.TEMPORARY)],
                          FAST)
    tree = grow(spec, journal)
    tree.registry.tell("tmp", Crash())
    tree.wait_status("tmp", lambda s: s.state == "done")
    assert tree.handle.restart_count() == 0
    assert tree.status("a").alive and tree.status("a").restarts == 0  # no one_for_all either


def test_permanent_is_restarted_even_after_a_normal_stop(grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="p"), journal)
    tree.registry.tell("p", Quit())
    journal.wait_event("start", "p", times=2)
    assert tree.handle.restart_history()[0].reason == "stopped"


# -- intensity and escalation ---------------------------------------------------------------------
def test_too_many_restarts_at_the_root_stop_everything_and_safe_stop_once(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="a b",
                     settings=replace(FAST, max_restarts=2)), journal)
    for n in (2, 3):
        tree.registry.tell("a", Crash())
        journal.wait_event("start", "a", times=n)
        tree.wait_status("a", lambda s: s.alive)
    tree.registry.tell("a", Crash("third strike"))
    tree.registry.tell("b", Crash("at the same time"))
    assert tree.handle.wait_until_stopped(WAIT)
    assert len(tree.safe_stops) == 1
    assert "more than 2 restarts in 60.0s" in tree.safe_stops[0]
    assert "third strike" in tree.safe_stops[0] or "at the same time" in tree.safe_stops[0]
    assert not any(s.alive for s in tree.handle.status())
    assert tree.handle.restart_count() == 2


def test_nested_supervisor_restarts_its_own_children_and_nobody_else(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    sub = SupervisorSpec("sub", Strategy.ONE_FOR_ALL,
                         [worker("x", journal), worker("y", journal)], FAST)
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE,
                          [worker("a", journal), sub, worker("b", journal)], FAST)
    tree = grow(spec, journal)
    assert journal.events() == [("start", "a"), ("start", "x"), ("start", "y"),
                                ("start", "b")]
    mark = len(journal.events())
    tree.registry.tell("x", Crash())
    journal.wait_event("start", "y", times=2)
    assert tree.since(mark) == [("crash", "x"), ("stop", "y"), ("start", "x"),
                                ("start", "y")]
    assert {(r.name, r.supervisor) for r in tree.handle.restart_history()} == {
        ("x", "sub"), ("y", "sub")}
    assert tree.status("a").restarts == tree.status("b").restarts == 0
    assert tree.status("sub").restarts == 0

    assert tree.handle.stop(timeout=WAIT)
    assert tree.since(mark)[4:] == [("stop", "b"), ("stop", "y"), ("stop", "x"),
                                    ("stop", "a")]


def test_a_child_supervisor_that_gives_up_is_restarted_as_a_unit_by_its_parent(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    sub = SupervisorSpec("sub", Strategy.ONE_FOR_ONE,
                         [worker("x", journal), worker("y", journal)],
                         replace(FAST, max_restarts=0))
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE, [worker("a", journal), sub], FAST)
    tree = grow(spec, journal)
    old_y = tree.status("y").generation
    mark = len(journal.events())
    tree.registry.tell("x", Crash("corrupt state"))
    tree.registry.tell("x", Note("sent while the subtree is rebuilt"))
    journal.wait_event("start", "y", times=2)
    lifecycle = [e for e in tree.since(mark) if e[0] in ("crash", "stop", "start")]
    assert lifecycle == [("crash", "x"), ("stop", "y"), ("start", "x"), ("start", "y")]
    x_gen = tree.wait_status("x", lambda s: s.alive).generation
    journal.wait_event("note", "x", x_gen, "sent while the subtree is rebuilt")
    tree.wait_status("y", lambda s: s.alive and s.generation != old_y)

    [record] = tree.handle.restart_history()
    assert (record.name, record.supervisor) == ("sub", "root")
    assert record.reason.startswith("SupervisorEscalation: sub gave up: more than 0 restarts")
    assert "corrupt state" in record.reason
    assert tree.safe_stops == []
    assert tree.status("a").restarts == 0


def test_escalation_through_every_level_ends_in_one_safe_stop(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    strict = replace(FAST, max_restarts=0)
    sub = SupervisorSpec("sub", Strategy.ONE_FOR_ONE, [worker("x", journal)], strict)
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE, [worker("a", journal), sub], strict)
    tree = grow(spec, journal)
    tree.registry.tell("x", Crash())
    assert tree.handle.wait_until_stopped(WAIT)
    assert len(tree.safe_stops) == 1
    assert "root gave up" in tree.safe_stops[0] and "sub gave up" in tree.safe_stops[0]
    assert ("stop", "a") in journal.events()


# -- backoff --------------------------------------------------------------------------------------
def test_backoff_grows_within_jitter_bounds_and_resets_after_a_stable_run(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    settings = replace(QUIET, max_restarts=100, within_seconds=10_000.0, backoff_min=1.0,
                       backoff_max=8.0, backoff_jitter=0.5, stable_after=100.0)
    clock = VirtualClock(start=1_700_000_000.0)
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="a", settings=settings),
                journal, clock=clock, rng=random.Random(42))
    expected_rng = random.Random(42)

    def crash_and_restart(n: int) -> float:
        tree.registry.tell("a", Crash())
        tree.wait_status("a", lambda s: s.state == "restart_pending")
        due = clock.next_due()
        assert due is not None
        delay = due - clock.time()
        clock.advance_to(due)
        tree.wait_status("a", lambda s: s.alive and s.restarts == n)
        return delay

    delays = [crash_and_restart(n) for n in range(1, 7)]
    bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= base * 1.5
        assert delay == pytest.approx(base * (1 + expected_rng.random() * 0.5))
    assert [r.delay for r in tree.handle.restart_history()] == pytest.approx(delays)

    clock.advance_to(clock.time() + 100.0)  # a stable run
    assert 1.0 <= crash_and_restart(7) <= 1.5


# -- messages across restarts ----------------------------------------------------------------------
def test_messages_sent_during_a_restart_and_those_queued_behind_the_poison_reach_the_new_actor(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    clock = VirtualClock(start=1_700_000_000.0)
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="a", settings=QUIET), journal,
                clock=clock)
    gate = threading.Event()
    old = tree.registry.ref("a")
    assert old is not None
    tree.registry.tell("a", Hold(gate))
    tree.registry.tell("a", Crash("poison"))
    tree.registry.tell("a", Note(1))
    waiting = old.ask(Echo("lost?"), block=False)
    tree.registry.tell("a", Note(2))
    gate.set()

    tree.wait_status("a", lambda s: s.state == "restart_pending")
    tree.registry.tell("a", Note(3))  # the restart is pending until the clock moves
    with pytest.raises(pykka.ActorDeadError):
        waiting.get(timeout=WAIT)
    assert tree.registry.stash_size("a") == 3
    asked: list[Any] = []
    asker = threading.Thread(target=lambda: asked.append(
        tree.registry.ask("a", Echo("waited"), timeout=WAIT)), daemon=True)
    asker.start()

    due = clock.next_due()
    assert due is not None
    clock.advance_to(due)
    gen = tree.wait_status("a", lambda s: s.alive).generation
    notes = journal.wait_for(lambda evs: sum(e[0] == "note" for e in evs) == 3)
    assert [e for e in notes if e[0] == "note"] == [("note", "a", gen, 1), ("note", "a", gen, 2),
                                                   ("note", "a", gen, 3)]
    asker.join(WAIT)
    assert asked == ["waited"]
    assert [(d.message_type, d.reason) for d in tree.dead] == [
        ("Crash", "crashed a: RuntimeError: poison")]


def test_stash_overflow_during_a_restart_produces_dead_letters(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    clock = VirtualClock(start=1_700_000_000.0)
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="a", settings=QUIET), journal,
                clock=clock, stash_limit=3)
    tree.registry.tell("a", Crash())
    tree.wait_status("a", lambda s: s.state == "restart_pending")
    for i in range(5):
        tree.registry.tell("a", Note(i))
    assert [d.reason for d in tree.dead[1:]] == ["stash full (3) while restarting"] * 2
    due = clock.next_due()
    assert due is not None
    clock.advance_to(due)
    notes = journal.wait_for(lambda evs: sum(e[0] == "note" for e in evs) == 3)
    assert [e[3] for e in notes if e[0] == "note"] == [0, 1, 2]


def test_a_child_whose_factory_fails_is_retried_and_later_siblings_wait_for_it(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    attempts: list[int] = []

    def flaky(sup: Supervision) -> pykka.ActorRef[Any]:
        attempts.append(1)
        if len(attempts) <= 2:
            raise ConnectionError(f"broker not reachable (attempt {len(attempts)})")
        return Worker.start(sup, journal)

    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE,
                          [ChildSpec("a", flaky), worker("b", journal), worker("c", journal)],
                          FAST)
    tree = grow(spec, journal)
    journal.wait_event("start", "c")
    assert journal.events() == [("start", "a"), ("start", "b"), ("start", "c")]
    assert [(r.name, r.reason) for r in tree.handle.restart_history()] == [
        ("a", "start failed: ConnectionError: broker not reachable (attempt 1)"),
        ("a", "start failed: ConnectionError: broker not reachable (attempt 2)")]
    assert tree.status("b").restarts == tree.status("c").restarts == 0


def test_no_message_is_lost_while_a_child_keeps_crashing_under_load(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="hot"), journal, stash_limit=10_000)
    senders, per_sender, crashes = 3, 800, 5

    def send(tag: str) -> None:
        for i in range(per_sender):
            tree.registry.tell("hot", Note((tag, i)))

    threads = [threading.Thread(target=send, args=(f"s{k}",), daemon=True)
               for k in range(senders)]
    for t in threads:
        t.start()
    for n in range(crashes):
        tree.registry.tell("hot", Crash())
        journal.wait_event("start", "hot", times=n + 2)
    for t in threads:
        t.join(WAIT)
    events = journal.wait_for(
        lambda evs: sum(e[0] == "note" for e in evs) >= senders * per_sender)
    for k in range(senders):
        got = [e[3][1] for e in events if e[0] == "note" and e[3][0] == f"s{k}"]
        assert got == list(range(per_sender))
    assert tree.handle.restart_count() == crashes
    assert [(d.message_type, d.reason) for d in tree.dead] == [
        ("Crash", "crashed hot: RuntimeError: boom")] * crashes


# -- hangs ----------------------------------------------------------------------------------------
def test_a_blocked_actor_is_detected_as_hung_and_replaced(grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="a b"), journal)
    old_gen = tree.status("a").generation
    gate = threading.Event()
    tree.registry.tell("a", Hold(gate))
    tree.registry.tell("a", Note("queued behind the hang"))

    status = tree.wait_status("a", lambda s: s.alive and s.generation != old_gen)
    [record] = tree.handle.restart_history()
    assert record.name == "a"
    assert record.reason.startswith("hung: no answer to ping in ")
    journal.wait_event("note", "a", status.generation, "queued behind the hang")

    gate.set()  # the old actor unblocks: it must handle nothing more, and its exit is stale
    journal.wait_event("held", "a", old_gen)
    tree.registry.tell("a", Note("after"))
    journal.wait_event("note", "a", status.generation, "after")
    assert tree.handle.restart_count() == 1
    assert tree.status("a").generation == status.generation
    assert tree.status("b").restarts == 0


def test_a_busy_actor_that_keeps_completing_messages_is_not_hung(
        grow: Callable[..., Tree]) -> None:
    journal = Journal()
    tree = grow(flat(Strategy.ONE_FOR_ONE, journal, names="busy"), journal)
    for _ in range(30):  # ~0.9 s of work, three times the liveness timeout
        tree.registry.tell("busy", Work(0.03))
    journal.wait_for(lambda evs: evs.count(("worked", "busy")) == 30)
    assert tree.handle.restart_count() == 0
    assert tree.registry.ask("busy", Echo("still me"), timeout=WAIT) == "still me"
