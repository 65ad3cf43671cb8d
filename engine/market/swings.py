"""Swing highs and lows of one symbol from its one-minute bars, and their breaks
(baseline-v1.md, "Swing detector").

This module owns ``SwingTracker``: pure, single-threaded logic with no actor, thread or clock
inside, so the swing-detector actor, a replay and a benchmark loop use the same class.
``SwingSettings`` (config section ``[swings]``) holds its tunables.

Detection (``on_bar``), exactly the spec's procedure for each completed bar *i* of the day (bar
0 is only stored). ``watch_count`` is the threshold, 2 by default:

- low-watch condition for an earlier bar *j*: ``high_i > high_j and close_i > close_j``;
  high-watch condition: ``low_i < low_j and close_i < close_j`` (strict: equal highs, lows or
  closes do not count). Both cannot hold for the same *j* (the closes decide).
- No swing yet: for j = 0..i-1 ascending: low-watch holds → ``low_watch[j] += 1``, at the
  threshold create a Low at the lowest low of bars 0..i and stop; high-watch holds →
  ``high_watch[j] += 1``, at the threshold create a High at the highest high of 0..i and stop.
- Last swing a Low at index s: for j = s+1..i-1 ascending: high-watch first (threshold → create
  a High at the highest high of s+1..i, stop), then low-watch (threshold **and** the lowest low
  of s+1..i below the Low's price → update the Low to that bar, stop; otherwise go on).
- Last swing a High: the mirror.
- Counts move only for the j's reached before the stop; the threshold is tested right after each
  increment (a count already past it fires again); creating clears both watch maps, an update
  does not; on equal extremes the earliest bar wins.
- A swing's VWAP is the swing bar's ``Bar.vwap``, or its close when that is not a positive
  finite number; an update keeps the VWAP recorded when the swing was created.

Swings as records: every Swing event (a new swing, or an update) is one record of the day, with
its own price, bar and break state. Record bar indices strictly increase. An update of a Low
always follows a break of the version it replaces (its new price is below the old one, so some
bar after the old swing traded below it); the updated version is a new, unbroken level and is
tradable on its own. ``current`` is the last record (it decides which branch of the procedure
runs).

Breaks. A Low is broken when the bar in progress trades at or below its price (``on_bar_update``:
``update.low <= price``, ``by="tick"``) or a completed bar's low goes strictly below it
(``on_bar``: ``bar.low < price``, ``by="bar"``); a High mirrors this (at or above / strictly
above). Every unbroken record of the day is checked, not only the current one. A record breaks
once and stays broken. Only prices seen after the swing exists count: bars inside the window
that confirmed it may equal its price (earliest bar wins) without breaking it.

Order within ``on_bar`` (decided here, tested): (1) break check of the records that existed
before the bar against the completed bar; (2) detection; (3) a record created or updated by the
bar is checked against the bars in progress already seen (BarUpdates of later minutes can
arrive before the Bar closes, within the bar builder's grace): at or beyond its price → broken
``by="tick"`` at that update's time. A swing made by a bar can never be broken by that same
bar (its price is the extreme of a window that includes the bar), so (1) before (2) decides the
event order only: a bar whose low goes below the current Low reports that break before the
Swing that updates the Low to the new level, so a consumer never sees the new level while the
old one still looks live.
``broken_ts`` is the update's ``ts`` for a tick break and the bar's end (start + 60 s) for a bar
break.

History (``Bar.source == "history"``): history bars run through exactly the same procedure. A
record broken by a history bar gets ``tradable=False`` (it broke before the engine watched it:
never trade it); a record created from history that is still unbroken when live data takes over
stays tradable: its level has not been traded through, which is all the strategy asks. A record
broken by a live bar or tick is simply broken (``tradable`` keeps its value). The Swing event of
a history-created swing is emitted when it is created, with ``tradable=True``; when a later
history bar breaks it, a SwingBroken follows in the same replay and ``swings()`` shows it
untradable. A consumer trades a Low from its Swing event until its SwingBroken; one that must
not act on a level that history is about to break (the detector actor at a mid-session start)
holds the history events back and reads ``unbroken_lows()`` once the history bars are in.

Input hygiene: a bar whose start is not after the last processed bar's start (out of order or a
duplicate, e.g. history overlapping live after a restart) is rejected: counted, logged, not
processed. A bar with non-finite or inconsistent prices is counted as invalid and skipped. A
BarUpdate for a minute already closed is stale and ignored. A bar or update for another symbol
is a wiring error and raises ``SwingError``. The first bar of a new trading date (IST date of
``bar.start``) resets the day's state (bars, watch counts, swings); counters are kept for the
tracker's lifetime.

Recovery: ``snapshot()`` returns frozen plain data (closed bars, watch counts, records with their
break state) that ``restore()`` turns back into an identical tracker; ``SwingSnapshot.as_dict``
and ``from_dict`` carry it through JSON. The highs/lows of minutes in progress are not part of
it: a restored tracker learns them again from the next BarUpdate. Rebuilding from bars alone is
not equivalent (tick-level breaks and history/live tradability are not in the bars).
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from binascii import b2a_base64 as _b64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time
from itertools import pairwise
from typing import Any

from loguru import logger

from engine.market.instruments import trading_date
from engine.messages import Bar, BarUpdate, Swing, SwingBroken, SwingKind
from engine.runtime.clock import IST, fmt_ist
from engine.settings import setting

SwingEvent = Swing | SwingBroken

_NOTHING: tuple[SwingEvent, ...] = ()
_BAR_SECONDS = 60.0
_DAY_SECONDS = 86_400.0
_INF = math.inf
_SOURCES = ("live", "history")
_BREAKERS = ("tick", "bar")


@dataclass(frozen=True, slots=True)
class SwingSettings:
    """Tunables of the swing detector, config section ``[swings]``."""

    watch_count: int = setting(
        2, "watch count at which a bar confirms a swing (low_watch/high_watch threshold)",
        min=1, max=20)


class SwingError(ValueError):
    """A SwingTracker was driven with input that cannot be right (another symbol's data, a swing
    it does not know)."""


class SwingSnapshotError(SwingError):
    """A snapshot (or its dict form) is malformed or inconsistent; nothing was changed."""


@dataclass(frozen=True, slots=True)
class SwingRecord:
    """One swing version of the day and its break state (``broken_by`` is "tick" | "bar")."""

    swing: Swing
    from_history: bool
    broken_by: str | None = None
    broken_ts: float | None = None

    @property
    def broken(self) -> bool:
        return self.broken_by is not None


@dataclass(frozen=True, slots=True)
class SwingStats:
    """Counters over the tracker's lifetime (not reset by the daily reset)."""

    bars: int
    rejected_bars: int
    invalid_bars: int
    stale_updates: int
    invalid_updates: int
    created: int
    updated: int
    broken: int
    daily_resets: int


# (start, high, low, close, vwap)
SnapshotBar = tuple[float, float, float, float, float]
#: the day's bars as packed columns, in ``SnapshotBar`` order
BarColumns = tuple["array[float]", "array[float]", "array[float]", "array[float]", "array[float]"]
_COLUMNS = ("start", "high", "low", "close", "vwap")
# (kind, price, bar_start, index, vwap, updated, tradable, from_history, broken_by, broken_ts)
SnapshotSwing = tuple[str, float, float, int, float, bool, bool, bool, str | None, float | None]


@dataclass(frozen=True, slots=True)
class SwingSnapshot:
    """Everything a tracker needs to continue the day, as plain values (see module doc).

    The bars are kept as packed columns (``columns``, in ``SnapshotBar`` order): the detector
    persists a snapshot after every bar, and copying five arrays costs a fraction of building
    and JSON-encoding a row per bar (RELIABILITY.md, soak). ``bars`` gives them as rows."""

    symbol: str
    columns: BarColumns
    low_watch: tuple[tuple[int, int], ...]
    high_watch: tuple[tuple[int, int], ...]
    swings: tuple[SnapshotSwing, ...]

    @classmethod
    def of_bars(cls, symbol: str, bars: Sequence[SnapshotBar],
                low_watch: tuple[tuple[int, int], ...], high_watch: tuple[tuple[int, int], ...],
                swings: tuple[SnapshotSwing, ...]) -> SwingSnapshot:
        """A snapshot from bar rows (raises ``SwingSnapshotError`` on a malformed row)."""
        try:
            rows = [_bar_row(row) for row in bars]
        except (TypeError, ValueError) as exc:
            raise SwingSnapshotError(f"malformed swing snapshot bar: {exc!r}") from None
        columns = tuple(array("d", (row[i] for row in rows)) for i in range(len(_COLUMNS)))
        return cls(symbol, columns, low_watch, high_watch, swings)  # type: ignore[arg-type]

    @property
    def bars(self) -> tuple[SnapshotBar, ...]:
        return tuple(zip(*self.columns, strict=True))  # type: ignore[arg-type]

    @property
    def starts(self) -> array[float]:
        """The bars' start times."""
        return self.columns[0]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: each bar column as base64 of little-endian doubles, the rest as
        lists."""
        return {
            "symbol": self.symbol,
            "bars": _packed(self.columns, 0, len(self.starts)),
            "low_watch": [list(p) for p in self.low_watch],
            "high_watch": [list(p) for p in self.high_watch],
            "swings": [list(s) for s in self.swings],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  columns: tuple[array[float], ...] | None = None) -> SwingSnapshot:
        """Inverse of ``as_dict`` (also reads the older form with a list per bar); with
        ``columns`` (the bar columns already unpacked) ``data`` needs no "bars". Raises
        ``SwingSnapshotError`` on anything malformed."""
        try:
            symbol = data["symbol"]
            if not isinstance(symbol, str):
                raise TypeError("symbol is not a string")
            low_watch = tuple(_count_row(row) for row in data["low_watch"])
            high_watch = tuple(_count_row(row) for row in data["high_watch"])
            swings = tuple(_swing_row(row) for row in data["swings"])
            if columns is None:
                bars = data["bars"]
                if isinstance(bars, Mapping):
                    columns = tuple(_unpack(bars[name]) for name in _COLUMNS)
            if columns is not None:
                if len({len(column) for column in columns}) != 1:
                    raise ValueError("bar columns differ in length")
                return cls(symbol, columns, low_watch, high_watch, swings)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise SwingSnapshotError(f"malformed swing snapshot: {exc!r}") from None
        return cls.of_bars(symbol, bars, low_watch, high_watch, swings)


#: bars, or swing records, per piece of a split snapshot (``SwingStatePieces``)
PIECE_SIZE = 4


class SwingStatePieces:
    """One tracker's snapshot as rows that each change rarely, for a detector that persists
    after every bar: full pieces of ``size`` bars or records, and a head with the rest (watch
    counts, the bars and records after the last full piece, and the write each piece is of).
    ``changed`` hands out the head and only the pieces that changed since its last call: a
    bar piece once, when it fills; a record piece when it fills or one of its swings breaks.
    So a bar costs a head of fewer than ``size`` bars and records, not the whole day (the whole
    snapshot grows with the day: written after every bar it was most of a replay's store
    traffic). ``join`` is the inverse; it refuses pieces of another write than the head's, so
    a head and pieces split across two store transactions never mix.

    The head lists each piece's write as two lists of ints, ``bar_pieces`` and
    ``swing_pieces`` (piece ``k`` is ``bars.<k>`` / ``swings.<k>``); a head of the previous
    layout names them in one ``pieces`` dict, which ``join`` still reads."""

    def __init__(self, size: int = PIECE_SIZE) -> None:
        if size < 1:
            raise SwingError(f"piece size must be >= 1, got {size}")
        self.size = size
        self._write = 0
        self._columns: object = None  # the tracker's bar column the sent bar pieces are of
        self._rows: object = None  # the tracker's record rows the sent swing pieces are of
        self._swings: list[tuple[SnapshotSwing, ...]] = []  # piece k -> rows last sent
        self._bar_writes: list[int] = []  # piece k -> the write it was last sent in
        self._swing_writes: list[int] = []

    def changed(self, tracker: SwingTracker
                ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """(head, [(piece name, piece), ...]) for the tracker's current state; the pieces are
        those that changed since the last call."""
        self._write += 1
        write, size = self._write, self.size
        bar_writes, swing_writes, sent = self._bar_writes, self._swing_writes, self._swings
        pieces: list[tuple[str, dict[str, Any]]] = []
        columns = (tracker._starts, tracker._highs, tracker._lows, tracker._closes,
                   tracker._vwaps)
        if columns[0] is not self._columns:  # a new day or a restore: new columns
            self._columns = columns[0]
            bar_writes.clear()
        n = len(columns[0])
        full_bars = n // size
        del bar_writes[full_bars:]  # a shorter day than the last write's
        for k in range(len(bar_writes), full_bars):  # bars only ever append: sent once
            bar_writes.append(write)
            pieces.append((f"bars.{k}", {"write": write, "bars": _packed(
                columns, k * size, (k + 1) * size)}))
        rows = tracker._snapshot_rows()  # the same object until a record changes
        m = len(rows)
        full_swings = m // size
        if rows is not self._rows:
            self._rows = rows
            del sent[full_swings:], swing_writes[full_swings:]
            for k in range(full_swings):
                part = rows[k * size:(k + 1) * size]
                if k < len(sent) and sent[k] == part:
                    continue
                if k < len(sent):  # one of its swings broke (or another day's piece)
                    sent[k], swing_writes[k] = part, write
                else:  # filled
                    sent.append(part)
                    swing_writes.append(write)
                pieces.append((f"swings.{k}", {"write": write,
                                               "swings": [list(r) for r in part]}))
        head = {"symbol": tracker.symbol, "bars": n, "swings": m,
                "low_watch": [list(p) for p in sorted(tracker._low_watch.items())],
                "high_watch": [list(p) for p in sorted(tracker._high_watch.items())],
                "bar_pieces": bar_writes[:], "swing_pieces": swing_writes[:],
                "tail_bars": _packed(columns, full_bars * size, n),
                "tail_swings": rows[full_swings * size:]}  # tuples: JSON arrays
        return head, pieces

    @staticmethod
    def join(head: Mapping[str, Any], pieces: Mapping[str, Mapping[str, Any]]) -> SwingSnapshot:
        """The snapshot a head and its pieces (by name) hold; ``SwingSnapshotError`` when one
        is missing, of another write, or anything is malformed."""
        try:
            columns: dict[str, array[float]] = {name: array("d") for name in _COLUMNS}
            swings: list[Any] = []
            for kind, writes in _piece_writes(head):
                for k, stamp in enumerate(writes):
                    name = f"{kind}.{k}"
                    piece = pieces.get(name)
                    if piece is None or piece.get("write") != stamp:
                        raise SwingSnapshotError(f"piece {name} is missing or of another "
                                                 "write than the head")
                    if kind == "bars":
                        for column, values in columns.items():
                            values.extend(_unpack(piece["bars"][column]))
                    else:
                        swings.extend(piece["swings"])
            for column, values in columns.items():
                values.extend(_unpack(head["tail_bars"][column]))
            swings.extend(head["tail_swings"])
            for kind, held in (("bars", len(columns["start"])), ("swings", len(swings))):
                if held != head[kind]:
                    raise SwingSnapshotError(f"the pieces hold {held} {kind}, the head says "
                                             f"{head[kind]}")
            data = {"symbol": head["symbol"], "low_watch": head["low_watch"],
                    "high_watch": head["high_watch"], "swings": swings}
        except SwingSnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise SwingSnapshotError(f"malformed split swing snapshot: {exc!r}") from None
        return SwingSnapshot.from_dict(data, tuple(columns.values()))


def _piece_writes(head: Mapping[str, Any]) -> tuple[tuple[str, list[Any]], ...]:
    """The write of each bar piece and each swing piece a head names, in piece order."""
    if "pieces" not in head:
        return ("bars", list(head["bar_pieces"])), ("swings", list(head["swing_pieces"]))
    stamps = head["pieces"]  # the previous layout: {"bars.<k>": write, ...}
    found: list[tuple[str, list[Any]]] = []
    for kind in ("bars", "swings"):
        writes: list[Any] = []
        while f"{kind}.{len(writes)}" in stamps:
            writes.append(stamps[f"{kind}.{len(writes)}"])
        found.append((kind, writes))
    return tuple(found)


_LITTLE_ENDIAN = sys.byteorder == "little"


def _packed(columns: Sequence[array[float]], first: int, last: int) -> dict[str, str]:
    """Bars ``first..last-1`` of the columns, each column packed (``_pack``)."""
    if not _LITTLE_ENDIAN:
        return {name: _pack(values[first:last]) for name, values in zip(_COLUMNS, columns,
                                                                       strict=True)}
    # Written out column by column, the array slices encoded as they are: a head is packed
    # after every bar of every symbol, and a loop with tobytes() cost twice as much.
    start, high, low, close, vwap = columns
    return {"start": _b64(start[first:last], newline=False).decode("ascii"),
            "high": _b64(high[first:last], newline=False).decode("ascii"),
            "low": _b64(low[first:last], newline=False).decode("ascii"),
            "close": _b64(close[first:last], newline=False).decode("ascii"),
            "vwap": _b64(vwap[first:last], newline=False).decode("ascii")}


def _pack(column: array[float]) -> str:
    """A column as base64 of its little-endian doubles."""
    if not _LITTLE_ENDIAN:
        column = array("d", column)
        column.byteswap()
    return _b64(column, newline=False).decode("ascii")


def _unpack(text: Any) -> array[float]:
    if not isinstance(text, str):
        raise TypeError(f"a bar column must be a base64 string, got {type(text).__name__}")
    column = array("d")
    column.frombytes(base64.b64decode(text, validate=True))
    if sys.byteorder != "little":
        column.byteswap()
    return column


class _Record:
    """Mutable twin of ``SwingRecord`` kept inside the tracker."""

    __slots__ = ("_row", "broken_by", "broken_ts", "from_history", "swing")

    def __init__(self, swing: Swing, from_history: bool) -> None:
        self.swing = swing
        self.from_history = from_history
        self.broken_by: str | None = None
        self.broken_ts: float | None = None
        self._row: SnapshotSwing | None = None

    def row(self) -> SnapshotSwing:
        """The record as a snapshot row; kept until the record changes (``changed``), as a
        snapshot is taken after every bar and most records no longer change."""
        row = self._row
        if row is None:
            swing = self.swing
            row = self._row = (swing.kind.value, swing.price, swing.bar_start, swing.index,
                               swing.vwap, swing.updated, swing.tradable, self.from_history,
                               self.broken_by, self.broken_ts)
        return row

    def changed(self) -> None:
        self._row = None

    def frozen(self) -> SwingRecord:
        return SwingRecord(self.swing, self.from_history, self.broken_by, self.broken_ts)


class SwingTracker:
    """Swings of one symbol for the current trading day (see module doc).

    ``on_bar`` and ``on_bar_update`` return the events they produced as a tuple, oldest first
    (empty when none).
    """

    def __init__(self, symbol: str, settings: SwingSettings) -> None:
        if not symbol:
            raise SwingError("symbol must not be empty")
        if settings.watch_count < 1:
            raise SwingError(f"watch_count must be >= 1, got {settings.watch_count}")
        self.symbol = symbol
        self.settings = settings
        self._threshold = settings.watch_count
        self._bars_seen = 0
        self._rejected = 0
        self._invalid = 0
        self._stale = 0
        self._invalid_updates = 0
        self._created = 0
        self._updated = 0
        self._broken = 0
        self._resets = 0
        self._last_start = -_INF
        self._pending: dict[float, list[float]] = {}  # minute in progress -> [high, low, ts]
        self._clear_day(-_INF)

    # -- input -----------------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> tuple[SwingEvent, ...]:
        """Process one completed bar: break check, detection, then the new swing against the
        bars in progress (see module doc for the order)."""
        if bar.symbol != self.symbol:
            raise SwingError(f"{self.symbol}: got a bar of {bar.symbol!r}")
        problem = _bar_problem(bar)
        if problem:
            self._invalid += 1
            logger.warning("{}: skipped invalid bar ({}): {!r}", self.symbol, problem, bar)
            return _NOTHING
        start = bar.start
        if start <= self._last_start:
            self._rejected += 1
            log = logger.warning if self._rejected_today == 0 else logger.debug
            self._rejected_today += 1
            log("{}: rejected out-of-order/duplicate bar {} (last processed {})", self.symbol,
                fmt_ist(start, with_date=True), fmt_ist(self._last_start, with_date=True))
            return _NOTHING
        if start >= self._day_end:
            if self._starts:
                self._resets += 1
                logger.info("{}: new trading day {}; swing state reset", self.symbol,
                            trading_date(start))
            self._clear_day(start)
        self._last_start = start
        self._bars_seen += 1
        history = bar.source == "history"
        events: list[SwingEvent] = []
        if self._unbroken:
            self._break_by_bar(bar, history, events)
        self._starts.append(start)
        self._highs.append(bar.high)
        self._lows.append(bar.low)
        self._closes.append(bar.close)
        vwap = bar.vwap
        self._vwaps.append(vwap if 0.0 < vwap < _INF else bar.close)
        made = self._detect(len(self._starts) - 1, history)
        if made is not None:
            events.append(made.swing)
        pending = self._pending
        if pending:
            for minute in [m for m in pending if m <= start]:
                del pending[minute]
            if made is not None and pending:
                self._break_by_pending(made, events)
        return tuple(events) if events else _NOTHING

    def on_bar_update(self, update: BarUpdate) -> tuple[SwingEvent, ...]:
        """The bar in progress moved: a Low traded at or below (High at or above) breaks."""
        if update.symbol != self.symbol:
            raise SwingError(f"{self.symbol}: got a bar update of {update.symbol!r}")
        start, high, low = update.start, update.high, update.low
        try:  # x - x == 0.0 holds exactly for a finite x (cheaper than math.isfinite)
            ts = update.ts
            valid = start - start == 0.0 and ts - ts == 0.0 and 0.0 < low <= high < _INF
        except TypeError:
            valid = False
        if not valid:
            self._invalid_updates += 1
            logger.warning("{}: ignored invalid bar update {!r}", self.symbol, update)
            return _NOTHING
        if start <= self._last_start:
            self._stale += 1
            return _NOTHING
        pending = self._pending
        seen = pending.get(start)
        if seen is None:
            pending[start] = [high, low, ts]
        else:
            if high > seen[0]:
                seen[0] = high
            if low < seen[1]:
                seen[1] = low
            seen[2] = ts
        # nothing to break unless the update reaches the highest unbroken Low or the lowest
        # unbroken High (the common case: one comparison each instead of a loop per update)
        if (low > self._low_reach and high < self._high_reach) or start >= self._day_end:
            return _NOTHING
        events: list[SwingEvent] = []
        for record in list(self._unbroken):
            swing = record.swing
            if low <= swing.price if swing.kind is SwingKind.LOW else high >= swing.price:
                events.append(self._mark_broken(record, update.ts, "tick", history=False))
        return tuple(events) if events else _NOTHING

    # -- queries ---------------------------------------------------------------------------------
    @property
    def current(self) -> Swing | None:
        """The last swing of the day (latest version), broken or not; None before the first."""
        return self._records[-1].swing if self._records else None

    def swings(self) -> tuple[SwingRecord, ...]:
        """Every swing record of the day, oldest first, with its break state."""
        return tuple(record.frozen() for record in self._records)

    def unbroken_lows(self) -> tuple[Swing, ...]:
        """The Lows the strategy may trade now: unbroken (hence tradable), oldest first."""
        return tuple(r.swing for r in self._unbroken if r.swing.kind is SwingKind.LOW)

    def highest_high_since(self, swing: Swing) -> float | None:
        """Highest high of the bars after ``swing``'s bar, the bars in progress included; None
        while no bar has traded after it."""
        index = swing.index
        if (swing.symbol != self.symbol or not 0 <= index < len(self._starts)
                or self._starts[index] != swing.bar_start):
            raise SwingError(f"{self.symbol}: not a swing of today's bars: {swing!r}")
        best = max(self._highs[index + 1:], default=-_INF)
        day_end = self._day_end
        for minute, (high, _low, _ts) in self._pending.items():
            if high > best and minute < day_end:
                best = high
        return best if best > -_INF else None

    @property
    def bar_count(self) -> int:
        """Bars processed today."""
        return len(self._starts)

    @property
    def bars_processed(self) -> int:
        """Bars processed over the tracker's lifetime (``stats().bars``, without building the
        stats)."""
        return self._bars_seen

    def stats(self) -> SwingStats:
        return SwingStats(self._bars_seen, self._rejected, self._invalid, self._stale,
                          self._invalid_updates, self._created, self._updated, self._broken,
                          self._resets)

    # -- recovery --------------------------------------------------------------------------------
    def snapshot(self) -> SwingSnapshot:
        """The day's closed state as plain values (bars in progress are not included)."""
        columns = tuple(array("d", c) for c in (self._starts, self._highs, self._lows,
                                                 self._closes, self._vwaps))
        swings = self._snapshot_rows()
        return SwingSnapshot(self.symbol, columns,  # type: ignore[arg-type]
                             tuple(sorted(self._low_watch.items())),
                             tuple(sorted(self._high_watch.items())), swings)

    def _snapshot_rows(self) -> tuple[SnapshotSwing, ...]:
        """The records as snapshot rows (cached until a record changes)."""
        rows = self._rows
        if rows is None:
            rows = self._rows = tuple([r.row() for r in self._records])
        return rows

    def restore(self, snap: SwingSnapshot) -> None:
        """Replace this tracker's day with ``snap`` (validated first; on error nothing changes).
        Counters are kept; bars in progress are forgotten."""
        try:
            records = _check_snapshot(self.symbol, snap)
        except SwingSnapshotError:
            raise
        except (TypeError, ValueError) as exc:
            raise SwingSnapshotError(f"{self.symbol}: malformed swing snapshot: {exc!r}") from None
        starts = snap.starts
        self._clear_day(starts[0] if starts else -_INF)
        self._starts, self._highs, self._lows, self._closes, self._vwaps = (
            array("d", column) for column in snap.columns)
        self._low_watch.update(snap.low_watch)
        self._high_watch.update(snap.high_watch)
        self._records.extend(records)
        self._unbroken.extend(r for r in records if r.broken_by is None)
        self._reach()
        self._pending.clear()
        self._last_start = starts[-1] if starts else -_INF
        logger.info("{}: swing state restored: {} bars, {} swings ({} unbroken)", self.symbol,
                    len(starts), len(records), len(self._unbroken))

    # -- internals -------------------------------------------------------------------------------
    def _clear_day(self, first_start: float) -> None:
        """Start an empty day containing ``first_start`` (-inf: no day yet)."""
        if first_start > -_INF:
            day_start = datetime.combine(trading_date(first_start), time(0), IST).timestamp()
            self._day_end = day_start + _DAY_SECONDS
        else:
            self._day_end = -_INF
        # The day's bars, one column each. Packed doubles, not lists of floats: a full day of
        # 82 options is ~150k numbers that live until the close, and as objects they pinned
        # the allocator's pools and made a long run's memory creep (RELIABILITY.md, soak).
        self._starts: array[float] = array("d")
        self._highs: array[float] = array("d")
        self._lows: array[float] = array("d")
        self._closes: array[float] = array("d")
        self._vwaps: array[float] = array("d")
        self._low_watch: dict[int, int] = {}
        self._high_watch: dict[int, int] = {}
        self._records: list[_Record] = []
        self._unbroken: list[_Record] = []
        self._reach()
        self._rejected_today = 0

    def _detect(self, i: int, history: bool) -> _Record | None:
        """The spec's watch-count procedure for bar ``i``; returns the record it made."""
        highs, lows, closes = self._highs, self._lows, self._closes
        high_i, low_i, close_i = highs[i], lows[i], closes[i]
        low_watch, high_watch = self._low_watch, self._high_watch
        threshold = self._threshold
        current = self._records[-1].swing if self._records else None
        if current is None:
            for j in range(i):
                if high_i > highs[j] and close_i > closes[j]:
                    count = low_watch[j] = low_watch.get(j, 0) + 1
                    if count >= threshold:
                        return self._create(SwingKind.LOW, _lowest(lows, 0, i), history)
                if low_i < lows[j] and close_i < closes[j]:
                    count = high_watch[j] = high_watch.get(j, 0) + 1
                    if count >= threshold:
                        return self._create(SwingKind.HIGH, _highest(highs, 0, i), history)
            return None
        s = current.index
        best = -1  # the window's extreme for an update, found once per bar
        if current.kind is SwingKind.LOW:
            for j in range(s + 1, i):
                if low_i < lows[j] and close_i < closes[j]:
                    count = high_watch[j] = high_watch.get(j, 0) + 1
                    if count >= threshold:
                        return self._create(SwingKind.HIGH, _highest(highs, s + 1, i), history)
                if high_i > highs[j] and close_i > closes[j]:
                    count = low_watch[j] = low_watch.get(j, 0) + 1
                    if count >= threshold:
                        if best < 0:
                            best = _lowest(lows, s + 1, i)
                        if lows[best] < current.price:
                            return self._update(current, best, history)
            return None
        for j in range(s + 1, i):
            if high_i > highs[j] and close_i > closes[j]:
                count = low_watch[j] = low_watch.get(j, 0) + 1
                if count >= threshold:
                    return self._create(SwingKind.LOW, _lowest(lows, s + 1, i), history)
            if low_i < lows[j] and close_i < closes[j]:
                count = high_watch[j] = high_watch.get(j, 0) + 1
                if count >= threshold:
                    if best < 0:
                        best = _highest(highs, s + 1, i)
                    if highs[best] > current.price:
                        return self._update(current, best, history)
        return None

    def _create(self, kind: SwingKind, k: int, history: bool) -> _Record:
        price = self._lows[k] if kind is SwingKind.LOW else self._highs[k]
        swing = Swing(self.symbol, kind, price, self._starts[k], k, self._vwaps[k])
        self._low_watch.clear()
        self._high_watch.clear()
        self._created += 1
        return self._add(swing, history)

    def _update(self, current: Swing, k: int, history: bool) -> _Record:
        price = self._lows[k] if current.kind is SwingKind.LOW else self._highs[k]
        swing = Swing(self.symbol, current.kind, price, self._starts[k], k, current.vwap,
                      updated=True)
        self._updated += 1
        return self._add(swing, history)

    def _add(self, swing: Swing, history: bool) -> _Record:
        record = _Record(swing, history)
        self._records.append(record)
        self._unbroken.append(record)
        self._reach()
        # lazy: the text (a clock format) is built only when debug is logged
        logger.opt(lazy=True).debug("{}", lambda: (
            f"{self.symbol}: swing {swing.kind.value}{' updated' if swing.updated else ''} "
            f"{swing.price} at {fmt_ist(swing.bar_start)} (bar {swing.index}, "
            f"vwap {swing.vwap:.2f})"))
        return record

    def _reach(self) -> None:
        """After any change of the records: recompute the price a bar must reach to break
        anything, the highest unbroken Low (``_low_reach``, -inf when none) and the lowest
        unbroken High (``_high_reach``, +inf), and drop the cached snapshot rows."""
        self._rows: tuple[SnapshotSwing, ...] | None = None  # the records changed
        low_reach, high_reach = -_INF, _INF
        for record in self._unbroken:
            price = record.swing.price
            if record.swing.kind is SwingKind.LOW:
                if price > low_reach:
                    low_reach = price
            elif price < high_reach:
                high_reach = price
        self._low_reach, self._high_reach = low_reach, high_reach

    def _break_by_bar(self, bar: Bar, history: bool, events: list[SwingEvent]) -> None:
        high, low, end = bar.high, bar.low, bar.start + _BAR_SECONDS
        if low >= self._low_reach and high <= self._high_reach:
            return
        for record in list(self._unbroken):
            swing = record.swing
            if low < swing.price if swing.kind is SwingKind.LOW else high > swing.price:
                events.append(self._mark_broken(record, end, "bar", history))

    def _break_by_pending(self, record: _Record, events: list[SwingEvent]) -> None:
        swing = record.swing
        for minute in sorted(self._pending):
            high, low, ts = self._pending[minute]
            if low <= swing.price if swing.kind is SwingKind.LOW else high >= swing.price:
                events.append(self._mark_broken(record, ts, "tick", history=False))
                return

    def _mark_broken(self, record: _Record, ts: float, by: str, history: bool) -> SwingBroken:
        record.broken_by = by
        record.broken_ts = ts
        if history:
            record.swing = replace(record.swing, tradable=False)
        record.changed()
        self._unbroken.remove(record)
        self._reach()
        self._broken += 1
        swing = record.swing
        logger.opt(lazy=True).debug("{}", lambda: (  # lazy: as in _add
            f"{self.symbol}: swing {swing.kind.value} {swing.price} from "
            f"{fmt_ist(swing.bar_start)} broken by {by} at {fmt_ist(ts)}"))
        return SwingBroken(self.symbol, swing.kind, swing.price, swing.bar_start, ts, by)


def _lowest(lows: Sequence[float], first: int, last: int) -> int:
    """Index of the lowest low of bars first..last (inclusive); the earliest on ties."""
    best, value = first, lows[first]
    for k in range(first + 1, last + 1):
        if lows[k] < value:
            best, value = k, lows[k]
    return best


def _highest(highs: Sequence[float], first: int, last: int) -> int:
    """Index of the highest high of bars first..last (inclusive); the earliest on ties."""
    best, value = first, highs[first]
    for k in range(first + 1, last + 1):
        if highs[k] > value:
            best, value = k, highs[k]
    return best


def _bar_problem(bar: Bar) -> str:
    """Why ``bar`` cannot be processed, or "" when it can."""
    try:
        if not math.isfinite(bar.start):
            return "start is not finite"
        if not (0.0 < bar.high < _INF and 0.0 < bar.low < _INF and 0.0 < bar.close < _INF):
            return "price not positive and finite"
        if not bar.low <= bar.close <= bar.high:
            return "close outside low..high"
        if not isinstance(bar.vwap, (int, float)):
            return "vwap is not a number"
    except TypeError:
        return "malformed fields"
    if bar.source not in _SOURCES:
        return f"unknown source {bar.source!r}"
    return ""


def _bar_row(row: Sequence[Any]) -> SnapshotBar:
    start, high, low, close, vwap = row
    values = (start, high, low, close, vwap)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise TypeError(f"bar values must be numbers, got {row!r}")
    return float(start), float(high), float(low), float(close), float(vwap)


def _count_row(row: Sequence[Any]) -> tuple[int, int]:
    index, count = row
    if not (isinstance(index, int) and isinstance(count, int)):
        raise TypeError(f"watch entry must be two ints, got {row!r}")
    return index, count


def _swing_row(row: Sequence[Any]) -> SnapshotSwing:
    kind, price, start, index, vwap, updated, tradable, from_history, by, ts = row
    if not isinstance(index, int):
        raise TypeError(f"swing index must be an int, got {index!r}")
    flags = (updated, tradable, from_history)
    if not all(isinstance(flag, bool) for flag in flags):
        raise TypeError(f"swing flags must be booleans, got {flags!r}")
    return (str(kind), float(price), float(start), index, float(vwap), updated, tradable,
            from_history, None if by is None else str(by), None if ts is None else float(ts))


def _check_snapshot(symbol: str, snap: SwingSnapshot) -> list[_Record]:
    """Validate ``snap`` for ``symbol`` and build its records; ``SwingSnapshotError`` if not."""

    def fail(problem: str) -> SwingSnapshotError:
        return SwingSnapshotError(f"{symbol}: bad swing snapshot: {problem}")

    if snap.symbol != symbol:
        raise fail(f"it is for {snap.symbol!r}")
    if len({len(column) for column in snap.columns}) > 1:
        raise fail("bar columns differ in length")
    starts = snap.starts
    bars = snap.bars
    for start, high, low, close, vwap in bars:
        if not (math.isfinite(start) and 0.0 < low <= close <= high < _INF
                and 0.0 < vwap < _INF):
            raise fail(f"invalid bar {(start, high, low, close, vwap)!r}")
    if any(b <= a for a, b in pairwise(starts)):
        raise fail("bar starts do not strictly increase")
    if starts and len({trading_date(starts[0]), trading_date(starts[-1])}) != 1:
        raise fail("bars span more than one trading date")
    for j, count in (*snap.low_watch, *snap.high_watch):
        if not (0 <= j < len(starts) and count >= 1):
            raise fail(f"watch entry ({j}, {count}) out of range")
    records: list[_Record] = []
    last_index = -1
    for row in snap.swings:
        kind_name, price, start, index, vwap, updated, tradable, from_history, by, ts = row
        try:
            kind = SwingKind(kind_name)
        except ValueError:
            raise fail(f"unknown swing kind {kind_name!r}") from None
        if not (last_index < index < len(starts) and starts[index] == start):
            raise fail(f"swing {row!r} does not match the bars")
        bar = bars[index]
        if price != (bar[2] if kind is SwingKind.LOW else bar[1]) or not 0.0 < vwap < _INF:
            raise fail(f"swing {row!r} price is not its bar's extreme or its vwap is invalid")
        if (by is None) != (ts is None) or (by is not None and by not in _BREAKERS):
            raise fail(f"swing {row!r} has an inconsistent break state")
        last_index = index
        record = _Record(Swing(symbol, kind, price, start, index, vwap, updated, tradable),
                         from_history)
        record.broken_by = by
        record.broken_ts = ts
        records.append(record)
    return records
