"""The engine clock: the only source of time for actor code, and the timer scheduler.

Three implementations behind one interface:

- ``WallClock``: real time; timers fire on a scheduler thread.
- ``VirtualClock``: time moves only when the replay driver calls ``advance_to``; due timers fire
  synchronously, in due order, inside that call, each seeing ``time() == due``. Replays are
  therefore deterministic and run as fast as the machine allows.
- ``ScaledClock``: real time sped up by a factor from a chosen start (``--speed 60``: one market
  minute per real second); timers fire on a scheduler thread at the scaled moments. It can be
  held on a leash (``hold_at``): market time never passes the leash and, once let go, goes on
  from where it stood, so a machine that cannot keep up makes the market slower, never makes
  the engine see time jump (no burst of timers that reads as timeouts, no tick "late").

Timer callbacks must be quick (typically they ``tell`` an actor a ``TimerFired``); an exception
in one is logged and does not stop the others.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time as _time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from loguru import logger

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def to_ist(ts: float) -> datetime:
    """An epoch timestamp as an aware IST datetime."""
    return datetime.fromtimestamp(ts, IST)


def ist_epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
              second: float = 0.0) -> float:
    """Epoch seconds of a wall-clock moment in IST."""
    whole = int(second)
    base = datetime(year, month, day, hour, minute, whole, tzinfo=IST).timestamp()
    return base + (second - whole)


def fmt_ist(ts: float, with_date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return to_ist(ts).strftime(fmt) + " IST"


@dataclass(slots=True)
class TimerHandle:
    """A scheduled callback. ``cancel()`` is safe from any thread and idempotent. Handles order
    by (due, seq): the clock's heap."""

    due: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    name: str = field(default="", compare=False)
    interval: float | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: TimerHandle) -> bool:
        # by hand, not dataclass(order=True): a replay pushes and pops ~10^5 timers
        if self.due != other.due:
            return self.due < other.due
        return self.seq < other.seq


class Clock(ABC):
    """Engine time (epoch seconds) plus timers scheduled in engine time."""

    def __init__(self) -> None:
        self._heap: list[TimerHandle] = []
        self._lock = threading.RLock()
        self._seq = itertools.count()

    # -- time ----------------------------------------------------------------------------------
    @abstractmethod
    def time(self) -> float:
        """Current engine time, epoch seconds."""

    def now(self) -> datetime:
        """Current engine time as an aware IST datetime."""
        return to_ist(self.time())

    def monotonic(self) -> float:
        """A non-decreasing seconds counter for measuring durations in engine time."""
        return self.time()

    @property
    def speed(self) -> float:
        """Engine seconds per real second (inf for a virtual clock)."""
        return 1.0

    # -- timers --------------------------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[[], None], name: str = "") -> TimerHandle:
        handle = TimerHandle(when, next(self._seq), callback, name)
        self._push(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[[], None],
                   name: str = "") -> TimerHandle:
        return self.call_at(self.time() + max(0.0, delay), callback, name)

    def call_every(self, interval: float, callback: Callable[[], None], name: str = "",
                   first: float | None = None) -> TimerHandle:
        """Fire every ``interval`` engine seconds (drift-free), first at ``first`` if given."""
        if interval <= 0:
            raise ValueError(f"timer interval must be positive, got {interval}")
        due = first if first is not None else self.time() + interval
        handle = TimerHandle(due, next(self._seq), callback, name, interval)
        self._push(handle)
        return handle

    def pending_timers(self) -> int:
        with self._lock:
            return sum(1 for h in self._heap if not h.cancelled)

    def next_due(self) -> float | None:
        with self._lock:
            self._drop_cancelled_head()
            return self._heap[0].due if self._heap else None

    def stop(self) -> None:
        """Stop the scheduler thread, if any; pending timers are dropped."""
        with self._lock:
            self._heap.clear()

    def _push(self, handle: TimerHandle) -> None:
        with self._lock:
            heapq.heappush(self._heap, handle)
            self._on_schedule_changed()

    def _on_schedule_changed(self) -> None:
        """Hook: a threaded clock wakes its scheduler."""

    def _drop_cancelled_head(self) -> None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)

    def _pop_due(self, now: float) -> tuple[float, TimerHandle] | None:
        """Pop the earliest live timer due at or before ``now``: (its due time, handle).

        A periodic handle is pushed back with its next due time, so the caller's handle keeps
        controlling the whole series through ``cancel()``.
        """
        with self._lock:
            self._drop_cancelled_head()
            if not self._heap or self._heap[0].due > now:
                return None
            handle = heapq.heappop(self._heap)
            due = handle.due
            if handle.interval is not None:
                handle.due = self._next_due(due, handle.interval, now)
                heapq.heappush(self._heap, handle)
            return due, handle

    def _next_due(self, due: float, interval: float, now: float) -> float:
        """When a periodic timer that was due at ``due`` fires next (drift-free)."""
        return due + interval

    @staticmethod
    def _fire(handle: TimerHandle) -> None:
        try:
            handle.callback()
        except Exception:
            logger.exception("timer {!r} raised; continuing", handle.name or handle.callback)


class VirtualClock(Clock):
    """Time advanced explicitly by the replay driver; timers fire inside ``advance_to``."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = start

    def time(self) -> float:
        return self._now

    @property
    def speed(self) -> float:
        return float("inf")

    def set_time(self, ts: float) -> None:
        """Jump to ``ts`` without firing timers (used once, at the start of a replay)."""
        self._now = ts

    def advance_to(self, ts: float) -> int:
        """Move time forward to ``ts``, firing every due timer in order. Returns how many fired."""
        if ts < self._now:
            return 0
        fired = 0
        while True:
            popped = self._pop_due(ts)
            if popped is None:
                break
            due, handle = popped
            self._now = max(self._now, due)
            self._fire(handle)
            fired += 1
        self._now = ts
        return fired


class _ThreadedClock(Clock):
    """A clock whose timers fire on a daemon scheduler thread."""

    def __init__(self) -> None:
        super().__init__()
        self._wake = threading.Condition(self._lock)
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-timers",
                                        daemon=True)
        self._thread.start()

    @abstractmethod
    def _real_delay(self, engine_delay: float) -> float:
        """Real seconds to wait for ``engine_delay`` engine seconds."""

    def _on_schedule_changed(self) -> None:
        self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._running:
                    return
                due = self.next_due()
                now = self.time()
                if due is None or due > now:
                    wait = None if due is None else self._real_delay(due - now)
                    self._wake.wait(timeout=wait if wait is None else min(wait, 1.0))
                    continue
            popped = self._pop_due(self.time())
            if popped is not None:
                self._fire(popped[1])

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._heap.clear()
            self._wake.notify_all()


class WallClock(_ThreadedClock):
    """Real time (the system clock), shown in IST."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    def _real_delay(self, engine_delay: float) -> float:
        return engine_delay


class ScaledClock(_ThreadedClock):
    """Real time sped up ``speed`` times, starting at engine time ``start``.

    Created with ``paused=True`` it stands still at ``start`` until ``resume()`` (paper mode
    holds market time until the feed has subscribed, so no tick arrives "late").
    """

    def __init__(self, start: float, speed: float, *, paused: bool = False) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self._start = start
        self._speed = speed
        self._mono0: float | None = None if paused else _time.monotonic()
        self._leash = float("inf")
        self.held_s = 0.0  # engine seconds the leash has held market time back
        super().__init__()

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._mono0 is None

    def resume(self) -> None:
        with self._lock:
            if self._mono0 is None:
                self._mono0 = _time.monotonic()
                self._wake.notify_all()

    def time(self) -> float:
        mono0 = self._mono0
        if mono0 is None:
            return self._start
        t = self._start + (_time.monotonic() - mono0) * self._speed
        if t <= self._leash:
            return t
        with self._lock:  # at the leash: stand there; later go on from there (no jump)
            if self._mono0 is None:
                return self._start
            now = _time.monotonic()
            t = self._start + (now - self._mono0) * self._speed
            if t > self._leash:
                self.held_s += t - self._leash
                self._start, self._mono0, t = self._leash, now, self._leash
            return t

    @property
    def leash(self) -> float:
        return self._leash

    def hold_at(self, limit: float) -> None:
        """Market time may not pass ``limit`` (``inf``: let go). Never moves time back: a
        limit behind the present holds the clock where it is."""
        with self._lock:
            self._leash = max(limit, self.time()) if math.isfinite(limit) else limit
            self._wake.notify_all()

    def _real_delay(self, engine_delay: float) -> float:
        return engine_delay / self._speed
