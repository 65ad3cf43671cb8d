"""The calling-thread dispatcher: one FIFO, inline asks, and the asks it cannot answer inline."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from engine.runtime.actor import EngineActor, handles
from engine.runtime.clock import VirtualClock
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.registry import Registry


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
