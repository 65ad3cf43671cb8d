"""Registry: names → actors, stash while restarting, dead letters, sealed inboxes (real actors)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest

from engine.messages import DeadLetter
from engine.runtime.actor import EngineActor, current_actor, handles
from engine.runtime.clock import VirtualClock
from engine.runtime.registry import Address, NoSuchActor, Registry, SealableInbox

WAIT = 5.0


@dataclass(frozen=True)
class Note:
    value: int
    sender: str = ""


@dataclass(frozen=True)
class Poison:
    why: str = "poisoned"


@dataclass(frozen=True)
class Echo:
    value: Any


@dataclass(frozen=True)
class Hold:
    release: threading.Event = field(compare=False)


@dataclass(frozen=True)
class WhoAmI:
    pass


class Received:
    """Durable record of deliveries, shared by every generation of an actor (like a journal)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Any]] = []
        self._cond = threading.Condition()

    def add(self, generation: int, value: Any) -> None:
        with self._cond:
            self.items.append((generation, value))
            self._cond.notify_all()

    def wait_count(self, n: int, timeout: float = WAIT) -> list[tuple[int, Any]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, timeout), self.items
            return list(self.items)


class FakeSupervision:
    """Stands in for a supervisor: records exit reports (the registry is what is under test)."""

    def __init__(self, name: str, registry: Registry, clock: VirtualClock,
                 generation: int = 1) -> None:
        self.name = name
        self.registry = registry
        self.clock = clock
        self.generation = generation
        self.exits: queue.Queue[tuple[int, bool, str]] = queue.Queue()

    def child_exited(self, generation: int, normal: bool, reason: str) -> None:
        self.exits.put((generation, normal, reason))


class Collector(EngineActor):
    def __init__(self, supervision: FakeSupervision, received: Received) -> None:
        super().__init__(supervision)
        self.received = received

    @handles(Note)
    def on_note(self, msg: Note) -> None:
        self.received.add(self.generation, msg.value if not msg.sender
                          else (msg.sender, msg.value))

    @handles(Poison)
    def on_poison(self, msg: Poison) -> None:
        raise RuntimeError(msg.why)

    @handles(Echo)
    def on_echo(self, msg: Echo) -> Any:
        return msg.value

    @handles(Hold)
    def on_hold(self, msg: Hold) -> None:
        msg.release.wait(WAIT)

    @handles(WhoAmI)
    def on_who(self, msg: WhoAmI) -> bool:
        return current_actor() is self


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1_700_000_000.0)


@pytest.fixture
def dead() -> list[DeadLetter]:
    return []


@pytest.fixture
def registry(clock: VirtualClock, dead: list[DeadLetter]) -> Registry:
    return Registry(clock, stash_limit=100, on_dead_letter=dead.append)


@pytest.fixture
def spawn(registry: Registry, clock: VirtualClock) -> Iterator[Callable[..., tuple[
        pykka.ActorRef[Any], FakeSupervision]]]:
    refs: list[pykka.ActorRef[Any]] = []

    def _spawn(name: str, received: Received, generation: int = 1,
               register: bool = True) -> tuple[pykka.ActorRef[Any], FakeSupervision]:
        sup = FakeSupervision(name, registry, clock, generation)
        ref = Collector.start(sup, received)
        refs.append(ref)
        if register:
            registry.register(name, ref)
        return ref, sup

    yield _spawn
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=WAIT)


def test_tell_and_ask_by_name_and_through_an_address(registry: Registry, spawn: Any) -> None:
    received = Received()
    spawn("sink", received)
    registry.tell("sink", Note(1))
    address = registry.address("sink")
    assert isinstance(address, Address)
    address.tell(Note(2))
    assert address.ask(Echo("pong"), timeout=WAIT) == "pong"
    assert registry.ask("sink", Echo(7), timeout=WAIT) == 7
    assert received.wait_count(2) == [(1, 1), (1, 2)]
    assert registry.dead_letter_count == 0


def test_unknown_name_dead_letters_a_tell_and_rejects_an_ask(registry: Registry,
                                                             dead: list[DeadLetter]) -> None:
    registry.tell("nobody", Note(1))
    assert [(d.name, d.message_type, d.reason) for d in dead] == [
        ("nobody", "Note", "no actor by that name")]
    assert dead[0].ts == 1_700_000_000.0
    assert registry.dead_letter_count == 1
    with pytest.raises(NoSuchActor) as err:
        registry.ask("nobody", Echo(1), timeout=0.1)
    assert isinstance(err.value, KeyError)
    assert "nobody" in str(err.value)


def test_declared_name_stashes_in_order_until_an_actor_registers(registry: Registry,
                                                                 spawn: Any) -> None:
    received = Received()
    registry.declare("late")
    for i in range(5):
        registry.tell("late", Note(i))
    assert registry.stash_size("late") == 5
    spawn("late", received)
    registry.tell("late", Note(5))
    assert [v for _, v in received.wait_count(6)] == [0, 1, 2, 3, 4, 5]
    assert registry.stash_size("late") == 0
    assert registry.dead_letter_count == 0


def test_ask_on_a_restarting_name_waits_for_the_next_actor(registry: Registry,
                                                           spawn: Any) -> None:
    registry.declare("svc")
    answers: list[Any] = []
    done = threading.Event()

    def ask() -> None:
        answers.append(registry.ask("svc", Echo("hi"), timeout=WAIT))
        done.set()

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    assert not done.wait(0.1)  # nothing serves the name yet: the ask is waiting
    spawn("svc", Received())
    assert done.wait(WAIT)
    assert answers == ["hi"]


def test_ask_times_out_when_no_actor_comes(registry: Registry) -> None:
    registry.declare("svc")
    with pytest.raises(pykka.Timeout):
        registry.ask("svc", Echo(1), timeout=0.05)


def test_crashed_actor_inbox_moves_to_the_stash_in_order_and_poison_is_a_dead_letter(
        registry: Registry, spawn: Any, dead: list[DeadLetter]) -> None:
    received = Received()
    old, sup = spawn("worker", received)
    gate = threading.Event()
    registry.tell("worker", Hold(gate))
    registry.tell("worker", Poison("bad tick"))
    registry.tell("worker", Note(1))
    pending_ask = old.ask(Echo("never"), block=False)
    registry.tell("worker", Note(2))
    gate.set()

    generation, normal, reason = sup.exits.get(timeout=WAIT)
    assert (generation, normal) == (1, False)
    assert reason == "RuntimeError: bad tick"
    registry.tell("worker", Note(3))  # the actor is dead: its inbox is sealed first, then this
    with pytest.raises(pykka.ActorDeadError):
        pending_ask.get(timeout=WAIT)
    assert registry.stash_size("worker") == 3

    registry.suspend("worker", old)  # what the supervisor does on the exit report: idempotent
    spawn("worker", received, generation=2)
    assert received.wait_count(3) == [(2, 1), (2, 2), (2, 3)]
    assert [(d.message_type, d.reason) for d in dead] == [
        ("Poison", "crashed worker: RuntimeError: bad tick")]


def test_stash_overflow_becomes_counted_dead_letters(clock: VirtualClock, spawn: Any) -> None:
    dead: list[DeadLetter] = []
    registry = Registry(clock, stash_limit=3, on_dead_letter=dead.append)
    registry.declare("slow")
    for i in range(5):
        registry.tell("slow", Note(i))
    assert registry.dead_letter_count == 2
    assert [d.reason for d in dead] == ["stash full (3) while restarting"] * 2
    assert registry.dead_letters() == dead

    received = Received()
    sup = FakeSupervision("slow", registry, clock)
    ref = Collector.start(sup, received)
    try:
        registry.register("slow", ref)
        assert [v for _, v in received.wait_count(3)] == [0, 1, 2]
    finally:
        ref.stop(timeout=WAIT)


def test_dead_letters_are_logged_at_a_throttled_rate(clock: VirtualClock,
                                                     log_capture: Any) -> None:
    registry = Registry(clock, dead_letter_log_every=5.0)
    for i in range(50):
        registry.tell("ghost", Note(i))
    lines = [ln for ln in log_capture.getvalue().splitlines() if "dead letter" in ln]
    assert len(lines) == 1
    clock.advance_to(clock.time() + 6.0)
    registry.tell("ghost", Note(50))
    lines = [ln for ln in log_capture.getvalue().splitlines() if "dead letter" in ln]
    assert len(lines) == 2
    assert "50 since last report, 51 in total" in lines[1]
    assert registry.dead_letter_count == 51


def test_an_ask_the_actor_died_before_handling_goes_to_its_next_incarnation(
        registry: Registry, spawn: Any) -> None:
    """E.g. a fill asked to the store while the store is crashing: never seen by the dead
    store, so the registry hands it to the next one instead of failing the caller."""
    received = Received()
    old, sup = spawn("worker", received)
    gate = threading.Event()
    registry.tell("worker", Hold(gate))
    registry.tell("worker", Poison("crash"))
    answers: list[Any] = []
    asker = threading.Thread(target=lambda: answers.append(
        registry.ask("worker", Echo("again"), timeout=WAIT)))
    asker.start()
    deadline = time.monotonic() + WAIT
    while old.actor_inbox.qsize() < 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # the ask is queued behind the poison
    gate.set()
    sup.exits.get(timeout=WAIT)
    registry.suspend("worker", old)
    new, _ = spawn("worker", received, generation=2)
    asker.join(timeout=WAIT)
    assert answers == ["again"]
    assert not old.is_alive() and registry.ref("worker") is new  # so generation 2 answered


def test_an_ask_that_timed_out_in_a_dying_actors_inbox_still_reaches_the_next_one(
        registry: Registry, spawn: Any) -> None:
    """The soak's lost fill: the store, busy for longer than the order manager waits, crashed
    before it reached the fill. The caller gave up, but the fill must still be written."""
    received = Received()
    old, sup = spawn("worker", received)
    gate = threading.Event()
    registry.tell("worker", Hold(gate))
    registry.tell("worker", Poison("crash"))
    with pytest.raises(pykka.Timeout, match="stays queued"):
        registry.ask("worker", Note(7), timeout=0.05)  # queued behind the poison
    registry.tell("worker", Note(8))
    gate.set()
    sup.exits.get(timeout=WAIT)
    registry.suspend("worker", old)
    spawn("worker", received, generation=2)
    assert received.wait_count(2) == [(2, 7), (2, 8)]


def test_an_ask_that_timed_out_waiting_for_an_actor_is_handled_by_the_next_one(
        registry: Registry, spawn: Any) -> None:
    registry.declare("svc")
    with pytest.raises(pykka.Timeout):
        registry.ask("svc", Note(1), timeout=0.02)
    assert registry.stash_size("svc") == 1
    received = Received()
    spawn("svc", received)
    assert received.wait_count(1) == [(1, 1)]


def test_an_ask_answered_after_its_timeout_is_not_delivered_twice(
        registry: Registry, spawn: Any) -> None:
    received = Received()
    spawn("worker", received)
    gate = threading.Event()
    registry.tell("worker", Hold(gate))
    with pytest.raises(pykka.Timeout):
        registry.ask("worker", Note(1), timeout=0.02)
    gate.set()
    registry.tell("worker", Note(2))
    assert received.wait_count(2) == [(1, 1), (1, 2)]
    assert registry.ask("worker", Echo("done"), timeout=WAIT) == "done"
    assert received.items == [(1, 1), (1, 2)]


def test_retired_name_turns_its_stash_and_later_messages_into_dead_letters(
        registry: Registry, dead: list[DeadLetter]) -> None:
    registry.declare("gone")
    registry.tell("gone", Note(1))
    registry.retire("gone", "temporary child exited")
    registry.tell("gone", Note(2))
    assert [d.reason for d in dead] == ["retired: temporary child exited", "retired"]
    with pytest.raises(pykka.ActorDeadError):
        registry.ask("gone", Echo(1), timeout=0.1)


def test_a_crash_at_birth_keeps_the_stash_for_the_next_actor(registry: Registry,
                                                             clock: VirtualClock) -> None:
    class DiesAtBirth(Collector):
        def on_start(self) -> None:
            raise RuntimeError("cannot open journal")

    received = Received()
    registry.declare("fragile")
    for i in range(3):
        registry.tell("fragile", Note(i))
    sup = FakeSupervision("fragile", registry, clock)
    doomed = DiesAtBirth.start(sup, received)
    assert sup.exits.get(timeout=WAIT) == (1, False, "RuntimeError: cannot open journal")
    registry.register("fragile", doomed)  # registered after its death: nothing is lost
    registry.tell("fragile", Note(3))
    registry.suspend("fragile", doomed)
    assert registry.stash_size("fragile") == 4

    good = Collector.start(FakeSupervision("fragile", registry, clock, 2), received)
    try:
        registry.register("fragile", good)
        assert [v for _, v in received.wait_count(4)] == [0, 1, 2, 3]
    finally:
        good.stop(timeout=WAIT)


def test_registering_a_replacement_moves_the_old_actors_queued_messages_first(
        registry: Registry, spawn: Any) -> None:
    received = Received()
    spawn("feed", received)
    gate = threading.Event()
    registry.tell("feed", Hold(gate))
    registry.tell("feed", Note(1))
    registry.tell("feed", Note(2))
    spawn("feed", received, generation=2)
    registry.tell("feed", Note(3))
    gate.set()
    assert received.wait_count(3) == [(2, 1), (2, 2), (2, 3)]


def test_sealed_inbox_hands_out_queued_envelopes_and_forwards_later_puts() -> None:
    inbox = SealableInbox()
    inbox.put("a")
    inbox.put("b")
    forwarded: list[str] = []
    assert not inbox.sealed
    assert inbox.seal(forwarded.append) == ["a", "b"]
    assert inbox.sealed
    inbox.put("c")
    assert forwarded == ["c"]
    assert inbox.empty()
    assert inbox.seal(forwarded.append) == []


def test_no_message_is_lost_or_reordered_while_the_actor_is_replaced_under_load(
        clock: VirtualClock) -> None:
    dead: list[DeadLetter] = []
    registry = Registry(clock, stash_limit=100_000, on_dead_letter=dead.append)
    received = Received()
    senders, per_sender, crashes = 3, 1500, 6
    refs = [Collector.start(FakeSupervision("hot", registry, clock, 1), received)]
    registry.register("hot", refs[0])

    def send(tag: str) -> None:
        for i in range(per_sender):
            registry.tell("hot", Note(i, tag))

    threads = [threading.Thread(target=send, args=(f"s{k}",), daemon=True)
               for k in range(senders)]
    for t in threads:
        t.start()
    try:
        for generation in range(2, crashes + 2):
            sup = refs[-1]
            registry.tell("hot", Poison())
            deadline = time.monotonic() + WAIT
            while sup.is_alive() and time.monotonic() < deadline:
                time.sleep(0.001)
            assert not sup.is_alive()
            registry.suspend("hot", sup)
            refs.append(Collector.start(FakeSupervision("hot", registry, clock, generation),
                                        received))
            registry.register("hot", refs[-1])
        for t in threads:
            t.join(WAIT)
        items = received.wait_count(senders * per_sender)
    finally:
        for ref in refs:
            if ref.is_alive():
                ref.stop(timeout=WAIT)
    for k in range(senders):
        got = [value for _, (tag, value) in items if tag == f"s{k}"]
        assert got == list(range(per_sender))
    assert [d.message_type for d in dead] == ["Poison"] * crashes


def test_current_actor_is_the_actor_running_on_the_thread(spawn: Any,
                                                          registry: Registry) -> None:
    spawn("me", Received())
    assert registry.ask("me", WhoAmI(), timeout=WAIT) is True
    assert current_actor() is None
