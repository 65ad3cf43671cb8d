"""baseline_v1: short NIFTY options on the break of a swing low (baseline-v1.md, "Entry" and
"Limits and exits"). Every number is a ``BaselineSettings`` field (section ``[baseline_v1]``).

How the rules are carried out:

- **Candidates.** Every unbroken, tradable swing Low of an option (CE/PE) is a candidate. The
  static filter runs once, when the swing arrives: price in [price_min, price_max] and VWAP
  premium (price − vwap) / vwap ≥ vwap_premium_min; a candidate failing it is dropped. A swing
  the strategy already knows (announced again after a restart) is the same candidate.
- **Highest high.** For each candidate, entry and position the strategy keeps the highest high
  of the bars from the swing bar on, the swing bar and the bar in progress included (from
  ``Bar`` and ``BarUpdate``), as production does, so the dynamic filter always sees the latest
  stop. A new high that makes a working entry fail the dynamic filter cancels it on that tick.
- **Fresh prices.** An entry is placed or switched only while its symbol's last ``BarUpdate``
  is at most ``fresh_price_s`` old; otherwise it waits for a fresh tick.
- **Decisions on the clock.** Market data and order events only update state (plus the
  protective reactions below). Everything that chooses between symbols — the ±R latch, the
  15:15 exit, new entries, strike switches, cancels — runs on a periodic evaluation timer every
  ``eval_interval_s``, at ``eval_offset_s`` past the whole interval (half a second by default,
  away from the whole-second bar closes). In a replay the timer's message reaches the host
  before anything the same step's ticks cause, and after everything earlier steps caused, so
  the choices (and the client ids they use) do not depend on the order in which bars of
  different symbols happened to arrive. Live, it adds at most one interval.
- **Dynamic filter and sizing** (per evaluation): stop = highest high + stop_offset;
  sl_points = stop − swing; sl_points / swing within [sl_pct_min, sl_pct_max]; lots =
  floor(min(R / (sl_points × lot_size), max_lots)), skipped below one lot.
- **Best strike per option type:** smallest |sl_points − target_sl_points|, then strikes that
  are a multiple of ``round_strike``, then the highest swing price (then symbol, for a total
  order). Symbols held or traded today, blocked by the churn guard, or whose last price is at or
  below the swing are not candidates.
- **Entry order:** SELL stop-limit, trigger = swing − entry_trigger_ticks ticks, limit =
  trigger − entry_limit_offset. At most one working entry per option type. Without one, the best
  candidate is placed at once (within the limits: max_open symbols with a position or a working
  entry, max_per_type per CE/PE). With one, a different best strike replaces it only at the
  first evaluation after a bar closed, through ``ctx.replace`` (the order manager verifies the
  cancel at the broker before placing), and only when the trigger or limit moves by more than
  ``replace_threshold`` (a different symbol always moves). An entry whose candidate stopped
  qualifying is cancelled on the tick (``_cancel_unqualified``) or at a bar close; one that
  filled in part, or whose swing is breaking, is left alone. A slot stays taken until the
  broker confirms the old order gone.
- **Broken swings are never traded.** A break removes the candidate for good: no new order, no
  re-place, no switch to it. A working entry whose swing broke is cancelled (its unfilled rest)
  at the close of the bar the break happened in, or of a completed bar that went below the
  swing: it had its chance to fill on the break.
- **Protective stop:** each entry fill is covered at once by a BUY stop-limit for the filled
  quantity not yet covered (partial fills included): trigger = max(stop at selection, highest
  high from the swing bar on + stop_offset), limit = trigger + stop_limit_offset. A stop that is
  rejected (or cancelled by someone else) is placed again; after ``stop_retries`` failures the
  uncovered quantity is bought back at market and a critical alert raised. The cover is also
  re-checked on every evaluation: a position is never left without a stop.
- **Closing everything** (the ±R latch, 15:15, max loss / profit, trailing stop, flatten) is
  not the strategy's: the risk manager evaluates the day limits (``[risk]``: the day's R in
  ``r_unit``, at +daily_r_target or −daily_r_stop; the ``eod_exit`` time) and its exit
  coordinator cancels the entries and closes every position BUY-first, cancelling each stop
  and checking it did not fill first. The strategy learns it
  in ``on_exit``: from then on the day is over for it (no entry, no stop, no exit of its own);
  it keeps accounting the exit fills and records each closed trade with ``ctx.record_trade``
  (R multiple = P&L / R, and its own risk, quantity × sl_points, from which the host records
  P&L / risk under ``[risk] r_unit = "position"``). Each entry's stop distance is declared
  with ``ctx.set_risk`` before it is placed, for the risk latch. A "flatten" command
  addressed to the strategy asks the coordinator (``ctx.exit_all``). Quantity an order
  reported filled counts as covered before its fills arrive, so an event that overtakes its
  fill never causes a second buy.
- **Day:** new entries only in [entry_start, entry_end). One position per symbol; no re-entry
  into a symbol traded today.
- **Churn guard:** a new entry on a symbol within churn_window_s of a cancel on that symbol is
  a churn cycle; churn_symbol_cycles of them on one symbol within churn_symbol_window_s block it
  for the day; churn_total_cycles in the day pause new entries (until an operator "resume").
- **Commands:** "kill" cancels working entries and blocks new ones (stops and positions stay);
  "flatten" asks the exit coordinator to close everything; "resume" lifts the kill and the
  churn pause; "unhalt" (the risk manager's, after an operator un-halts) lets a stopped day
  trade again (not after 15:15); "protect" (the reconciler's, for a short it found without a
  stop) re-checks that position's stop at once.
  The host's own pause (``ctx.can_trade``) blocks new entries and switches.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import time
from typing import Any

from loguru import logger

from engine.market.instruments import (
    OPTION_EXCHANGE,
    ceil_to_tick,
    parse_option_symbol,
    round_to_tick,
    trading_date,
)
from engine.messages import (
    Action,
    Bar,
    BarUpdate,
    Fill,
    OrderEvent,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PositionMark,
    PriceType,
    Severity,
    Swing,
    SwingBroken,
    SwingKind,
    TimerFired,
)
from engine.runtime.clock import fmt_ist, to_ist
from engine.settings import setting
from engine.trading.pending import PendingBook, add_pending, add_priced, outstanding
from strategies.base import Strategy, StrategyContext

EVAL_TIMER = "evaluate"
KINDS = ("CE", "PE")
SNAPSHOT_VERSION = 2
_EPS = 1e-9
_BAR_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    """Section ``[baseline_v1]``: every number of the strategy."""

    price_min: float = setting(100.0, "lowest swing-low price traded (rupees)", min=0.05)
    price_max: float = setting(300.0, "highest swing-low price traded (rupees)", min=0.05)
    vwap_premium_min: float = setting(0.04, "minimum (swing - VWAP at swing) / VWAP", min=-1.0,
                                      max=10.0)
    stop_offset: float = setting(1.0, "stop = highest high since the swing + this (rupees)",
                                 min=0.0, max=1000.0)
    sl_pct_min: float = setting(0.02, "smallest stop distance as a fraction of the swing price",
                                min=0.0, max=1.0)
    sl_pct_max: float = setting(0.10, "largest stop distance as a fraction of the swing price",
                                min=0.0, max=1.0)
    risk_per_trade: float = setting(6500.0, "R: rupees risked per position (sizing and R "
                                    "multiples)", min=1.0)
    max_lots: int = setting(10, "most lots in one position", min=1, max=1000)
    target_sl_points: float = setting(10.0, "preferred stop distance in points (best strike is "
                                      "the closest)", min=0.0, max=1000.0)
    round_strike: int = setting(100, "on equal stop distance prefer strikes that are a "
                                "multiple of this", min=1, max=100_000)
    entry_trigger_ticks: int = setting(1, "entry trigger = swing - this many ticks", min=0,
                                       max=100)
    entry_limit_offset: float = setting(3.0, "entry limit = trigger - this (rupees)", min=0.0,
                                        max=1000.0)
    stop_limit_offset: float = setting(3.0, "protective stop limit = trigger + this (rupees)",
                                       min=0.0, max=1000.0)
    replace_threshold: float = setting(1.0, "re-place a working entry only when its trigger or "
                                       "limit would move by more than this (rupees)", min=0.0,
                                       max=1000.0)
    max_open: int = setting(5, "most symbols with a position or a working entry", min=1,
                            max=100)
    max_per_type: int = setting(3, "most CE (and most PE) symbols with a position or a working "
                                "entry", min=1, max=100)
    entry_start: str = setting("09:15", "first time new entries may be placed, IST (HH:MM)")
    entry_end: str = setting("15:15", "new entries only before this time, IST (HH:MM)")
    churn_window_s: float = setting(30.0, "a re-place within this many seconds of a cancel on "
                                    "the same symbol is a churn cycle", min=0.0, max=3600.0)
    churn_symbol_cycles: int = setting(2, "churn cycles on one symbol that block it for the day",
                                       min=1, max=100)
    churn_symbol_window_s: float = setting(300.0, "window for counting one symbol's churn "
                                           "cycles (seconds)", min=1.0, max=86_400.0)
    churn_total_cycles: int = setting(5, "churn cycles in a day that pause new entries", min=1,
                                      max=1000)
    stop_retries: int = setting(3, "protective stop placements retried before buying back at "
                                "market", min=0, max=20)
    replace_timeout_s: float = setting(30.0, "a cancel or replacement not confirmed after this "
                                       "many seconds is sent again or given up", min=1.0,
                                       max=3600.0)
    eval_interval_s: float = setting(1.0, "how often entries, switches and the day limits are "
                                     "evaluated (engine seconds)", min=0.05, max=60.0)
    eval_offset_s: float = setting(0.5, "evaluations run at this offset within the interval",
                                   min=0.0, max=60.0)
    fresh_price_s: float = setting(5.0, "an entry is placed or switched only while the "
                                   "symbol's last tick is at most this many seconds old "
                                   "(engine time); otherwise it waits for a fresh tick",
                                   min=0.1, max=3600.0)
    exchange: str = setting(OPTION_EXCHANGE, "exchange of the traded options")

    def problems(self) -> list[tuple[str | tuple[str, str], str]]:
        """(key, problem) for values that are fine alone but wrong together (then the keys,
        the one it is about first)."""
        out: list[tuple[str | tuple[str, str], str]] = []
        for key in ("entry_start", "entry_end"):
            try:
                time.fromisoformat(getattr(self, key))
            except ValueError:
                out.append((key, f"expected HH:MM, got {getattr(self, key)!r}"))
        if out:
            return out
        if self.price_min > self.price_max:
            out.append((("price_max", "price_min"), "must be >= price_min"))
        if self.sl_pct_min > self.sl_pct_max:
            out.append((("sl_pct_max", "sl_pct_min"), "must be >= sl_pct_min"))
        if time.fromisoformat(self.entry_start) >= time.fromisoformat(self.entry_end):
            out.append((("entry_end", "entry_start"), "must be after entry_start"))
        if self.max_per_type > self.max_open:
            out.append((("max_per_type", "max_open"), "must be <= max_open"))
        if self.eval_offset_s >= self.eval_interval_s:
            out.append((("eval_offset_s", "eval_interval_s"), "must be below eval_interval_s"))
        return out


# ---------------------------------------------------------------------------------------------
# State records (plain, JSON round-trip through _plain / _load_day)
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Candidate:
    """An unbroken swing Low that passed the static filter."""

    symbol: str
    kind: str
    strike: int
    price: float
    vwap: float
    bar_start: float

    @property
    def key(self) -> tuple[str, float]:
        return (self.symbol, self.bar_start)


@dataclass(frozen=True, slots=True)
class Plan:
    """A candidate that passes the dynamic filter, sized: what an entry order would be."""

    candidate: Candidate
    stop: float
    sl_points: float
    quantity: int
    trigger: float
    limit: float


@dataclass(slots=True)
class Entry:
    """One entry order (a replacement is a new Entry that ``replaces`` the old one)."""

    client_id: str
    kind: str
    symbol: str
    swing_start: float
    swing_price: float
    trigger: float
    limit: float
    quantity: int
    stop: float
    placed_ts: float
    replaces: str | None = None
    placed: bool = True  # False for a replacement the order manager has not reported yet
    filled: int = 0
    reported: int = 0  # filled quantity the order manager reported (its fills may follow)
    done: bool = False
    cancel_ts: float | None = None
    broken_ts: float | None = None
    cancel_due: bool = False

    @property
    def swing_key(self) -> tuple[str, float]:
        return (self.symbol, self.swing_start)


@dataclass(slots=True)
class Cover:
    """A stop or exit order protecting (part of) a position."""

    client_id: str
    role: str  # "stop" | "exit"
    quantity: int
    reason: str
    ts: float
    filled: int = 0
    reported: int = 0
    done: bool = False
    replaces: str | None = None
    placed: bool = True  # False for a replacement the order manager has not reported yet
    cancel_sent: bool = False


@dataclass(slots=True)
class Position:
    """A short position of one symbol, from its entry fills to its last exit fill."""

    symbol: str
    kind: str
    swing_start: float
    stop: float
    sold_qty: int = 0
    sold_value: float = 0.0
    bought_qty: int = 0
    bought_value: float = 0.0
    realized: float = 0.0
    entry_ts: float = 0.0
    exit_ts: float = 0.0
    entry_client_id: str = ""
    exit_client_id: str = ""
    last_exit_reason: str = ""
    sl_points: float = 0.0  # stop distance at entry: the position's risk per unit
    stop_failures: int = 0
    exit_failures: int = 0
    recorded: bool = False
    covers: dict[str, Cover] = field(default_factory=dict)
    #: entry quantity the broker filled before giving its price (engine.trading.pending)
    pending: PendingBook = field(default_factory=dict)

    @property
    def open_qty(self) -> int:
        """Sold (priced, and filled with the price pending) less bought back."""
        return self.sold_qty + outstanding(self.pending) - self.bought_qty

    @property
    def avg_entry(self) -> float:
        return self.sold_value / self.sold_qty if self.sold_qty else 0.0

    @property
    def risk(self) -> float:
        """Rupees the position risks: quantity sold × stop distance at entry (its own R)."""
        return self.sold_qty * self.sl_points

    def live_covers(self) -> list[Cover]:
        return [c for c in self.covers.values() if not c.done]

    def covered(self) -> int:
        """Quantity the covers will still buy back: the unfilled rest of live ones (a
        replacement counts only once the order it replaces is gone; until then the old one
        protects), plus fills a finished cover reported that have not arrived yet."""
        total = 0
        for c in self.covers.values():
            if c.done:
                total += max(0, c.reported - c.filled)
                continue
            old = self.covers.get(c.replaces) if c.replaces else None
            if old is not None and not old.done:
                continue
            total += c.quantity - c.filled
        return total


class _BarHighs:
    """One symbol's closed-bar highs of the day, in bar order, as packed doubles (a day of 82
    options is ~30k bars; as tuples of floats they lived until the close and fragmented the
    allocator, RELIABILITY.md)."""

    __slots__ = ("highs", "starts")

    def __init__(self) -> None:
        self.starts: array[float] = array("d")
        self.highs: array[float] = array("d")

    def add(self, start: float, high: float) -> None:
        """Keep a bar's high; a bar not after the last one kept is ignored."""
        if not self.starts or start > self.starts[-1]:
            self.starts.append(start)
            self.highs.append(high)

    def highest_from(self, start: float) -> float | None:
        """The highest high of the bars that started at or after ``start`` (the swing bar
        included); None if there is none."""
        first = bisect_left(self.starts, start)
        return max(self.highs[first:]) if first < len(self.highs) else None


@dataclass(slots=True)
class _Day:
    """Everything the strategy knows about the current trading day."""

    day: str = ""
    candidates: dict[tuple[str, float], Candidate] = field(default_factory=dict)
    ignored: set[tuple[str, float]] = field(default_factory=set)  # broken or refused swings
    hh: dict[str, dict[float, float | None]] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    slots: dict[str, str] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    traded: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    last_cancel: dict[str, float] = field(default_factory=dict)
    churn_cycles: dict[str, list[float]] = field(default_factory=dict)
    churn_total: int = 0
    churn_paused: bool = False
    killed: bool = False
    stopped: str = ""
    eod_done: bool = False
    realized: float = 0.0


# ---------------------------------------------------------------------------------------------
# The strategy
# ---------------------------------------------------------------------------------------------


class BaselineV1(Strategy):
    name = "baseline_v1"
    settings_class = BaselineSettings
    snapshot_cached = True  # _touch() drops the cached dict; a returned one is never changed
    state_version: int = 0  # _touch() counts every change: the host builds a snapshot to write

    def __init__(self, ctx: StrategyContext, settings: BaselineSettings | None = None) -> None:
        settings = settings or BaselineSettings()
        problems = settings.problems()
        if problems:
            raise ValueError("baseline_v1 settings: " + "; ".join(
                f"{k if isinstance(k, str) else k[0]}: {p}" for k, p in problems))
        super().__init__(ctx, settings)
        self.cfg = settings
        self.spec = ctx.instrument
        self._entry_start = time.fromisoformat(settings.entry_start)
        self._entry_end = time.fromisoformat(settings.entry_end)
        self.d = _Day()
        # market memory (not persisted: bars come again from history after a restart)
        self._highs: dict[str, _BarHighs] = {}
        self._progress: dict[str, tuple[float, float]] = {}
        self._last: dict[str, float] = {}
        self._tick_ts: dict[str, float] = {}  # when the symbol's last tick was received
        self._switch_due: set[str] = set()  # option types whose switch waits for a fresh tick
        # the latest live bar seen, and the one switches were last considered at
        self._bar_minute = 0.0
        self._switch_minute = 0.0
        self._snap: dict[str, Any] | None = None
        # what the evaluation reads from the day, derived once per change of it (``_touch()``
        # drops them, like the snapshot): the day changes between about one evaluation in 13
        self._views: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    def on_start(self) -> None:
        now = self.ctx.now()
        self._roll_day(now)
        interval, offset = self.cfg.eval_interval_s, self.cfg.eval_offset_s
        first = (math.floor((now - offset) / interval) + 1) * interval + offset
        self.ctx.schedule_every(interval, EVAL_TIMER, first=first)
        for pos in sorted(self.d.positions.values(), key=lambda p: p.symbol):
            if pos.sl_points > 0:  # the position monitor may have restarted too
                self.ctx.set_risk(pos.symbol, pos.sl_points)

    def snapshot(self) -> dict[str, Any]:
        if self._snap is None:
            self._snap = _dump_day(self.d)
        return self._snap

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"baseline_v1 snapshot version {state.get('version')!r} is not "
                             f"{SNAPSHOT_VERSION}")
        self.d = _load_day(state)
        self._touch()
        logger.info("baseline_v1: restored {} candidates, {} entries, {} positions, realized "
                    "{:+.2f}{}", len(self.d.candidates), len(self.d.entries),
                    len(self.d.positions), self.d.realized,
                    f", day stopped ({self.d.stopped})" if self.d.stopped else "")

    def status(self) -> dict[str, Any]:
        d = self.d
        state = ("STOPPED: " + d.stopped if d.stopped else "KILLED" if d.killed
                 else "PAUSED (churn)" if d.churn_paused else "ACTIVE")
        return {
            "state": state,
            "realized_pnl": round(d.realized, 2),
            "cumulative_r": round(self.cumulative_r(), 4),
            "positions": {p.symbol: -p.open_qty for p in d.positions.values() if p.open_qty},
            "working_entries": {k: d.entries[c].symbol for k, c in sorted(d.slots.items())},
            "candidates": len(d.candidates),
            "traded": sorted(d.traded),
            "blocked": sorted(d.blocked),
            "churn_cycles": d.churn_total,
            "eod_done": d.eod_done,
        }

    # -- market data ------------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> None:
        if not self._roll_day(bar.start):
            return
        highs = self._highs.get(bar.symbol)
        if highs is None:
            highs = self._highs[bar.symbol] = _BarHighs()
        highs.add(bar.start, bar.high)
        progress = self._progress.get(bar.symbol)
        if progress is not None and progress[0] <= bar.start:
            del self._progress[bar.symbol]
        if bar.close > 0:
            self._last[bar.symbol] = bar.close
        if self._raise_highs(bar.symbol, bar.start, bar.high):
            self._touch()
        if bar.source == "live":
            self._bar_minute = max(self._bar_minute, bar.start)
        end = bar.start + _BAR_SECONDS
        for entry in self._entries_on(bar.symbol):
            if bar.start <= entry.swing_start:
                continue
            if bar.low < entry.swing_price and entry.broken_ts is None:
                entry.broken_ts = end
                self._touch()
            if entry.broken_ts is not None and end >= entry.broken_ts and not entry.cancel_due:
                entry.cancel_due = True
                self._touch()

    def on_bar_update(self, update: BarUpdate) -> None:
        symbol = update.symbol
        if update.last > 0:
            self._last[symbol] = update.last
            self._tick_ts[symbol] = update.ts
        progress = self._progress.get(symbol)
        if progress is None or progress[0] != update.start or update.high > progress[1]:
            self._progress[symbol] = (update.start, update.high)
        if symbol in self.d.hh and self._raise_highs(symbol, update.start, update.high):
            self._touch()
            self._cancel_unqualified(symbol)

    def _cancel_unqualified(self, symbol: str) -> None:
        """A new high moved the stop: a working entry on ``symbol`` whose candidate no longer
        qualifies is cancelled now, on the tick (production's rule), not at the bar close. One
        that filled in part, is being switched or cancelled, or whose swing is breaking is left
        alone, as at the bar close."""
        d = self.d
        for entry in sorted(self._entries_on(symbol), key=lambda e: e.client_id):
            if (not entry.placed or entry.cancel_ts is not None or entry.filled > 0
                    or entry.broken_ts is not None or d.slots.get(entry.kind) != entry.client_id
                    or self._replacement_of(entry.client_id) is not None):
                continue
            if self._plan(d.candidates.get(entry.swing_key)) is None:
                self._cancel_entry(entry, "no longer qualifies (on the tick)", self.ctx.now())

    def on_position(self, mark: PositionMark) -> None:
        if mark.fresh and mark.ltp > 0:
            self._last[mark.symbol] = mark.ltp

    def on_swing(self, swing: Swing) -> None:
        if swing.kind is not SwingKind.LOW or not swing.tradable:
            return
        try:
            option = parse_option_symbol(swing.symbol)
        except ValueError:
            return  # the index (or another non-option): nothing to short
        if not self._roll_day(swing.bar_start):
            return
        key = (swing.symbol, swing.bar_start)
        if key in self.d.candidates or key in self.d.ignored:
            return
        self._touch()
        cfg = self.cfg
        premium = (swing.price - swing.vwap) / swing.vwap if swing.vwap > 0 else -math.inf
        if not cfg.price_min - _EPS <= swing.price <= cfg.price_max + _EPS:
            logger.debug("{}: swing low {} outside [{}, {}]", swing.symbol, swing.price,
                         cfg.price_min, cfg.price_max)
            return
        if premium < cfg.vwap_premium_min - _EPS:
            logger.debug("{}: swing low {} VWAP premium {:.4f} below {}", swing.symbol,
                         swing.price, premium, cfg.vwap_premium_min)
            return
        self.d.candidates[key] = Candidate(swing.symbol, option.kind, option.strike, swing.price,
                                           swing.vwap, swing.bar_start)
        self._track(swing.symbol, swing.bar_start)
        logger.debug("{}: candidate swing low {} at {} (VWAP premium {:.2%})", swing.symbol,
                    swing.price, fmt_ist(swing.bar_start), premium)

    def on_swing_broken(self, broken: SwingBroken) -> None:
        if broken.kind is not SwingKind.LOW:
            return
        key = (broken.symbol, broken.bar_start)
        entries = [e for e in self._entries_on(broken.symbol) if e.swing_key == key]
        if self.d.candidates.pop(key, None) is None and not entries:
            return  # not a swing the strategy was trading
        self._touch()
        self.d.ignored.add(key)
        logger.debug("{}: swing low {} broken by {} at {}; never traded again", broken.symbol,
                    broken.price, broken.by, fmt_ist(broken.broken_ts))
        for entry in entries:
            if entry.broken_ts is None or broken.broken_ts < entry.broken_ts:
                entry.broken_ts = broken.broken_ts
            if broken.by == "bar":
                entry.cancel_due = True

    # -- execution --------------------------------------------------------------------------------
    def on_order_event(self, event: OrderEvent) -> None:
        self._touch()
        entry = self.d.entries.get(event.client_id)
        if entry is not None:
            self._entry_event(entry, event)
            return
        found = self._cover(event.client_id)
        if found is not None:
            self._cover_event(*found, event)

    def on_fill(self, fill: Fill) -> None:
        self._touch()
        entry = self.d.entries.get(fill.client_id)
        if entry is not None and fill.action is Action.SELL:
            self._entry_fill(entry, fill)
            return
        pos = self.d.positions.get(fill.symbol)
        if pos is None or fill.action is not Action.BUY:
            self.ctx.alert("unexpected_fill", f"fill of an order that is not an entry or a "
                           f"cover of an open position: {fill}", Severity.CRITICAL)
            return
        self._exit_fill(pos, fill)

    def on_timer(self, timer: TimerFired) -> None:
        if timer.name == EVAL_TIMER:
            self._evaluate()  # touches only when it changes something: it runs every second

    def on_exit(self, reason: str) -> None:
        self._touch()
        d = self.d
        if not d.stopped:
            d.stopped = reason
            # the host has logged the exit coordinator's order: detail
            logger.debug("baseline_v1: the exit coordinator closes everything ({}); no new "
                           "entries today", reason)
        if reason == "eod":
            d.eod_done = True

    def on_command(self, name: str, args: Mapping[str, Any]) -> None:
        self._touch()
        if name == "kill":
            self.d.killed = True
            self._cancel_entries("kill")
            logger.warning("baseline_v1: killed: working entries cancelled, new ones blocked; "
                           "stops and positions stay")
        elif name == "flatten":
            self.ctx.exit_all("flatten")
        elif name == "unhalt":
            if self.d.stopped and not self.d.eod_done:
                logger.warning("baseline_v1: un-halted by the operator (was: {})",
                               self.d.stopped)
                self.d.stopped = ""
        elif name == "protect":
            pos = self.d.positions.get(str(args.get("symbol", "")))
            if pos is not None:
                self._protect(pos)
        elif name == "position_corrected":
            self._corrected(str(args.get("symbol", "")), int(args.get("quantity", 0)),
                            float(args.get("price") or 0.0))
        elif name == "resume":
            if self.d.killed or self.d.churn_paused:
                logger.info("baseline_v1: resumed (kill and churn pause lifted)")
            self.d.killed = False
            self.d.churn_paused = False

    def _corrected(self, symbol: str, quantity: int, price: float) -> None:
        """The reconciler booked the broker's quantity (a hand close, a lost broker): what the
        broker no longer holds is bought back at ``price`` (0: the last price), like a fill
        from outside the engine, so no stop is re-placed for a position that is gone."""
        pos = self.d.positions.get(symbol)
        closed = (pos.open_qty + min(quantity, 0)) if pos is not None else 0
        price = price or self._last.get(symbol, 0.0)
        if pos is None or closed <= 0 or price <= 0:
            return
        now = self.ctx.now()
        self._exit_fill(pos, Fill(client_id="reconcile", broker_order_id="", strategy=self.name,
                                  account="", symbol=symbol, exchange=self.cfg.exchange,
                                  action=Action.BUY, quantity=closed, price=price,
                                  cumulative_quantity=closed, ts=now,
                                  purpose=OrderPurpose.EXIT))

    # -- evaluation (on the timer) ----------------------------------------------------------------
    def _evaluate(self) -> None:
        now = self.ctx.now()
        self._roll_day(now)
        self._retry_cancels(now)
        for entry in self._live_entries():
            if entry.cancel_due and not entry.done and entry.cancel_ts is None:
                self._cancel_entry(entry, "swing broken, entry not filled", now)
        for pos in self._open_positions():
            self._protect(pos)
        bar_closed = self._bar_minute > self._switch_minute
        if bar_closed:
            self._switch_minute = self._bar_minute
            self._switch_due.update(KINDS)
            self._prune_highs()
        if self._entries_blocked(now):
            return
        for kind in KINDS:
            self._manage(kind, now)

    def _manage(self, kind: str, now: float) -> None:
        d = self.d
        cid = d.slots.get(kind)
        if cid is None:
            best = self._best(kind)
            self._switch_due.discard(kind)
            if (best is not None and self._room_for(best.candidate)
                    and self._fresh(best.candidate.symbol, now)):
                self._enter(best, now)
            return
        entry = d.entries[cid]
        if kind not in self._switch_due:
            return
        if (not entry.placed or entry.done or entry.cancel_ts is not None
                or entry.filled > 0 or entry.broken_ts is not None):
            self._switch_due.discard(kind)
            return
        best = self._best(kind)  # only now: an evaluation with nothing to switch is cheap
        if best is None:
            self._switch_due.discard(kind)
            if self._plan(d.candidates.get(entry.swing_key)) is None:
                self._cancel_entry(entry, "no longer qualifies", now)
            return
        target = best.candidate
        if target.key == entry.swing_key or (
                target.symbol == entry.symbol
                and abs(best.trigger - entry.trigger) <= self.cfg.replace_threshold + _EPS
                and abs(best.limit - entry.limit) <= self.cfg.replace_threshold + _EPS):
            self._switch_due.discard(kind)
            return
        if not self._fresh(target.symbol, now):
            return  # the switch waits for a fresh tick of the target
        self._switch_due.discard(kind)
        if not self._churn_ok(target.symbol, now):
            return
        self._touch()
        self.ctx.set_risk(target.symbol, best.sl_points)
        new_id = self.ctx.replace(cid, reason=f"switch to {target.symbol}", symbol=target.symbol,
                                  quantity=best.quantity, price=best.limit,
                                  trigger_price=best.trigger)
        entry.cancel_ts = now
        d.last_cancel[entry.symbol] = now
        d.entries[new_id] = self._new_entry(new_id, best, now, replaces=cid)
        d.slots[kind] = new_id
        logger.debug("baseline_v1: {} entry {} {} -> {} {} (sl {:.2f} points, qty {})", kind,
                    cid, entry.symbol, new_id, target.symbol, best.sl_points, best.quantity)

    def _enter(self, plan: Plan, now: float) -> None:
        c = plan.candidate
        if not self._churn_ok(c.symbol, now):
            return
        self._touch()
        self.ctx.set_risk(c.symbol, plan.sl_points)
        cid = self.ctx.place(symbol=c.symbol, exchange=self.cfg.exchange, action=Action.SELL,
                             quantity=plan.quantity, pricetype=PriceType.SL, price=plan.limit,
                             trigger_price=plan.trigger, purpose=OrderPurpose.ENTRY,
                             reason=f"swing low {c.price} at {fmt_ist(c.bar_start)}")
        self.d.entries[cid] = self._new_entry(cid, plan, now)
        self.d.slots[c.kind] = cid
        logger.debug("baseline_v1: {} entry {} SELL {} x{} trigger {} limit {} (stop {:.2f}, sl "
                    "{:.2f} points)", c.kind, cid, c.symbol, plan.quantity, plan.trigger,
                    plan.limit, plan.stop, plan.sl_points)

    def _new_entry(self, cid: str, plan: Plan, now: float, replaces: str | None = None) -> Entry:
        c = plan.candidate
        return Entry(client_id=cid, kind=c.kind, symbol=c.symbol, swing_start=c.bar_start,
                     swing_price=c.price, trigger=plan.trigger, limit=plan.limit,
                     quantity=plan.quantity, stop=plan.stop, placed_ts=now, replaces=replaces,
                     placed=replaces is None)

    # -- selection --------------------------------------------------------------------------------
    def _plan(self, c: Candidate | None) -> Plan | None:
        """The dynamic filter and sizing for a candidate (None: it does not qualify now)."""
        if c is None:
            return None
        hh = self.d.hh.get(c.symbol, {}).get(c.bar_start)
        if hh is None:
            return None
        cfg = self.cfg
        stop = hh + cfg.stop_offset
        sl_points = stop - c.price
        if sl_points <= 0:
            return None
        sl_pct = sl_points / c.price
        if not cfg.sl_pct_min - _EPS <= sl_pct <= cfg.sl_pct_max + _EPS:
            return None
        lot = self.spec.lot_size
        lots = min(math.floor(cfg.risk_per_trade / (sl_points * lot) + _EPS), cfg.max_lots)
        if lots < 1:
            return None
        tick = self.spec.tick_size
        trigger = round_to_tick(c.price - cfg.entry_trigger_ticks * tick, tick)
        limit = round_to_tick(trigger - cfg.entry_limit_offset, tick)
        if limit <= 0:
            return None
        return Plan(c, stop, sl_points, lots * lot, trigger, limit)

    def _best(self, kind: str) -> Plan | None:
        """The best plan of an option type (class docstring, "Best strike"): the first of the
        ranking whose symbol's last price is above its swing."""
        for plan in self._ranked(kind):
            if self._above_swing(plan.candidate):
                return plan
        return None

    def _ranked(self, kind: str) -> list[Plan]:
        """Plans of the candidates of ``kind`` that may be traded (but for the last price, which
        moves every tick), best first. It depends only on the day, so it is kept until the day
        changes: most evaluations find it unchanged."""
        view = self._views.get(kind)
        if view is None:
            cfg = self.cfg
            view = self._views[kind] = sorted(
                (p for c in self.d.candidates.values()
                 if c.kind == kind and self._may_trade(c) and (p := self._plan(c)) is not None),
                key=lambda p: (
                    round(abs(p.sl_points - cfg.target_sl_points), 6),
                    0 if p.candidate.strike % cfg.round_strike == 0 else 1,
                    -p.candidate.price, p.candidate.symbol, p.candidate.bar_start))
        return view

    def _fresh(self, symbol: str, now: float) -> bool:
        """The symbol's last price came from a tick at most ``fresh_price_s`` ago."""
        return now - self._tick_ts.get(symbol, -math.inf) <= self.cfg.fresh_price_s + _EPS

    def _may_trade(self, c: Candidate) -> bool:
        """The symbol is not held, traded today or blocked (with ``_above_swing``: a candidate)."""
        d = self.d
        return not (c.symbol in d.traded or c.symbol in d.positions or c.symbol in d.blocked)

    def _above_swing(self, c: Candidate) -> bool:
        """The symbol's last price (if any) is above the swing."""
        last = self._last.get(c.symbol)
        return last is None or last > c.price

    def _room_for(self, c: Candidate) -> bool:
        d = self.d
        busy = {p.symbol: p.kind for p in d.positions.values() if p.open_qty > 0}
        for e in d.entries.values():
            if d.slots.get(e.kind) == e.client_id or e.reported > e.filled:
                busy[e.symbol] = e.kind  # working, or filled with the fills still to come
        same = sum(1 for kind in busy.values() if kind == c.kind)
        return len(busy) < self.cfg.max_open and same < self.cfg.max_per_type

    def _entries_blocked(self, now: float) -> bool:
        d = self.d
        if d.stopped or d.eod_done or d.killed or d.churn_paused or not self.ctx.can_trade:
            return True
        t = to_ist(now).time()
        return not self._entry_start <= t < self._entry_end

    def _churn_ok(self, symbol: str, now: float) -> bool:
        """False when placing on ``symbol`` now is a churn cycle that blocks it or pauses."""
        d, cfg = self.d, self.cfg
        last = d.last_cancel.get(symbol)
        if last is None or now - last > cfg.churn_window_s:
            return True
        self._touch()
        cycles = [t for t in d.churn_cycles.get(symbol, [])
                  if now - t <= cfg.churn_symbol_window_s] + [now]
        d.churn_cycles[symbol] = cycles
        d.churn_total += 1
        logger.info("baseline_v1: churn cycle on {} ({} on it in {:.0f}s, {} today)", symbol,
                       len(cycles), cfg.churn_symbol_window_s, d.churn_total)
        if d.churn_total >= cfg.churn_total_cycles:
            d.churn_paused = True
            self.ctx.alert("churn", f"{d.churn_total} churn cycles today: new entries paused "
                           f"until an operator resumes", Severity.CRITICAL)
            return False
        if len(cycles) >= cfg.churn_symbol_cycles:
            d.blocked.add(symbol)
            self.ctx.alert("churn", f"{symbol}: {len(cycles)} churn cycles within "
                           f"{cfg.churn_symbol_window_s:.0f}s: blocked for the day")
            return False
        return True

    # -- entries ----------------------------------------------------------------------------------
    def _entry_event(self, entry: Entry, event: OrderEvent) -> None:
        d = self.d
        entry.placed = True
        entry.reported = max(entry.reported, event.filled_quantity)
        if not event.status.is_terminal or entry.done:
            return
        entry.done = True
        status = event.status
        slot_kind = entry.kind if d.slots.get(entry.kind) == entry.client_id else None
        if status is OrderStatus.REJECTED:
            old = d.entries.get(entry.replaces) if entry.replaces else None
            if old is None:  # refused on its own merits: never try this swing again
                d.candidates.pop(entry.swing_key, None)
                d.ignored.add(entry.swing_key)
                self.ctx.alert("entry_rejected", f"entry {entry.client_id} on {entry.symbol} "
                               f"rejected: {event.reason or 'no reason given'}")
            elif slot_kind and not old.done:
                # the order manager did not place the switch: the old order stands
                logger.debug("baseline_v1: switch {} -> {} not done ({}); {} stays",
                            old.client_id, entry.client_id, event.reason, old.client_id)
                d.slots[slot_kind] = old.client_id
                old.cancel_ts = None
                return
        replacement = self._replacement_of(entry.client_id)
        if replacement is not None and status is OrderStatus.CANCELLED:
            return  # verified cancel: the order manager places the replacement now
        if replacement is not None:
            # the old order ended otherwise (filled, rejected, expired): the order manager
            # places no replacement
            replacement.done = True
            if d.slots.get(entry.kind) == replacement.client_id:
                slot_kind = entry.kind
        if slot_kind:
            del d.slots[slot_kind]

    def on_fill_pending(self, pending: PendingFill) -> None:
        """An entry filled without its price yet: the position holds it and its stop is placed
        now (the stop's trigger never depends on the fill price); P&L waits for the priced
        fill. A cover's pending fill changes nothing here: its priced fill follows."""
        self._touch()
        entry = self.d.entries.get(pending.client_id)
        if entry is None or pending.action is not Action.SELL:
            logger.info("baseline_v1: {} {} filled, price pending; waiting for the price",
                        pending.client_id, pending.quantity)
            return
        pos = self._entry_position(entry, pending.ts)
        if not add_pending(pos.pending, pending.broker_order_id, pending.cumulative_quantity):
            return
        logger.warning("baseline_v1: entry {} filled {} on {}, price pending (position -{}); "
                       "protecting it now", entry.client_id, pending.quantity, entry.symbol,
                       pos.open_qty)
        self._protect(pos)

    def _entry_position(self, entry: Entry, ts: float) -> Position:
        pos = self.d.positions.get(entry.symbol)
        if pos is None:
            pos = self.d.positions[entry.symbol] = Position(
                symbol=entry.symbol, kind=entry.kind, swing_start=entry.swing_start,
                stop=entry.stop, entry_ts=ts, entry_client_id=entry.client_id,
                sl_points=entry.stop - entry.swing_price)
            self._track(entry.symbol, entry.swing_start)
        return pos

    def _entry_fill(self, entry: Entry, fill: Fill) -> None:
        d = self.d
        entry.filled += fill.quantity
        pos = self._entry_position(entry, fill.ts)
        add_priced(pos.pending, fill.broker_order_id, fill.cumulative_quantity)
        pos.sold_qty += fill.quantity
        pos.sold_value += fill.quantity * fill.price
        d.traded.add(entry.symbol)
        logger.info("baseline_v1: entry {} filled {} @ {} on {} (position -{})",
                    entry.client_id, fill.quantity, fill.price, entry.symbol, pos.open_qty)
        replacement = self._replacement_of(entry.client_id)
        if replacement is not None:
            # it filled while being switched: the order manager places no replacement
            replacement.done = True
            if d.slots.get(entry.kind) == replacement.client_id:
                del d.slots[entry.kind]
        if entry.filled >= entry.quantity and d.slots.get(entry.kind) == entry.client_id:
            del d.slots[entry.kind]
        self._protect(pos)

    def _cancel_entry(self, entry: Entry, reason: str, now: float) -> None:
        self._touch()
        self.ctx.cancel(entry.client_id, reason)
        entry.cancel_ts = now
        self.d.last_cancel[entry.symbol] = now
        logger.debug("baseline_v1: cancel entry {} on {}: {}", entry.client_id, entry.symbol,
                    reason)

    def _cancel_entries(self, reason: str) -> None:
        now = self.ctx.now()
        for entry in sorted(self.d.entries.values(), key=lambda e: e.client_id):
            if not entry.done and entry.cancel_ts is None:
                self._cancel_entry(entry, reason, now)

    def _retry_cancels(self, now: float) -> None:
        """Cancels and replacements that were never confirmed: send again, or give up."""
        d = self.d
        timeout = self.cfg.replace_timeout_s
        for entry in self._live_entries():
            if entry.done:
                continue
            if not entry.placed and now - entry.placed_ts > timeout:
                self._touch()
                entry.done = True
                self.ctx.cancel(entry.client_id, "replacement never reported")
                old = d.entries.get(entry.replaces) if entry.replaces else None
                if d.slots.get(entry.kind) == entry.client_id:
                    if old is not None and not old.done:
                        d.slots[entry.kind] = old.client_id
                        old.cancel_ts = None
                    else:
                        del d.slots[entry.kind]
                self.ctx.alert("replace_timeout", f"replacement {entry.client_id} of "
                               f"{entry.replaces} not reported within {timeout:.0f}s")
            elif (entry.cancel_ts is not None and now - entry.cancel_ts > timeout
                  and self._replacement_of(entry.client_id) is None):
                self._cancel_entry(entry, "cancel not confirmed; asking again", now)

    def _replacement_of(self, cid: str) -> Entry | None:
        """The live entry that replaces ``cid`` (verified cancel pending), if any."""
        for entry in self.d.entries.values():
            if entry.replaces == cid and not entry.done:
                return entry
        return None

    def _entries_on(self, symbol: str) -> Iterable[Entry]:
        return [e for e in self.d.entries.values() if e.symbol == symbol and not e.done]

    # -- positions --------------------------------------------------------------------------------
    def _protect(self, pos: Position) -> None:
        """Make the covers match the open quantity: a stop (or, when closing or after too many
        failed stops, a market exit) for whatever is not covered; nothing left when flat."""
        open_qty = pos.open_qty
        if open_qty <= 0:
            for cover in pos.live_covers():
                if cover.placed and not cover.cancel_sent and cover.filled < cover.quantity:
                    self._touch()
                    cover.cancel_sent = True
                    self.ctx.cancel(cover.client_id, "position is flat")
            return
        covered = pos.covered()
        if covered > open_qty:
            self.ctx.alert("over_covered", f"{pos.symbol}: covers for {covered} but only "
                           f"{open_qty} open", Severity.CRITICAL)
        uncovered = open_qty - covered
        if uncovered <= 0:
            return
        if self.d.stopped:
            return  # the exit coordinator owns the position now
        if pos.stop_failures > self.cfg.stop_retries:
            if pos.exit_failures > self.cfg.stop_retries:
                return  # alerted already: the operator has to act
            self.ctx.alert("stop_failed", f"{pos.symbol}: protective stop failed "
                           f"{pos.stop_failures} times; buying back {uncovered} at market",
                           Severity.CRITICAL)
            self._place_cover(pos, "exit", uncovered, PriceType.MARKET, 0.0, 0.0, "stop_failed")
            return
        tick = self.spec.tick_size
        hh = self.d.hh.get(pos.symbol, {}).get(pos.swing_start)
        since_swing = -math.inf if hh is None else hh + self.cfg.stop_offset
        trigger = ceil_to_tick(max(pos.stop, since_swing), tick)
        limit = round_to_tick(trigger + self.cfg.stop_limit_offset, tick)
        self._place_cover(pos, "stop", uncovered, PriceType.SL, limit, trigger, "stop")

    def _place_cover(self, pos: Position, role: str, quantity: int, pricetype: PriceType,
                     price: float, trigger: float, reason: str) -> None:
        self._touch()
        cid = self.ctx.place(symbol=pos.symbol, exchange=self.cfg.exchange, action=Action.BUY,
                             quantity=quantity, pricetype=pricetype, price=price,
                             trigger_price=trigger,
                             purpose=OrderPurpose.STOP if role == "stop" else OrderPurpose.EXIT,
                             parent_id=pos.entry_client_id or None, reason=reason)
        pos.covers[cid] = Cover(cid, role, quantity, reason, self.ctx.now())
        logger.info("baseline_v1: {} {} BUY {} x{} {} trigger {} limit {} ({})", role, cid,
                    pos.symbol, quantity, pricetype.value, trigger, price, reason)

    def _cover(self, cid: str) -> tuple[Position, Cover] | None:
        for pos in self.d.positions.values():
            cover = pos.covers.get(cid)
            if cover is not None:
                return pos, cover
        return None

    def _cover_event(self, pos: Position, cover: Cover, event: OrderEvent) -> None:
        cover.placed = True
        cover.reported = max(cover.reported, event.filled_quantity)
        if not event.status.is_terminal or cover.done:
            return
        cover.done = True
        status = event.status
        replacement = next((c for c in pos.covers.values()
                            if c.replaces == cover.client_id and not c.done), None)
        if replacement is not None and status is not OrderStatus.CANCELLED:
            # it ended otherwise (a stop that had already filled): the order manager places no
            # replacement, and the strategy does not buy back what the stop already did
            replacement.done = True
            logger.info("baseline_v1: {} ended {} before its replacement; {} dropped",
                        cover.client_id, status.value, replacement.client_id)
        replaced = pos.covers.get(cover.replaces) if cover.replaces else None
        if status is OrderStatus.REJECTED and replaced is not None and not replaced.done:
            # a refused switch stop -> market exit: the stop still protects; retried later
            logger.warning("baseline_v1: {} not placed ({}); stop {} stays", cover.client_id,
                           event.reason, replaced.client_id)
            return
        # a stop the exit coordinator cancelled (to replace it with its market exit) is no
        # failure: the coordinator told on_exit first and owns the position now
        failed = status in (OrderStatus.REJECTED, OrderStatus.EXPIRED) or (
            status is OrderStatus.CANCELLED and replacement is None and not cover.cancel_sent
            and not self.d.stopped)
        if failed:
            if cover.role == "stop":
                pos.stop_failures += 1
            else:
                pos.exit_failures += 1
            severe = cover.role == "exit" and pos.exit_failures > self.cfg.stop_retries
            self.ctx.alert("cover_failed", f"{cover.role} {cover.client_id} on {pos.symbol} "
                           f"{status.value}: {event.reason or 'no reason given'}"
                           + ("; giving up, act manually" if severe else ""),
                           Severity.CRITICAL if cover.role == "exit" else Severity.WARNING)
        self._protect(pos)

    def _exit_fill(self, pos: Position, fill: Fill) -> None:
        d = self.d
        cover = pos.covers.get(fill.client_id)
        if cover is not None:
            cover.filled += fill.quantity
            pos.last_exit_reason = cover.reason
        else:  # the exit coordinator's (or someone else's) order
            pos.last_exit_reason = self.d.stopped or "external"
        pnl = (pos.avg_entry - fill.price) * fill.quantity
        pos.bought_qty += fill.quantity
        pos.bought_value += fill.quantity * fill.price
        pos.realized += pnl
        d.realized += pnl
        pos.exit_ts = fill.ts
        pos.exit_client_id = fill.client_id
        # a position this closes gets its trade line next (record_trade): this one is detail
        logger.log("DEBUG" if pos.open_qty == 0 and not pos.recorded else "INFO",
                   "baseline_v1: {} bought back {} @ {} ({}), open -{}", pos.symbol,
                   fill.quantity, fill.price, pos.last_exit_reason, pos.open_qty)
        if pos.open_qty < 0:
            self.ctx.alert("naked_long", f"{pos.symbol}: bought back more than was sold "
                           f"({pos.bought_qty} > {pos.sold_qty})", Severity.CRITICAL)
        self._protect(pos)
        if pos.open_qty <= 0 and not pos.recorded:
            self._record(pos)

    def _record(self, pos: Position) -> None:
        pos.recorded = True
        self.ctx.record_trade(
            symbol=pos.symbol, action=Action.SELL, quantity=pos.sold_qty, entry_ts=pos.entry_ts,
            entry_price=round(pos.avg_entry, 4), exit_ts=pos.exit_ts,
            exit_price=round(pos.bought_value / pos.bought_qty, 4), pnl=round(pos.realized, 2),
            r_multiple=round(pos.realized / self.cfg.risk_per_trade, 4),
            risk=round(pos.risk, 2),
            entry_client_id=pos.entry_client_id, exit_client_id=pos.exit_client_id,
            exit_reason=pos.last_exit_reason)

    def _open_positions(self) -> list[Position]:
        """Positions with quantity open, by symbol (kept until the day changes)."""
        view = self._views.get("open")
        if view is None:
            view = self._views["open"] = sorted(
                (p for p in self.d.positions.values() if p.open_qty > 0), key=lambda p: p.symbol)
        return view

    def _live_entries(self) -> list[Entry]:
        """Entries not done, by client id (kept until the day changes)."""
        view = self._views.get("live")
        if view is None:
            view = self._views["live"] = sorted(
                (e for e in self.d.entries.values() if not e.done), key=lambda e: e.client_id)
        return view

    def cumulative_r(self) -> float:
        """The day's R at the last prices, in ``[risk] r_unit`` as the risk latch measures it:
        the sum of each position's P&L (realized + unrealized) over its own risk ("position"),
        or the day's P&L over ``risk_per_trade`` ("fixed", and any position of unknown risk)."""
        total = 0.0
        for pos in self.d.positions.values():
            pnl = pos.realized
            if pos.open_qty > 0:
                pnl += (pos.avg_entry - self._last.get(pos.symbol, pos.avg_entry)) * pos.open_qty
            own = self.ctx.r_unit == "position" and pos.risk > 0
            total += pnl / (pos.risk if own else self.cfg.risk_per_trade)
        return total

    # -- highs, days, snapshot --------------------------------------------------------------------
    def _track(self, symbol: str, swing_start: float) -> None:
        """Start keeping the highest high from the swing bar ``swing_start`` on, the swing bar
        included (bars and bar in progress), as production does."""
        tracked = self.d.hh.setdefault(symbol, {})
        if swing_start in tracked:
            return
        highs = self._highs.get(symbol)
        best = highs.highest_from(swing_start) if highs is not None else None
        progress = self._progress.get(symbol)
        if progress is not None and progress[0] >= swing_start:
            best = progress[1] if best is None else max(best, progress[1])
        tracked[swing_start] = best

    def _raise_highs(self, symbol: str, start: float, high: float) -> bool:
        tracked = self.d.hh.get(symbol)
        if not tracked:
            return False
        moved = False
        for swing_start, hh in tracked.items():
            if start >= swing_start and (hh is None or high > hh):
                tracked[swing_start] = high
                moved = True
        return moved

    def _prune_highs(self) -> None:
        """Stop following the highs of swings nothing refers to any more."""
        d = self.d
        used = set(d.candidates)
        used.update(e.swing_key for e in d.entries.values() if not e.done)
        used.update((p.symbol, p.swing_start) for p in d.positions.values() if p.open_qty)
        for symbol in list(d.hh):
            tracked = d.hh[symbol]
            for start in [t for t in tracked if (symbol, t) not in used]:
                del tracked[start]
                self._touch()
            if not tracked:
                del d.hh[symbol]

    def _roll_day(self, ts: float) -> bool:
        """Start a new day's state when ``ts`` is in a later trading day; False (and nothing
        changes) when it is in an earlier one: such a message is stale."""
        day = trading_date(ts).isoformat()
        if day == self.d.day:
            return True
        if day < self.d.day:
            logger.warning("baseline_v1: ignored a message of {} (the day is {})", day,
                           self.d.day)
            return False
        if self.d.day:
            open_positions = [p.symbol for p in self.d.positions.values() if p.open_qty]
            if open_positions:
                self.ctx.alert("overnight", f"new day {day} with positions still open: "
                               f"{open_positions}", Severity.CRITICAL)
            logger.info("baseline_v1: new trading day {}", day)
        self.d = _Day(day=day)
        self._highs.clear()
        self._progress.clear()
        self._switch_due.clear()
        self._touch()
        return True

    def _touch(self) -> None:
        """Something in ``self.d`` changes: the cached snapshot and views are dropped and the
        change counted (``state_version``). Every change of the day's state calls it (the host
        persists only a counted change; the evaluation's views must see every change)."""
        self._snap = None
        self._views.clear()
        self.state_version += 1


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(record: Any) -> dict[str, Any]:
    """A state record's fields as a new dict (what ``dataclasses.asdict`` gives for these flat
    records, without its recursive deep copy: the snapshot is built often)."""
    names = _FIELDS.get(type(record))
    if names is None:
        names = _FIELDS[type(record)] = tuple(f.name for f in fields(record))
    return {name: getattr(record, name) for name in names}


def _dump_day(d: _Day) -> dict[str, Any]:
    return {
        "version": SNAPSHOT_VERSION,
        "day": d.day,
        "candidates": [_plain(c) for _, c in sorted(d.candidates.items())],
        "ignored": sorted([s, t] for s, t in d.ignored),
        "hh": sorted([s, t, h] for s, m in d.hh.items() for t, h in m.items()),
        "entries": [_plain(e) for _, e in sorted(d.entries.items())],
        "slots": dict(sorted(d.slots.items())),
        "positions": [{**_plain(p), "covers": {cid: _plain(c) for cid, c in p.covers.items()},
                       "pending": {oid: list(q) for oid, q in p.pending.items()}}
                      for _, p in sorted(d.positions.items())],
        "traded": sorted(d.traded),
        "blocked": sorted(d.blocked),
        "last_cancel": dict(sorted(d.last_cancel.items())),
        "churn_cycles": {k: list(v) for k, v in sorted(d.churn_cycles.items())},
        "churn_total": d.churn_total,
        "churn_paused": d.churn_paused,
        "killed": d.killed,
        "stopped": d.stopped,
        "eod_done": d.eod_done,
        "realized": d.realized,
    }


def _load_day(s: Mapping[str, Any]) -> _Day:
    d = _Day(day=str(s["day"]))
    for row in s["candidates"]:
        c = Candidate(**row)
        d.candidates[c.key] = c
    d.ignored = {(str(sym), float(t)) for sym, t in s["ignored"]}
    for sym, t, h in s["hh"]:
        d.hh.setdefault(str(sym), {})[float(t)] = None if h is None else float(h)
    for row in s["entries"]:
        e = Entry(**row)
        d.entries[e.client_id] = e
    d.slots = {str(k): str(v) for k, v in s["slots"].items()}
    missing = sorted(set(d.slots.values()) - set(d.entries))
    if missing:
        raise ValueError(f"snapshot slots refer to unknown entries {missing}")
    for row in s["positions"]:
        covers = {cid: Cover(**c) for cid, c in row["covers"].items()}
        p = Position(**{**row, "covers": covers})
        d.positions[p.symbol] = p
    d.traded = {str(x) for x in s["traded"]}
    d.blocked = {str(x) for x in s["blocked"]}
    d.last_cancel = {str(k): float(v) for k, v in s["last_cancel"].items()}
    d.churn_cycles = {str(k): [float(t) for t in v] for k, v in s["churn_cycles"].items()}
    d.churn_total = int(s["churn_total"])
    d.churn_paused = bool(s["churn_paused"])
    d.killed = bool(s["killed"])
    d.stopped = str(s["stopped"])
    d.eod_done = bool(s["eod_done"])
    d.realized = float(s["realized"])
    return d
