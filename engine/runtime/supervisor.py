"""The supervisor tree: restarts failed actors the way Erlang/OTP supervisors do.

Owns the lifecycle of every supervised actor (spec: shared/specs/supervision.md):
- children start in declaration order and stop in reverse order;
- a crash (the child's exit report) or a hang (no answer to a liveness ping while its progress
  counter stands still) fails the child; its restart type decides whether it comes back and the
  strategy (one_for_one / one_for_all / rest_for_one) which siblings come back with it;
- restarts wait a jittered exponential backoff on the timer clock (the engine clock, or a wall
  clock in replay); meanwhile the registry stashes
  the names' messages, so senders never notice;
- more than ``max_restarts`` within ``within_seconds`` and the supervisor gives up: it stops its
  children and crashes, escalating to its parent; at the root it calls the engine's
  ``on_safe_stop`` exactly once;
- every restart is a ``RestartRecord``: logged, kept for status, passed to ``on_restart``.

Each supervisor is itself an ``EngineActor``, so its state is touched by its own thread only;
children notify it with ``ChildExited``, clock timers with ``RestartChild`` and ``LivenessCheck``.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from engine.messages import ChildExited, LivenessCheck, Ping, RestartChild, RestartRecord
from engine.runtime.actor import EngineActor, Supervision, actor_of, handles
from engine.runtime.clock import Clock, TimerHandle
from engine.runtime.registry import Registry
from engine.settings import setting


class RestartType(StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted after a crash, not after a normal stop
    TEMPORARY = "temporary"  # never restarted


class Strategy(StrEnum):
    ONE_FOR_ONE = "one_for_one"  # restart only the child that failed
    ONE_FOR_ALL = "one_for_all"  # stop all (reverse order), restart all (start order)
    REST_FOR_ONE = "rest_for_one"  # restart the failed child and every child started after it


@dataclass(frozen=True, slots=True)
class SupervisionSettings:
    max_restarts: int = setting(5, "restarts a supervisor allows within within_seconds before it "
                                "gives up and escalates (at the root: safe stop)", min=0, max=1000)
    within_seconds: float = setting(60.0, "the window, in seconds, that max_restarts counts over",
                                    min=0.001, max=86_400)
    backoff_min: float = setting(0.1, "delay before the first restart of a failed child, seconds",
                                 min=0.0, max=3600)
    backoff_max: float = setting(30.0, "longest delay before a restart, seconds (the delay "
                                 "doubles with each consecutive failure up to this)",
                                 min=0.0, max=3600)
    backoff_jitter: float = setting(0.2, "random extra delay, as a fraction of the delay",
                                    min=0.0, max=1.0)
    stable_after: float = setting(30.0, "seconds a child must run without failing for its "
                                  "backoff to start again from backoff_min", min=0.0, max=86_400)
    liveness_interval: float = setting(5.0, "seconds (engine time) between liveness pings to "
                                       "each child", min=0.01, max=3600)
    liveness_timeout: float = setting(10.0, "real seconds a child may leave a ping unanswered "
                                      "without completing any message before it counts as hung",
                                      min=0.01, max=3600)
    stash_limit: int = setting(10_000, "messages held per name while its actor restarts; beyond "
                               "this they become dead letters", min=1, max=10_000_000)

    def problems(self) -> list[tuple[tuple[str, str], str]]:
        """Checks that span keys, as (keys, problem) pairs for the config loader (the key the
        problem is about first)."""
        found: list[tuple[tuple[str, str], str]] = []
        if self.backoff_min > self.backoff_max:
            found.append((("backoff_max", "backoff_min"), "must be at least backoff_min"))
        if self.liveness_timeout < self.liveness_interval:
            found.append((("liveness_timeout", "liveness_interval"),
                          "must be at least liveness_interval"))
        return found


ActorFactory = Callable[[Supervision], "pykka.ActorRef[Any]"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One supervised actor. ``factory(supervision)`` builds and starts a fresh ``EngineActor``
    (``lambda sup: MyActor.start(sup, ...)``) that reports its exits through ``supervision``."""

    name: str
    factory: ActorFactory
    restart: RestartType = RestartType.PERMANENT
    shutdown_timeout: float = 5.0

    @property
    def stop_timeout(self) -> float:
        return self.shutdown_timeout


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """A supervisor and its children (actors or supervisors). Restarted by its parent as a unit.

    ``shutdown_timeout`` defaults to the sum of its children's, plus a second.
    """

    name: str
    strategy: Strategy
    children: Sequence[ChildSpec | SupervisorSpec]
    settings: SupervisionSettings = field(default_factory=SupervisionSettings)
    restart: RestartType = RestartType.PERMANENT
    shutdown_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", tuple(self.children))

    @property
    def stop_timeout(self) -> float:
        if self.shutdown_timeout is not None:
            return self.shutdown_timeout
        return 1.0 + sum(child.stop_timeout for child in self.children)

    def descendants(self) -> list[ChildSpec | SupervisorSpec]:
        """Every spec below this supervisor, in start order (depth first)."""
        found: list[ChildSpec | SupervisorSpec] = []
        for child in self.children:
            found.append(child)
            if isinstance(child, SupervisorSpec):
                found.extend(child.descendants())
        return found


@dataclass(frozen=True, slots=True)
class ChildStatus:
    name: str
    supervisor: str
    alive: bool
    generation: int
    restarts: int
    state: str


class SupervisorEscalation(Exception):
    """Raised inside a supervisor that gave up, so that its parent sees it crash."""


class _State(StrEnum):
    RUNNING = "running"
    PENDING = "restart_pending"  # failed or stopped for a sibling; a restart timer is set
    STOPPED = "stopped"  # stopped by its supervisor, or just exited (decision in progress)
    DONE = "done"  # exited and not coming back (temporary, or transient after a normal stop)


STOP_POLL = 0.05  # seconds between checks on a child asked to stop

# Process-wide, so a report or timer from an old actor or supervisor instance never matches.
_generations = itertools.count(1)
_tokens = itertools.count(1)


@dataclass(slots=True)
class _Probe:
    """An outstanding liveness ping and the last time the child's progress counter moved."""

    future: pykka.Future[Any]
    progress: int
    since: float


@dataclass(slots=True)
class _Child:
    spec: ChildSpec | SupervisorSpec
    index: int
    state: _State = _State.STOPPED
    ref: pykka.ActorRef[Any] | None = None
    generation: int = 0
    started_at: float | None = None
    failures: int = 0  # consecutive, for the backoff
    restarts: int = 0
    token: int = 0  # which pending restart this child belongs to
    timer: TimerHandle | None = None
    delay: float = 0.0
    reason: str = ""
    probe: _Probe | None = None

    @property
    def name(self) -> str:
        return self.spec.name


class _Tree:
    """What all supervisors of one tree share: hooks, restart history, status (thread-safe)."""

    def __init__(self, registry: Registry, clock: Clock, on_safe_stop: Callable[[str], None],
                 on_restart: Callable[[RestartRecord], None] | None, rng: random.Random,
                 timers: Clock | None = None) -> None:
        self.registry = registry
        self.clock = clock  # the engine clock, handed to children
        self.timers = timers or clock  # what backoff and liveness run on
        self.stopped = threading.Event()
        self._on_safe_stop = on_safe_stop
        self._on_restart = on_restart
        self._rng = rng
        self._lock = threading.Lock()
        self._history: list[RestartRecord] = []
        self._rows: dict[str, tuple[str, pykka.ActorRef[Any] | None, int, int, _State]] = {}
        self._safe_stopped = False

    def random(self) -> float:
        with self._lock:
            return self._rng.random()

    def record(self, record: RestartRecord) -> None:
        with self._lock:
            self._history.append(record)
        logger.warning("restart #{} of {} (by {}) after {:.3f}s: {}", record.attempt,
                       record.name, record.supervisor, record.delay, record.reason)
        if self._on_restart is not None:
            try:
                self._on_restart(record)
            except Exception:
                logger.exception("on_restart hook failed for {}", record.name)

    def publish(self, supervisor: str, child: _Child) -> None:
        with self._lock:
            self._rows[child.name] = (supervisor, child.ref, child.generation, child.restarts,
                                      child.state)

    def safe_stop(self, reason: str) -> None:
        with self._lock:
            if self._safe_stopped:
                return
            self._safe_stopped = True
        logger.critical("supervision gave up at the root; safe stop: {}", reason)
        try:
            self._on_safe_stop(reason)
        except Exception:
            logger.exception("on_safe_stop hook failed")

    def history(self) -> list[RestartRecord]:
        with self._lock:
            return list(self._history)

    def status(self) -> list[ChildStatus]:
        with self._lock:
            rows = list(self._rows.items())
        return [ChildStatus(name, sup, state is _State.RUNNING and ref is not None
                            and ref.is_alive(), generation, restarts, state.value)
                for name, (sup, ref, generation, restarts, state) in rows]


class _Link:
    """What one generation of a child knows of its supervisor
    (``engine.runtime.actor.Supervision``)."""

    __slots__ = ("_quiet", "_supervisor", "clock", "generation", "name", "registry")

    def __init__(self, name: str, generation: int, registry: Registry, clock: Clock,
                 supervisor: pykka.ActorRef[Any], quiet: threading.Event) -> None:
        self.name = name
        self.generation = generation
        self.registry = registry
        self.clock = clock
        self._supervisor = supervisor
        self._quiet = quiet

    def child_exited(self, generation: int, normal: bool, reason: str) -> None:
        if self._quiet.is_set():
            return  # the supervisor is stopping its children itself and expects these exits
        try:
            self._supervisor.tell(ChildExited(self.name, generation, normal, reason))
        except pykka.ActorDeadError:
            logger.debug("{} exited after its supervisor: {}", self.name, reason)


class Supervisor(EngineActor):
    """Supervises the children of one ``SupervisorSpec``; started by ``start_tree`` or a parent."""

    def __init__(self, supervision: Supervision | None, spec: SupervisorSpec,
                 tree: _Tree) -> None:
        super().__init__(supervision, name=spec.name, registry=tree.registry, clock=tree.clock)
        self.spec = spec
        self._tree = tree
        self._registry = tree.registry
        self._clock = tree.timers
        self._settings = spec.settings
        self._is_root = supervision is None
        self._children = [_Child(child, i) for i, child in enumerate(spec.children)]
        self._by_name = {child.name: child for child in self._children}
        self._restart_times: deque[float] = deque()
        self._quiet = threading.Event()
        self._liveness: TimerHandle | None = None
        self._pings = itertools.count(1)

    # -- lifecycle -----------------------------------------------------------------------------
    def on_start(self) -> None:
        failed: _Child | None = None
        for child in self._children:
            if self._quiet.is_set():
                return  # gave up while starting
            if failed is not None:  # the children after one that failed to start wait for it
                self._join_restart(child, failed, f"waiting for {failed.name} to start")
                continue
            self._start(child)
            if child.state is _State.PENDING:
                failed = child
        if self._quiet.is_set() or self._registry.dispatcher is not None:
            return  # on one thread (calling-thread dispatcher) a hang cannot be watched for
        self._liveness = self._clock.call_every(
            self._settings.liveness_interval,
            lambda: self._to_self(LivenessCheck(next(self._pings))),
            name=f"{self.name}.liveness")

    def on_stop(self) -> None:
        self._shutdown()
        if self._is_root:
            self._retire_tree("engine stopped")
            self._tree.stopped.set()

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        self._shutdown()
        if self._is_root:  # the root never escalates by raising: this is a bug in supervision
            kind = exception_type.__name__ if exception_type else "Error"
            self._retire_tree("root supervisor crashed")
            self._tree.safe_stop(f"root supervisor {self.name} crashed: {kind}: "
                                 f"{exception_value}")
            self._tree.stopped.set()

    # -- notifications -------------------------------------------------------------------------
    @handles(ChildExited)
    def _on_child_exited(self, msg: ChildExited) -> None:
        child = self._by_name.get(msg.name)
        if child is None or child.generation != msg.generation or child.state is not _State.RUNNING:
            logger.debug("{}: ignoring a stale exit report from {} (generation {})", self.name,
                         msg.name, msg.generation)
            return
        if msg.normal:
            logger.info("{}: {} stopped ({})", self.name, child.name, msg.reason)
        else:
            logger.error("{}: {} crashed: {}", self.name, child.name, msg.reason)
        self._gone(child)
        self._child_down(child, msg.normal, msg.reason)

    @handles(RestartChild)
    def _on_restart_due(self, msg: RestartChild) -> None:
        token = msg.generation  # the pending restart's token, shared by every member of it
        for child in self._children:
            if child.state is not _State.PENDING or child.token != token:
                continue  # not in this restart, or re-scheduled by a failure earlier in this loop
            child.timer = None
            if child.generation:  # else a first start that waited for an earlier sibling
                child.restarts += 1
                self._tree.record(RestartRecord(child.name, self.name, child.reason,
                                                self._tree.clock.time(), child.restarts,
                                                child.delay))
            self._start(child)

    @handles(LivenessCheck)
    def _on_liveness_check(self, msg: LivenessCheck) -> None:
        now = time.monotonic()  # hangs are a real-time matter, whatever the engine clock does
        for child in self._children:
            if child.state is not _State.RUNNING or child.ref is None:
                continue
            actor = actor_of(child.ref)
            progress = actor.progress if actor is not None else -1
            probe = child.probe
            if probe is None or _answered(probe.future):
                child.probe = _Probe(child.ref.ask(Ping(msg.seq), block=False), progress, now)
            elif progress != probe.progress:
                probe.progress, probe.since = progress, now  # busy, but getting through its inbox
            elif now - probe.since >= self._settings.liveness_timeout:
                self._hung(child, now - probe.since)

    # -- starting and stopping children --------------------------------------------------------
    def _start(self, child: _Child) -> None:
        child.generation = next(_generations)
        child.probe = None
        link = _Link(child.name, child.generation, self._registry, self._tree.clock,
                     self.actor_ref, self._quiet)
        try:
            if isinstance(child.spec, SupervisorSpec):
                ref = Supervisor.start(link, child.spec, self._tree)
            else:
                ref = child.spec.factory(link)
        except Exception as exc:
            reason = f"start failed: {type(exc).__name__}: {exc}"
            logger.opt(exception=exc).error("{}: could not start {}", self.name, child.name)
            child.state, child.ref = _State.STOPPED, None
            self._failed(child, reason)
            return
        child.ref, child.state = ref, _State.RUNNING
        child.started_at = self._clock.monotonic()
        self._registry.register(child.name, ref)
        self._tree.publish(self.name, child)
        logger.debug("{}: started {} (generation {})", self.name, child.name, child.generation)
        if isinstance(child.spec, SupervisorSpec):
            self._await_started(ref)

    def _await_started(self, ref: pykka.ActorRef[Any]) -> None:
        """Let a child supervisor start its own children before the next sibling starts."""
        try:
            ref.ask(Ping(0), timeout=self._settings.liveness_timeout / 2)
        except (pykka.Timeout, pykka.ActorDeadError):
            pass  # its exit report or the liveness check takes it from here
        self.progress += 1

    def _stop_child(self, child: _Child) -> None:
        """Orderly stop within its shutdown timeout; its name keeps stashing messages."""
        ref = child.ref
        child.state, child.probe = _State.STOPPED, None
        if ref is not None:
            actor = actor_of(ref)
            if actor is not None:  # e.g. blocked asking the sibling whose failure stops it
                actor.cancel_waits()
            if not self._stop_actor(child.name, ref, child.spec.stop_timeout):
                logger.error("{}: {} did not stop within {}s; abandoning it", self.name,
                             child.name, child.spec.stop_timeout)
                self._abandon(child, ref)
            self._registry.suspend(child.name, ref)
        self.progress += 1  # a long group stop is progress, not a hang, to our own parent
        self._tree.publish(self.name, child)

    def _stop_actor(self, name: str, ref: pykka.ActorRef[Any], timeout: float) -> bool:
        """Ask an actor to stop; True once it has (or was already gone) within ``timeout``.

        An actor that dies meanwhile leaves the request in an inbox nobody reads: sealing that
        inbox answers it, so a crash racing the stop costs a poll, not the whole timeout.
        """
        stopped = ref.stop(block=False)
        deadline = time.monotonic() + timeout
        while True:
            try:
                stopped.get(timeout=min(STOP_POLL, max(0.0, deadline - time.monotonic())))
                return True
            except pykka.Timeout:
                pass
            if not ref.is_alive():
                self._registry.suspend(name, ref)
            if time.monotonic() >= deadline:
                return False

    def _shutdown(self) -> None:
        """Stop every child, last started first, and all timers. Idempotent."""
        self._quiet.set()
        if self._liveness is not None:
            self._liveness.cancel()
        for child in reversed(self._children):
            if child.timer is not None:
                child.timer.cancel()
                child.timer = None
            if child.state is _State.RUNNING:
                self._stop_child(child)
            elif child.state is _State.PENDING:
                child.state = _State.STOPPED
                self._tree.publish(self.name, child)

    def _hung(self, child: _Child, silent: float) -> None:
        ref = child.ref
        assert ref is not None
        if ref.is_alive():
            reason = f"hung: no answer to ping in {silent:.1f}s"
        else:
            reason = f"exited without an exit report (no answer to ping in {silent:.1f}s)"
        logger.error("{}: {} {}; abandoning it", self.name, child.name, reason)
        self._abandon(child, ref)
        self._gone(child)
        self._child_down(child, False, reason)

    def _abandon(self, child: _Child, ref: pykka.ActorRef[Any]) -> None:
        """Give up on an actor that will not stop: it handles nothing more if it ever unblocks,
        and its late exit report is stale (its generation is over)."""
        ref.actor_stopped.set()
        pykka.ActorRegistry.unregister(ref)
        if isinstance(child.spec, SupervisorSpec):
            self._stop_orphans(child.spec)

    def _stop_orphans(self, spec: SupervisorSpec) -> None:
        """The children of an abandoned supervisor, stopped on its behalf, last first."""
        for orphan in reversed(spec.descendants()):
            ref = self._registry.ref(orphan.name)
            if ref is None:
                continue
            if not self._stop_actor(orphan.name, ref, orphan.stop_timeout):
                ref.actor_stopped.set()
                pykka.ActorRegistry.unregister(ref)
            self._registry.suspend(orphan.name, ref)

    def _gone(self, child: _Child) -> None:
        """The child's actor is over: hold its name's messages (with those left in its inbox)."""
        child.state, child.probe = _State.STOPPED, None
        if child.ref is not None:
            self._registry.suspend(child.name, child.ref)

    # -- deciding what to restart --------------------------------------------------------------
    def _child_down(self, child: _Child, normal: bool, reason: str) -> None:
        restart = child.spec.restart
        if restart is RestartType.TEMPORARY or (restart is RestartType.TRANSIENT and normal):
            child.state, child.ref = _State.DONE, None
            names = [child.name]
            if isinstance(child.spec, SupervisorSpec):
                names += [d.name for d in child.spec.descendants()]
            for name in names:
                self._registry.retire(name, f"{child.name} ({restart}) exited: {reason}")
            self._tree.publish(self.name, child)
            logger.info("{}: not restarting {} ({}): {}", self.name, child.name, restart, reason)
            return
        self._failed(child, reason)

    def _failed(self, child: _Child, reason: str) -> None:
        """Count the restart against the intensity limit, stop the siblings the strategy takes
        down with the child, and schedule their common restart after the child's backoff."""
        settings = self._settings
        now = self._clock.monotonic()
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] <= now - settings.within_seconds:
            self._restart_times.popleft()
        if len(self._restart_times) > settings.max_restarts:
            self._give_up(f"more than {settings.max_restarts} restarts in "
                          f"{settings.within_seconds}s; last: {child.name}: {reason}")
            return
        if child.started_at is not None and now - child.started_at >= settings.stable_after:
            child.failures = 0
        delay = self._backoff(child.failures)
        child.failures += 1
        group = self._group(child)
        for other in reversed(group):
            if other is not child and other.state is _State.RUNNING:
                self._stop_child(other)
        token = next(_tokens)
        timer = self._clock.call_later(
            delay, lambda: self._to_self(RestartChild(child.name, token)),
            name=f"{self.name}.restart.{child.name}")
        for member in group:
            if member.timer is not None:
                member.timer.cancel()  # merged into this restart
            member.state, member.token, member.timer, member.delay = (
                _State.PENDING, token, timer, delay)
            member.reason = reason if member is child else (
                f"{self.spec.strategy} after {child.name} failed: {reason}")
            self._tree.publish(self.name, member)
        logger.warning("{}: restarting {} in {:.3f}s: {}", self.name,
                       ", ".join(m.name for m in group), delay, reason)

    def _join_restart(self, child: _Child, leader: _Child, reason: str) -> None:
        """Make ``child`` part of the restart already scheduled for ``leader``."""
        child.state, child.token, child.timer, child.delay, child.reason = (
            _State.PENDING, leader.token, leader.timer, leader.delay, reason)
        self._tree.publish(self.name, child)

    def _group(self, child: _Child) -> list[_Child]:
        """The children restarted together with ``child``, in start order."""
        strategy = self.spec.strategy
        live = (_State.RUNNING, _State.PENDING)
        if strategy is Strategy.ONE_FOR_ONE:
            members = [child]
        elif strategy is Strategy.ONE_FOR_ALL:
            members = [c for c in self._children if c is child or c.state in live]
        else:
            members = [c for c in self._children
                       if c is child or (c.index > child.index and c.state in live)]
        # Fold in restarts already pending for these members, and the siblings still waiting
        # in the restart this child failed in (they must keep starting after it).
        tokens = {c.token for c in members if c.state is _State.PENDING} | {child.token}
        return [c for c in self._children
                if c in members or (c.state is _State.PENDING and c.token in tokens)]

    def _backoff(self, failures: int) -> float:
        settings = self._settings
        base = min(settings.backoff_max, settings.backoff_min * 2.0 ** min(failures, 64))
        return base * (1.0 + self._tree.random() * settings.backoff_jitter)

    def _give_up(self, reason: str) -> None:
        logger.critical("{}: giving up: {}", self.name, reason)
        self._shutdown()
        if not self._is_root:
            raise SupervisorEscalation(f"{self.name} gave up: {reason}")
        self._tree.safe_stop(f"{self.name} gave up: {reason}")
        self.stop()

    def _retire_tree(self, reason: str) -> None:
        for spec in [self.spec, *self.spec.descendants()]:
            self._registry.retire(spec.name, reason)

    def _to_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # a timer that outlived this supervisor


def _answered(future: pykka.Future[Any]) -> bool:
    try:
        future.get(timeout=0)
    except (pykka.Timeout, pykka.ActorDeadError):
        return False
    except Exception:
        return True  # it answered, with an error: it is alive
    return True


class SupervisorHandle:
    """The engine's grip on a running tree."""

    def __init__(self, ref: pykka.ActorRef[Any], tree: _Tree, spec: SupervisorSpec) -> None:
        self._ref = ref
        self._tree = tree
        self.spec = spec

    @property
    def registry(self) -> Registry:
        return self._tree.registry

    def stop(self, timeout: float | None = None) -> bool:
        """Orderly stop: children last-first, each within its shutdown timeout; nothing restarts.

        Returns True once the whole tree has stopped.
        """
        limit = timeout if timeout is not None else self.spec.stop_timeout
        try:
            self._ref.stop(block=True, timeout=limit)
        except pykka.Timeout:
            logger.error("supervisor tree {} did not stop within {}s", self.spec.name, limit)
        return self._tree.stopped.is_set()

    def wait_until_stopped(self, timeout: float | None = None) -> bool:
        return self._tree.stopped.wait(timeout)

    def restart_history(self) -> list[RestartRecord]:
        return self._tree.history()

    def restart_count(self) -> int:
        return len(self._tree.history())

    def status(self) -> list[ChildStatus]:
        """Every supervised actor of the tree, in first-start order."""
        return self._tree.status()


def start_tree(spec: SupervisorSpec, *, registry: Registry, clock: Clock,
               on_safe_stop: Callable[[str], None],
               on_restart: Callable[[RestartRecord], None] | None = None,
               rng: random.Random | None = None, start_timeout: float = 30.0,
               timer_clock: Clock | None = None) -> SupervisorHandle:
    """Start the tree rooted at ``spec``; returns once every child has been started.

    Every name of the tree is declared in ``registry`` first, so messages between children sent
    while the tree is still starting are stashed, not lost. ``clock`` is the engine clock the
    children get; ``timer_clock`` (default: the same) is what restart backoff and liveness pings
    run on: replay passes a wall clock, since a hang or a crash loop is a real-time matter.
    """
    names = [spec.name] + [child.name for child in spec.descendants()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or not all(names):
        raise ValueError(f"supervisor tree names must be unique and non-empty: {duplicates}")
    tree = _Tree(registry, clock, on_safe_stop, on_restart, rng or random.Random(), timer_clock)
    for name in names:
        registry.declare(name)
    ref = Supervisor.start(None, spec, tree)
    registry.register(spec.name, ref)
    try:
        ref.ask(Ping(0), timeout=start_timeout)
    except pykka.ActorDeadError:
        logger.error("supervisor tree {} gave up while starting", spec.name)
    return SupervisorHandle(ref, tree, spec)
