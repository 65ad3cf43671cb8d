"""Several consecutive sessions played by one simulator: the nights and holidays in between.

Owns ``idle_skips`` (the stretches of market time with nothing to play: from a little after one
session's last tick to a little before the next one's first, which a ``FastForwardClock`` jumps
over, so a night or a holiday passes in an instant) and ``MultiDay`` (the sessions' ticks in one
stream, and each day's rollover: the broker's books start empty every morning, as OpenAlgo's
do). The engine's day lifecycle still sees every transition: pre-open, selection after the
open, closing after the close.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loguru import logger

from engine.market.session_file import SessionReader
from engine.messages import Tick
from engine.runtime.clock import Clock

#: market time kept after a session's last tick (its closing runs) and before the next first
#: tick (the pre-open and the broker-session check run)
AFTER_CLOSE_S = 5 * 60.0
BEFORE_OPEN_S = 20 * 60.0


def idle_skips(spans: Sequence[tuple[float, float]], *, after_s: float = AFTER_CLOSE_S,
               before_s: float = BEFORE_OPEN_S) -> list[tuple[float, float]]:
    """The skips between consecutive sessions' (first, last) tick times."""
    skips = []
    for (_, last), (first, _) in itertools.pairwise(spans):
        a, b = last + after_s, first - before_s
        if b > a:
            skips.append((a, b))
    return skips


class MultiDay:
    """Sessions played one after another (ordered by their first tick)."""

    def __init__(self, sessions: Sequence[Path]) -> None:
        readers = [SessionReader(p) for p in sessions]
        spans = [(r, r.time_range()) for r in readers]
        empty = [str(p) for p, (_, span) in zip(sessions, spans, strict=True) if span is None]
        if empty:
            raise ValueError(f"sessions without ticks: {', '.join(empty)}")
        ordered = sorted(((r, s) for r, s in spans if s is not None), key=lambda rs: rs[1][0])
        self.readers = [r for r, _ in ordered]
        self.spans: list[tuple[float, float]] = [s for _, s in ordered]

    @property
    def first_ts(self) -> float:
        return self.spans[0][0]

    def skips(self) -> list[tuple[float, float]]:
        return idle_skips(self.spans)

    def symbols(self) -> list[tuple[str, str]]:
        seen = {(i.symbol, i.exchange): None for r in self.readers for i in r.symbols()}
        return list(seen)

    def ticks(self) -> Iterator[Tick]:
        for reader in self.readers:
            yield from reader.ticks()

    def schedule_rollovers(self, clock: Clock,
                           lose_state: Callable[[], dict[str, list[dict[str, object]]]]) -> None:
        """At the start of each night, the broker's books are emptied (``lose_state()``)."""
        for a, _ in self.skips():
            clock.call_at(a, lambda: _roll(lose_state), name="sim-day-rollover")


def _roll(lose_state: Callable[[], dict[str, list[dict[str, object]]]]) -> None:
    lost = lose_state()
    logger.info("simulator: a new trading day: the books start empty ({} order(s) of the "
                "last day archived)", len(lost.get("orders", [])))
