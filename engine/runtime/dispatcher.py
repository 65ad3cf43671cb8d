"""The calling-thread dispatcher: every actor of a tree on one thread, in one FIFO (replay).

Owns how actors run when they do not get threads: the same ``EngineActor`` classes and handler
code as live and paper, driven by whoever calls ``run`` (the replay driver). A registry created
with a dispatcher (``Registry(clock, dispatcher=...)``) makes ``EngineActor.start`` hand the new
actor here instead of starting a Pykka thread; nothing else in the tree, the registry or the
supervisor changes (the rules are in docs/architecture.md, "Calling-thread replay"):

- ``on_start`` runs inside ``start``, on the caller's stack (the supervisor's handler);
- a ``tell`` appends the message to the actor's inbox (bare: the registry's tell needs no
  Pykka envelope, see ``DispatchedInbox``) and the inbox to one FIFO ready queue;
  ``run`` pops the queue and calls the actor's ``on_receive`` until the queue is empty, so
  messages are handled in the order they were sent, and the run is the same on every replay;
- an ``ask`` is answered inline: the asker's ``Future.get`` handles the target's inbox, in
  order, up to and including the asked message (what was sent to the target before the ask is
  seen first, as in a thread's inbox). An ask that cannot be answered that way (the target's
  handler is on the stack: a thread would deadlock; the target is dead or restarting) raises
  ``pykka.Timeout`` at once instead of waiting, and the registry leaves the message queued for
  the name exactly as after a real timeout;
- a handler that raises goes through Pykka's own failure funnel (``_handle_failure``,
  ``on_failure``) and the actor's teardown, which reports the exit to its supervisor: the same
  restart, intensity and escalation decisions as in the threaded runtime, on the virtual clock.

One thread only: the dispatcher and every actor it runs belong to the thread that created it.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka
from pykka._envelope import Envelope

from engine.runtime.registry import RUNNING, SealableInbox

if TYPE_CHECKING:
    from engine.runtime.actor import EngineActor


class DispatchedInbox(SealableInbox):
    """An actor's inbox under the dispatcher: a plain deque; every message put in queues the
    inbox once on the dispatcher's ready queue. A registry ``tell`` queues the bare message
    (``tell``: no Pykka envelope, nobody waits for an answer); what comes through Pykka (an
    ask, a stop, a proxy call, a tell on the ref itself) stays in its ``Envelope``. Sealable
    like a thread actor's (the registry moves what a dead actor left to its name's stash):
    what leaves through ``get`` or ``seal`` is always an ``Envelope``, as Pykka and the
    registry expect."""

    def __init__(self, dispatcher: Dispatcher, actor: EngineActor) -> None:
        super().__init__()
        self.dispatcher = dispatcher
        self.actor = actor
        self.busy = False  # its handler is on the stack
        self.finished = False  # teardown done
        self.stopped = False  # the actor's ``actor_stopped`` is set (_StopEvent)
        self._ready = dispatcher.ready.append

    def teller(self, ref: pykka.ActorRef[Any]) -> Callable[[Any], None]:
        return self.tell

    def tell(self, message: Any) -> None:
        """``ActorRef.tell`` without the envelope: the same liveness check, then ``put``."""
        if self.stopped:
            raise pykka.ActorDeadError(f"{self.actor.actor_ref} not found")
        forward = self._forward
        if forward is not None:
            forward(Envelope(message))
            return
        self.queue.append(message)
        self._ready(self)

    def put(self, item: Envelope[Any], block: bool = True, timeout: float | None = None) -> None:
        forward = self._forward
        if forward is not None:
            forward(item)
            return
        reply = item.reply_to
        if reply is not None:
            reply._dispatch_inbox = self  # type: ignore[attr-defined]  # read by EngineFuture
        self.queue.append(item)
        self._ready(self)

    def get(self, block: bool = True, timeout: float | None = None) -> Envelope[Any]:
        return _enveloped(self.queue.popleft())

    def seal(self, forward: Callable[[Envelope[Any]], None]) -> list[Envelope[Any]]:
        return [_enveloped(item) for item in super().seal(forward)]

    def empty(self) -> bool:
        return not self.queue

    def qsize(self) -> int:
        return len(self.queue)


def _enveloped(item: Any) -> Envelope[Any]:
    return item if type(item) is Envelope else Envelope(item)


class _StopEvent(threading.Event):
    """A dispatched actor's ``actor_stopped`` (Pykka's, its ref's): whoever sets it (Pykka's
    stop or failure funnel, a supervisor abandoning it) also sets its inbox's ``stopped``,
    which the dispatcher reads for every message instead of calling ``is_set``."""

    def __init__(self, inbox: DispatchedInbox) -> None:
        super().__init__()
        self._inbox = inbox

    def set(self) -> None:
        super().set()
        self._inbox.stopped = True


class Dispatcher:
    """Runs the actors of one tree on the calling thread (see the module docstring)."""

    def __init__(self) -> None:
        self.ready: deque[DispatchedInbox] = deque()
        self.thread = threading.get_ident()
        # RUNNING.actor as last set here: a delivery to the actor that had the previous one
        # (a run of messages to one actor) skips the thread-local write. Taken from RUNNING
        # whenever run, answer or a lifecycle step begins, and put back with it when it ends.
        self._current: EngineActor | None = None

    # -- actors --------------------------------------------------------------------------------
    def start(self, actor: EngineActor) -> None:
        """Adopt a freshly built actor (its inbox becomes a ``DispatchedInbox``) and run its
        ``on_start`` now."""
        inbox = DispatchedInbox(self, actor)
        actor.actor_inbox = actor.actor_ref.actor_inbox = inbox
        actor.actor_stopped = actor.actor_ref.actor_stopped = _StopEvent(inbox)
        pykka.ActorRegistry.register(actor.actor_ref)
        self._on_stack(inbox, actor._actor_loop_setup)
        if actor.actor_stopped.is_set():
            self._teardown(inbox)

    # -- running -------------------------------------------------------------------------------
    def run(self) -> int:
        """Handle messages in send order until no actor has one; returns how many."""
        ready = self.ready
        deliver = self._deliver
        n = 0
        previous = self._enter()
        try:
            while ready:
                inbox = ready.popleft()
                queue = inbox.queue
                # else drained already by an inline ask, or left in a dead actor's inbox for
                # the registry to move into its name's stash
                if queue and not inbox.busy and not inbox.stopped:
                    deliver(inbox, queue.popleft())
                    n += 1
        finally:
            self._leave(previous)
        return n

    def answer(self, inbox: DispatchedInbox, done: Callable[[], bool]) -> None:
        """An inline ask: handle ``inbox``'s messages, in order, until ``done()``. Returns
        without an answer when the target is on the stack or has stopped."""
        if threading.get_ident() != self.thread:
            return
        queue = inbox.queue
        previous = self._enter()
        try:
            while not done() and queue and not inbox.busy and not inbox.stopped:
                self._deliver(inbox, queue.popleft())
        finally:
            self._leave(previous)

    # -- internals -----------------------------------------------------------------------------
    def _deliver(self, inbox: DispatchedInbox, item: Any) -> None:
        """One message, exactly as Pykka's actor loop handles it on a thread (inside ``run``
        or ``answer``, which put ``RUNNING`` back)."""
        actor = inbox.actor
        if actor is not self._current:
            RUNNING.actor = self._current = actor
        inbox.busy = True
        try:
            if type(item) is Envelope:
                self._open(actor, item)
            else:  # a bare tell (DispatchedInbox.tell)
                actor.on_receive(item)
        except Exception:
            actor._handle_failure(*sys.exc_info())
            try:
                actor.on_failure(*sys.exc_info())
            except Exception:
                actor._handle_failure(*sys.exc_info())
        finally:
            inbox.busy = False
        if inbox.stopped:
            self._teardown(inbox)

    @staticmethod
    def _open(actor: EngineActor, envelope: Envelope[Any]) -> None:
        """An enveloped message (an ask; Pykka's stop or proxy messages; a tell on the ref):
        handled by Pykka's own ``_handle_receive``; an ask's answer or exception goes back to
        the asker, a tell's exception up to ``_deliver``'s failure funnel."""
        reply = envelope.reply_to
        try:
            response = actor._handle_receive(envelope.message)
        except Exception:
            if reply is None:
                raise
            reply.set_exception()
            return
        if reply is not None:
            reply.set(response)

    def _teardown(self, inbox: DispatchedInbox) -> None:
        """The actor is over: its teardown (timers, dead letter, exit report), once."""
        if inbox.finished:
            return
        inbox.finished = True
        self._on_stack(inbox, inbox.actor._actor_loop_teardown)

    def _on_stack(self, inbox: DispatchedInbox, step: Callable[[], None]) -> None:
        """Run one lifecycle step of ``inbox``'s actor as if on its own thread."""
        previous = self._enter()
        RUNNING.actor = self._current = inbox.actor
        inbox.busy = True
        try:
            step()
        finally:
            inbox.busy = False
            self._leave(previous)

    def _enter(self) -> EngineActor | None:
        """The actor running now (``RUNNING``), which ``_current`` takes up; for ``_leave``."""
        self._current = previous = getattr(RUNNING, "actor", None)
        return previous

    def _leave(self, previous: EngineActor | None) -> None:
        RUNNING.actor = self._current = previous
