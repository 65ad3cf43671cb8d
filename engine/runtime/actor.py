"""The base class of every engine actor: a Pykka thread actor that can be supervised.

Owns what all actors share and nothing more:
- message dispatch by type (``@handles(Tick)`` on a method; one table, the runtime's own
  messages included) with a fallback ``handle``;
- a liveness answer (``Ping`` → ``Pong``) and a progress counter the supervisor reads to tell a
  hung actor (blocked inside one message) from a merely busy one;
- reporting its own exit (crash or normal stop) to its supervisor through ``Supervision``, after
  its thread is done with its inbox, which it leaves to the supervisor: Pykka would drop the
  ``tell`` messages still queued behind a crash, the registry moves them to the next actor;
- recording the message that crashed it (the poison, never redelivered) as a dead letter;
- ``current_actor()``: the engine actor running on the calling thread;
- timers owned by one incarnation (``schedule_at``/``schedule_every``): they deliver a
  ``TimerFired`` to the actor through the registry only while the name still maps to *this*
  actor, and are cancelled when it exits, so a restarted actor never inherits old timers;
- the threaded replay's flush barrier: every name told since the last ``FlushToken`` is
  remembered, and on a token the actor forwards it to each of them before counting itself done
  (engine.runtime.barrier); under a calling-thread dispatcher nothing is remembered;
- daemon threads, so an actor stuck in a blocking call never keeps the process alive;
- or no thread at all: when its registry has a calling-thread dispatcher (replay), ``start``
  hands the actor to it (engine.runtime.dispatcher) and an ``ask`` is answered inline.

Actors address each other by name through the registry (``self.tell("orders", msg)``), never by
holding another actor's ref; time comes from ``self.clock``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import pykka
from loguru import logger
from pykka import ThreadingFuture

from engine.messages import Alert, Crash, FlushToken, Ping, Pong, Severity, TimerFired
from engine.runtime.logs import RepeatGate
from engine.runtime.registry import RUNNING, SealableInbox, cancel_waits_with

# An alert raised again unchanged is logged again after a minute, then at doubling intervals up
# to an hour (engine seconds).
ALERT_REPEAT_FIRST_S = 60.0
ALERT_REPEAT_MAX_S = 3600.0

if TYPE_CHECKING:
    from engine.runtime.clock import Clock, TimerHandle
    from engine.runtime.registry import Registry

Handler = Callable[[Any, Any], Any]

def current_actor() -> EngineActor | None:
    """The engine actor whose thread is executing the caller, or None outside actor threads."""
    return getattr(RUNNING, "actor", None)


def actor_of(ref: pykka.ActorRef[Any]) -> EngineActor | None:
    """The engine actor behind ``ref`` (for its supervisor to read ``progress``), if still alive."""
    actor = ref._actor_weakref()  # pykka keeps only this weak reference to the actor object
    return actor if isinstance(actor, EngineActor) else None


class Supervision(Protocol):
    """What a supervised actor knows of its supervisor (implemented by
    engine.runtime.supervisor)."""

    @property
    def name(self) -> str: ...

    @property
    def generation(self) -> int: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def clock(self) -> Clock: ...

    def child_exited(self, generation: int, normal: bool, reason: str) -> None: ...


class InjectedFault(RuntimeError):
    """Raised by an actor told ``Crash`` (fault injection)."""


def _crash(actor: EngineActor, message: Crash) -> None:
    raise InjectedFault(f"{actor.name}: {message.reason}")


def _pong(actor: EngineActor, message: Ping) -> Pong:
    return Pong(message.seq, actor.name)


def _timer_handler(handler: Handler | None) -> Handler:
    """The ``TimerFired`` entry: the periodic timer may fire again, then the actor's handler
    (or its fallback ``handle``)."""

    def on_timer(actor: EngineActor, message: TimerFired) -> Any:
        actor._periodic_pending.discard(message.name)
        if handler is not None:
            return handler(actor, message)
        return actor.handle(message)

    return on_timer


def handles(*message_types: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler for the given message types."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        existing: tuple[type, ...] = getattr(fn, "_handles", ())
        fn._handles = existing + message_types  # type: ignore[attr-defined]
        return fn

    return mark


class EngineFuture(ThreadingFuture[Any]):
    """Pykka's thread future, plus the inline answer of the calling-thread dispatcher: an
    ask put into a ``DispatchedInbox`` is answered by handling that inbox on the asker's stack
    (engine.runtime.dispatcher); if it still has no answer then, waiting would wait for
    nothing, so ``get`` raises ``pykka.Timeout`` at once."""

    #: the ``engine.runtime.dispatcher.DispatchedInbox`` the ask went into, set by its ``put``
    _dispatch_inbox: Any = None

    def get(self, *, timeout: float | None = None) -> Any:
        inbox = self._dispatch_inbox
        if inbox is not None and self._result is None:
            inbox.dispatcher.answer(inbox, self._answered)
            if self._result is None and inbox.dispatcher.thread == threading.get_ident():
                raise pykka.Timeout(f"{inbox.actor.name} cannot answer inline (its handler is "
                                    "running, or it stopped)")
        return super().get(timeout=timeout)

    def _answered(self) -> bool:
        return self._result is not None


class EngineActor(pykka.ThreadingActor):
    """Subclass this; decorate handlers with ``@handles(MessageType)``."""

    use_daemon_thread = True
    _dispatch: ClassVar[dict[type, Handler]] = {}

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Build and start the actor: on its own thread (Pykka), or, when its registry has a
        calling-thread dispatcher (replay), under that dispatcher."""
        actor = cls(*args, **kwargs)
        dispatcher = actor.registry.dispatcher if actor.registry is not None else None
        if dispatcher is None:
            pykka.ActorRegistry.register(actor.actor_ref)
            actor._start_actor_loop()
        else:
            dispatcher.start(actor)
        return actor.actor_ref

    @staticmethod
    def _create_future() -> EngineFuture:
        return EngineFuture()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dispatch = cls._handlers()

    @classmethod
    def _handlers(cls) -> dict[type, Handler]:
        """The ``@handles`` methods by message type, and the runtime's own messages, which
        take precedence over a subclass's handler for the same type: ``on_receive`` is then
        one dict lookup for every message."""
        table: dict[type, Handler] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for mtype in getattr(attr, "_handles", ()):
                    table[mtype] = attr
        table[TimerFired] = _timer_handler(table.get(TimerFired))
        table.update({Ping: _pong, FlushToken: cls._forward_token, Crash: _crash})
        return table

    def __init__(self, supervision: Supervision | None = None, *, name: str | None = None,
                 registry: Registry | None = None, clock: Clock | None = None) -> None:
        super().__init__()
        self.supervision = supervision
        self.name: str = name or (supervision.name if supervision else type(self).__name__)
        self.registry: Registry | None = registry or (supervision.registry if supervision
                                                      else None)
        self.clock: Clock | None = clock or (supervision.clock if supervision else None)
        self.generation = supervision.generation if supervision else 0
        # Messages completed (Ping included); read by the supervisor's thread to tell a hung
        # actor (blocked inside one message) from a busy one.
        self.progress = 0
        self._failure: str | None = None
        # The message whose handler raised last, with the exception: the poison if that
        # exception is what stopped the actor (an ask's exception only goes back to the caller).
        self._poison: tuple[Any, BaseException] | None = None
        # Names told since the last FlushToken (the threaded replay's barrier; None under a
        # calling-thread dispatcher, which needs no barrier) and this incarnation's timers.
        dispatched = self.registry is not None and self.registry.dispatcher is not None
        self._told: set[str] | None = None if dispatched else set()
        self._timers: list[TimerHandle] = []
        self._periodic_pending: set[str] = set()  # periodic timers told, not yet handled
        self._repeats: RepeatGate | None = None  # made on the first alert
        self._stopping = threading.Event()  # set by cancel_waits (its supervisor stops it)

    def _actor_loop(self) -> None:  # Pykka's thread target
        cancel_waits_with(self._stopping)
        super()._actor_loop()

    def cancel_waits(self) -> None:
        """This actor is about to be stopped: an ask of its own that waits for a restarting
        name gives up now (``WaitCancelled``), so the stop request behind it is handled."""
        self._stopping.set()
        if self.registry is not None:
            self.registry.wake_waiters()

    @staticmethod
    def _create_actor_inbox() -> SealableInbox:
        return SealableInbox()

    # -- messaging -----------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        handler = self._dispatch.get(type(message))
        try:
            if handler is not None:
                return handler(self, message)
            return self.handle(message)
        except Exception as exc:
            self._poison = (message, exc)
            raise
        finally:
            self.progress += 1

    def handle(self, message: Any) -> Any:
        """Fallback for messages without a ``@handles`` method."""
        logger.warning("{} got an unexpected message {}", self.name, type(message).__name__)
        return None

    def tell(self, name: str, message: Any) -> None:
        """Send to another actor by its stable name (the single funnel for actor sends)."""
        registry = self.registry
        if registry is None:
            raise RuntimeError(f"{self.name} has no registry to send {type(message).__name__}")
        told = self._told
        if told is not None:
            told.add(name)
        registry.tell(name, message)

    def now(self) -> float:
        """Engine time (the actor's clock)."""
        return self._require_clock().time()

    def raise_alert(self, kind: str, text: str, severity: Severity = Severity.WARNING,
                    health: str | None = "health") -> None:
        """Log ``text`` at the severity's level and tell the health actor (which throttles
        and stores alerts) an ``Alert``. The same alert raised again (a failure on every retry)
        is logged once, then at growing intervals with the count held back (``RepeatGate``)."""
        level = {Severity.CRITICAL: "CRITICAL", Severity.WARNING: "WARNING"}.get(severity,
                                                                                  "INFO")
        if self._repeats is None:
            self._repeats = RepeatGate(ALERT_REPEAT_FIRST_S, ALERT_REPEAT_MAX_S)
        allowed, held = self._repeats.allow((kind, text), self.now())
        if allowed:  # the health actor logs it too ([ALERT]): below critical this is detail
            quiet = health and severity is not Severity.CRITICAL
            logger.log("DEBUG" if quiet else level, "{}{}", text,
                       f" ({held} more like it held back)" if held else "")
        if health:
            self.tell(health, Alert(kind, text, self.now(), severity))

    def _forward_token(self, token: FlushToken) -> None:
        """Forward the step's token to every name told since the last one, then count this
        actor done (engine.runtime.barrier). Under a dispatcher nothing is remembered: the
        token is done at once (the dispatcher's ``run`` returning is the barrier there)."""
        told = self._told
        barrier = token.barrier
        if told and self.registry is not None:
            self._told = set()
            barrier.add(len(told))
            for name in told:
                self.registry.tell(name, token)
        barrier.done()

    # -- timers ----------------------------------------------------------------------------------
    def schedule_at(self, when: float, name: str, payload: Any = None) -> TimerHandle:
        """Deliver ``TimerFired(name, when, payload)`` to this actor at engine time ``when``."""
        return self._own(self._require_clock().call_at(
            when, self._timer_callback(name, payload), name=f"{self.name}:{name}"))

    def schedule_every(self, interval: float, name: str, *, first: float | None = None,
                       payload: Any = None) -> TimerHandle:
        """Deliver ``TimerFired`` every ``interval`` engine seconds while this actor lives.

        On a real-time clock (paper, live) a firing is skipped while the previous one of the
        same name still waits in the inbox: an actor that falls behind gets one timer, not a
        burst of them (thousands of orderbook polls queued behind a slow broker call). A
        virtual clock delivers every firing (replay stays deterministic)."""
        clock = self._require_clock()
        fire = self._timer_callback(name, payload)
        if math.isfinite(clock.speed):
            pending = self._periodic_pending
            inner = fire

            def fire() -> None:
                if name in pending:
                    return
                pending.add(name)
                inner()
        return self._own(clock.call_every(interval, fire, name=f"{self.name}:{name}",
                                          first=first))

    def real_s(self, seconds: float) -> float:
        """A real-time interval (a broker rate, a poll, a confirmation timeout) in engine
        seconds: scaled by the clock's speed, so paper at 60x calls the broker as often per
        real second as live does, not 60 times as often (against a 10/s limit the actor stalls
        behind 429s and its timers read as timeouts); as given on a virtual clock (replay)."""
        speed = self._require_clock().speed
        return seconds * speed if math.isfinite(speed) else seconds

    def cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _own(self, handle: TimerHandle) -> TimerHandle:
        self._timers = [h for h in self._timers if not h.cancelled and
                        (h.interval is not None or h.due >= handle.due - 86_400)]
        self._timers.append(handle)
        return handle

    def _require_clock(self) -> Clock:
        if self.clock is None:
            raise RuntimeError(f"{self.name} has no engine clock")
        return self.clock

    def _timer_callback(self, name: str, payload: Any) -> Callable[[], None]:
        ref = self.actor_ref
        registry = self.registry
        clock = self._require_clock()
        me = self.name

        def fire() -> None:
            if self.actor_stopped.is_set():
                return
            message = TimerFired(name, clock.time(), payload)
            if registry is None:
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass
            elif registry.ref(me) in (ref, None):
                # None: not registered yet (a timer due at once from on_start can fire before
                # the supervisor registers this incarnation); the registry stashes the message
                # and hands it over on registration
                registry.tell(me, message)

        return fire

    # -- lifecycle (Pykka's internal hooks, all run on the actor's own thread) -----------------
    def _actor_loop_setup(self) -> None:
        RUNNING.actor = self
        super()._actor_loop_setup()

    def _handle_failure(self, exception_type: type[BaseException] | None,
                        exception_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        """Pykka's single funnel for every failure: on_start, a told message, on_stop."""
        if self._failure is None:
            kind = exception_type.__name__ if exception_type else "Error"
            self._failure = f"{kind}: {exception_value}"
            if self._poison is not None and self._poison[1] is not exception_value:
                self._poison = None  # an earlier ask's error, not what stopped the actor
        super()._handle_failure(exception_type, exception_value, traceback)

    def _actor_loop_teardown(self) -> None:
        """Last thing the thread does: leave the inbox to the supervisor, report the exit."""
        self.cancel_timers()
        if self.supervision is None:
            super()._actor_loop_teardown()  # unsupervised: Pykka's own clean-up
        if self._poison is not None and self._failure is not None and self.registry is not None:
            self.registry.dead_letter(self.name, self._poison[0],
                                      f"crashed {self.name}: {self._failure}")
        if self.supervision is not None:
            self.supervision.child_exited(self.generation, self._failure is None,
                                          self._failure or "stopped")


EngineActor._dispatch = EngineActor._handlers()
