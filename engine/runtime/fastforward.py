"""A scaled clock that jumps over idle stretches of market time (nights, holidays, quiet hours).

Owns ``FastForwardClock``: market time runs ``speed`` times real time, except that on reaching
the start of a listed skip it jumps to the skip's end. The mapping is a pure function of the
underlying scaled time, so a simulator and every engine attached to it (``simulator.json``
carries the base time and the skips) agree on the market time to the millisecond.

>>> c = FastForwardClock(0.0, 1.0, [(10.0, 100.0)], paused=True)
>>> FastForwardClock(120.0, 1.0, [(10.0, 100.0)], paused=True).base_time()
30.0
>>> c.market_at(5.0), c.market_at(10.0), c.market_at(15.0), c.base_of(105.0), c.base_of(50.0)
(5.0, 100.0, 105.0, 15.0, 10.0)
>>> c.stop()
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from engine.runtime.clock import ScaledClock

Skip = tuple[float, float]


class FastForwardClock(ScaledClock):
    """``ScaledClock`` whose market time jumps from ``a`` to ``b`` for each skip ``(a, b)``.

    ``start`` is the market time at construction (``base=True``: the underlying, unskipped
    time, as ``base_time()`` reads it back, which is what ``simulator.json`` carries).
    """

    def __init__(self, start: float, speed: float, skips: Iterable[Skip] = (), *,
                 paused: bool = False, base: bool = False) -> None:
        ordered = sorted((float(a), float(b)) for a, b in skips if b > a)
        # each skip's start in underlying time: its market start less the skips before it
        self._skips: list[tuple[float, float, float]] = []
        skipped = 0.0
        for a, b in ordered:
            self._skips.append((a - skipped, a, b))
            skipped += b - a
        super().__init__(start if base else self.base_of(start), speed, paused=paused)

    @property
    def skips(self) -> list[Skip]:
        return [(a, b) for _, a, b in self._skips]

    def market_at(self, base: float) -> float:
        """Market time at underlying time ``base``."""
        shift = 0.0
        for at, a, b in self._skips:
            if base < at:
                break
            shift += b - a
        return base + shift

    def base_of(self, market: float) -> float:
        """The first underlying time at which market time reaches ``market``."""
        shift = 0.0
        for at, a, b in self._skips:
            if market <= a:
                break
            if market < b:
                return at
            shift += b - a
        return market - shift

    def base_time(self) -> float:
        return super().time()

    def time(self) -> float:
        return self.market_at(super().time())

    def _next_due(self, due: float, interval: float, now: float) -> float:
        """A periodic timer that a jump left more than one interval behind resumes at its next
        slot after ``now`` (keeping its phase) instead of firing once for every skipped slot:
        a night is not thousands of missed polls."""
        nxt = due + interval
        if nxt <= now:
            nxt += math.ceil((now - nxt) / interval + 1e-9) * interval
        return nxt

    def _real_delay(self, engine_delay: float) -> float:
        base = super().time()
        target = self.market_at(base) + engine_delay
        return max(0.0, (self.base_of(target) - base) / self.speed)
