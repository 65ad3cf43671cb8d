"""The engine database: migrations, pragmas, the write transaction, record validation, reads."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

import engine.store.database as store
from engine.messages import (
    Action,
    Bar,
    BarGap,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    PositionRisk,
    PriceType,
    StoreRecord,
)
from engine.runtime.clock import ist_epoch
from engine.store.database import (
    LATEST_VERSION,
    MIGRATIONS,
    Applied,
    Database,
    Migration,
    Op,
    RowWrite,
    StoredAccount,
    StoredStrategyState,
    StoreError,
    StoreRejected,
    StoreSettings,
    StoreUnavailable,
    StoreVersionError,
    WriteTx,
    record,
)

T0 = ist_epoch(2025, 1, 30, 9, 20)
DAY = date(2025, 1, 30)
SYMBOL = "NIFTY30JAN2524000CE"
FAST = StoreSettings(busy_timeout_ms=20, lock_retry_attempts=2, lock_retry_backoff_s=0.01)


def intent(client_id: str, ts: float = T0) -> OrderIntent:
    return OrderIntent(client_id, "baseline_v1", "main", SYMBOL, "NFO", Action.SELL, 65,
                       PriceType.SL, price=99.95, trigger_price=102.95, created_ts=ts)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


# -- migrations ------------------------------------------------------------------------------


def test_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "engine.db"
    with Database(path) as db:
        assert db.schema_version() == LATEST_VERSION
    with sqlite3.connect(path) as conn:
        applied = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
        assert applied == [m.version for m in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    expected = {"orders", "order_events", "fills", "positions", "prices", "bars", "bar_gaps",
                "swings", "swing_breaks", "risk_events", "risk_state", "daily_state",
                "strategy_state", "trades", "restarts", "dead_letters", "alerts",
                "heartbeats", "reconciliation", "accounts", "instrument_facts",
                "position_risks", "database_owner", "pending_fills", "day_transitions",
                "market_holidays", "market_timings", "schema_version"}
    assert tables(path) == expected


def test_a_v4_trade_upgrades_with_no_unit_recorded(tmp_path: Path) -> None:
    """A trade stored before v5 cannot say what its R was measured in: it reads back with
    ``r_unit`` "" (reports say "unit not recorded"), never with today's setting."""
    path = tmp_path / "engine.db"
    conn = sqlite3.connect(path)
    conn.execute(store._VERSION_TABLE)
    for migration in MIGRATIONS[:4]:
        for step in migration.steps:
            conn.execute(step)
        conn.execute("INSERT INTO schema_version VALUES (?, 'by hand', 0)", (migration.version,))
    conn.execute(
        "INSERT INTO trades (strategy, account, symbol, trading_date, action, quantity, entry_ts,"
        " entry_price, exit_ts, exit_price, pnl, r_multiple) VALUES ('s', 'main', ?,"
        " '2025-01-30', 'SELL', 65, ?, 100, ?, 110, -650, -0.1)", (SYMBOL, T0, T0 + 60))
    conn.commit()
    conn.close()
    with Database(path) as db:
        [old] = db.trades()
        assert (old.pnl, old.r_unit) == (-650.0, "")


def test_a_positions_risk_declaration_is_kept_per_day_the_latest_wins(tmp_path: Path) -> None:
    with Database(tmp_path / "engine.db") as db:
        first = PositionRisk("s", "main", SYMBOL, 4.0, T0)
        again = PositionRisk("s", "main", SYMBOL, 6.5, T0 + 30)
        other = PositionRisk("t", "main", SYMBOL, 3.0, T0)
        yesterday = PositionRisk("s", "main", SYMBOL, 9.0, T0 - 86_400)
        for message in (first, again, other, yesterday):
            assert db.run_write(lambda tx, m=message: tx.apply(db.writes_for(m))) \
                is Applied.WRITTEN
        assert db.position_risks(account="main", trading_date=DAY) == [again, other]
        assert db.position_risks(account="other", trading_date=DAY) == []
        with pytest.raises(StoreRejected):  # no declaration of nothing
            db.run_write(lambda tx: tx.apply(db.writes_for(
                PositionRisk("s", "main", SYMBOL, 0.0, T0))))


def test_reopening_a_current_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    Database(path).close()
    with Database(path) as db:
        assert db.schema_version() == LATEST_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_an_older_database_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    conn = sqlite3.connect(path)
    conn.execute(store._VERSION_TABLE)
    for step in MIGRATIONS[0].steps:
        conn.execute(step)
    conn.execute("INSERT INTO schema_version VALUES (1, 'by hand', 0)")
    conn.execute(
        "INSERT INTO orders (client_id, strategy, account, symbol, exchange, action, quantity,"
        " pricetype, product, price, trigger_price, purpose, status, created_ts, updated_ts,"
        " trading_date) VALUES ('old-1', 's', 'main', ?, 'NFO', 'SELL', 65, 'SL', 'MIS', 99.95,"
        " 102.95, 'entry', 'open', ?, ?, '2025-01-30')", (SYMBOL, T0, T0))
    conn.commit()
    conn.close()
    assert "bars" not in tables(path)

    with Database(path) as db:
        assert db.schema_version() == LATEST_VERSION
        old = db.order("old-1")
        assert old is not None and old.status is OrderStatus.OPEN and old.trading_date == DAY
        assert db.bars(SYMBOL, DAY) == []  # a v2 table now exists
        assert db.restarts() == []  # and a v3 one


def test_a_newer_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    conn = sqlite3.connect(path)
    conn.execute(store._VERSION_TABLE)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)",
                 (LATEST_VERSION + 1,))
    conn.execute("CREATE TABLE future_thing (x)")
    conn.commit()
    conn.close()
    before = sha(path)

    with pytest.raises(StoreVersionError, match=f"schema version {LATEST_VERSION + 1}"):
        Database(path)

    assert sha(path) == before
    assert not Path(f"{path}-wal").exists()  # not even switched to WAL
    assert tables(path) == {"schema_version", "future_thing"}


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (name)")
    before = sha(path)
    with pytest.raises(StoreVersionError, match="not an engine database"):
        Database(path)
    assert sha(path) == before


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not sqlite, just some text " * 100)
    with pytest.raises(StoreVersionError, match="cannot be read as a database"):
        Database(path)
    assert path.read_bytes().startswith(b"this is not sqlite")


def test_a_failing_migration_is_rolled_back_whole(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "engine.db"
    Database(path).close()
    broken = Migration(LATEST_VERSION + 1, "broken", (
        "CREATE TABLE half_done (x)",
        "CREATE TABLE orders (x)",  # already exists: fails after the first step ran
    ))
    monkeypatch.setattr(store, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(store, "LATEST_VERSION", broken.version)
    with pytest.raises(StoreError, match=r"migration failed.*already exists"):
        Database(path)
    assert "half_done" not in tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] \
            == MIGRATIONS[-1].version


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_opening_a_database_locked_by_another_process_is_unavailable(
        tmp_path: Path, journal: str) -> None:
    path = tmp_path / "engine.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.execute(store._VERSION_TABLE)
    for step in MIGRATIONS[0].steps:
        conn.execute(step)
    conn.execute("INSERT INTO schema_version VALUES (1, 'by hand', 0)")
    conn.commit()
    conn.isolation_level = None
    conn.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            Database(path, FAST)
    finally:
        conn.rollback()
        conn.close()
    with Database(path, FAST) as db:
        assert db.schema_version() == LATEST_VERSION


# -- connections -----------------------------------------------------------------------------


@pytest.mark.parametrize(("synchronous", "code"), [("FULL", 2), ("NORMAL", 1)])
def test_every_connection_gets_the_pragmas(tmp_path: Path, synchronous: str, code: int) -> None:
    settings = StoreSettings(synchronous=synchronous, busy_timeout_ms=1234)
    with Database(tmp_path / "engine.db", settings) as db, db._engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                  for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragma == {"journal_mode": "wal", "synchronous": code, "foreign_keys": 1,
                      "busy_timeout": 1234}


def test_an_unknown_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Database(tmp_path / "engine.db", StoreSettings(synchronous="OFF; DROP TABLE orders"))


# -- the write transaction -------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "engine.db", FAST)
    yield database
    database.close()


def test_apply_reports_duplicates_and_missing_rows_and_writes_nothing_of_them(
        db: Database) -> None:
    first = db.writes_for(intent("c1"))
    assert db.run_write(lambda tx: tx.apply(first)) is Applied.WRITTEN
    assert db.run_write(lambda tx: tx.apply(first)) is Applied.DUPLICATE
    unknown = db.writes_for(OrderEvent("nope", OrderStatus.OPEN, T0 + 1))
    assert db.run_write(lambda tx: tx.apply(unknown)) is Applied.MISSING
    assert [e.status for e in db.order_events("c1")] == [OrderStatus.SUBMITTING]


def test_a_constraint_violation_rejects_only_that_message(db: Database) -> None:
    bad = RowWrite("order_events", Op.INSERT, {  # foreign key: no such order
        "client_id": "ghost", "status": "open", "ts": T0, "filled_quantity": 0,
        "average_price": 0.0})

    def work(tx: WriteTx) -> str:
        tx.apply(db.writes_for(intent("c1")))
        with pytest.raises(StoreRejected, match="FOREIGN KEY"):
            tx.apply((bad,))
        return "committed"

    assert db.run_write(work) == "committed"
    assert db.order("c1") is not None


def test_an_exception_in_the_work_commits_nothing(db: Database) -> None:
    def work(tx: WriteTx) -> None:
        tx.apply(db.writes_for(intent("c1")))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.run_write(work)
    assert db.order("c1") is None


def test_write_rows_keeps_the_good_rows_of_a_batch_with_a_bad_one(db: Database) -> None:
    bars = [Bar(SYMBOL, T0 + 60 * i, 100, 101, 99, 100.5, 10, 3, 100.2) for i in range(5)]
    writes = [db.writes_for(b)[0] for b in bars]
    poisoned = RowWrite("bars", Op.UPSERT, {**writes[2].values, "volume": None}, writes[2].key)
    writes[2] = poisoned
    refused = db.run_write(lambda tx: tx.write_rows(writes))
    assert [(w, "NOT NULL" in why) for w, why in refused] == [(poisoned, True)]
    assert [b.start for b in db.bars(SYMBOL, DAY)] == [T0, T0 + 60, T0 + 180, T0 + 240]


def test_a_days_bars_and_gap_counts_read_at_once_equal_the_per_symbol_reads(
        db: Database) -> None:
    other = "NIFTY30JAN2524100PE"
    bars = [Bar(sym, T0 + 60 * i, 100 + i, 101.5, 99, 100.25, 10 + i, 3, 100.2, source)
            for sym, source in ((SYMBOL, "live"), (other, "history")) for i in range(3)]
    bars.append(Bar(SYMBOL, T0 - 86_400, 1, 1, 1, 1, 1, 1, 1.0))  # the day before: not read
    gaps = [BarGap(SYMBOL, T0 + 600), BarGap(SYMBOL, T0 + 660), BarGap(other, T0 + 600)]
    db.run_write(lambda tx: [tx.write_rows([db.writes_for(m)[0]]) for m in (*bars, *gaps)])
    rows = db.day_bar_rows(DAY)
    assert rows == [tuple(getattr(b, c) for c in store.BAR_COLUMNS)
                    for sym in sorted((SYMBOL, other)) for b in db.bars(sym, DAY)]
    assert [type(v) for v in rows[0]] == [str, float, float, float, float, float, int, int,
                                          float, str]
    assert db.day_gap_counts(DAY) == {SYMBOL: 2, other: 1}
    assert db.day_gap_counts(date(2025, 1, 29)) == {}


def test_a_locked_database_is_retried_then_reported(db: Database) -> None:
    blocker = sqlite3.connect(db.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match=r"locked.*2 attempt"):
            db.run_write(lambda tx: tx.apply(db.writes_for(intent("c1"))))
        assert db.order("c1") is None
        assert db.open_orders() == []  # WAL: reads go on while another connection writes
    finally:
        blocker.rollback()
        blocker.close()
    db.run_write(lambda tx: tx.apply(db.writes_for(intent("c1"))))
    assert db.order("c1") is not None


def test_a_lock_released_during_the_backoff_is_waited_out(tmp_path: Path) -> None:
    settings = StoreSettings(busy_timeout_ms=10, lock_retry_attempts=8,
                             lock_retry_backoff_s=0.02)
    with Database(tmp_path / "engine.db", settings) as database:
        blocker = sqlite3.connect(database.path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        attempts: list[int] = []

        def work(tx: WriteTx) -> Applied:
            attempts.append(1)
            return tx.apply(database.writes_for(intent("c1")))

        release = threading.Timer(0.15, blocker.rollback)
        release.start()
        try:
            assert database.run_write(work) is Applied.WRITTEN
        finally:
            release.join()
            blocker.close()
        assert database.order("c1") is not None
        assert attempts == [1]  # the work runs only once the write lock is held


# -- records ---------------------------------------------------------------------------------


def test_records_are_validated_against_the_table(db: Database) -> None:
    with pytest.raises(StoreRejected, match="not writable by record"):
        db.writes_for(StoreRecord("orders", (("client_id", "x"),)))
    with pytest.raises(StoreRejected, match=r"unknown columns \['api_key'\]"):
        db.writes_for(StoreRecord("accounts", (("name", "a"), ("api_key", "SECRET-123"))))
    with pytest.raises(StoreRejected, match="missing columns") as missing:
        db.writes_for(StoreRecord("accounts", (("name", "a"), ("host", "h"))))
    assert "role" in str(missing.value) and "updated_ts" in str(missing.value)
    with pytest.raises(StoreRejected, match="no table for str"):
        db.writes_for("hello")


def test_errors_never_carry_values(db: Database) -> None:
    with pytest.raises(StoreRejected) as err:
        db.writes_for(StoreRecord("accounts", (("name", "a"), ("api_key", "SECRET-123"))))
    assert "SECRET-123" not in str(err.value)


def test_an_account_key_is_stored_as_given_and_hidden_from_repr(db: Database) -> None:
    account = StoredAccount("main", "http://127.0.0.1:5000", "ws://127.0.0.1:8765", "primary",
                            T0, api_key_encrypted=b"gAAAA-encrypted-bytes")
    db.run_write(lambda tx: tx.apply(db.writes_for(record(account))))
    (stored,) = db.accounts()
    assert stored == account
    assert "encrypted-bytes" not in repr(stored)


def test_an_intent_without_a_creation_time_is_rejected(db: Database) -> None:
    with pytest.raises(StoreRejected, match="created_ts"):
        db.writes_for(intent("c1", ts=0.0))


def test_strategy_states_by_prefix_match_the_prefix_literally(db: Database) -> None:
    """``%`` and ``_`` in a prefix are characters, not patterns; rows come back by name."""
    names = ["swings.B", "swings.A", "swingsX", "bars.A", "swings_A", "sw%.A", "sw%"]
    for name in names:
        state = StoredStrategyState(name=name, version=1, state={"n": name}, updated_ts=T0)
        db.run_write(lambda tx, s=state: tx.apply(db.writes_for(record(s))))
    assert [s.name for s in db.strategy_states("swings.")] == ["swings.A", "swings.B"]
    assert [s.state for s in db.strategy_states("sw%.")] == [{"n": "sw%.A"}]
    assert db.strategy_states("nothing.") == []
