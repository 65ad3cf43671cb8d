"""One-minute bars and the session VWAP for one symbol, from ticks (baseline-v1.md, "Ticks →
1-minute bars").

This module owns ``BarAggregator``: pure, single-threaded logic with no actor, thread or clock
inside (time comes in as arguments), so the bar-builder actor and a plain benchmark loop use the
same class. ``BarSettings`` (config section ``[bars]``) holds its tunables.

Rules, as implemented:

- Bucketing: a tick belongs to the IST minute ``[hh:mm:00, hh:mm+1:00)`` of its exchange time
  (``ltt``) when the feed gives one, else of its receive time (``Tick.ts``).
- Engine time: ``on_time(now)`` and every tick's ``recv_ts`` advance the aggregator's time. A
  minute closes once ``minute end + grace_s <= now``, whether or not a later tick arrived. Because
  a tick's own receive time also closes due minutes before the tick is judged, the outcome depends
  only on the tick stream, not on how ticks and timer calls interleave (replay determinism).
- A minute's valid ticks are kept until it closes; the bar is then computed in exchange-time
  order (ties: the lower cumulative volume first, since it is monotone in true time; then
  arrival order): open = first price, close = last, high/low = extremes, ticks =
  count. Ticks shuffled within the grace window therefore give identical bars.
- Volume: ``Tick.volume`` is the day's cumulative volume. Walking ticks in exchange-time order,
  each tick contributes ``volume - base`` and becomes the new base. The first tick of the day
  only sets the base (contributes 0). A drop is a feed reset: re-base at the new value, contribute
  0, count it (``volume_resets``). Ticks without volume (LTP mode) contribute 0. Since volume is
  cumulative, volume carried by a dropped tick (invalid, late) is not lost: it shows up in the
  next applied tick's delta.
- Session VWAP: Σ(price × delta) / Σ(delta) over the applied ticks, accumulated in the same
  exchange-time walk; each Bar carries the VWAP as of its close, or the bar's typical price
  (H+L+C)/3 while the session has had no volume.
- Every closed minute with at least one valid tick yields a Bar (no minimum tick count), unless
  nothing traded in it: when its ticks did not move the cumulative volume (quote refreshes
  only), it yields a BarGap, as the broker's chart and history show no candle for it
  (``no_trade_minutes = "gap"``, the default; ``"bar"`` keeps a flat bar of volume 0). A minute
  that cannot tell (ticks without volume, the tick that sets the day's base, a feed reset) is a
  Bar. History bars of volume 0 follow the same rule. Once the first bar exists, every closed
  session minute without a tick yields one BarGap; for an aggregator started after the open
  (``start_watching``), from its start on.
- Late ticks: a tick whose minute has already closed (it arrived after minute end + grace) is
  counted as ``late``, logged at a throttled rate and NOT applied: the bar already went out and is
  never revised. Its cumulative volume reaches the bars through the next applied tick. Two
  consequences worth knowing: lateness compares the exchange's ``ltt`` with the engine clock, so
  a clock skew larger than the grace makes ticks late (keep the host on NTP); and in Quote mode a
  quote refresh of an illiquid option repeats an old ``ltt``, so it counts as late (harmless).
- Invalid ticks (wrong symbol, malformed fields, price <= 0, NaN/inf price, timestamp outside the
  session, volume negative or not an int) are counted by ``InvalidReason``, logged at a throttled
  rate (the first one, then at most one per ``invalid_log_interval_s`` of engine time per
  reason, with the number suppressed since), and never touch a bar. A zero LTP therefore never
  moves a bar: the last valid price stands.
- BarUpdate (high, low, last of the bar in progress; ``last`` is by exchange time) goes out at
  once on a tick that makes a new high or low of its minute (the minute's first tick always
  does), otherwise at most once per ``update_interval_s`` of engine time. A suppressed change is
  published by the next update or by the Bar at close. A tick for the previous, still-open
  minute (within the grace) updates that minute and its BarUpdate carries that minute's start.

Mid-session start (``seed_from_history``): today's completed history bars (``HistoryBar`` or
``Bar``) are returned as Bars with ``source="history"`` (the bar whose minute is not complete at
``now`` is dropped; bars at or before what is already closed are skipped; malformed ones are
counted and skipped), with BarGaps between non-consecutive bars. The VWAP accumulators are
seeded with Σ(typical price × volume) and Σ(volume): an approximation, since the ticks' own
prices are unknown inside a history bar. The cumulative-volume base becomes the sum of the
history volumes (the day's cumulative volume at the end of the last history bar, when the
history starts at the open). Live ticks in minutes covered by history are dropped as
``duplicate`` (counted, not logged: expected at start); live bars continue with the minute right
after the last history bar, so there is no duplicate and no hole. That first live minute is
usually the one in progress at start: its OHLC covers only the part seen live, its volume is
complete (it counts from the history base). If the vendor's history lags, the unreported volume
lands in that first live bar.

Restart after a crash (``snapshot()`` / ``restore(snap, now)``): the snapshot holds only state of
closed minutes (closed-through minute, VWAP sums, volume base, first-bar flag, history extent),
so it is consistent whenever it is taken; the actor persists it after each closed bar. Ticks of
minutes still open at the crash are lost with the process. The restarted builder therefore
treats every minute after the snapshot's last closed minute up to and including the minute of
the restart (``now``) as *partial*: it never saw them fully, so it emits no bar for them but one
BarGap each; their ticks (counted as ``partial``) only re-base the cumulative volume. From the
next minute on, bars are exact. If the partial minutes had no tick, the first later tick
re-bases (contributes 0). Either way volume traded while the builder was down never inflates a
bar; it is missing from the VWAP. If
the actor can fetch history, ``seed_from_history`` right after ``restore`` replaces this: history
fills the missed minutes, the VWAP sums and the volume base continue from the snapshot's, and the
minute in progress is built live as on a fresh mid-session start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from operator import itemgetter
from typing import Any

from loguru import logger

from engine.broker import HistoryBar
from engine.messages import Bar, BarGap, BarUpdate, Tick, bar_update_of
from engine.runtime.clock import fmt_ist
from engine.runtime.logs import Throttle
from engine.settings import setting

BarEvent = Bar | BarUpdate | BarGap

_NOTHING: tuple[BarEvent, ...] = ()
_INF = math.inf
_MINUTE = 60.0
def _true_order(tick: Tick) -> tuple[float, int]:
    """Exchange time, then cumulative volume (monotone in true time) for equal stamps; the sort
    is stable, so what still ties keeps arrival order. (``Tick.ts`` unrolled: one unpack.)"""
    _, _, _, recv_ts, exchange_ts, volume, _, _, _ = tick
    return (exchange_ts if exchange_ts is not None else recv_ts,
            volume if volume is not None else -1)


#: ``_true_order`` of a tick with an exchange time and a volume (Tick fields 4 and 5)
_STAMPED_ORDER = itemgetter(4, 5)


def _minute_of(ts: float) -> float:
    """Start of the minute containing ``ts``; exact for any finite float (IST is whole minutes
    off UTC)."""
    return ts - ts % _MINUTE


@dataclass(frozen=True, slots=True)
class BarSettings:
    """Tunables of the bar builder, config section ``[bars]``."""

    grace_s: float = setting(
        2.0, "seconds after a minute ends that late ticks still count before the bar closes",
        min=0.0, max=30.0)
    update_interval_s: float = setting(
        0.25, "minimum engine seconds between BarUpdates that make no new high or low",
        min=0.0, max=60.0)
    invalid_log_interval_s: float = setting(
        60.0, "engine seconds between log lines per kind of rejected tick (late, invalid, ...)",
        min=0.0, max=3600.0)
    history_reads: int = setting(
        3, "reads of the broker's history a starting builder tries (each retried as [openalgo] "
        "says) before it gives up the backfill and continues live only", min=1, max=10)
    no_trade_minutes: str = setting(
        "gap", "a closed minute whose ticks did not move the cumulative volume (quote refreshes "
        "only: nothing traded): \"gap\" records it as a BarGap, as the broker's chart and its "
        "history do; \"bar\" makes a flat bar of volume 0 (the engine's rule before issue 17)",
        choices=("gap", "bar"))
    history_concurrency: int = setting(
        4, "history reads in flight at once across all builders (each returns the whole day; "
        "82 at once after a restart of the market-data group held ~35 MB at the close)",
        min=1, max=64)


class InvalidReason(StrEnum):
    """Why a tick was rejected as invalid."""

    WRONG_SYMBOL = "wrong_symbol"
    MALFORMED = "malformed"
    PRICE_NOT_FINITE = "price_not_finite"
    PRICE_NOT_POSITIVE = "price_not_positive"
    OUTSIDE_SESSION = "outside_session"
    BAD_VOLUME = "bad_volume"


class BarError(ValueError):
    """A BarAggregator was built or driven with arguments that cannot be right."""


class BarStateError(BarError):
    """An operation that needs a particular state was called in another (e.g. ``restore`` on
    an aggregator that already saw ticks)."""


@dataclass(frozen=True, slots=True)
class BarStats:
    """Counters of one aggregator. ``invalid`` maps ``InvalidReason`` values to counts."""

    accepted: int
    late: int
    duplicate: int
    partial: int
    bars: int
    history_bars: int
    gaps: int
    volume_resets: int
    bad_history_bars: int
    invalid: dict[str, int] = field(default_factory=dict)
    no_trade: int = 0  # minutes recorded as gaps because nothing traded (counted in gaps too)

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())


@dataclass(frozen=True, slots=True)
class BarSnapshot:
    """What a restarted aggregator needs to continue the day: state of closed minutes only.

    ``closed_through`` is the start of the last closed minute; ``volume_base`` the cumulative
    volume after it (None before any volume); ``pv_sum``/``volume_sum`` the VWAP sums.
    """

    symbol: str
    session_open: float
    session_close: float
    closed_through: float
    started: bool
    history_through: float | None
    volume_base: int | None
    pv_sum: float
    volume_sum: int

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (``BarSnapshot(**d)`` is the inverse); flat values, so a plain
        read of each field (``dataclasses.asdict`` deep-copies, once per symbol per minute)."""
        return {name: getattr(self, name) for name in _SNAPSHOT_FIELDS}


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(BarSnapshot))


class _Minute:
    """The ticks of one open minute plus the running extremes published in BarUpdates."""

    __slots__ = ("high", "last", "last_ts", "low", "max_ts", "max_volume", "ordered", "partial",
                 "stamped", "start", "ticks")

    def __init__(self, start: float, partial: bool) -> None:
        self.start = start
        self.partial = partial
        self.ticks: list[Tick] = []
        self.high = -_INF
        self.low = _INF
        self.last = 0.0
        self.last_ts = -_INF
        self.max_ts = -_INF
        self.max_volume = -1
        self.ordered = True
        self.stamped = True  # every tick has an exchange time and a volume

    def in_true_order(self) -> list[Tick]:
        """The ticks sorted by ``_true_order``, in place (once, on a minute already closed).
        When every tick is stamped the key is ``(exchange_ts, volume)``, read in C by
        ``itemgetter`` instead of a Python call a tick (a busy minute's ticks mostly arrive out
        of exchange-time order)."""
        if not self.ordered:
            self.ticks.sort(key=_STAMPED_ORDER if self.stamped else _true_order)
        return self.ticks


class BarAggregator:
    """Builds one symbol's one-minute bars and session VWAP from its ticks (see module doc).

    ``session`` is ``(open_ts, close_ts)``, epoch seconds on minute boundaries (see
    ``engine.market.instruments.session_bounds``). ``traded`` is False for an index, which has
    no traded volume: ``no_trade_minutes`` does not apply to it. Every method returns the events
    it produced, oldest first; an empty tuple when there are none.
    """

    def __init__(self, symbol: str, settings: BarSettings,
                 session: tuple[float, float], *, traded: bool = True,
                 updates: bool = True) -> None:
        open_ts, close_ts = session
        if not (math.isfinite(open_ts) and math.isfinite(close_ts)) or close_ts <= open_ts:
            raise BarError(f"session must be (open, close) with open < close, got {session!r}")
        if open_ts % _MINUTE or close_ts % _MINUTE:
            raise BarError(f"session bounds must be whole minutes, got {session!r}")
        if not symbol:
            raise BarError("symbol must not be empty")
        self.symbol = symbol
        self.settings = settings
        self._open = float(open_ts)
        self._close = float(close_ts)
        self._last_minute = self._close - _MINUTE
        self._grace = settings.grace_s
        self._update_interval = settings.update_interval_s
        self._updates = updates  # False: nobody listens, no BarUpdate is built
        # closed state
        self._closed_through = self._open - _MINUTE
        self._covered_through = self._closed_through
        self._next_close_at = self._closed_through + 2 * _MINUTE + self._grace
        self._started = False
        self._history_through: float | None = None
        self._volume_base: int | None = None
        self._rebase_next = False
        self._partial_through = -_INF
        self._pv_sum = 0.0
        self._volume_sum = 0
        self._pristine = True
        # open minutes
        self._pending: dict[float, _Minute] = {}
        self._last_update_at = -_INF
        self._now = -_INF
        # counters and log throttling
        self._accepted = 0
        self._late = 0
        self._duplicate = 0
        self._partial = 0
        self._bars = 0
        self._history_bars = 0
        self._gaps = 0
        self._resets = 0
        self._bad_history = 0
        self._no_trade = 0
        # an index is never traded: its minutes are bars whenever they have a tick
        self._no_trade_gap = settings.no_trade_minutes == "gap" and traded
        self._invalid: dict[str, int] = {}
        self._throttle = Throttle(settings.invalid_log_interval_s)

    # -- ticks and time ----------------------------------------------------------------------
    def on_tick(self, tick: Tick) -> Sequence[BarEvent]:
        """Apply one tick: closes minutes now due (by the tick's receive time), then files the
        tick into its minute. Returns the Bars/BarGaps closed and possibly one BarUpdate."""
        # One unpack of the nine-field named tuple instead of five attribute reads, and one
        # combined test for a valid tick: _invalid_reason sorts out the rare rejected one.
        symbol, _, price, now, stamp, volume, _, _, _ = tick
        ts = now if stamp is None else stamp
        try:
            valid = (now - now == 0.0 and 0.0 < price < _INF and self._open <= ts < self._close
                     and symbol == self.symbol
                     and (volume is None or (volume.__class__ is int and volume >= 0)))
            due = now >= self._next_close_at
        except TypeError:
            valid = False
        if not valid:
            return self._reject(self._invalid_reason(tick), tick)

        if now > self._now:
            self._now = now
        events = self._close_due(now) if due else _NOTHING
        start = ts - ts % _MINUTE
        if start <= self._closed_through:
            self._pristine = False
            self._note_dropped(tick, start)
            return events
        minute = self._pending.get(start)
        if minute is None:  # a valid tick is no longer pristine: it dropped or opened a minute
            self._pristine = False
            minute = self._pending[start] = _Minute(start, start <= self._partial_through)
        minute.ticks.append(tick)
        if volume is None:
            volume = -1
            minute.stamped = False
        if stamp is None:
            minute.stamped = False
        if ts > minute.max_ts:
            minute.max_ts = ts
            minute.max_volume = volume
        elif ts < minute.max_ts or volume < minute.max_volume:
            minute.ordered = False
        else:
            minute.max_volume = volume
        price = float(price)
        extreme = False
        if price > minute.high:
            minute.high = price
            extreme = True
        if price < minute.low:
            minute.low = price
            extreme = True
        if ts >= minute.last_ts:
            minute.last = price
            minute.last_ts = ts
        if minute.partial:
            self._partial += 1
            return events
        self._accepted += 1
        if self._updates and (extreme or now - self._last_update_at >= self._update_interval):
            self._last_update_at = now
            update = bar_update_of((self.symbol, start, minute.high, minute.low,
                                     minute.last, now))
            return [*events, update] if events else (update,)
        return events

    def on_time(self, now: float) -> Sequence[BarEvent]:
        """Close every minute whose end + grace is <= ``now``; returns its Bars/BarGaps."""
        if now > self._now:
            self._now = now
        if now >= self._next_close_at:
            return self._close_due(now)
        return _NOTHING

    def close_all(self) -> Sequence[BarEvent]:
        """End of session: close every session minute now, whatever the grace (open minutes
        become Bars, empty ones after the first bar BarGaps); later ticks count as late. Call it
        at session close + grace so the last minute's stragglers are in."""
        return self._close_through(self._last_minute)

    # -- history and restart -----------------------------------------------------------------
    def start_watching(self, now: float) -> None:
        """A fresh (not restored) aggregator begins at engine time ``now``, after any history
        seeding. Begun after the open, every closed session minute without a bar is a gap from
        then on, before the first bar too: the minute in progress was watched only in part and
        the earlier ones history did not give are unknown, so "no bar" goes on record (a quiet
        option at a 09:15:40 start left 09:15 with neither a bar nor a gap: the soak). Begun
        before the open nothing changes: an option that has not traded yet has no gaps."""
        if now > self._open:
            self._started = True

    def history_would_add(self, now: float) -> bool:
        """Whether today's history could add a bar at engine time ``now``: some session minute
        completed by ``now`` is not covered yet. False right after a restart within the minute
        the builder died in: the history read (the whole day, every time) would bring nothing."""
        last_complete = min(_minute_of(now) - _MINUTE, self._last_minute)
        return last_complete > self._covered_through

    def seed_from_history(self, bars: Iterable[HistoryBar | Bar],
                          now: float) -> list[BarEvent]:
        """Take today's completed history bars (module doc, "Mid-session start"): returns them
        as Bars with ``source="history"`` plus BarGaps around them, oldest first. Call it at
        start or right after ``restore``, before any live bar closes."""
        if not math.isfinite(now):
            raise BarError(f"now must be a finite engine time, got {now!r}")
        if self._bars:
            raise BarStateError(f"{self.symbol}: history must be seeded before any live bar "
                                f"closes ({self._bars} already did)")
        rows = sorted((_history_row(bar) for bar in bars), key=lambda row: row[0])
        events: list[BarEvent] = []
        seeded_volume = 0
        applied = seeded = 0
        for start, open_, high, low, close, volume, ticks in rows:
            if start + _MINUTE > now or start <= self._covered_through:
                continue  # the bar still in progress, or a minute already covered
            if not _valid_history(start, open_, high, low, close, volume, self._open,
                                  self._close):
                self._bad_history += 1
                self._log_throttled("bad_history_bar",
                                    f"skipped history bar {fmt_ist(start)} o={open_} h={high} "
                                    f"l={low} c={close} v={volume}")
                continue
            events.extend(self._gaps_between(self._covered_through, start))
            applied += 1
            self._started = True
            self._covered_through = self._history_through = start
            if volume == 0 and self._no_trade_gap:
                events.append(self._no_trade_gap_at(start))  # as the live rule: no trade, no bar
                continue
            self._pv_sum += (high + low + close) / 3.0 * volume
            self._volume_sum += volume
            seeded_volume += volume
            seeded += 1
            events.append(Bar(self.symbol, start, open_, high, low, close, volume, ticks,
                              self._vwap(high, low, close), source="history"))
        self._pristine = False
        if not applied:
            return events
        self._history_bars += seeded
        # Minutes the clock closed before the history arrived held no tick: gaps after it.
        events.extend(self._gaps_between(self._covered_through, self._closed_through + _MINUTE))
        self._covered_through = max(self._covered_through, self._closed_through)
        self._set_closed_through(self._covered_through)
        self._volume_base = (self._volume_base or 0) + seeded_volume
        self._rebase_next = False
        self._partial_through = -_INF
        for start in [s for s in self._pending if s <= self._closed_through]:
            self._drop_pending_as_duplicate(self._pending.pop(start))
        for minute in self._pending.values():
            if minute.partial:
                minute.partial = False
                self._partial -= len(minute.ticks)
                self._accepted += len(minute.ticks)
        return events

    def snapshot(self) -> BarSnapshot:
        """The closed-minute state a restarted aggregator continues from."""
        return BarSnapshot(**self.snapshot_state())

    def snapshot_state(self) -> dict[str, Any]:
        """``snapshot().as_dict()`` without the BarSnapshot in between (the builder persists
        one per symbol per closed minute)."""
        return {"symbol": self.symbol, "session_open": self._open,
                "session_close": self._close, "closed_through": self._closed_through,
                "started": self._started, "history_through": self._history_through,
                "volume_base": self._volume_base, "pv_sum": self._pv_sum,
                "volume_sum": self._volume_sum}

    def restore(self, snap: BarSnapshot, now: float) -> None:
        """Continue from ``snap`` after a restart at engine time ``now`` (module doc, "Restart
        after a crash"). Only on a fresh aggregator of the same symbol and session."""
        if not math.isfinite(now):
            raise BarError(f"now must be a finite engine time, got {now!r}")
        if not self._pristine:
            raise BarStateError(f"{self.symbol}: restore needs a fresh aggregator")
        if (snap.symbol, snap.session_open, snap.session_close) != (
                self.symbol, self._open, self._close):
            raise BarStateError(
                f"snapshot is for {snap.symbol} session {fmt_ist(snap.session_open, True)}"
                f"–{fmt_ist(snap.session_close)}, not {self.symbol} session "
                f"{fmt_ist(self._open, True)}–{fmt_ist(self._close)}")
        if snap.closed_through % _MINUTE or snap.closed_through < self._open - _MINUTE:
            raise BarStateError(f"snapshot closed_through {snap.closed_through!r} is not a "
                                f"session minute")
        self._set_closed_through(snap.closed_through)
        self._covered_through = snap.closed_through
        self._started = snap.started
        self._history_through = snap.history_through
        self._volume_base = snap.volume_base
        self._pv_sum = snap.pv_sum
        self._volume_sum = snap.volume_sum
        self._rebase_next = True
        self._partial_through = _minute_of(now)
        self._pristine = False
        if now > self._now:
            self._now = now
        logger.info("{}: restored, closed through {}; minutes up to {} are partial (gaps)",
                    self.symbol, fmt_ist(snap.closed_through), fmt_ist(self._partial_through))

    # -- reporting -----------------------------------------------------------------------------
    def stats(self) -> BarStats:
        """A copy of the counters (every tick lands in exactly one of accepted, partial,
        late, duplicate or an invalid reason)."""
        return BarStats(self._accepted, self._late, self._duplicate, self._partial, self._bars,
                        self._history_bars, self._gaps, self._resets, self._bad_history,
                        dict(self._invalid), self._no_trade)

    @property
    def vwap(self) -> float | None:
        """The session VWAP as of the last closed minute; None before any volume."""
        return self._pv_sum / self._volume_sum if self._volume_sum else None

    @property
    def next_close_at(self) -> float:
        """Engine time at which ``on_time`` next has a minute to close (when to set the
        timer)."""
        return self._next_close_at

    # -- internals -------------------------------------------------------------------------------
    def _close_due(self, now: float) -> Sequence[BarEvent]:
        return self._close_through(_minute_of(now - self._grace) - _MINUTE)

    def _close_through(self, target: float) -> Sequence[BarEvent]:
        """Close every minute up to and including ``target`` in order."""
        if target <= self._closed_through:
            return _NOTHING
        events: list[BarEvent] = []
        pending = self._pending
        start = self._closed_through + _MINUTE
        stop = min(target, self._last_minute)
        while start <= stop and (pending or self._started):
            minute = pending.pop(start, None)
            if minute is None:
                if self._started:
                    self._gaps += 1
                    events.append(BarGap(self.symbol, start))
            elif minute.partial:
                self._rebase_from(minute)
                self._started = True
                self._gaps += 1
                events.append(BarGap(self.symbol, start))
            else:
                events.append(self._finish(minute))
            start += _MINUTE
        if self._started:
            self._covered_through = max(self._covered_through, stop)
        self._set_closed_through(target)
        return events

    def _finish(self, minute: _Minute) -> Bar | BarGap:
        """The minute's Bar; a BarGap instead when its ticks show nothing traded (the
        cumulative volume did not move) and ``no_trade_minutes`` is "gap". A minute that cannot
        tell (a tick without volume, one that only set the base at a positive volume, a feed
        reset) counts as traded."""
        ticks = minute.in_true_order()
        base = self._volume_base
        rebase = self._rebase_next
        pv_sum = self._pv_sum
        volume_sum = 0
        unknown = False
        for tick in ticks:
            _, _, price, _, _, volume, _, _, _ = tick  # one unpack: two reads a tick
            if volume is None:
                unknown = True
                continue
            if base is None or rebase:
                rebase = False
                unknown = unknown or volume > 0
            elif volume >= base:
                delta = volume - base
                pv_sum += price * delta
                volume_sum += delta
            else:
                unknown = True
                self._resets += 1
                self._log_throttled("volume_reset", f"cumulative volume dropped {base} -> "
                                    f"{volume} at {fmt_ist(tick.ts)}; re-based")
            base = volume
        self._volume_base = base
        self._rebase_next = rebase
        self._pv_sum = pv_sum
        self._volume_sum += volume_sum
        self._started = True
        if not volume_sum and not unknown and self._no_trade_gap:
            return self._no_trade_gap_at(minute.start)
        high, low, close = minute.high, minute.low, float(ticks[-1].ltp)
        self._bars += 1
        return Bar(self.symbol, minute.start, float(ticks[0].ltp), high, low, close,
                   volume_sum, len(ticks), self._vwap(high, low, close))

    def _no_trade_gap_at(self, start: float) -> BarGap:
        self._gaps += 1
        self._no_trade += 1
        return BarGap(self.symbol, start)

    def _rebase_from(self, minute: _Minute) -> None:
        """A partial minute makes no bar; its last cumulative volume becomes the base."""
        ticks = minute.in_true_order()
        for tick in reversed(ticks):
            if tick.volume is not None:
                self._volume_base = tick.volume
                self._rebase_next = False
                return

    def _vwap(self, high: float, low: float, close: float) -> float:
        if self._volume_sum:
            return self._pv_sum / self._volume_sum
        return (high + low + close) / 3.0

    def _gaps_between(self, after: float, before: float) -> list[BarEvent]:
        if not self._started:
            return []
        starts = range(int(after + _MINUTE), int(min(before, self._close)), int(_MINUTE))
        self._gaps += len(starts)
        return [BarGap(self.symbol, float(start)) for start in starts]

    def _drop_pending_as_duplicate(self, minute: _Minute) -> None:
        count = len(minute.ticks)
        if minute.partial:
            self._partial -= count
        else:
            self._accepted -= count
        self._duplicate += count

    def _set_closed_through(self, start: float) -> None:
        self._closed_through = start
        self._next_close_at = start + 2 * _MINUTE + self._grace

    def _note_dropped(self, tick: Tick, start: float) -> None:
        if self._history_through is not None and start <= self._history_through:
            self._duplicate += 1
            return
        self._late += 1
        self._log_throttled("late", f"dropped late tick ltp={tick.ltp} for {fmt_ist(start)} "
                            f"received {fmt_ist(tick.recv_ts)}, minute closed through "
                            f"{fmt_ist(self._closed_through)}")

    def _reject(self, reason: InvalidReason, tick: Tick) -> Sequence[BarEvent]:
        self._invalid[reason.value] = self._invalid.get(reason.value, 0) + 1
        try:
            if tick.recv_ts > self._now:  # engine time still moves for the log throttle
                self._now = tick.recv_ts
        except TypeError:
            pass
        self._log_throttled(reason, f"dropped invalid tick symbol={tick.symbol!r} "
                            f"ltp={tick.ltp!r} "
                            f"exchange_ts={tick.exchange_ts!r} recv_ts={tick.recv_ts!r} "
                            f"volume={tick.volume!r}")
        return _NOTHING

    def _invalid_reason(self, tick: Tick) -> InvalidReason:
        """Why ``on_tick`` rejected ``tick``: the first failing check, in the module doc's
        order (a field of the wrong type anywhere makes it malformed)."""
        now, price = tick.recv_ts, tick.ltp
        ts = tick.exchange_ts if tick.exchange_ts is not None else now
        try:
            timed = now - now == 0.0  # a finite receive time
            priced = 0.0 < price < _INF
            in_session = self._open <= ts < self._close
            _ = now >= self._next_close_at  # the fast path compares it too
        except TypeError:
            return InvalidReason.MALFORMED
        if not timed:
            return InvalidReason.MALFORMED
        if tick.symbol != self.symbol:
            return InvalidReason.WRONG_SYMBOL
        if not priced:
            if price != price or price == _INF:
                return InvalidReason.PRICE_NOT_FINITE
            return InvalidReason.PRICE_NOT_POSITIVE
        if not in_session:
            return InvalidReason.OUTSIDE_SESSION
        return InvalidReason.BAD_VOLUME

    def _log_throttled(self, kind: str, message: str) -> None:
        """The first of a kind, then at most one per ``invalid_log_interval_s`` of engine time,
        with how many were suppressed in between."""
        allowed, suppressed = self._throttle.allow(kind, self._now)
        if not allowed:
            return
        more = f" (+{suppressed} more since the last report)" if suppressed else ""
        # routine data dirt, counted per symbol and reason; the run ends with the table
        # (quality_table); each line here is detail (-v)
        logger.debug("{}: {} [{}]{}", self.symbol, message, kind, more)


def _history_row(bar: HistoryBar | Bar) -> tuple[float, float, float, float, float, int, int]:
    if isinstance(bar, HistoryBar):
        return (_minute_of(bar.timestamp), bar.open, bar.high, bar.low, bar.close, bar.volume,
                0)
    if isinstance(bar, Bar):
        return (_minute_of(bar.start), bar.open, bar.high, bar.low, bar.close, bar.volume,
                bar.ticks)
    raise BarError(f"not a history bar: {bar!r}")


def _valid_history(start: float, open_: float, high: float, low: float, close: float,
                   volume: int, session_open: float, session_close: float) -> bool:
    try:
        return (session_open <= start < session_close
                and all(math.isfinite(p) and p > 0 for p in (open_, high, low, close))
                and low <= min(open_, close) and high >= max(open_, close)
                and volume.__class__ is int and volume >= 0)
    except TypeError:
        return False


def quality_table(counts: Mapping[str, Mapping[str, int]], limit: int = 10) -> list[str]:
    """The data-quality table of a run: one row per symbol (the ``limit`` with the most
    rejected ticks, then one row for the rest), one column per reason, and a total row.
    ``counts``: symbol -> reason -> ticks. A row named in parentheses, such as ``(feed)`` (ticks
    the feed client refused before they were ticks), is not a symbol: it is always shown,
    first, whatever the symbols' counts. Empty when nothing was rejected."""
    rows = {sym: {r: n for r, n in by.items() if n} for sym, by in counts.items()}
    rows = {sym: by for sym, by in rows.items() if by}
    if not rows:
        return []
    reasons = sorted({r for by in rows.values() for r in by})
    sources = sorted(sym for sym in rows if sym.startswith("("))
    ranked = sources + sorted((sym for sym in rows if not sym.startswith("(")),
                              key=lambda sym: (-sum(rows[sym].values()), sym))
    limit += len(sources)
    width = max(len("symbol"), *(len(sym) for sym in ranked[:limit]), len("total"))
    cols = [max(len(r), 6) for r in reasons]

    def line(label: str, values: Sequence[int]) -> str:
        cells = "  ".join(f"{v:>{w},}" for v, w in zip(values, cols, strict=True))
        return f"{label:<{width}}  {cells}"

    out = ["[DATA QUALITY] rejected ticks by symbol and reason",
           f"{'symbol':<{width}}  " + "  ".join(f"{r:>{w}}" for r, w in
                                                 zip(reasons, cols, strict=True))]
    out += [line(sym, [rows[sym].get(r, 0) for r in reasons]) for sym in ranked[:limit]]
    rest = ranked[limit:]
    if rest:
        out.append(line(f"({len(rest)} more)"[:width],
                        [sum(rows[s].get(r, 0) for s in rest) for r in reasons]))
    out.append(line("total", [sum(by.get(r, 0) for by in rows.values()) for r in reasons]))
    return out
