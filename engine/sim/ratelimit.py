"""Moving-window rate limiting, as OpenAlgo's server applies it per client IP and endpoint.

A request is allowed when fewer than ``limit`` requests with the same key were allowed within the
last ``window`` seconds (a true moving window, like flask-limiter's "moving-window" strategy).
Refused requests do not count. Time comes from a monotonic callable so tests can drive it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable


class MovingWindowLimiter:
    """Per-key moving-window limiter; thread-safe."""

    def __init__(self, window: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if window <= 0:
            raise ValueError(f"rate-limit window must be positive, got {window}")
        self.window = window
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._hits: dict[Hashable, deque[float]] = {}

    def allow(self, key: Hashable, limit: int) -> bool:
        """Record and allow one request for ``key`` unless ``limit`` are already in the window."""
        now = self._monotonic()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            horizon = now - self.window
            while hits and hits[0] <= horizon:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
