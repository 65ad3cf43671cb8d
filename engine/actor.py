"""The base class of every engine actor: a Pykka thread actor that can be supervised.

Owns what all actors share and nothing more:
- message dispatch by type (``@handles(Tick)`` on a method) with a fallback ``handle``;
- a liveness answer (``Ping`` → ``Pong``) and a progress counter the supervisor reads to tell a
  hung actor (blocked inside one message) from a merely busy one;
- reporting its own exit (crash or normal stop) to its supervisor through ``Supervision``;
- daemon threads, so an actor stuck in a blocking call never keeps the process alive.

Actors address each other by name through the registry (``self.tell("orders", msg)``), never by
holding another actor's ref; time comes from ``self.clock``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import pykka
from loguru import logger

from engine.messages import Ping, Pong

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.registry import Registry

M = TypeVar("M")
Handler = Callable[[Any, Any], Any]


class Supervision(Protocol):
    """What a supervised actor knows of its supervisor (implemented by engine.supervisor)."""

    @property
    def name(self) -> str: ...

    @property
    def generation(self) -> int: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def clock(self) -> Clock: ...

    def child_exited(self, generation: int, normal: bool, reason: str) -> None: ...


def handles(*message_types: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler for the given message types."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        existing: tuple[type, ...] = getattr(fn, "_handles", ())
        fn._handles = existing + message_types  # type: ignore[attr-defined]
        return fn

    return mark


class EngineActor(pykka.ThreadingActor):
    """Subclass this; decorate handlers with ``@handles(MessageType)``."""

    use_daemon_thread = True
    _dispatch: ClassVar[dict[type, Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[type, Handler] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for mtype in getattr(attr, "_handles", ()):
                    table[mtype] = attr
        cls._dispatch = table

    def __init__(self, supervision: Supervision | None = None, *, name: str | None = None,
                 registry: Registry | None = None, clock: Clock | None = None) -> None:
        super().__init__()
        self.supervision = supervision
        self.name: str = name or (supervision.name if supervision else type(self).__name__)
        self.registry: Registry | None = registry or (supervision.registry if supervision
                                                      else None)
        self.clock: Clock | None = clock or (supervision.clock if supervision else None)
        self.generation = supervision.generation if supervision else 0
        # Read from the supervisor's thread: messages completed and when the current one began.
        self.progress = 0
        self.busy_since: float | None = None
        self._exit_reported = False
        self._exit_lock = threading.Lock()

    # -- messaging -----------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if type(message) is Ping:
            self.progress += 1
            return Pong(message.seq, self.name)
        handler = self._dispatch.get(type(message))
        try:
            if handler is not None:
                return handler(self, message)
            return self.handle(message)
        finally:
            self.progress += 1

    def handle(self, message: Any) -> Any:
        """Fallback for messages without a ``@handles`` method."""
        logger.warning("{} got an unexpected message {}", self.name, type(message).__name__)
        return None

    def tell(self, name: str, message: Any) -> None:
        """Send to another actor by its stable name."""
        assert self.registry is not None, f"{self.name} has no registry"
        self.registry.tell(name, message)

    # -- lifecycle -----------------------------------------------------------------------------
    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        reason = f"{exception_type.__name__ if exception_type else 'Error'}: {exception_value}"
        self._report_exit(normal=False, reason=reason)

    def on_stop(self) -> None:
        self._report_exit(normal=True, reason="stopped")

    def _report_exit(self, normal: bool, reason: str) -> None:
        with self._exit_lock:
            if self._exit_reported:
                return
            self._exit_reported = True
        if self.supervision is not None:
            self.supervision.child_exited(self.generation, normal, reason)
