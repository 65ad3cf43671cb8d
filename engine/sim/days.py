"""Several consecutive sessions played by one simulator: the nights and holidays in between.

Owns ``idle_skips`` (the stretches of market time with nothing to play: from a little after one
session's last tick to a little before the next one's first, which a ``FastForwardClock`` jumps
over, so a night or a holiday passes in an instant) and ``MultiDay`` (the sessions' ticks in one
stream, and each day's rollover: the broker's books start empty every morning, as OpenAlgo's
do; each day's books can be kept in a folder). The engine's day lifecycle still sees every
transition: pre-open, selection after the open, closing after the close.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loguru import logger

from engine.market.calendar import MarketCalendar
from engine.market.session_file import SessionReader
from engine.messages import Tick
from engine.runtime.clock import Clock, to_ist

#: market time kept after a session's last tick (its closing runs) and before the next first
#: tick (the pre-open and the broker-session check run)
AFTER_CLOSE_S = 5 * 60.0
BEFORE_OPEN_S = 20 * 60.0


def idle_skips(spans: Sequence[tuple[float, float]], closes: Sequence[float] | None = None, *,
               after_s: float = AFTER_CLOSE_S,
               before_s: float = BEFORE_OPEN_S) -> list[tuple[float, float]]:
    """The skips of consecutive sessions' (first, last) tick times. With each day's session
    ``closes``, a session that ends early also jumps its quiet afternoon to ``before_s`` ahead
    of the close, and each night starts after the close, so the day's exit and closing still
    happen in market time."""
    skips = []
    for i, (_first, last) in enumerate(spans):
        end = last
        if closes is not None:
            if closes[i] - before_s > last + after_s:
                skips.append((last + after_s, closes[i] - before_s))
            end = max(last, closes[i])
        if i + 1 < len(spans):
            a, b = end + after_s, spans[i + 1][0] - before_s
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

    def skips(self, calendar: MarketCalendar | None = None) -> list[tuple[float, float]]:
        """The idle stretches to jump over (with ``calendar``: quiet afternoons too)."""
        closes = None if calendar is None else \
            [calendar.session_bounds(to_ist(first).date())[1] for first, _ in self.spans]
        return idle_skips(self.spans, closes)

    def symbols(self) -> list[tuple[str, str]]:
        seen = {(i.symbol, i.exchange): None for r in self.readers for i in r.symbols()}
        return list(seen)

    def ticks(self) -> Iterator[Tick]:
        for reader in self.readers:
            yield from reader.ticks()

    def schedule_rollovers(self, clock: Clock,
                           lose_state: Callable[[], dict[str, list[dict[str, object]]]],
                           calendar: MarketCalendar | None = None,
                           archive: Path | None = None) -> None:
        """At the start of each night, the broker's books are emptied (``lose_state()``);
        with ``archive`` (a folder), the day's books are kept there as ``books-DATE.json``."""
        for a, b in self.skips(calendar):
            day = to_ist(a).date()
            if day == to_ist(b).date():
                continue  # a quiet afternoon, not a night
            path = archive / f"books-{day.isoformat()}.json" if archive is not None else None
            clock.call_at(a, lambda p=path: _roll(lose_state, p), name="sim-day-rollover")


def _roll(lose_state: Callable[[], dict[str, list[dict[str, object]]]],
          archive: Path | None) -> None:
    lost = lose_state()
    if archive is not None:
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_text(json.dumps(lost, indent=1))
    logger.info("simulator: a new trading day: the books start empty ({} order(s) of the "
                "last day archived{})", len(lost.get("orders", [])),
                f" in {archive}" if archive is not None else "")
