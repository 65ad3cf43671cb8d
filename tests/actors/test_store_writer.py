"""The store writer actor: immediate vs batched durability, reads round-trip, locks, restarts,
bad input, and the SIGKILL acceptance test (a child process killed mid-stream)."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pykka
import pytest
from loguru import logger
from sqlalchemy import event

from actors.store import StoreWriter, WriteReceipt
from engine.messages import (
    Action,
    Alert,
    Bar,
    BarGap,
    DeadLetter,
    Fill,
    Heartbeat,
    LoadState,
    LoadStates,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    Ping,
    PositionMark,
    PriceType,
    RestartRecord,
    RiskEvent,
    RiskState,
    Severity,
    StoreRecord,
    Swing,
    SwingBroken,
    SwingKind,
)
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.store.database import (
    Correction,
    Database,
    StoredAccount,
    StoredDailyState,
    StoredRiskState,
    StoredStrategyState,
    StoredTrade,
    StoreRejected,
    StoreSettings,
    StoreUnavailable,
    record,
)
from tests.support import wait_for

T0 = ist_epoch(2025, 1, 30, 9, 20)
DAY = date(2025, 1, 30)
CE = "NIFTY30JAN2524000CE"
PE = "NIFTY30JAN2523000PE"
SETTINGS = StoreSettings(batch_size=1000, flush_interval_s=2.0, busy_timeout_ms=20,
                         lock_retry_attempts=2, lock_retry_backoff_s=0.01)
CHILD = Path(__file__).with_name("store_kill_child.py")


class Harness:
    """A database, a virtual clock and a running writer; ``sync()`` waits for the inbox."""

    def __init__(self, path: Path, settings: StoreSettings = SETTINGS) -> None:
        self.clock = VirtualClock(T0)
        self.db = Database(path, settings)
        self.refs: list[pykka.ActorRef[Any]] = []
        self.writer = self.start()

    def start(self) -> pykka.ActorRef[Any]:
        ref = StoreWriter.start(self.db, name="store", clock=self.clock)
        self.refs.append(ref)
        return ref

    def ask(self, message: object) -> WriteReceipt:
        return self.writer.ask(message, timeout=10)

    def tell(self, *messages: object) -> None:
        for message in messages:
            self.writer.tell(message)

    def sync(self) -> None:
        """Returns once everything sent before has been handled (the inbox is FIFO)."""
        self.writer.ask(Ping(0), timeout=10)

    def flush_timer(self) -> None:
        self.clock.advance_to(self.clock.time() + self.db.settings.flush_interval_s)
        self.sync()

    def close(self) -> None:
        for ref in self.refs:
            ref.stop(timeout=10)
        self.db.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "engine.db")
    yield harness
    harness.close()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"),
                      level="INFO")
    yield lines
    logger.remove(sink)


def intent(client_id: str, ts: float = T0, **kw: Any) -> OrderIntent:
    return OrderIntent(client_id, "baseline_v1", "main", kw.pop("symbol", CE), "NFO",
                       kw.pop("action", Action.SELL), 65, PriceType.SL, price=99.95,
                       trigger_price=102.95, created_ts=ts, **kw)


def bar(i: int, symbol: str = CE) -> Bar:
    return Bar(symbol, T0 + 60 * i, 100 + i, 101 + i, 99 + i, 100.5 + i, 10 * i, 3, 100.2)


def mark(ltp: float, ts: float, symbol: str = CE, fresh: bool = True) -> PositionMark:
    return PositionMark("baseline_v1", "main", symbol, -65, 100.0, ltp, (100.0 - ltp) * 65,
                        0.0, (100.0 - ltp) / 10, ts, fresh)


# -- immediate path and reads ----------------------------------------------------------------


def test_order_lifecycle_is_durable_when_the_ask_returns(h: Harness) -> None:
    assert h.ask(intent("c1")) == WriteReceipt(durable=True)
    stored = h.db.order("c1")
    assert stored is not None and stored.status is OrderStatus.SUBMITTING
    assert stored.trading_date == DAY and stored.quantity == 65

    h.ask(OrderEvent("c1", OrderStatus.OPEN, T0 + 1, broker_order_id="B1"))
    h.ask(OrderEvent("c1", OrderStatus.PARTIALLY_FILLED, T0 + 2, filled_quantity=65,
                     average_price=99.9))
    order = h.db.order("c1")
    assert order is not None
    assert (order.status, order.broker_order_id, order.filled_quantity, order.updated_ts) \
        == (OrderStatus.PARTIALLY_FILLED, "B1", 65, T0 + 2)  # an event without the id keeps it
    h.ask(OrderEvent("c1", OrderStatus.CANCELLED, T0 + 3, reason="switch strike"))
    order = h.db.order("c1")
    assert order is not None
    assert (order.status, order.broker_order_id, order.filled_quantity, order.average_price,
            order.reason) == (OrderStatus.CANCELLED, "B1", 65, 99.9, "switch strike")
    events = h.db.order_events("c1")
    assert [e.status for e in events] == [OrderStatus.SUBMITTING, OrderStatus.OPEN,
                                          OrderStatus.PARTIALLY_FILLED, OrderStatus.CANCELLED]
    assert events[1] == OrderEvent("c1", OrderStatus.OPEN, T0 + 1, "baseline_v1", "main", CE,
                                   "B1", 0, 0.0, OrderPurpose.ENTRY, "")


def test_open_orders_filter_terminal_states_strategy_and_account(h: Harness) -> None:
    h.ask(intent("working", T0))
    h.ask(intent("done", T0 + 1))
    h.ask(intent("other", T0 + 2, symbol=PE))
    h.ask(OrderIntent("acct2", "baseline_v1", "backup", CE, "NFO", Action.BUY, 65,
                      PriceType.MARKET, created_ts=T0 + 3))
    h.ask(OrderEvent("done", OrderStatus.CANCELLED, T0 + 1))
    h.ask(OrderEvent("other", OrderStatus.TRIGGER_PENDING, T0 + 1))
    assert [o.client_id for o in h.db.open_orders()] == ["working", "other", "acct2"]
    assert [o.client_id for o in h.db.open_orders(account="backup")] == ["acct2"]
    assert h.db.open_orders(strategy="nope") == []
    assert [o.client_id for o in h.db.orders(DAY, account="main")] == ["working", "done",
                                                                        "other"]


def test_fills_apply_once_and_a_duplicate_is_reported_not_fatal(h: Harness,
                                                                 log_lines: list[str]) -> None:
    h.ask(intent("c1"))
    fill = Fill("c1", "B1", "baseline_v1", "main", CE, "NFO", Action.SELL, 65, 99.9, 65, T0 + 3)
    assert h.ask(fill) == WriteReceipt(durable=True)
    assert h.ask(fill) == WriteReceipt(durable=True, duplicate=True)
    same_key = Fill("c1", "B1", "baseline_v1", "main", CE, "NFO", Action.SELL, 65, 98.0, 65,
                    T0 + 9)
    assert h.ask(same_key).duplicate
    assert h.db.fills() == [fill]
    assert h.db.fill_keys(strategy="baseline_v1", trading_date=DAY) == {("B1", 65)}
    assert h.db.fill_keys(account="backup") == set()
    assert any("duplicate Fill" in line for line in log_lines)
    assert h.writer.is_alive()


def test_risk_records_round_trip(h: Harness) -> None:
    event = RiskEvent("baseline_v1", "daily_r", 5.0, 5.2, "exit_all", T0 + 5, ("c1", "c2"),
                      "main")
    h.ask(event)
    assert h.db.risk_events("baseline_v1", DAY) == [event]
    assert h.db.risk_events(trading_date=date(2025, 1, 31)) == []

    state = StoredRiskState("baseline_v1", "main", RiskState.HALTED, DAY, T0 + 5, peak=1200.0,
                            stop_level=-800.0, reason="daily_r")
    h.ask(record(StoredRiskState("baseline_v1", "main", RiskState.ACTIVE, DAY, T0)))
    h.ask(record(state))  # upsert: the latest state wins
    assert h.db.risk_state("baseline_v1", "main") == state
    assert h.db.risk_state("baseline_v1", "backup") is None

    daily = StoredDailyState("baseline_v1", "main", DAY, T0 + 5, day_latched=True,
                             latch_reason="+5R", extra={"churn": {"NIFTY": 2}})
    h.ask(record(daily))
    assert h.db.daily_state("baseline_v1", "main", DAY) == daily
    assert h.db.daily_state("baseline_v1", "main", date(2025, 1, 31)) is None  # no stale latch


def test_trades_and_realized_r_survive_a_restart(h: Harness, tmp_path: Path) -> None:
    win = StoredTrade("baseline_v1", "main", CE, DAY, Action.SELL, 65, T0, 150.0, T0 + 600,
                      140.0, 650.0, 0.1, "e1", "x1", "stop")
    loss = StoredTrade("baseline_v1", "main", PE, DAY, Action.SELL, 130, T0 + 60, 120.0,
                       T0 + 900, 170.0, -6500.0, -1.0, "e2", "x2", "stop")
    other = StoredTrade("baseline_v1", "backup", PE, DAY, Action.SELL, 65, T0, 1.0, T0 + 5,
                        2.0, -65.0, -0.5)
    for trade in (win, loss, other):
        h.ask(record(trade))
    assert h.ask(record(win)).duplicate
    h.close()
    with Database(tmp_path / "engine.db") as reopened:
        assert reopened.trades("baseline_v1", DAY, account="main") == [win, loss]
        assert reopened.realized_r("baseline_v1", DAY, "main") == pytest.approx(-0.9)
        assert reopened.realized_r("baseline_v1", DAY) == pytest.approx(-1.4)
        assert reopened.realized_r("baseline_v1", date(2025, 1, 31)) == 0.0


def test_strategy_state_accounts_and_corrections_round_trip(h: Harness) -> None:
    blob = StoredStrategyState("baseline_v1", 2, {"entries": {"CE": "c1"}, "churn": [1, 2]},
                               T0)
    h.ask(record(blob))
    assert h.db.strategy_state("baseline_v1") == blob
    assert h.db.strategy_state("other") is None

    account = StoredAccount("main", "http://127.0.0.1:5000", "ws://127.0.0.1:8765", "primary",
                            T0, api_key_encrypted=b"gAAAAB-token")
    h.ask(record(account))
    assert h.db.accounts() == [account]

    fix = Correction("baseline_v1", "main", CE, "phantom", "closed_at_stop_fill", T0 + 60, DAY,
                     engine_quantity=-65, broker_quantity=0, client_id="s1",
                     broker_order_id="B9", detail="stop filled unseen")
    h.ask(record(fix))
    assert h.db.corrections(DAY) == [fix]
    assert h.db.corrections(DAY, strategy="other") == []


# -- batched path ----------------------------------------------------------------------------


def test_batched_rows_are_written_only_by_the_flush_timer(h: Harness) -> None:
    assert h.ask(bar(0)) == WriteReceipt(durable=False)
    h.tell(*(bar(i) for i in range(1, 5)), BarGap(CE, T0 + 300), mark(101.0, T0 + 1))
    h.sync()
    assert h.db.bars(CE, DAY) == [] and h.db.positions() == [] and h.db.bar_gaps(CE, DAY) == []

    h.clock.advance_to(T0 + SETTINGS.flush_interval_s - 0.01)
    h.sync()
    assert h.db.bars(CE, DAY) == []

    h.clock.advance_to(T0 + SETTINGS.flush_interval_s)
    h.sync()
    assert h.db.bars(CE, DAY) == [bar(i) for i in range(5)]
    assert h.db.bar_gaps(CE, DAY) == [BarGap(CE, T0 + 300)]
    assert h.db.positions() == [mark(101.0, T0 + 1)]


def test_the_batch_size_triggers_a_write_before_the_timer(tmp_path: Path) -> None:
    h = Harness(tmp_path / "engine.db", StoreSettings(batch_size=10, flush_interval_s=2.0))
    try:
        h.tell(*(bar(i) for i in range(9)))
        h.sync()
        assert h.db.bars(CE, DAY) == []
        h.tell(bar(9), bar(10))
        h.sync()
        assert len(h.db.bars(CE, DAY)) == 10  # the 11th waits for the next batch
    finally:
        h.close()


def test_price_marks_coalesce_and_never_store_a_zero_or_stale_price(h: Harness) -> None:
    h.tell(mark(101.0, T0 + 1), mark(102.0, T0 + 2), mark(0.0, T0 + 3),
           mark(150.0, T0 + 4, fresh=False), mark(55.0, T0 + 2, symbol=PE))
    h.flush_timer()
    prices = h.db.last_prices()
    assert {s: (p.ltp, p.ts) for s, p in prices.items()} == {CE: (102.0, T0 + 2),
                                                             PE: (55.0, T0 + 2)}
    positions = {p.symbol: p.ltp for p in h.db.positions()}
    assert positions == {CE: 150.0, PE: 55.0}  # a position keeps its latest mark


def test_closed_positions_are_kept_but_not_open(h: Harness) -> None:
    h.tell(mark(101.0, T0 + 1))
    h.tell(PositionMark("baseline_v1", "main", PE, 0, 0.0, 50.0, 0.0, 300.0, 0.5, T0 + 2))
    h.flush_timer()
    assert [p.symbol for p in h.db.positions()] == [CE]
    assert [p.symbol for p in h.db.positions(open_only=False)] == [PE, CE]  # by symbol
    assert h.db.positions(account="backup") == []


def test_market_data_and_operations_round_trip(h: Harness) -> None:
    swing = Swing(CE, SwingKind.LOW, 120.5, T0 + 120, 2, 110.0)
    moved = Swing(CE, SwingKind.LOW, 119.0, T0 + 240, 4, 110.0, updated=True, tradable=False)
    broken = SwingBroken(CE, SwingKind.LOW, 119.0, T0 + 240, T0 + 400, "tick")
    beat = Heartbeat(T0 + 60, 2, 82, 82, 0, 1, "ACTIVE")
    alert = Alert("feed_silent", "no ticks for 15 s", T0 + 61, Severity.CRITICAL)
    dead = DeadLetter("bars.X", "Tick", "restarting; stash full", T0 + 62)
    restart = RestartRecord("feed", "market_data", "ConnectionError: reset", T0 + 63, 2, 0.4)
    h.tell(swing, moved, broken, beat, alert, dead, restart)
    h.flush_timer()
    assert h.db.swings(CE, DAY) == [swing, moved]
    assert h.db.swing_breaks(CE, DAY) == [broken]
    assert h.db.heartbeats() == [beat]
    assert h.db.alerts(since=T0 + 61) == [alert] and h.db.alerts(since=T0 + 61.5) == []
    assert h.db.dead_letters() == [dead]
    assert h.db.restarts("feed") == [restart] and h.db.restarts("orders") == []
    assert h.db.restarts(since=T0 + 64) == []


def test_a_bar_sent_again_replaces_the_stored_one(h: Harness) -> None:
    h.tell(bar(0))
    h.flush_timer()
    history = Bar(CE, T0, 1, 2, 0.5, 1.5, 7, 4, 1.1, "history")
    h.tell(history, BarGap(CE, T0 + 60), BarGap(CE, T0 + 60))
    h.flush_timer()
    assert h.db.bars(CE, DAY) == [history]
    assert h.db.bar_gaps(CE, DAY) == [BarGap(CE, T0 + 60)]


def test_an_immediate_write_commits_only_its_own_rows(h: Harness) -> None:
    """An intent never waits for a batch of bars: its transaction holds its own rows only."""
    h.tell(*(bar(i) for i in range(3)), mark(101.0, T0 + 1))
    h.ask(intent("c1"))  # no timer has fired
    assert h.db.order("c1") is not None
    assert h.db.bars(CE, DAY) == [] and h.db.positions() == []
    h.flush_timer()
    assert len(h.db.bars(CE, DAY)) == 3 and len(h.db.positions()) == 1


def test_a_committed_state_is_never_overwritten_by_an_older_buffered_one(h: Harness) -> None:
    def state(n: int) -> StoredStrategyState:
        return StoredStrategyState("strategy.x", 1, {"n": n}, T0 + n)

    h.tell(record(state(1), durable=False))
    h.ask(record(state(2)))  # committed at once; the buffered n=1 is older
    h.flush_timer()
    stored = h.db.strategy_state("strategy.x")
    assert stored is not None and stored.state == {"n": 2}


def test_a_soon_state_is_committed_after_the_intent_asked_behind_it(h: Harness) -> None:
    """A strategy's state told just before the order manager asks for its intent: the intent
    is committed first (one commit on the order path), the state right after."""
    h.tell(record(StoredStrategyState("strategy.x", 1, {"n": 1}, T0), soon=True))
    h.ask(intent("c1"))
    assert h.db.order("c1") is not None
    h.sync()
    stored = h.db.strategy_state("strategy.x")  # virtual clock: committed once idle
    assert stored is not None and stored.state == {"n": 1}


def test_stopping_writes_the_buffer(h: Harness) -> None:
    h.tell(*(bar(i) for i in range(3)))
    h.writer.stop(timeout=10)
    assert len(h.db.bars(CE, DAY)) == 3


# -- bad input -------------------------------------------------------------------------------


def test_bad_records_are_refused_with_a_typed_error_and_kept_as_dead_letters(
        h: Harness) -> None:
    with pytest.raises(StoreRejected, match="not writable by record"):
        h.ask(StoreRecord("orders", (("client_id", "x"),)))
    with pytest.raises(StoreRejected, match="no orders row with client_id='ghost'"):
        h.ask(OrderEvent("ghost", OrderStatus.OPEN, T0))
    with pytest.raises(StoreRejected, match="CHECK constraint"):
        h.ask(OrderIntent("neg", "s", "main", CE, "NFO", Action.BUY, -65, PriceType.MARKET,
                          created_ts=T0))
    assert h.writer.is_alive()
    h.flush_timer()
    assert sorted(d.message_type for d in h.db.dead_letters()) == [
        "OrderEvent", "OrderIntent", "StoreRecord"]
    assert h.db.order("neg") is None and h.db.order("ghost") is None


def test_a_told_bad_message_stops_the_writer_but_loses_no_buffered_row(
        h: Harness, log_lines: list[str]) -> None:
    h.tell(*(bar(i) for i in range(3)), OrderEvent("ghost", OrderStatus.OPEN, T0))
    assert h.writer.actor_stopped.wait(10)
    # pykka marks the actor stopped before on_failure's last flush writes the buffer
    assert wait_for(lambda: len(h.db.bars(CE, DAY)) == 3)
    assert [d.message_type for d in h.db.dead_letters()] == ["OrderEvent"]
    assert not any(line.startswith("CRITICAL") for line in log_lines)


# -- a locked database -----------------------------------------------------------------------


def test_a_locked_database_loses_nothing_and_says_so_once(h: Harness,
                                                         log_lines: list[str]) -> None:
    blocker = sqlite3.connect(h.db.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        h.tell(*(bar(i) for i in range(3)))
        h.flush_timer()
        h.flush_timer()  # a second failed flush
        with pytest.raises(StoreUnavailable, match="locked"):
            h.ask(intent("c1"))
        h.tell(bar(3))
        h.flush_timer()
        assert h.writer.is_alive()
        assert h.db.bars(CE, DAY) == [] and h.db.order("c1") is None  # readers still work
    finally:
        blocker.rollback()
        blocker.close()
    errors = [line for line in log_lines if line.startswith("ERROR")]
    assert len(errors) == 1 and "cannot write the database" in errors[0]

    # The held intent is written before a later event for it (order kept, so no "missing").
    h.ask(OrderEvent("c1", OrderStatus.OPEN, T0 + 5, broker_order_id="B1"))
    assert [e.status for e in h.db.order_events("c1")] == [OrderStatus.SUBMITTING,
                                                           OrderStatus.OPEN]
    h.flush_timer()
    assert h.db.bars(CE, DAY) == [bar(i) for i in range(4)]
    assert any("writable again" in line for line in log_lines)
    assert h.db.dead_letters() == []


def test_a_full_disk_loses_nothing_and_says_so_once(h: Harness, log_lines: list[str]) -> None:
    # max_page_count at the file's size: every write that needs a new page fails with
    # SQLITE_FULL ("database or disk is full"), as on a full disk
    with sqlite3.connect(h.db.path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]

    def full(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    big = StoredStrategyState("host", 1, {"blob": "x" * 20_000}, T0)  # needs pages of its own
    event.listen(h.db._engine, "connect", full)
    h.db._engine.dispose()
    try:
        h.tell(*(bar(i) for i in range(300)))
        h.flush_timer()
        with pytest.raises(StoreUnavailable, match="full"):
            h.ask(record(big))
        h.flush_timer()
        assert h.writer.is_alive()
    finally:
        event.remove(h.db._engine, "connect", full)
        h.db._engine.dispose()
    errors = [line for line in log_lines if line.startswith("ERROR")]
    assert len(errors) == 1 and "cannot write the database" in errors[0] and "full" in errors[0]

    h.flush_timer()  # room again: everything kept in memory is written
    assert h.db.bars(CE, DAY) == [bar(i) for i in range(300)]
    assert h.db.strategy_state("host") == big
    assert h.db.dead_letters() == []


def test_the_wal_is_checkpointed_after_batched_writes_once_it_holds_checkpoint_pages(
        tmp_path: Path) -> None:
    h = Harness(tmp_path / "engine.db", dataclasses.replace(SETTINGS, checkpoint_pages=100))

    def in_the_file(table: str) -> int:
        """Rows of ``table`` in the database file alone (what a checkpoint copied there)."""
        copy = tmp_path / "copy.db"
        for path in tmp_path.glob("copy.db*"):
            path.unlink()
        copy.write_bytes(h.db.path.read_bytes())
        with sqlite3.connect(copy) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def state(name: str, kib: int) -> StoredStrategyState:  # ``kib`` KiB: as many WAL pages
        return StoredStrategyState(name, 1, {"blob": "x" * (kib * 1024)}, T0)

    try:
        with sqlite3.connect(h.db.path) as conn:  # the schema into the file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        h.tell(*(bar(i) for i in range(10)))
        h.flush_timer()  # a small batch: committed, left in the WAL
        assert len(h.db.bars(CE, DAY)) == 10 and in_the_file("bars") == 0
        for i in range(3):  # immediate commits never checkpoint, however large the WAL grows
            h.ask(record(state(f"host{i}", 200)))
        assert in_the_file("strategy_state") == 0
        h.tell(record(state("swings.X", 1), durable=False))
        h.flush_timer()  # a batch past 100 pages of WAL: checkpointed once committed
        assert in_the_file("bars") == 10 and in_the_file("strategy_state") == 4
        wal = Path(f"{h.db.path}-wal")
        for i in range(30):  # the WAL stays near 100 pages plus a batch (~50 pages)
            h.tell(record(state(f"swings.{i % 3}", 200), durable=False))
            h.flush_timer()
            assert wal.stat().st_size < 250 * (4096 + 24)
    finally:
        h.close()


def test_restoring_actors_read_their_newest_state_without_waiting_for_a_locked_database(
        h: Harness, log_lines: list[str]) -> None:
    """LoadState / LoadStates answer from what is not written yet (buffered, or held after a
    failed write) over what is stored, and never try a write: a restart during a lock spell
    neither waits out the retry budget nor reads an older state than it last wrote."""
    def state(name: str, n: int, ts: float) -> StoredStrategyState:
        return StoredStrategyState(name, 1, {"n": n}, ts)

    h.ask(record(state("swings.A", 1, T0)))                       # stored
    h.ask(record(state("swings.B", 1, T0)))
    h.ask(record(state("host", 1, T0)))
    blocker = sqlite3.connect(h.db.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        h.tell(record(state("swings.A", 2, T0 + 1), durable=False))  # buffered
        h.tell(record(state("swings.C", 2, T0 + 1), durable=False))
        with pytest.raises(StoreUnavailable, match="locked"):
            h.ask(record(state("host", 2, T0 + 2)))                 # held: the write failed
        errors_before = sum(line.startswith("ERROR") for line in log_lines)
        assert h.ask(LoadState("host")) == state("host", 2, T0 + 2)
        assert h.ask(LoadState("swings.A")) == state("swings.A", 2, T0 + 1)
        assert h.ask(LoadState("swings.B")) == state("swings.B", 1, T0)
        assert h.ask(LoadState("nothing")) is None
        assert h.ask(LoadStates("swings.")) == [state("swings.A", 2, T0 + 1),
                                                 state("swings.B", 1, T0),
                                                 state("swings.C", 2, T0 + 1)]
        # no write was tried for the reads: no new "cannot write" report
        assert sum(line.startswith("ERROR") for line in log_lines) == errors_before
        assert h.db.strategy_state("swings.A") == state("swings.A", 1, T0)
    finally:
        blocker.rollback()
        blocker.close()
    h.flush_timer()
    assert h.db.strategy_states("swings.") == [state("swings.A", 2, T0 + 1),
                                               state("swings.B", 1, T0),
                                               state("swings.C", 2, T0 + 1)]
    assert h.db.strategy_state("host") == state("host", 2, T0 + 2)


def test_the_batch_size_does_not_retry_a_locked_database_on_every_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = StoreSettings(batch_size=2, busy_timeout_ms=20, lock_retry_attempts=2,
                             lock_retry_backoff_s=0.01)
    h = Harness(tmp_path / "engine.db", settings)
    attempts: list[float] = []
    real_run_write = h.db.run_write

    def counted(work: Any, **options: Any) -> Any:
        attempts.append(h.clock.time())
        return real_run_write(work, **options)

    monkeypatch.setattr(h.db, "run_write", counted)
    blocker = sqlite3.connect(h.db.path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        h.tell(*(bar(i) for i in range(2)))  # reaches the batch size: one failed attempt
        h.tell(*(bar(i) for i in range(2, 40)))  # no new attempt until the timer
        h.sync()
        assert len(attempts) == 1
        blocker.rollback()
        h.flush_timer()
        assert len(attempts) == 2
        assert len(h.db.bars(CE, DAY)) == 40
    finally:
        blocker.close()
        h.close()


# -- restarts --------------------------------------------------------------------------------


def test_a_new_writer_on_the_same_file_continues(h: Harness) -> None:
    h.ask(intent("c1"))
    h.tell(bar(0))
    h.writer.stop(timeout=10)

    h.writer = h.start()
    h.ask(OrderEvent("c1", OrderStatus.OPEN, T0 + 1, broker_order_id="B1"))
    h.ask(intent("c2", T0 + 2))
    h.tell(bar(1))
    h.flush_timer()
    assert [o.client_id for o in h.db.open_orders()] == ["c1", "c2"]
    assert h.db.order("c1").broker_order_id == "B1"  # type: ignore[union-attr]
    assert h.db.bars(CE, DAY) == [bar(0), bar(1)]


def test_the_writer_needs_a_clock(tmp_path: Path) -> None:
    with Database(tmp_path / "engine.db") as db, pytest.raises(ValueError, match="clock"):
        StoreWriter(db)


# -- the kill test (acceptance) --------------------------------------------------------------


@pytest.mark.timeout(180)
def test_sigkill_mid_stream_loses_no_committed_intent(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "kill.db"
    committed: list[str] = []
    for round_no in range(4):
        err_path = tmp_path / f"child{round_no}.err"
        with err_path.open("w") as err:
            proc = subprocess.Popen([sys.executable, str(CHILD), str(path), f"r{round_no}"],
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        lines: list[str] = []
        target = rng.randint(1, 120)
        try:
            for line in proc.stdout:
                lines.append(line)
                if len(lines) >= target:
                    break
            time.sleep(rng.uniform(0.0, 0.02))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
        lines.extend(proc.stdout.read().splitlines(keepends=True))  # printed before it died
        proc.stdout.close()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        printed = [line.strip() for line in lines if line.endswith("\n")]
        assert len(printed) >= target, (seed, err_path.read_text())
        committed.extend(printed)

        with Database(path) as db:
            missing = [cid for cid in committed if db.order(cid) is None]
        assert missing == [], (seed, round_no, missing[:5])
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], seed
