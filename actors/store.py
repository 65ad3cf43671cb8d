"""The store writer: the only code that writes the engine database at run time.

Every actor sends its store-bound messages here (see ``engine.store.database.STORED_TYPES``).
Two paths:

- **immediate** (``IMMEDIATE_TYPES``: order intents, order state changes, fills, risk events,
  positions' risk declarations and ``StoreRecord`` rows such as risk state, unless marked
  ``durable=False``): committed before
  the handler returns, so a sender that ``ask``-s knows the row is on disk (the order manager
  asks before sending a request). The transaction holds only the message's own rows (and
  immediate ones held from an outage, first, in order): an intent never waits for a batch of
  bars or a strategy's state to be written. A buffered upsert of the same key is older than
  the committed row and is dropped, so a later flush cannot overwrite it;
- **soon** (``StoreRecord(soon=True)``: a strategy's state after a hook): buffered, and committed
  on its own once the writer's inbox is empty (nothing more urgent waits: an intent asked right
  after is committed first), at the latest with the next flush;
- **batched** (price marks, bars, bar gaps, swings, heartbeats, alerts, dead letters, restarts):
  buffered and written in one transaction when ``batch_size`` rows are waiting or when the flush
  timer (every ``flush_interval_s`` on the engine clock) fires, and on stop; once committed,
  the WAL is checkpointed if it holds ``checkpoint_pages`` pages (never inside an intent's
  commit). Upserts of the same key (a symbol's last price, a state row) are coalesced in the
  buffer.

A locked database is retried (``Database.run_write``). If it stays unavailable, one clear error is
logged, buffered rows stay in memory and are retried on the next timer; an immediate message is
kept too (it will be written in order) and the sender gets ``StoreUnavailable``. Bad input
(``StoreRejected``) is raised to the sender and recorded as a dead letter; a fill reported twice
is not an error: the receipt says ``duplicate``.

Reads for restarting actors (``LoadState``, ``LoadStates``) answer with the newest state row of a
name, written or not (a buffered or held row wins over the stored one); they never write, so a
restart during a lock spell is not held up by it.

Immediate writes are meant to be asked: a ``tell`` whose write fails stops the actor (Pykka's
rule); it then makes one last attempt to write what it holds before it exits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from engine.messages import (
    DeadLetter,
    Fill,
    LoadState,
    LoadStates,
    OrderEvent,
    OrderIntent,
    PendingFill,
    PositionRisk,
    RiskEvent,
    StoreRecord,
    TimerFired,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.store.database import (
    STORED_TYPES,
    Applied,
    ApplyAgain,
    Database,
    Op,
    RowWrite,
    StoredStrategyState,
    StoreRejected,
    StoreUnavailable,
    WriteTx,
)

if TYPE_CHECKING:
    from types import TracebackType

    from engine.runtime.clock import Clock
    from engine.runtime.registry import Registry

IMMEDIATE_TYPES: frozenset[type] = frozenset({OrderIntent, OrderEvent, Fill, PendingFill, RiskEvent,
                                              PositionRisk, StoreRecord})
FLUSH_TIMER = "store.flush"
SOON_TIMER = "store.soon"
#: real seconds a ``soon`` row waits before its commit (then only while the inbox is empty)
SOON_DELAY_S = 0.02


@dataclass(frozen=True, slots=True)
class WriteReceipt:
    """The writer's answer to an ``ask``: committed already (``durable``) or buffered."""

    durable: bool
    duplicate: bool = False


class _Buffer:
    """Batched rows awaiting a flush, grouped by statement shape; upserts coalesced by key."""

    def __init__(self) -> None:
        self._groups: dict[tuple[Any, ...], dict[Any, RowWrite]] = {}
        self._seq = 0
        self.size = 0

    def add(self, write: RowWrite) -> None:
        group = self._groups.setdefault(write.shape, {})
        if write.op is Op.UPSERT:
            ident: Any = tuple(write.values[k] for k in write.key)
        else:
            ident = self._seq
            self._seq += 1
        if ident not in group:
            self.size += 1
        group[ident] = write

    def discard(self, write: RowWrite) -> None:
        """Drop the buffered upsert of ``write``'s table and key (it is older)."""
        if write.op is not Op.UPSERT:
            return
        ident = tuple(write.values[k] for k in write.key)
        for shape, group in self._groups.items():
            if shape[0] == write.table and shape[1] is Op.UPSERT and shape[2] == write.key \
                    and group.pop(ident, None) is not None:
                self.size -= 1

    def groups(self) -> list[list[RowWrite]]:
        return [list(group.values()) for group in self._groups.values()]

    def rows(self, table: str) -> Iterator[RowWrite]:
        """The buffered rows of ``table``, oldest first within each statement shape."""
        for shape, group in self._groups.items():
            if shape[0] == table:
                yield from group.values()

    def clear(self) -> None:
        self._groups.clear()
        self.size = 0


class StoreWriter(EngineActor):
    """Single writer of ``db``; start with ``StoreWriter.start(db, name="store", clock=...)``."""

    def __init__(self, db: Database, supervision: Supervision | None = None, *,
                 name: str | None = None, registry: Registry | None = None,
                 clock: Clock | None = None, tap: str | None = None,
                 tap_types: tuple[type, ...] = ()) -> None:
        super().__init__(supervision, name=name or (None if supervision else "store"),
                         registry=registry, clock=clock)
        # a copy of every ``tap_types`` message handled goes to ``tap`` (the notifier)
        self.tap = tap
        self.tap_types = tap_types
        if self.clock is None:
            raise ValueError("StoreWriter needs an engine clock for its flush timer")
        self.db = db
        self.settings = db.settings
        self._buffer = _Buffer()
        self._soon = _Buffer()  # rows to commit once the inbox is empty
        self._soon_armed = False
        # Immediate messages whose write failed (database unavailable), oldest first.
        self._held: list[tuple[str, tuple[RowWrite, ...]]] = []
        self._outage = False

    # -- lifecycle -----------------------------------------------------------------------------
    def on_start(self) -> None:
        self.schedule_every(self.settings.flush_interval_s, FLUSH_TIMER)

    def on_stop(self) -> None:
        self._last_flush("stopping")
        super().on_stop()

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        self._last_flush("failing")
        super().on_failure(exception_type, exception_value, traceback)

    def _last_flush(self, why: str) -> None:
        self.cancel_timers()
        self._flush()
        if self.pending:
            logger.critical("store: {} with {} row(s) not written to {}: they are lost", why,
                            self.pending, self.db.path)

    @property
    def pending(self) -> int:
        """Rows waiting to be written (buffered, plus held immediate messages)."""
        return self._buffer.size + self._soon.size + \
            sum(len(writes) for _, writes in self._held)

    # -- messages ------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        try:
            answer = super().on_receive(message)
            if self.tap and isinstance(message, self.tap_types):
                self.tell(self.tap, message)
            return answer
        finally:
            if self._soon.size and not self._soon_armed:
                self._arm_soon()

    @handles(*STORED_TYPES)
    def _store(self, message: Any) -> WriteReceipt:
        what = type(message).__name__
        try:
            writes = self.db.writes_for(message)
        except StoreRejected as exc:
            self._reject(what, exc)
            raise
        if type(message) in IMMEDIATE_TYPES and getattr(message, "durable", True):
            return self._commit(what, writes)
        if getattr(message, "soon", False):
            for write in writes:
                self._buffer.discard(write)
                self._soon.add(write)
            return WriteReceipt(durable=False)  # on_receive arms the commit
        for write in writes:
            self._buffer.add(write)
        if self._buffer.size >= self.settings.batch_size and not self._outage:
            self._flush()
        return WriteReceipt(durable=False)

    def _arm_soon(self) -> None:
        """The ``soon`` rows are committed ``SOON_DELAY_S`` real seconds from now: the order
        manager's ask for the intent a hook placed arrives after the hook's state does (on a
        virtual clock: now, if nothing waits; else at the next step)."""
        if self._soon_armed:
            return
        assert self.clock is not None
        speed = self.clock.speed
        if not math.isfinite(speed):  # a virtual clock: no timer fires until the next step
            if self.actor_inbox.empty():
                self._commit_soon()
            return  # else after the last message in the inbox (on_receive)
        self._soon_armed = True
        self.schedule_at(self.now() + (SOON_DELAY_S * speed if math.isfinite(speed) else 0.0),
                         SOON_TIMER)

    def _commit_soon(self) -> None:
        """Commit the ``soon`` rows if nothing waits in the inbox (else a little later)."""
        self._soon_armed = False
        if not self._soon.size or self._outage:
            return
        if not self.actor_inbox.empty():
            self._arm_soon()
            return
        try:
            problems = self.db.run_write(lambda tx: self._write_groups(tx, self._soon))
        except StoreUnavailable as exc:
            self._unavailable(exc)
            return
        self._soon.clear()
        self._report(problems)

    @handles(LoadState)
    def _load_state(self, request: LoadState) -> StoredStrategyState | None:
        """Read-your-writes for restarting actors: the newest row not written yet (buffered,
        or held while the database is unavailable), else the stored one. No flush: a restart
        during a lock spell would wait out the whole retry budget, its inbox swelling, and
        after a failed flush would read an older state than the one it last wrote."""
        unwritten = self._unwritten_states(lambda name: name == request.name)
        return unwritten.get(request.name) or self.db.strategy_state(request.name)

    @handles(LoadStates)
    def _load_states(self, request: LoadStates) -> list[StoredStrategyState]:
        """``LoadState`` for a whole family of rows (e.g. every symbol's swing state)."""
        states = {s.name: s for s in self.db.strategy_states(request.prefix)}
        states.update(self._unwritten_states(lambda name: name.startswith(request.prefix)))
        return [states[name] for name in sorted(states)]

    def _unwritten_states(self, wanted: Callable[[str], bool]) -> dict[str, StoredStrategyState]:
        """The newest not yet written ``strategy_state`` row of each wanted name."""
        newest: dict[str, StoredStrategyState] = {}
        held = (w for _, writes in self._held for w in writes)
        for write in itertools.chain(held, self._buffer.rows(StoredStrategyState.TABLE),
                                     self._soon.rows(StoredStrategyState.TABLE)):
            if write.table != StoredStrategyState.TABLE or not wanted(write.values["name"]):
                continue
            state = self.db.state_from_row(write.values)
            known = newest.get(state.name)
            if known is None or state.updated_ts >= known.updated_ts:
                newest[state.name] = state
        return newest

    @handles(TimerFired)
    def _timer_fired(self, message: TimerFired) -> None:
        if message.name == FLUSH_TIMER:
            self._flush()
        elif message.name == SOON_TIMER:
            self._commit_soon()

    # -- writing -------------------------------------------------------------------------------
    def _commit(self, what: str, writes: tuple[RowWrite, ...]) -> WriteReceipt:
        def work(tx: WriteTx) -> tuple[list[tuple[str, str]], Applied | None,
                                       StoreRejected | None]:
            problems = self._write_held(tx)
            try:
                applied = tx.apply(writes)
            except StoreRejected as exc:
                rejected: StoreRejected | None = exc
            else:
                rejected = None if applied is not Applied.MISSING else StoreRejected(
                    f"{what}: {_missing(writes[0])}")
            if rejected is not None:
                tx.apply(self._dead_letter_rows(what, str(rejected)))
                return problems, None, rejected
            return problems, applied, None

        try:
            try:
                # the usual case, nothing held: the rows alone, no savepoint; a duplicate or a
                # refusal rolls that back and takes the careful path
                problems, applied, rejected = self.db.run_write(
                    lambda tx: ([], tx.apply_alone(writes), None)) if not self._held \
                    else self.db.run_write(work)
            except ApplyAgain:
                problems, applied, rejected = self.db.run_write(work)
        except StoreUnavailable as exc:
            self._held.append((what, writes))
            self._unavailable(exc)
            raise
        self._held.clear()
        for write in writes:  # a buffered upsert of the same key is older: never write it
            self._buffer.discard(write)
            self._soon.discard(write)
        self._report(problems)
        if rejected is not None:
            logger.error("store: rejected {}: {}", what, rejected)
            raise rejected
        if applied is Applied.DUPLICATE:
            logger.warning("store: duplicate {} ignored ({} already stored)", what,
                           writes[0].table)
            return WriteReceipt(durable=True, duplicate=True)
        return WriteReceipt(durable=True)

    def _flush(self) -> None:
        if not self.pending:
            return
        try:
            # the WAL is checkpointed here, off the order path (see Database.run_write)
            problems = self.db.run_write(self._write_pending, checkpoint=True)
        except StoreUnavailable as exc:
            self._unavailable(exc)
            return
        self._written(problems)

    def _write_pending(self, tx: WriteTx) -> list[tuple[str, str]]:
        """Write held immediate messages, then the buffers.

        Returns what could not be written as (what, why); each is recorded as a dead letter.
        """
        return self._write_held(tx) + self._write_groups(tx, self._buffer, self._soon)

    def _write_held(self, tx: WriteTx) -> list[tuple[str, str]]:
        """Write the immediate messages held from an outage, oldest first."""
        problems: list[tuple[str, str]] = []
        for what, writes in self._held:
            try:
                applied = tx.apply(writes)
            except StoreRejected as exc:
                problems.append((what, str(exc)))
                continue
            if applied is Applied.MISSING:
                problems.append((what, _missing(writes[0])))
        return self._dead_letters(tx, problems)

    def _write_groups(self, tx: WriteTx, *buffers: _Buffer) -> list[tuple[str, str]]:
        problems = [(write.table, reason) for buffer in buffers for group in buffer.groups()
                    for write, reason in tx.write_rows(group)]
        return self._dead_letters(tx, problems)

    def _dead_letters(self, tx: WriteTx, problems: list[tuple[str, str]]
                      ) -> list[tuple[str, str]]:
        for what, why in problems:
            tx.apply(self._dead_letter_rows(what, why))
        return problems

    def _dead_letter_rows(self, what: str, reason: str) -> tuple[RowWrite, ...]:
        assert self.clock is not None
        return self.db.writes_for(DeadLetter(self.name, what, reason, self.clock.time()))

    def _reject(self, what: str, exc: StoreRejected) -> None:
        """Bad input never reaches the buffer; it is logged and kept as a dead letter."""
        logger.error("store: rejected {}: {}", what, exc)
        self._buffer.add(self._dead_letter_rows(what, str(exc))[0])

    def _unavailable(self, exc: StoreUnavailable) -> None:
        if not self._outage:
            logger.error("store: cannot write the database ({}); {} row(s) kept in memory, "
                         "retrying every {}s", exc, self.pending, self.settings.flush_interval_s)
        self._outage = True

    def _written(self, problems: list[tuple[str, str]]) -> None:
        self._held.clear()
        self._buffer.clear()
        self._soon.clear()
        self._report(problems)

    def _report(self, problems: list[tuple[str, str]]) -> None:
        if self._outage:
            logger.info("store: database writable again")
            self._outage = False
        for what, why in problems:
            logger.error("store: {} not written, kept as a dead letter: {}", what, why)


def _missing(write: RowWrite) -> str:
    key = ", ".join(f"{k}={write.values[k]!r}" for k in write.key)
    return f"no {write.table} row with {key}"
