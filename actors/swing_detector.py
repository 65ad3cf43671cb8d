"""The SwingDetector actor (registry name ``swings``): swing highs and lows of every symbol.

Owns one ``engine.market.swings.SwingTracker`` per symbol (created on the symbol's first bar or
update;
the rules live there) and what an actor adds to it:

- forwarding: every ``Bar`` and ``BarUpdate`` goes on to ``downstream`` (the strategy hosts),
  and the ``Swing`` / ``SwingBroken`` events a bar or update caused follow right after it, so a
  strategy always sees a bar before the swing it made;
- history hold-back: while a symbol receives history bars (``source="history"``: the backfill at
  a mid-session start) they run through the tracker, but the swings they create are held back.
  On the symbol's first live bar or update the still unbroken, tradable swings are announced,
  then the live message and its events follow. A swing that history broke is never announced
  (it broke before the engine watched it). A break of a swing that was announced before is
  always forwarded at once;
- the log: every swing and break goes to the store (batched);
- restarts: after every bar or update that changed a tracker, its snapshot is persisted
  (``durable=False``: the next one supersedes it) as ``strategy_state`` rows: a head
  ``swings.<symbol>`` and pieces ``swings.<symbol>/bars.<k>`` and ``.../swings.<k>`` of 4
  bars or records, only the changed pieces each time (``SwingStatePieces``: a bar costs one
  small piece, not the whole day). A new
  incarnation reads every symbol's row at start in one ask (``LoadStates``) and restores a
  symbol's snapshot when the symbol's first message arrives, if the snapshot is of the current
  trading day (an older one is ignored), and announces the restored unbroken swings on that
  symbol's first live message. Consumers treat a repeated announcement of a swing they know
  (same symbol, kind, bar and price) as the same swing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loguru import logger

from engine.market.instruments import trading_date
from engine.market.swings import (
    SwingSettings,
    SwingSnapshot,
    SwingSnapshotError,
    SwingStatePieces,
    SwingTracker,
)
from engine.messages import Bar, BarUpdate, StatusRequest, Swing, SwingBroken
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.store.database import StoredStrategyState, record

#: every persisted state whose name starts with a prefix: ``load(prefix) -> states``
StatesLoader = Callable[[str], Sequence[StoredStrategyState]]

#: 3: a head row ``swings.<symbol>`` and its pieces ``swings.<symbol>/<piece>``
#: (``SwingStatePieces``), the head listing its pieces' writes; 2: the same with the writes in
#: a dict (still read); 1: the whole snapshot in one row (still read)
STATE_VERSION = 3
READ_VERSIONS = (1, 2, STATE_VERSION)

SwingKey = tuple[str, float, float]  # (kind, bar_start, price)


STATE_PREFIX = "swings."


def state_name(symbol: str) -> str:
    """The ``strategy_state`` row holding a symbol's tracker snapshot."""
    return f"{STATE_PREFIX}{symbol}"


def piece_name(symbol: str, piece: str) -> str:
    """The ``strategy_state`` row holding one piece of a symbol's snapshot."""
    return f"{state_name(symbol)}/{piece}"


def stored_snapshot(head: StoredStrategyState,
                    rows: Mapping[str, StoredStrategyState]) -> SwingSnapshot:
    """The snapshot a stored head row holds, its pieces taken from ``rows`` (by row name);
    ``SwingSnapshotError`` when it cannot be rebuilt."""
    if head.version == 1:
        return SwingSnapshot.from_dict(head.state)
    if head.version not in READ_VERSIONS:
        raise SwingSnapshotError(f"state version {head.version}, not {STATE_VERSION}")
    prefix = f"{head.name}/"
    pieces = {name[len(prefix):]: row.state for name, row in rows.items()
              if name.startswith(prefix)}
    return SwingStatePieces.join(head.state, pieces)


def swing_key(swing: Swing | SwingBroken) -> SwingKey:
    """What identifies one swing record of a day (a Swing and its SwingBroken share it)."""
    return (swing.kind.value, swing.bar_start, swing.price)


class _Symbol:
    """One symbol's tracker and what the actor knows about its announcements."""

    __slots__ = ("announced", "live", "pieces", "tracker")

    def __init__(self, tracker: SwingTracker) -> None:
        self.tracker = tracker
        self.pieces = SwingStatePieces()  # what of its snapshot the store has
        self.live = False  # False: swings are held back until the first live message
        self.announced: set[SwingKey] = set()


class SwingDetector(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *, settings: SwingSettings,
                 downstream: Sequence[str], store: str | None = "store",
                 load_states: StatesLoader | None = None, **kw: Any) -> None:
        if supervision is None and "name" not in kw:
            kw["name"] = "swings"
        super().__init__(supervision, **kw)
        self.settings = settings
        self.downstream = tuple(downstream)
        self.store = store
        self.load_states = load_states
        self._symbols: dict[str, _Symbol] = {}
        self._saved: dict[str, StoredStrategyState] = {}  # read at start, used on first message
        self._restored = 0

    def on_start(self) -> None:
        # Every symbol's state in one read: one ask per symbol (each a store flush) left this
        # actor minutes of market behind after a restart at 60x, its inbox swelling meanwhile.
        if self.load_states is not None:
            self._saved = {row.name: row for row in self.load_states(STATE_PREFIX)}

    # -- input -----------------------------------------------------------------------------------
    @handles(Bar)
    def on_bar(self, bar: Bar) -> None:
        sym = self._symbol(bar.symbol)
        tracker = sym.tracker
        if bar.source != "history" and not sym.live:
            self._go_live(sym)
        before = tracker.bars_processed
        events = tracker.on_bar(bar)
        self._forward(bar)
        if bar.source == "history" and sym.live:
            sym.live = False  # a backfill (e.g. the bar builder restarted): hold back again
        self._emit(sym, events)
        if events or tracker.bars_processed != before:
            self._persist(sym)

    @handles(BarUpdate)
    def on_bar_update(self, update: BarUpdate) -> None:
        # the busiest handler of a replay (one call per update of every symbol): kept flat
        sym = self._symbols.get(update.symbol) or self._symbol(update.symbol)
        if not sym.live:
            self._go_live(sym)
        events = sym.tracker.on_bar_update(update)
        for name in self.downstream:
            self.tell(name, update)
        if events:
            self._emit(sym, events)
            self._persist(sym)

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, Any]:
        stats = [s.tracker.stats() for s in self._symbols.values()]
        unbroken = sum(1 for s in self._symbols.values() for r in s.tracker.swings()
                       if not r.broken)
        return {
            "symbols": len(self._symbols),
            "live": sum(1 for s in self._symbols.values() if s.live),
            "restored": self._restored,
            "bars": sum(s.bars for s in stats),
            "rejected_bars": sum(s.rejected_bars for s in stats),
            "invalid_bars": sum(s.invalid_bars for s in stats),
            "swings_created": sum(s.created for s in stats),
            "swings_updated": sum(s.updated for s in stats),
            "swings_broken": sum(s.broken for s in stats),
            "unbroken": unbroken,
        }

    # -- internals -------------------------------------------------------------------------------
    def _symbol(self, symbol: str) -> _Symbol:
        sym = self._symbols.get(symbol)
        if sym is None:
            sym = self._symbols[symbol] = _Symbol(SwingTracker(symbol, self.settings))
            self._restore(sym)
        return sym

    def _restore(self, sym: _Symbol) -> None:
        name = state_name(sym.tracker.symbol)
        stored = self._saved.pop(name, None)
        pieces = {key: self._saved.pop(key) for key in [k for k in self._saved
                                                         if k.startswith(f"{name}/")]}
        if stored is None:
            return
        if stored.version not in READ_VERSIONS:
            logger.warning("{}: {} has state version {}, not {}; starting fresh", self.name,
                           name, stored.version, STATE_VERSION)
            return
        try:
            snap = stored_snapshot(stored, pieces)
        except SwingSnapshotError as exc:
            logger.error("{}: cannot restore {} ({}); starting fresh", self.name, name, exc)
            return
        if not snap.starts:
            return
        today = trading_date(self._now())
        if trading_date(snap.starts[0]) != today:
            logger.info("{}: {} is from {}, not today ({}); ignored", self.name, name,
                        trading_date(snap.starts[0]), today)
            return
        try:
            sym.tracker.restore(snap)
        except SwingSnapshotError as exc:
            logger.error("{}: cannot restore {} ({}); starting fresh", self.name, name, exc)
            return
        self._restored += 1

    def _go_live(self, sym: _Symbol) -> None:
        """First live message after history or a restore: announce what is still tradable."""
        sym.live = True
        for rec in sym.tracker.swings():
            key = swing_key(rec.swing)
            if rec.broken or not rec.swing.tradable or key in sym.announced:
                continue
            sym.announced.add(key)
            self._forward(rec.swing)

    def _emit(self, sym: _Symbol, events: Sequence[Swing | SwingBroken]) -> None:
        for event in events:
            if self.store:
                self.tell(self.store, event)
            key = swing_key(event)
            if isinstance(event, Swing):
                if sym.live:
                    sym.announced.add(key)
                    self._forward(event)
            elif key in sym.announced:
                self._forward(event)

    def _forward(self, message: Any) -> None:
        for name in self.downstream:
            self.tell(name, message)

    def _persist(self, sym: _Symbol) -> None:
        if not self.store:
            return
        symbol = sym.tracker.symbol
        head, pieces = sym.pieces.changed(sym.tracker)
        now = self._now()
        for piece, state in pieces:  # the pieces before the head that names them
            self.tell(self.store, record(StoredStrategyState(
                name=piece_name(symbol, piece), version=STATE_VERSION, state=state,
                updated_ts=now), durable=False))
        self.tell(self.store, record(StoredStrategyState(
            name=state_name(symbol), version=STATE_VERSION, state=head, updated_ts=now),
            durable=False))

    def _now(self) -> float:
        if self.clock is None:
            raise RuntimeError(f"{self.name} needs an engine clock")
        return self.clock.time()
