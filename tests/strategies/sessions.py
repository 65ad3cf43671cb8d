"""Handcrafted replay sessions for the baseline_v1 tests: per-minute price paths of a few option
symbols written to a session file, and the standard shape that makes one swing low.

A ``Minute`` is a price path inside one minute: anchors ``(second, price)`` joined by straight
lines, ticks every ``every`` seconds plus one at each anchor (so every anchor price trades and is
the bar's extreme where intended), prices rounded to the 0.05 tick. Volume is traded only where a
minute says so (``volume``: second -> quantity), which makes the session VWAP exact: a session
whose only volume trades at price V has VWAP V.

``swing_low(price, hh, vwap)`` is the seven-minute shape (bars b0..b6) after which the swing
detector announces one swing Low at ``price`` on bar b4 (``SWING_BAR``), confirmed by bar b6
(``CONFIRM_BAR``), with the VWAP at the swing bar equal to ``vwap`` and the highest high after
the swing bar equal to ``hh``:

- b0 trades all the session's volume at ``vwap``, then rises to the day's high;
- b1..b3 fall step by step: a swing High is created at b0's high (two high-watch counts);
- b4 dips to ``price`` (the lowest low since the High), b5 and b6 rise to ``hh`` and close
  higher: two low-watch counts on b4 create the Low at ``price``.

Nothing in the shape trades at or below ``price`` after b4, so the Low is unbroken when the
minutes after it start; what they do is up to the test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from engine.market.instruments import OPTION_EXCHANGE
from engine.market.session_file import SessionWriter, SymbolInfo
from engine.messages import Tick

TICK = 0.05
SWING_BAR = 4
CONFIRM_BAR = 6
#: bars of the ``swing_low`` shape
SHAPE_BARS = CONFIRM_BAR + 1


def on_tick(price: float) -> float:
    """``price`` rounded to the 0.05 tick (and to 2 decimals, as a feed sends it)."""
    return round(round(price / TICK) * TICK, 2)


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute of one symbol: a price path and the volume traded on it."""

    anchors: tuple[tuple[float, float], ...]
    volume: tuple[tuple[float, int], ...] = ()
    window: tuple[float, float] = (0.0, 60.0)  # the symbol ticks only in [start, end) seconds

    def __post_init__(self) -> None:
        seconds = [s for s, _ in self.anchors]
        if not seconds or seconds != sorted(seconds) or seconds[0] < 0 or seconds[-1] >= 60:
            raise ValueError(f"anchors must be ascending seconds in [0, 60): {self.anchors}")
        if any(s not in seconds for s, _ in self.volume):
            raise ValueError(f"volume must trade at anchor seconds: {self.volume}")

    def price_at(self, second: float) -> float:
        """The path's price at ``second`` (flat before the first and after the last anchor)."""
        first, last = self.anchors[0], self.anchors[-1]
        if second <= first[0]:
            return on_tick(first[1])
        for (s0, p0), (s1, p1) in pairwise(self.anchors):
            if s0 <= second <= s1:
                return on_tick(p0 + (p1 - p0) * (second - s0) / (s1 - s0))
        return on_tick(last[1])

    def seconds(self, every: float) -> list[float]:
        """The seconds at which this minute ticks: the grid and every anchor."""
        grid = {k * every for k in range(int(59.999 // every) + 1)}
        lo, hi = self.window
        return sorted(s for s in grid | {s for s, _ in self.anchors} if lo <= s < hi)


def path(*anchors: tuple[float, float], volume: Sequence[tuple[float, int]] = (),
         window: tuple[float, float] = (0.0, 60.0)) -> Minute:
    """A minute from its anchors ``(second, price)``; ``window``: the seconds it ticks in (a
    feed silent before or after)."""
    return Minute(tuple(anchors), tuple(volume), window)


def flat(price: float) -> Minute:
    """A minute trading at one price only (open = high = low = close)."""
    return Minute(((0.0, price),))


@dataclass(frozen=True, slots=True)
class SymbolPath:
    """Consecutive minutes of one symbol starting at epoch ``start`` (a minute boundary)."""

    symbol: str
    start: float
    minutes: tuple[Minute, ...]

    def minute_start(self, index: int) -> float:
        return self.start + 60.0 * index


def swing_low(price: float, hh: float, vwap: float | None = None,
              volume: int = 10_000) -> list[Minute]:
    """The seven minutes that make one swing Low at ``price`` (bar ``SWING_BAR``) with the VWAP
    ``vwap`` at the swing bar (default: ``price`` / 1.05, a 5% premium) and the highest high
    ``hh`` in the bars after it (``hh`` must be at least ``price`` + 1)."""
    if hh < price + 1.0:
        raise ValueError(f"hh {hh} must be at least price + 1 ({price + 1.0})")
    s = price
    v = on_tick(s / 1.05) if vwap is None else vwap
    if v >= s:
        raise ValueError(f"the VWAP {v} must be below the swing price {s}")
    x = hh - s
    top = s + x + 10.0  # the day's high, on b0
    return [
        path((0, top - 5), (10, v), (40, top), (58, top - 2), volume=[(10, volume)]),
        path((0, top - 2), (20, top - 1), (40, top - 5), (58, top - 4)),
        path((0, top - 4), (20, top - 3), (40, top - 8), (58, top - 7)),
        path((0, top - 7), (20, top - 6), (40, top - 10), (58, top - 9)),
        path((0, s + 0.5), (20, s), (58, s + 0.2)),                      # b4: the swing low
        path((0, s + 0.5), (30, hh), (58, hh - 0.1)),                    # b5
        path((0, hh - 0.1), (30, hh), (58, hh - 0.05)),                  # b6: confirms it
    ]


def ticks(paths: Iterable[SymbolPath], every: float = 2.0) -> list[Tick]:
    """Every tick of ``paths`` in time order (symbols in the given order at equal times), with
    the day's cumulative volume per symbol."""
    timed: list[tuple[float, int, Tick]] = []
    for order, sp in enumerate(paths):
        cumulative = 0
        for index, minute in enumerate(sp.minutes):
            traded = dict(minute.volume)
            for second in minute.seconds(every):
                cumulative += traded.get(second, 0)
                ts = sp.minute_start(index) + second
                tick = Tick(sp.symbol, OPTION_EXCHANGE, minute.price_at(second), ts, ts,
                            cumulative)
                timed.append((ts, order, tick))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [t for _, _, t in timed]


def write_session(file: Path, paths: Sequence[SymbolPath], every: float = 2.0,
                  purpose: str = "baseline_v1 test",
                  meta: Mapping[str, object] | None = None) -> Path:
    """Write ``paths`` as a session file at ``file`` (``meta``: more meta keys, e.g. the day's
    ``instrument`` facts)."""
    infos = [SymbolInfo.for_symbol(sp.symbol, OPTION_EXCHANGE) for sp in paths]
    with SessionWriter(file, symbols=infos, meta={"purpose": purpose, **(meta or {})}) as writer:
        writer.extend(ticks(paths, every))
    return file
