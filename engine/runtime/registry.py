"""Stable actor names: the one funnel every actor-to-actor message goes through.

Owns the map from a stable name (``feed``, ``bars.NIFTY30JAN2524000CE``, ``orders``) to the Pykka
actor currently serving it, and what happens to messages while a name is between actors:

- alive actor: ``tell`` goes straight into its inbox, without taking a lock (the replay hot path);
- restarting (the actor died, or the name is declared but not started yet): messages are held in
  a bounded per-name *stash*, in order, and handed to the next actor registered under the name;
- a dead actor's inbox is *sealed*: the ``tell`` messages still queued in it move into the stash
  ahead of anything newer, ``ask`` callers still waiting get ``Undelivered`` (``Registry.ask``
  then asks the next actor), and a put that races the seal is forwarded instead of being dropped
  into a queue nobody reads;
- an ``ask`` waiting for a restarting name gives up at once (``WaitCancelled``, a
  ``pykka.Timeout``) when the asking actor is being stopped (``cancel_waits_with``): a
  ``rest_for_one`` sibling blocked on the failed actor's next incarnation would otherwise hold
  that very restart until the sibling's stop timeout;
- an ``ask`` that times out leaves its message queued for the name, exactly as it would stay in
  a live actor's inbox: if the actor dies before handling it, or no actor served the name within
  the timeout, the message goes to the next actor like a ``tell`` (its answer is dropped). So a
  fill asked to a store too busy to answer in time is still written, whatever happens next;
- past the stash bound, for a retired name, or for a name never declared: a ``DeadLetter`` is
  recorded (counted, logged at a throttled rate, passed to ``on_dead_letter``). Never silent.

Supervisors (engine.runtime.supervisor) drive the lifecycle: ``declare``, ``register``, ``suspend``,
``retire``. Actors only ``tell``/``ask`` (``EngineActor.tell`` calls ``Registry.tell``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka
from loguru import logger
from pykka.messages import _ActorStop

from engine.messages import DeadLetter

_caller = threading.local()


class WaitCancelled(pykka.Timeout):
    """An ask stopped waiting because its own actor is being stopped (the message stays queued
    for the name, as after any timeout)."""


def cancel_waits_with(event: threading.Event) -> None:
    """Asks made on the calling thread stop waiting for a restarting actor once ``event`` is set
    (``EngineActor`` binds its own on its thread; ``Registry.wake_waiters`` makes them look)."""
    _caller.cancel = event


if TYPE_CHECKING:
    from pykka._envelope import Envelope

    from engine.runtime.clock import Clock

DeadLetterHook = Callable[[DeadLetter], None]

#: Which engine actor runs on the current thread (set by engine.runtime.actor.EngineActor); lives
#: here so
#: the registry can tell actor sends from outside sends without importing engine.runtime.actor.
RUNNING = threading.local()

#: How many recent dead letters ``Registry.dead_letters()`` keeps in memory.
RECENT_DEAD_LETTERS = 1000


class Undelivered(pykka.ActorDeadError):
    """An ask whose actor died (or was dead) before it handled the message: the message was
    never seen, so asking the next actor under the name is safe."""


class NoSuchActor(KeyError):
    """An ``ask`` to a name that was never declared or registered."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no actor is registered under the name {self.name!r}"


class SealableInbox(queue.Queue[Any]):
    """A Pykka actor inbox that can be sealed when its actor is gone.

    ``seal(forward)`` atomically takes every queued envelope out and from then on hands each new
    envelope to ``forward`` instead of queueing it, so a sender that saw the actor alive an
    instant before it died still gets its message routed (pykka checks liveness, then puts).
    """

    def __init__(self) -> None:
        super().__init__()
        self._forward: Callable[[Envelope[Any]], None] | None = None

    def put(self, item: Envelope[Any], block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            forward = self._forward
            if forward is None:
                self.queue.append(item)
                self.unfinished_tasks += 1
                self.not_empty.notify()
                return
        forward(item)

    def seal(self, forward: Callable[[Envelope[Any]], None]) -> list[Envelope[Any]]:
        """Take out all queued envelopes, oldest first; forward every later put."""
        with self.mutex:
            self._forward = forward
            items = list(self.queue)
            self.queue.clear()
        return items

    @property
    def sealed(self) -> bool:
        return self._forward is not None

    def teller(self, ref: pykka.ActorRef[Any]) -> Callable[[Any], None]:
        """How the registry tells ``ref`` (the actor owning this inbox) a message: Pykka's
        ``ActorRef.tell`` (liveness check, envelope, ``put``). Raises ``ActorDeadError`` once
        the actor is stopped, like Pykka's; the dispatcher's inbox queues the bare message."""
        return ref.tell


class Address:
    """A stable handle on a name: stays valid across restarts of the actor behind it."""

    __slots__ = ("_registry", "name")

    def __init__(self, registry: Registry, name: str) -> None:
        self._registry = registry
        self.name = name

    def tell(self, message: Any) -> None:
        self._registry.tell(self.name, message)

    def ask(self, message: Any, timeout: float = 5.0) -> Any:
        return self._registry.ask(self.name, message, timeout=timeout)

    def __repr__(self) -> str:
        return f"Address({self.name!r})"


class _Slot:
    """One name: the actor serving it now (None while restarting) and its stash.

    Invariant: while ``ref`` is set the stash is empty (it was flushed into ``ref`` first).
    ``send`` is how a tell reaches ``ref`` (None with it), looked up once per actor rather
    than once per message.
    """

    __slots__ = ("_ref", "name", "retired", "send", "stash")

    def __init__(self, name: str) -> None:
        self.name = name
        self._ref: pykka.ActorRef[Any] | None = None
        self.send: Callable[[Any], None] | None = None
        self.stash: deque[Any] = deque()
        self.retired = False

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        return self._ref

    @ref.setter
    def ref(self, ref: pykka.ActorRef[Any] | None) -> None:
        self._ref = ref
        self.send = None if ref is None else _teller(ref)


def _teller(ref: pykka.ActorRef[Any]) -> Callable[[Any], None]:
    inbox = ref.actor_inbox
    return inbox.teller(ref) if isinstance(inbox, SealableInbox) else ref.tell


class Registry:
    """Thread-safe name → actor map shared by a whole supervisor tree."""

    def __init__(self, clock: Clock, *, stash_limit: int = 10_000,
                 on_dead_letter: DeadLetterHook | None = None,
                 dead_letter_log_every: float = 5.0,
                 dispatcher: Any = None) -> None:
        if stash_limit < 1:
            raise ValueError(f"stash_limit must be at least 1, got {stash_limit}")
        self._clock = clock
        self.stash_limit = stash_limit
        self._on_dead_letter = on_dead_letter
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._dead_count = 0
        self._recent_dead: deque[DeadLetter] = deque(maxlen=RECENT_DEAD_LETTERS)
        self._log_every = dead_letter_log_every
        self._last_dead_log: float | None = None
        self._unlogged_dead = 0
        self._in_hook = threading.local()
        # Futures of asks whose caller stopped waiting: their message is delivered as a tell.
        self._abandoned: weakref.WeakSet[pykka.Future[Any]] = weakref.WeakSet()
        # Names told from outside any actor (the replay driver, clock callbacks) while a replay
        # step is being tracked; None when not tracking (live and paper).
        self._external: set[str] | None = None
        # The calling-thread dispatcher (engine.runtime.dispatcher.Dispatcher) the tree's actors
        # run under (replay), or None: a thread per actor.
        self.dispatcher = dispatcher

    def backlog(self) -> int:
        """Messages waiting in the inboxes of the actors serving names now, plus stashed ones
        (how far the actors are behind; paper mode paces its market by it)."""
        total = 0
        for slot in list(self._slots.values()):
            ref = slot.ref
            total += len(slot.stash)
            if ref is not None:
                total += ref.actor_inbox.qsize()
        return total

    # -- sending -------------------------------------------------------------------------------
    def tell(self, name: str, message: Any) -> None:
        """Send ``message`` to whatever actor serves ``name`` now (or stash it, or dead-letter)."""
        external = self._external
        if external is not None and getattr(RUNNING, "actor", None) is None:
            external.add(name)
        slot = self._slots.get(name)
        if slot is not None:
            send = slot.send
            if send is not None:
                try:
                    send(message)
                    return
                except pykka.ActorDeadError:
                    pass
        self._tell_slow(name, message)

    def ask(self, name: str, message: Any, *, timeout: float = 5.0) -> Any:
        """Ask the actor behind ``name``; while it restarts, wait (within ``timeout``) for the next.
        An ask the actor died before handling goes to the next actor under the name (it was
        never seen: a fill asked to a store that crashed a moment earlier is not lost).

        Raises ``NoSuchActor`` for an unknown name, ``pykka.ActorDeadError`` for a retired name
        or when the actor dies while handling it, ``pykka.Timeout`` when no answer comes in time
        (the message then stays queued for the name: see the module docstring).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                ref = self._live_ref(name, deadline, timeout)
            except WaitCancelled:
                self._route_now(name, message)
                raise
            except pykka.Timeout:
                return self._leave_queued(name, message, None)
            try:
                future = ref.ask(message, block=False)
            except pykka.ActorDeadError:
                continue  # dead before the message went in: the next actor gets it
            try:
                return future.get(timeout=max(0.0, deadline - time.monotonic()))
            except Undelivered:
                if _cancelled():
                    self._route_now(name, message)
                    raise WaitCancelled(f"stopped waiting for {name}: the asking actor is "
                                        f"being stopped") from None
                if time.monotonic() < deadline:
                    continue
                return self._leave_queued(name, message, None)
            except pykka.Timeout:
                return self._leave_queued(name, message, future)

    def _route_now(self, name: str, message: Any) -> None:
        """An ask given up before its message went in: it still reaches the next actor."""
        with contextlib.suppress(pykka.Timeout):
            self._leave_queued(name, message, None)

    def _leave_queued(self, name: str, message: Any, future: pykka.Future[Any] | None) -> Any:
        """The caller stops waiting: the message must still reach an actor under ``name``.

        With ``future`` (the message sits in an inbox) it is marked abandoned, so a death before
        it is handled routes it on; if that death already happened (``Undelivered``) it is
        routed now; if the answer came in the meantime, the answer is returned. Without one, the
        message never went in and is routed now. Raises ``pykka.Timeout`` otherwise."""
        dead: list[DeadLetter] = []
        with self._lock:
            routed = future is None
            if future is not None:
                try:
                    return future.get(timeout=0)  # answered (or failed) at the last moment
                except Undelivered:
                    routed = True
                except pykka.Timeout:
                    self._abandoned.add(future)
            if routed:
                slot = self._slots.get(name)
                if slot is not None:
                    self._route(slot, message, dead)
        self._publish(dead)
        raise pykka.Timeout(f"{name} did not answer in time; the message stays queued for it")

    def address(self, name: str) -> Address:
        return Address(self, name)

    # -- replay step tracking (engine.runtime.barrier) ----------------------------------------
    def track_external_sends(self, on: bool = True) -> None:
        """Start (or stop) remembering names told from outside any actor."""
        self._external = set() if on else None

    def take_external_sends(self) -> set[str]:
        """The names told from outside actors since the last call; tracking continues."""
        told = self._external or set()
        if self._external is not None:
            self._external = set()
        return told

    # -- lifecycle (driven by supervisors) -----------------------------------------------------
    def declare(self, name: str) -> None:
        """Make ``name`` known: until an actor registers, messages to it are stashed."""
        with self._lock:
            slot = self._slot(name)
            slot.retired = False

    def register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """Bind ``name`` to a (new) actor; stashed messages are delivered to it first, in order."""
        dead: list[DeadLetter] = []
        with self._lock:
            slot = self._slot(name)
            slot.retired = False
            old = slot.ref
            if old is not None and old is not ref:
                self._detach(slot, old, dead)
            self._flush_stash(slot, ref, dead)
            self._changed.notify_all()
        self._publish(dead)

    def suspend(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """``ref`` (the actor behind ``name``, or a former one) is gone: hold the name's messages.

        The ``tell`` messages still in its inbox move to the stash ahead of anything newer; the
        ``ask`` callers waiting in it get ``ActorDeadError``. Idempotent.
        """
        dead: list[DeadLetter] = []
        with self._lock:
            self._detach(self._slot(name), ref, dead)
        self._publish(dead)

    def retire(self, name: str, reason: str) -> None:
        """No actor will serve ``name`` again: its stash and later messages become dead letters."""
        dead: list[DeadLetter] = []
        with self._lock:
            slot = self._slot(name)
            if slot.ref is not None:
                self._detach(slot, slot.ref, dead)
            slot.retired = True
            while slot.stash:
                dead.append(self._dead_letter(name, slot.stash.popleft(), f"retired: {reason}"))
            self._changed.notify_all()
        self._publish(dead)

    # -- inspection ----------------------------------------------------------------------------
    def ref(self, name: str) -> pykka.ActorRef[Any] | None:
        """The actor serving ``name`` now, if any."""
        slot = self._slots.get(name)
        return slot.ref if slot is not None else None

    def names(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def stash_size(self, name: str) -> int:
        with self._lock:
            slot = self._slots.get(name)
            return len(slot.stash) if slot is not None else 0

    @property
    def dead_letter_count(self) -> int:
        return self._dead_count

    def dead_letters(self) -> list[DeadLetter]:
        """The most recent dead letters (up to ``RECENT_DEAD_LETTERS``), oldest first."""
        with self._lock:
            return list(self._recent_dead)

    def dead_letter(self, name: str, message: Any, reason: str) -> None:
        """Record a message that will never be delivered (e.g. the one that crashed an actor)."""
        with self._lock:
            letter = self._dead_letter(name, message, reason)
        self._publish([letter])

    # -- internals (callers hold the lock unless stated) ---------------------------------------
    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = _Slot(name)
        return slot

    def _tell_slow(self, name: str, message: Any) -> None:
        """Lock-free path failed: the name is unknown, restarting, or its actor just died."""
        dead: list[DeadLetter] = []
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                dead.append(self._dead_letter(name, message, "no actor by that name"))
            else:
                self._route(slot, message, dead)
        self._publish(dead)

    def _route(self, slot: _Slot, message: Any, dead: list[DeadLetter]) -> None:
        ref, send = slot.ref, slot.send
        if ref is not None and send is not None:
            try:
                send(message)
                return
            except pykka.ActorDeadError:
                self._detach(slot, ref, dead)
        if slot.retired:
            dead.append(self._dead_letter(slot.name, message, "retired"))
        elif len(slot.stash) >= self.stash_limit:
            dead.append(self._dead_letter(
                slot.name, message, f"stash full ({self.stash_limit}) while restarting"))
        else:
            slot.stash.append(message)

    def _detach(self, slot: _Slot, ref: pykka.ActorRef[Any], dead: list[DeadLetter]) -> None:
        """Unbind ``ref`` if current and move its queued tells into the name's stash."""
        if slot.ref is ref:
            slot.ref = None
        inbox = ref.actor_inbox
        if not isinstance(inbox, SealableInbox):
            return
        name = slot.name
        for envelope in inbox.seal(lambda env: self._forward(name, env)):
            self._absorb(slot, envelope, dead)

    def _absorb(self, slot: _Slot, envelope: Envelope[Any], dead: list[DeadLetter]) -> None:
        """An envelope left in (or late for) a dead actor's inbox."""
        if envelope.reply_to is not None:
            if isinstance(envelope.message, _ActorStop):
                envelope.reply_to.set(None)
            elif envelope.reply_to in self._abandoned:  # nobody waits for the answer
                self._route(slot, envelope.message, dead)
            else:
                error = Undelivered(f"{slot.name} died before handling the message")
                envelope.reply_to.set_exception(exc_info=(Undelivered, error, None))
        elif not isinstance(envelope.message, _ActorStop):
            self._route(slot, envelope.message, dead)

    def _forward(self, name: str, envelope: Envelope[Any]) -> None:
        """A put into a sealed inbox (called without the lock, by the sender's thread)."""
        dead: list[DeadLetter] = []
        with self._lock:
            self._absorb(self._slot(name), envelope, dead)
        self._publish(dead)

    def _flush_stash(self, slot: _Slot, ref: pykka.ActorRef[Any], dead: list[DeadLetter]) -> None:
        """Deliver the stash into ``ref`` before publishing it, so nothing newer overtakes."""
        pending = slot.stash
        slot.stash = deque()
        while pending:
            try:
                ref.tell(pending[0])
            except pykka.ActorDeadError:
                # Died at birth: take back what it got (older), then the rest, and wait again.
                slot.ref = None
                self._detach(slot, ref, dead)
                slot.stash.extend(pending)
                return
            pending.popleft()
        slot.ref = ref

    def _live_ref(self, name: str, deadline: float, timeout: float) -> pykka.ActorRef[Any]:
        slot = self._slots.get(name)
        if slot is not None and slot.ref is not None and slot.ref.is_alive():
            return slot.ref
        with self._changed:
            while True:
                slot = self._slots.get(name)
                if slot is None:
                    raise NoSuchActor(name)
                if slot.retired:
                    raise pykka.ActorDeadError(f"{name} is retired")
                ref = slot.ref
                if ref is not None and ref.is_alive():
                    return ref
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.dispatcher is not None:
                    # under the calling-thread dispatcher nothing restarts while we wait
                    raise pykka.Timeout(f"{name} was not available within {timeout}s")
                if _cancelled():
                    raise WaitCancelled(f"stopped waiting for {name}: the asking actor is "
                                        f"being stopped")
                self._changed.wait(remaining)

    def wake_waiters(self) -> None:
        """Let every ask waiting for a restarting name look at its cancel event again."""
        with self._changed:
            self._changed.notify_all()

    def _dead_letter(self, name: str, message: Any, reason: str) -> DeadLetter:
        letter = DeadLetter(name, type(message).__name__, reason, self._clock.time())
        self._dead_count += 1
        self._recent_dead.append(letter)
        return letter

    def _publish(self, letters: list[DeadLetter]) -> None:
        """Log (throttled) and hand dead letters to the hook; called without the lock."""
        if not letters:
            return
        self._log(letters)
        hook = self._on_dead_letter
        if hook is None or getattr(self._in_hook, "active", False):
            return  # a dead letter raised while persisting one is only counted and logged
        self._in_hook.active = True
        try:
            for letter in letters:
                hook(letter)
        except Exception:
            logger.exception("on_dead_letter hook failed")
        finally:
            self._in_hook.active = False

    def _log(self, letters: list[DeadLetter]) -> None:
        now = self._clock.monotonic()
        with self._lock:
            self._unlogged_dead += len(letters)
            if self._last_dead_log is not None and now - self._last_dead_log < self._log_every:
                return
            self._last_dead_log = now
            count, self._unlogged_dead = self._unlogged_dead, 0
        last = letters[-1]
        logger.warning("dead letter: {} to {!r} ({}); {} since last report, {} in total",
                       last.message_type, last.name, last.reason, count, self._dead_count)


def _cancelled() -> bool:
    cancel: threading.Event | None = getattr(_caller, "cancel", None)
    return cancel is not None and cancel.is_set()
