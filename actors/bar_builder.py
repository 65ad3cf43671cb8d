"""The BarBuilder actor: one per symbol, turning that symbol's ticks into one-minute bars.

Owns one ``engine.market.bars.BarAggregator`` (the rules live there) and what an actor adds to it:
- closing minutes on the engine clock: a timer at the aggregator's next close moment, so a bar
  goes out even if no later tick arrives (replay fires it at virtual time, in order with ticks);
- publishing: ``Bar`` and ``BarUpdate`` to its downstream names (the swing detector, strategies),
  ``Bar`` and ``BarGap`` to the store; without downstream names no ``BarUpdate`` is built;
- surviving a restart. After each closed minute the aggregator's snapshot (closed minutes only)
  is persisted as ``strategy_state`` ``bars.<symbol>``; a restarted builder reads it back through
  the store actor (``LoadState``, so even a snapshot still in the write buffer is found) and
  continues the VWAP and the volume base. The minute that was in progress when it died is never
  invented: it becomes a ``BarGap`` (the builder saw only part of it), and bars are exact again
  from the next minute — same prices, ticks and volume as without the crash. When a history
  source is available (the broker's ``history``, read up to ``history_reads`` times), completed
  minutes missed while the builder was down are backfilled from it; on a mid-session start (no
  snapshot) today's completed bars are backfilled and live bars continue with no duplicate and
  no hole. Tested in tests/actors/test_bar_builder.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from loguru import logger

from engine.broker import BrokerError, HistoryBar
from engine.market.bars import BarAggregator, BarSettings, BarSnapshot, BarStats
from engine.market.instruments import trading_date
from engine.messages import Bar, BarGap, BarUpdate, StatusRequest, Tick, TickBatch, TimerFired
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.clock import TimerHandle
from engine.store.database import StoredStrategyState, record

#: today's completed history bars for a symbol: ``history(symbol, day) -> bars``
HistorySource = Callable[[str, date], Sequence[HistoryBar]]
#: the persisted snapshot of a symbol's builder, if any: ``load(name) -> state``
SnapshotLoader = Callable[[str], StoredStrategyState | None]

CLOSE_TIMER = "bar_close"


def builder_name(symbol: str) -> str:
    """The registry name of a symbol's bar builder."""
    return f"bars.{symbol}"


class BarBuilder(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *, symbol: str,
                 settings: BarSettings, session: tuple[float, float],
                 downstream: Sequence[str] = (), store: str | None = "store",
                 history: HistorySource | None = None,
                 load_snapshot: SnapshotLoader | None = None, close_margin_s: float = 0.0,
                 traded: bool = True, **kw: Any) -> None:
        super().__init__(supervision, **kw)
        self.symbol = symbol
        self.settings = settings
        self.session = session
        self.downstream = tuple(downstream)
        self.store = store
        self.history = history
        self.load_snapshot = load_snapshot
        self.close_margin_s = close_margin_s
        # BarUpdates are built only when someone downstream receives them
        self.agg = BarAggregator(symbol, settings, session, traded=traded,
                                 updates=bool(self.downstream))
        self._close_timer: TimerHandle | None = None
        self._scheduled_for: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        now = self._now()
        restored = self._restore(now)
        if self.history is not None and self.agg.history_would_add(now):
            self._backfill(now)
        elif restored:
            logger.info("{}: restored after restart; minutes up to {} are gaps", self.name,
                        self._fmt(now))
        if not restored:
            self.agg.start_watching(now)
        self._publish(self.agg.on_time(now))
        self._arm()

    def _now(self) -> float:
        assert self.clock is not None
        return self.clock.time()

    def _restore(self, now: float) -> bool:
        if self.load_snapshot is None:
            return False
        stored = self.load_snapshot(builder_name(self.symbol))
        if stored is None:
            return False
        snap = BarSnapshot(**stored.state)
        if (snap.session_open, snap.session_close) != tuple(self.session):
            return False  # another day's state: start fresh
        self.agg.restore(snap, now)
        return True

    def _backfill(self, now: float) -> None:
        bars = self._read_history(now)
        if bars is None:
            return
        events = self.agg.seed_from_history(bars, now)
        self._publish(events)
        if events:
            self._persist()

    def _read_history(self, now: float) -> Sequence[HistoryBar] | None:
        """Today's history, read up to ``history_reads`` times; None when every read failed."""
        assert self.history is not None
        reads = self.settings.history_reads
        for read in range(1, reads + 1):
            try:
                return self.history(self.symbol, trading_date(now))
            except BrokerError as exc:
                if read < reads:
                    logger.info("{}: history read failed ({}); reading again", self.name, exc)
                    continue
                logger.warning("{}: history backfill failed {} time(s), last: {}; continuing "
                               "live only", self.name, reads, exc)
        return None

    # -- ticks and time --------------------------------------------------------------------------
    @handles(Tick)
    def on_tick(self, tick: Tick) -> None:
        events = self.agg.on_tick(tick)
        if events:
            self._publish(events)
        if self.agg.next_close_at != self._scheduled_for:
            self._arm()

    @handles(TickBatch)
    def on_batch(self, batch: TickBatch) -> None:
        on_tick = self.agg.on_tick
        publish = self._publish
        for tick in batch.ticks:
            events = on_tick(tick)
            if events:
                publish(events)
        if self.agg.next_close_at != self._scheduled_for:
            self._arm()

    @handles(TimerFired)
    def on_timer(self, timer: TimerFired) -> None:
        if timer.name != CLOSE_TIMER:
            return
        self._scheduled_for = None
        self._publish(self.agg.on_time(self._now() - self.close_margin_s))
        self._arm()

    def _arm(self) -> None:
        """Keep exactly one close timer, at the aggregator's next close moment plus the transit
        margin: a tick received just before minute end + grace may still be on its way from the
        feed thread when the clock reaches that moment; it must land in its minute, as it does
        in a replay of the recording. (A tick received after end + grace closes the minute
        itself before it is judged, so the margin never lets a late tick in.)"""
        due = self.agg.next_close_at
        if due == self._scheduled_for:
            return
        if self._close_timer is not None:
            self._close_timer.cancel()
        if due >= self.session[1] + 3600:
            self._close_timer, self._scheduled_for = None, None
            return
        self._close_timer = self.schedule_at(due + self.close_margin_s, CLOSE_TIMER)
        self._scheduled_for = due

    # -- output ----------------------------------------------------------------------------------
    def _publish(self, events: Sequence[Any]) -> None:
        closed = False
        for event in events:
            kind = type(event)
            if kind is BarUpdate:
                for name in self.downstream:
                    self.tell(name, event)
            elif kind is Bar:
                closed = True
                for name in self.downstream:
                    self.tell(name, event)
                if self.store:
                    self.tell(self.store, event)
            elif kind is BarGap and self.store:
                closed = True
                self.tell(self.store, event)
        if closed:
            self._persist()

    def _persist(self) -> None:
        if not self.store or self.load_snapshot is None:
            return
        self.tell(self.store, record(StoredStrategyState(
            name=builder_name(self.symbol), version=1, state=self.agg.snapshot_state(),
            updated_ts=self._now()), durable=False))

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> BarStats:
        return self.agg.stats()

    @staticmethod
    def _fmt(ts: float) -> str:
        from engine.runtime.clock import fmt_ist

        return fmt_ist(ts)
