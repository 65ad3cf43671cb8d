"""The calling-thread dispatcher: one FIFO, inline asks, and the asks it cannot answer inline."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from engine.messages import Crash, FlushToken, Ping, Pong, TimerFired
from engine.runtime.actor import EngineActor, handles
from engine.runtime.barrier import StepBarrier
from engine.runtime.clock import VirtualClock
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.registry import Registry
from engine.runtime.supervisor import ChildSpec, Strategy, SupervisorSpec, start_tree


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Relay:
    """Tell ``to`` a ``Note(text)``."""

    to: str
    text: str


@dataclass(frozen=True)
class AskBack:
    """Ask ``to`` for its notes; what came back (or the exception's name) is noted."""

    to: str


@dataclass(frozen=True)
class Notes:
    """Asks for what an actor has noted so far."""


class Recorder(EngineActor):
    """Notes what it is told, in order, into a log shared by every actor of a test."""

    def __init__(self, log: list[tuple[str, str]], **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log
        self.notes: list[str] = []
        self.thread = 0

    @handles(Note)
    def on_note(self, note: Note) -> None:
        self.thread = threading.get_ident()
        self.notes.append(note.text)
        self.log.append((self.name, note.text))

    @handles(Relay)
    def on_relay(self, relay: Relay) -> None:
        self.log.append((self.name, f"relay {relay.text}"))
        self.tell(relay.to, Note(relay.text))

    @handles(AskBack)
    def on_ask_back(self, ask: AskBack) -> None:
        assert self.registry is not None
        try:
            answer = self.registry.ask(ask.to, Notes(), timeout=30.0)
        except pykka.Timeout:
            answer = "timeout"
        self.notes.append(f"asked {ask.to}: {answer}")

    @handles(Notes)
    def on_notes(self, _: Notes) -> list[str]:
        return list(self.notes)


class Bouncer(Recorder):
    """Asked for its notes, first asks ``a`` for theirs (``a`` asked it: a circle)."""

    @handles(Notes)
    def on_notes(self, _: Notes) -> list[str]:
        self.on_ask_back(AskBack("a"))
        return list(self.notes)


@pytest.fixture()
def world() -> tuple[Registry, Dispatcher, list[tuple[str, str]]]:
    dispatcher = Dispatcher()
    registry = Registry(VirtualClock(0.0), dispatcher=dispatcher)
    return registry, dispatcher, []


def start(registry: Registry, name: str, log: list[tuple[str, str]],
          kind: type[Recorder] = Recorder) -> Recorder:
    ref = kind.start(log, name=name, registry=registry, clock=VirtualClock(0.0))
    registry.register(name, ref)
    actor = ref._actor_weakref()
    assert isinstance(actor, Recorder)
    return actor


def test_tells_are_handled_in_send_order_on_the_calling_thread(world: Any) -> None:
    registry, dispatcher, log = world
    a, b = start(registry, "a", log), start(registry, "b", log)
    registry.tell("a", Relay("b", "1"))
    registry.tell("b", Note("2"))
    registry.tell("a", Note("3"))
    assert log == []  # nothing runs until the queue is run
    assert dispatcher.run() == 4
    # a's relay goes to the back of the one queue: after "2" and "3", which were sent earlier
    assert log == [("a", "relay 1"), ("b", "2"), ("a", "3"), ("b", "1")]
    assert a.thread == b.thread == threading.get_ident()


def test_an_ask_is_answered_inline_after_what_was_sent_to_the_target_before(world: Any) -> None:
    registry, _, log = world
    start(registry, "a", log)
    registry.tell("a", Note("before"))
    registry.tell("b-never", Note("x"))  # a dead letter, not in the way
    assert registry.ask("a", Notes(), timeout=30.0) == ["before"]


def test_an_ask_around_a_circle_times_out_at_once_and_stays_queued(world: Any) -> None:
    registry, dispatcher, log = world
    a = start(registry, "a", log)
    start(registry, "b", log, Bouncer)
    registry.tell("a", AskBack("b"))
    dispatcher.run()
    # a asked b; b asked a back while a's handler was on the stack: with threads a deadlock
    # until the timeout, here a Timeout at once (b carried on without the answer) ...
    b = registry.ref("b")._actor_weakref()
    assert b.notes == ["asked a: timeout"]
    assert a.notes == ["asked b: ['asked a: timeout']"]
    # ... and the asked message stayed queued for a, which handled it after its handler
    # returned (nobody waits for that answer any more)
    assert a.progress == 2 and a.actor_inbox.empty()


def test_a_crash_moves_the_tells_behind_it_to_the_next_incarnation_in_order() -> None:
    # a supervised actor under the dispatcher: the poison is a dead letter, the tells queued
    # behind it (bare messages, no envelope) wait in the name's stash ahead of anything told
    # while it restarts, and reach the next incarnation in send order
    clock = VirtualClock(0.0)
    dispatcher = Dispatcher()
    registry = Registry(clock, dispatcher=dispatcher)
    log: list[tuple[str, str]] = []
    spec = SupervisorSpec("root", Strategy.ONE_FOR_ONE, [
        ChildSpec("a", lambda sup: Recorder.start(log, supervision=sup))])
    tree = start_tree(spec, registry=registry, clock=clock, on_safe_stop=lambda _: None,
                      rng=random.Random(0))
    for message in (Note("1"), Crash("boom"), Note("2"), Note("3")):
        registry.tell("a", message)
    dispatcher.run()
    assert registry.ref("a") is None and registry.stash_size("a") == 2
    registry.tell("a", Note("4"))  # while restarting
    clock.advance_to(clock.time() + 60.0)  # the restart's backoff
    dispatcher.run()
    assert log == [("a", "1"), ("a", "2"), ("a", "3"), ("a", "4")]
    assert [(d.name, d.message_type) for d in registry.dead_letters()] == [("a", "Crash")]
    assert tree.restart_count() == 1


def test_tells_to_a_stopped_unsupervised_actor_are_dropped_by_pykka_and_asks_fail(
        world: Any) -> None:
    # no supervisor: Pykka's own teardown empties the inbox (its get hands out envelopes, bare
    # tells included); a queued ask gets ActorDeadError, as on a thread
    registry, dispatcher, log = world
    a = start(registry, "a", log)
    registry.tell("a", Crash("boom"))
    registry.tell("a", Note("after"))
    asked = a.actor_ref.ask(Notes(), block=False)
    dispatcher.run()
    with pytest.raises(pykka.ActorDeadError):
        asked.get(timeout=1.0)
    assert log == [] and a.actor_inbox.empty() and not a.actor_ref.is_alive()


def test_a_stopped_actor_refuses_tells_until_its_name_is_suspended(world: Any) -> None:
    # between its stop and its supervisor's suspend, a tell finds the actor dead: the registry
    # seals its inbox and stashes the message (nothing is queued where nobody will read it)
    registry, dispatcher, log = world
    a = start(registry, "a", log)
    registry.tell("a", Note("queued"))
    a.actor_stopped.set()  # as Pykka's stop and failure funnel do
    registry.tell("a", Note("late"))
    assert registry.ref("a") is None and registry.stash_size("a") == 2
    dispatcher.run()
    assert log == []
    b = start(registry, "a", log)
    dispatcher.run()
    assert b.notes == ["queued", "late"]


def test_runtime_messages_win_over_a_handler_of_the_same_type(world: Any) -> None:
    registry, dispatcher, log = world

    class Greedy(Recorder):
        @handles(Ping, Crash, TimerFired)
        def on_anything(self, message: Any) -> None:
            self.log.append((self.name, type(message).__name__))

    start(registry, "g", log, Greedy)
    assert registry.ask("g", Ping(7), timeout=1.0) == Pong(7, "g")
    registry.tell("g", TimerFired("t", 0.0, None))
    dispatcher.run()
    assert log == [("g", "TimerFired")]  # a timer still reaches the actor's handler
    registry.tell("g", Crash("boom"))
    dispatcher.run()
    assert log == [("g", "TimerFired")] and not registry.ref("g").is_alive()  # crashed


def test_a_flush_token_under_the_dispatcher_is_done_at_once(world: Any) -> None:
    # one thread needs no barrier: an actor does not remember whom it told, and a token that
    # reaches it anyway counts it done (run() returning is what settles a step)
    registry, dispatcher, log = world
    a, _ = start(registry, "a", log), start(registry, "b", log)
    registry.tell("a", Relay("b", "x"))
    barrier = StepBarrier()
    barrier.add(1)
    registry.tell("a", FlushToken(0, barrier))
    assert dispatcher.run() == 3
    assert barrier.wait(0) and barrier.outstanding == 0 and a._told is None
    assert log == [("a", "relay x"), ("b", "x")]
