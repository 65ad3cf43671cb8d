"""Pacing a scaled-clock market to what the machine keeps up with (paper mode).

Owns the rule that decides whether the next tick may be published yet. A paper run plays its
session on a ``ScaledClock``; when the CPU is scarce (a busy VPS, other jobs), the player, the
sockets or the engine's actors fall behind the clock. Without pacing, ticks arrive after their
minute closed (dropped as late), every bar is wrong, and timers (polls, cancel checks, health
probes) fire against a clock that runs ahead of the work they check: the engine reads its own
slowness as broker timeouts.

With a ``Pacer`` the playback publishes a tick only while

- the engine has received ticks up to ``max_lag_s`` market seconds behind the last published
  one (``consumed``, called by the engine's feed client), and
- no more than ``max_backlog`` messages wait in the actors' inboxes (``backlog``);

and it lets the clock go on to the next tick's time only once every tick published more than
``transit_s`` market seconds before that time has been received (``in_transit``): a tick still
on its way is stamped on arrival, and at 120x ten real milliseconds in a socket are more than
a market second, enough to miss its minute.

Meanwhile the clock is held on a leash (``ScaledClock.hold_at``), so market time stands still
and goes on from there: the day takes longer, nothing is late, nothing is lost. A consumer that
stays silent for ``stall_s`` real seconds (a tick it dropped as invalid, say) does not hold the
market forever: the player goes on.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    """See the module docstring. Thread-safe enough: floats are replaced atomically."""

    def __init__(self, *, max_lag_s: float = 2.0, max_backlog: int = 2000,
                 backlog: Callable[[], int] | None = None, stall_s: float = 1.0,
                 check_every_s: float = 0.02, transit_s: float = 0.25) -> None:
        self.max_lag_s = max_lag_s
        self.transit_s = transit_s
        self._lock = threading.Lock()
        self._inflight: deque[float] = deque()  # arrival times of ticks sent, not received
        self.max_backlog = max_backlog
        self._backlog = backlog
        self.stall_s = stall_s
        self.check_every_s = check_every_s
        self._published = -math.inf
        self._consumed = -math.inf
        self._consumed_at = time.monotonic()
        self._checked_at = -math.inf
        self.waits = 0  # how many ticks had to wait
        self.waited_s = 0.0  # real seconds spent waiting

    def consumed(self, ts: float, count: int = 1) -> None:
        """The engine has received ``count`` ticks, the newest stamped ``ts`` (exchange time);
        one connection delivers in order, so they are the oldest in transit."""
        with self._lock:
            for _ in range(min(count, len(self._inflight))):
                self._inflight.popleft()
        self._consumed_at = time.monotonic()
        if ts > self._consumed:
            self._consumed = ts

    def published(self, ts: float, recv_ts: float | None = None) -> None:
        """A tick went out (``recv_ts``: its due arrival time, when the engine will take it)."""
        if ts > self._published:
            self._published = ts
        if recv_ts is not None:
            with self._lock:
                self._inflight.append(recv_ts)

    def in_transit(self, before: float) -> bool:
        """True while a tick due more than ``transit_s`` before ``before`` is still on its way
        (and the consumer has not been silent for ``stall_s``: then it is given up)."""
        with self._lock:
            if not self._inflight or self._inflight[0] >= before - self.transit_s:
                return False
            if time.monotonic() - self._consumed_at < self.stall_s:
                return True
            self._inflight.clear()  # dropped by the consumer (invalid), or never to come
            return False

    def wait_transit(self, before: float, stop: threading.Event) -> bool:
        """Wait while ``in_transit(before)``; False if ``stop`` was set first."""
        if not self.in_transit(before):
            return True
        self.waits += 1
        t0 = time.monotonic()
        try:
            while self.in_transit(before):
                if stop.wait(0.001):
                    return False
            return True
        finally:
            self.waited_s += time.monotonic() - t0

    def behind(self) -> bool:
        """True while the next tick should wait."""
        now = time.monotonic()
        if self._published - self._consumed > self.max_lag_s \
                and now - self._consumed_at < self.stall_s:
            return True
        if self._backlog is None or now - self._checked_at < self.check_every_s:
            return False
        self._checked_at = now
        if self._backlog() > self.max_backlog:
            self._checked_at = -math.inf  # look again on the next call
            return True
        return False

    def wait(self, stop: threading.Event) -> bool:
        """Wait while behind; False if ``stop`` was set first."""
        if not self.behind():
            return True
        self.waits += 1
        t0 = time.monotonic()
        try:
            while self.behind():
                if stop.wait(0.005):
                    return False
            return True
        finally:
            self.waited_s += time.monotonic() - t0
