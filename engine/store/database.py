"""The engine database: SQLite (WAL) through SQLAlchemy Core — schema, migrations, writes, reads.

Owns everything that knows the shape of the database:

- ``StoreSettings`` (section ``store``) and the pragmas every connection gets (WAL, synchronous,
  foreign keys, busy timeout; no automatic WAL checkpoint: SQLite would run it inside whichever
  commit crossed the threshold, an order intent's too, so only the store writer's batched
  writes checkpoint, ``Database.run_write(..., checkpoint=True)``);
- the versioned schema: ``MIGRATIONS`` is an ordered list of (version, DDL steps); opening an older
  file applies the missing ones in one transaction; a file newer than this code, or a SQLite file
  that is not an engine database, is refused with ``StoreVersionError`` and left untouched, and
  so is one missing a table its schema version promises (damaged);
- the owner: the mode and trading day a database was created for (``DatabaseOwner``, recorded by
  the first engine that opens it; ``owner_of`` reads it without touching the file), so the
  engine can tell its own files from anyone else's (docs/operations, "Files the engine
  writes");
- the mapping of every store-bound message type to its rows (``Database.writes_for``), in one table
  (``_MESSAGE_ROWS``), and the write transaction (``Database.run_write`` / ``WriteTx``) used by
  the single writer actor (``actors.store``), which is the only caller at run time (rows go
  through the DBAPI connection, each statement shape's SQL compiled once: ``WriteTx``);
- typed read functions other actors use to rebuild their state after a restart. Each read opens
  its own connection; WAL lets readers run while the writer writes.

Timestamps are epoch seconds (REAL, timezone-free); ``trading_date`` is the IST calendar date
(``YYYY-MM-DD``) the row belongs to.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from enum import Enum, StrEnum
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import orjson
from loguru import logger
from sqlalchemy import (
    Connection,
    Executable,
    MetaData,
    RowMapping,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from engine.market.instruments import InstrumentFacts
from engine.market.instruments import trading_date as ist_date
from engine.messages import (
    Action,
    Alert,
    Bar,
    BarGap,
    DeadLetter,
    Fill,
    Heartbeat,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PositionMark,
    PositionRisk,
    PriceType,
    Product,
    RestartRecord,
    RiskEvent,
    RiskState,
    StoreRecord,
    Swing,
    SwingBroken,
)
from engine.messages import frozen as fast_init
from engine.settings import setting

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Settings and errors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreSettings:
    path: str = setting("var/engine.db", "the engine database file (SQLite, WAL mode)")
    synchronous: str = setting("FULL", "SQLite synchronous mode: FULL survives power loss, "
                               "NORMAL only process crashes", choices=("FULL", "NORMAL"))
    batch_size: int = setting(500, "buffered high-rate rows that trigger a write before the timer",
                              min=1, max=1_000_000)
    flush_interval_s: float = setting(2.0, "how often buffered rows (prices, bars, swings, ...) "
                                      "are written", min=0.05, max=60.0)
    cache_kib: int = setting(512, "SQLite page cache per connection, KiB (kept small: the "
                             "engine reads little back, and each pooled connection has one)",
                             min=64, max=1_048_576)
    busy_timeout_ms: int = setting(1000, "how long one write waits for another process's lock",
                                   min=0, max=60_000)
    lock_retry_attempts: int = setting(3, "write attempts on a locked database before giving up "
                                       "(buffered rows are kept)", min=1, max=20)
    lock_retry_backoff_s: float = setting(0.1, "pause before the second attempt; doubles after",
                                          min=0.0, max=10.0)
    checkpoint_pages: int = setting(4000, "WAL pages (4 KiB each) that make the store writer "
                                    "copy the WAL into the database file after a batched write; "
                                    "bounds the -wal file", min=100, max=1_000_000)


class StoreError(Exception):
    """Base of every store error."""


class StoreVersionError(StoreError):
    """The file is newer than this code, or is not an engine database; it was not touched."""


class StoreUnavailable(StoreError):
    """The database could not be written (locked past the retries, or an I/O error)."""


class StoreRejected(StoreError):
    """Bad input: the write breaks the schema's rules; nothing of it was written."""


@dataclass(frozen=True, slots=True)
class DatabaseOwner:
    """What an engine database was created for: the run mode and its trading day. Written once,
    by the first engine that opens the file (``Database(..., owner=...)``); it tells the engine
    its own files from anyone else's (``owner_of``)."""

    mode: str  # "replay" | "paper" | "live" | "record"
    trading_date: date

    def describe(self) -> str:
        return f"a {self.mode} database of {self.trading_date.isoformat()}"


# ---------------------------------------------------------------------------------------------
# Schema: migrations are the source of truth; tables are reflected after migrating
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    steps: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "orders, fills, positions, prices, risk, trades and accounts", (
        """CREATE TABLE orders (
            client_id        TEXT NOT NULL PRIMARY KEY,
            strategy         TEXT NOT NULL,
            account          TEXT NOT NULL,
            symbol           TEXT NOT NULL,
            exchange         TEXT NOT NULL,
            action           TEXT NOT NULL CHECK (action IN ('BUY', 'SELL')),
            quantity         INTEGER NOT NULL CHECK (quantity > 0),
            pricetype        TEXT NOT NULL,
            product          TEXT NOT NULL,
            price            REAL NOT NULL,
            trigger_price    REAL NOT NULL,
            purpose          TEXT NOT NULL,
            parent_id        TEXT,
            broker_order_id  TEXT,
            status           TEXT NOT NULL,
            filled_quantity  INTEGER NOT NULL DEFAULT 0,
            average_price    REAL NOT NULL DEFAULT 0,
            created_ts       REAL NOT NULL,
            updated_ts       REAL NOT NULL,
            trading_date     TEXT NOT NULL,
            reason           TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX orders_by_owner ON orders (strategy, account, status)",
        "CREATE INDEX orders_by_broker_id ON orders (broker_order_id)",
        "CREATE INDEX orders_by_date ON orders (trading_date)",
        """CREATE TABLE order_events (
            id               INTEGER PRIMARY KEY,
            client_id        TEXT NOT NULL REFERENCES orders (client_id),
            status           TEXT NOT NULL,
            ts               REAL NOT NULL,
            broker_order_id  TEXT,
            filled_quantity  INTEGER NOT NULL,
            average_price    REAL NOT NULL,
            reason           TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX order_events_by_order ON order_events (client_id, id)",
        """CREATE TABLE fills (
            id                   INTEGER PRIMARY KEY,
            client_id            TEXT NOT NULL REFERENCES orders (client_id),
            broker_order_id      TEXT NOT NULL,
            cumulative_quantity  INTEGER NOT NULL CHECK (cumulative_quantity > 0),
            strategy             TEXT NOT NULL,
            account              TEXT NOT NULL,
            symbol               TEXT NOT NULL,
            exchange             TEXT NOT NULL,
            action               TEXT NOT NULL CHECK (action IN ('BUY', 'SELL')),
            quantity             INTEGER NOT NULL CHECK (quantity > 0),
            price                REAL NOT NULL,
            ts                   REAL NOT NULL,
            trading_date         TEXT NOT NULL,
            purpose              TEXT NOT NULL,
            UNIQUE (broker_order_id, cumulative_quantity)
        )""",
        "CREATE INDEX fills_by_owner ON fills (strategy, account, trading_date)",
        "CREATE INDEX fills_by_order ON fills (client_id)",
        """CREATE TABLE positions (
            strategy       TEXT NOT NULL,
            account        TEXT NOT NULL,
            symbol         TEXT NOT NULL,
            quantity       INTEGER NOT NULL,
            average_price  REAL NOT NULL,
            ltp            REAL NOT NULL,
            unrealized     REAL NOT NULL,
            realized       REAL NOT NULL,
            r_multiple     REAL NOT NULL,
            ts             REAL NOT NULL,
            fresh          INTEGER NOT NULL,
            trading_date   TEXT NOT NULL,
            PRIMARY KEY (strategy, account, symbol)
        )""",
        """CREATE TABLE prices (
            symbol  TEXT NOT NULL PRIMARY KEY,
            ltp     REAL NOT NULL CHECK (ltp > 0),
            ts      REAL NOT NULL
        )""",
        """CREATE TABLE risk_events (
            id            INTEGER PRIMARY KEY,
            strategy      TEXT NOT NULL,
            account       TEXT NOT NULL,
            kind          TEXT NOT NULL,
            threshold     REAL NOT NULL,
            value         REAL NOT NULL,
            action        TEXT NOT NULL,
            order_ids     TEXT NOT NULL DEFAULT '[]',
            ts            REAL NOT NULL,
            trading_date  TEXT NOT NULL
        )""",
        "CREATE INDEX risk_events_by_owner ON risk_events (strategy, trading_date)",
        """CREATE TABLE risk_state (
            strategy      TEXT NOT NULL,
            account       TEXT NOT NULL,
            state         TEXT NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
            trading_date  TEXT NOT NULL,
            peak          REAL NOT NULL DEFAULT 0,
            stop_level    REAL,
            reason        TEXT NOT NULL DEFAULT '',
            updated_ts    REAL NOT NULL,
            PRIMARY KEY (strategy, account)
        )""",
        """CREATE TABLE daily_state (
            strategy      TEXT NOT NULL,
            account       TEXT NOT NULL,
            trading_date  TEXT NOT NULL,
            day_latched   INTEGER NOT NULL DEFAULT 0,
            latch_reason  TEXT NOT NULL DEFAULT '',
            extra         TEXT NOT NULL DEFAULT '{}',
            updated_ts    REAL NOT NULL,
            PRIMARY KEY (strategy, account, trading_date)
        )""",
        """CREATE TABLE trades (
            id               INTEGER PRIMARY KEY,
            strategy         TEXT NOT NULL,
            account          TEXT NOT NULL,
            symbol           TEXT NOT NULL,
            trading_date     TEXT NOT NULL,
            action           TEXT NOT NULL CHECK (action IN ('BUY', 'SELL')),
            quantity         INTEGER NOT NULL CHECK (quantity > 0),
            entry_ts         REAL NOT NULL,
            entry_price      REAL NOT NULL,
            exit_ts          REAL NOT NULL,
            exit_price       REAL NOT NULL,
            pnl              REAL NOT NULL,
            r_multiple       REAL NOT NULL,
            entry_client_id  TEXT,
            exit_client_id   TEXT,
            exit_reason      TEXT NOT NULL DEFAULT '',
            UNIQUE (strategy, account, symbol, entry_ts, exit_ts)
        )""",
        "CREATE INDEX trades_by_owner ON trades (strategy, trading_date, account)",
        """CREATE TABLE accounts (
            name               TEXT NOT NULL PRIMARY KEY,
            host               TEXT NOT NULL,
            ws_url             TEXT NOT NULL,
            api_key_encrypted  BLOB,
            role               TEXT NOT NULL CHECK (role IN ('primary', 'backup')),
            updated_ts         REAL NOT NULL
        )""",
    )),
    Migration(2, "market data and strategy state: bars, gaps, swings, strategy blobs", (
        """CREATE TABLE bars (
            symbol        TEXT NOT NULL,
            start         REAL NOT NULL,
            trading_date  TEXT NOT NULL,
            open          REAL NOT NULL,
            high          REAL NOT NULL,
            low           REAL NOT NULL,
            close         REAL NOT NULL,
            volume        INTEGER NOT NULL,
            ticks         INTEGER NOT NULL,
            vwap          REAL NOT NULL,
            source        TEXT NOT NULL,
            PRIMARY KEY (symbol, start)
        )""",
        "CREATE INDEX bars_by_day ON bars (symbol, trading_date)",
        """CREATE TABLE bar_gaps (
            symbol        TEXT NOT NULL,
            start         REAL NOT NULL,
            trading_date  TEXT NOT NULL,
            PRIMARY KEY (symbol, start)
        )""",
        """CREATE TABLE swings (
            id            INTEGER PRIMARY KEY,
            symbol        TEXT NOT NULL,
            trading_date  TEXT NOT NULL,
            kind          TEXT NOT NULL CHECK (kind IN ('LOW', 'HIGH')),
            price         REAL NOT NULL,
            bar_start     REAL NOT NULL,
            bar_index     INTEGER NOT NULL,
            vwap          REAL NOT NULL,
            updated       INTEGER NOT NULL,
            tradable      INTEGER NOT NULL
        )""",
        "CREATE INDEX swings_by_day ON swings (symbol, trading_date)",
        """CREATE TABLE swing_breaks (
            id            INTEGER PRIMARY KEY,
            symbol        TEXT NOT NULL,
            trading_date  TEXT NOT NULL,
            kind          TEXT NOT NULL CHECK (kind IN ('LOW', 'HIGH')),
            price         REAL NOT NULL,
            bar_start     REAL NOT NULL,
            broken_ts     REAL NOT NULL,
            broken_by     TEXT NOT NULL
        )""",
        "CREATE INDEX swing_breaks_by_day ON swing_breaks (symbol, trading_date)",
        """CREATE TABLE strategy_state (
            name        TEXT NOT NULL PRIMARY KEY,
            version     INTEGER NOT NULL,
            state       TEXT NOT NULL,
            updated_ts  REAL NOT NULL
        )""",
    )),
    Migration(3, "operations: restarts, dead letters, alerts, heartbeats, reconciliation", (
        """CREATE TABLE restarts (
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL,
            supervisor  TEXT NOT NULL,
            reason      TEXT NOT NULL,
            ts          REAL NOT NULL,
            attempt     INTEGER NOT NULL,
            delay       REAL NOT NULL
        )""",
        "CREATE INDEX restarts_by_time ON restarts (ts)",
        """CREATE TABLE dead_letters (
            id            INTEGER PRIMARY KEY,
            name          TEXT NOT NULL,
            message_type  TEXT NOT NULL,
            reason        TEXT NOT NULL,
            ts            REAL NOT NULL
        )""",
        "CREATE INDEX dead_letters_by_time ON dead_letters (ts)",
        """CREATE TABLE alerts (
            id        INTEGER PRIMARY KEY,
            kind      TEXT NOT NULL,
            message   TEXT NOT NULL,
            ts        REAL NOT NULL,
            severity  TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical'))
        )""",
        "CREATE INDEX alerts_by_time ON alerts (ts)",
        """CREATE TABLE heartbeats (
            id          INTEGER PRIMARY KEY,
            ts          REAL NOT NULL,
            positions   INTEGER NOT NULL,
            data_live   INTEGER NOT NULL,
            data_total  INTEGER NOT NULL,
            stale       INTEGER NOT NULL,
            restarts    INTEGER NOT NULL,
            state       TEXT NOT NULL
        )""",
        "CREATE INDEX heartbeats_by_time ON heartbeats (ts)",
        """CREATE TABLE reconciliation (
            id               INTEGER PRIMARY KEY,
            strategy         TEXT NOT NULL,
            account          TEXT NOT NULL,
            symbol           TEXT NOT NULL,
            kind             TEXT NOT NULL,
            action           TEXT NOT NULL,
            ts               REAL NOT NULL,
            trading_date     TEXT NOT NULL,
            engine_quantity  INTEGER,
            broker_quantity  INTEGER,
            client_id        TEXT,
            broker_order_id  TEXT,
            detail           TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX reconciliation_by_day ON reconciliation (trading_date, strategy)",
    )),
    Migration(4, "instrument facts of the day, as read from the broker", (
        """CREATE TABLE instrument_facts (
            trading_date     TEXT NOT NULL,
            account          TEXT NOT NULL,
            underlying       TEXT NOT NULL,
            lot_size         INTEGER,
            tick_size        REAL,
            freeze_quantity  INTEGER,
            expiries         TEXT NOT NULL DEFAULT '[]',
            source           TEXT NOT NULL,
            fetched_ts       REAL NOT NULL,
            PRIMARY KEY (trading_date, account, underlying)
        )""",
    )),
    Migration(5, "the risk each position was sized to, and the unit of each trade's R", (
        """CREATE TABLE position_risks (
            strategy      TEXT NOT NULL,
            account       TEXT NOT NULL,
            symbol        TEXT NOT NULL,
            trading_date  TEXT NOT NULL,
            points        REAL NOT NULL CHECK (points > 0),
            ts            REAL NOT NULL,
            PRIMARY KEY (strategy, account, symbol, trading_date)
        )""",
        "ALTER TABLE trades ADD COLUMN r_unit TEXT NOT NULL DEFAULT ''",
    )),
    Migration(6, "accounts: the basic-auth login of a proxy in front of OpenAlgo", (
        "ALTER TABLE accounts ADD COLUMN basic_auth_user TEXT",
        "ALTER TABLE accounts ADD COLUMN basic_auth_encrypted BLOB",
    )),
    Migration(7, "the database's owner: the mode and trading day it was created for", (
        """CREATE TABLE database_owner (
            id            INTEGER PRIMARY KEY CHECK (id = 1),
            mode          TEXT NOT NULL,
            trading_date  TEXT NOT NULL,
            created_ts    REAL NOT NULL
        )""",
    )),
    Migration(8, "accounts: where the account's notices go (apprise URLs, encrypted)", (
        "ALTER TABLE accounts ADD COLUMN notify_encrypted BLOB",
    )),
    Migration(9, "fills known by quantity before their price (price pending)", (
        """CREATE TABLE pending_fills (
            id                   INTEGER PRIMARY KEY,
            client_id            TEXT NOT NULL REFERENCES orders (client_id),
            broker_order_id      TEXT NOT NULL,
            cumulative_quantity  INTEGER NOT NULL CHECK (cumulative_quantity > 0),
            strategy             TEXT NOT NULL,
            account              TEXT NOT NULL,
            symbol               TEXT NOT NULL,
            exchange             TEXT NOT NULL,
            action               TEXT NOT NULL CHECK (action IN ('BUY', 'SELL')),
            quantity             INTEGER NOT NULL CHECK (quantity > 0),
            ts                   REAL NOT NULL,
            trading_date         TEXT NOT NULL,
            purpose              TEXT NOT NULL,
            UNIQUE (broker_order_id, cumulative_quantity)
        )""",
        "CREATE INDEX pending_fills_by_owner ON pending_fills (account, trading_date)",
        "ALTER TABLE positions ADD COLUMN price_pending INTEGER NOT NULL DEFAULT 0",
    )),
    Migration(10, "the trading-day lifecycle: its transitions, OpenAlgo's holidays and special "
                 "sessions by year, its session timings by date", (
        """CREATE TABLE day_transitions (
            id            INTEGER PRIMARY KEY,
            account       TEXT NOT NULL,
            trading_date  TEXT NOT NULL,
            state         TEXT NOT NULL,
            ts            REAL NOT NULL,
            next_state    TEXT NOT NULL DEFAULT '',
            next_ts       REAL,
            detail        TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE market_holidays (
            year          INTEGER PRIMARY KEY,
            holidays      TEXT NOT NULL,
            special_sessions TEXT NOT NULL DEFAULT '[]',
            fetched_ts    REAL NOT NULL
        )""",
        """CREATE TABLE market_timings (
            trading_date  TEXT PRIMARY KEY,
            open          TEXT NOT NULL,
            close         TEXT NOT NULL,
            fetched_ts    REAL NOT NULL
        )""",
    )),
)

LATEST_VERSION = MIGRATIONS[-1].version
#: Every table the migrations create: a file missing one is a damaged engine database.
TABLES: frozenset[str] = frozenset(
    re.findall(r"CREATE TABLE (\w+)", " ".join(step for m in MIGRATIONS for step in m.steps)))

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version      INTEGER NOT NULL PRIMARY KEY,
    description  TEXT NOT NULL,
    applied_ts   REAL NOT NULL
)"""
# SQLite's own clock: a migration is a file event, not an engine event.
_NOW_SQL = "(julianday('now') - 2440587.5) * 86400.0"


# ---------------------------------------------------------------------------------------------
# Typed rows that are not messages (read back, and written through ``record()``)
# ---------------------------------------------------------------------------------------------

frozen = dataclass(frozen=True, slots=True)


@frozen
class StoredOrder:
    """An order as persisted: its intent plus the latest state the order manager recorded."""

    client_id: str
    strategy: str
    account: str
    symbol: str
    exchange: str
    action: Action
    quantity: int
    pricetype: PriceType
    product: Product
    price: float
    trigger_price: float
    purpose: OrderPurpose
    parent_id: str | None
    broker_order_id: str | None
    status: OrderStatus
    filled_quantity: int
    average_price: float
    created_ts: float
    updated_ts: float
    trading_date: date
    reason: str


@frozen
class StoredPrice:
    symbol: str
    ltp: float
    ts: float


@frozen
class StoredRiskState:
    """The risk manager's latching state of one strategy on one account."""

    TABLE: ClassVar[str] = "risk_state"
    strategy: str
    account: str
    state: RiskState
    trading_date: date
    updated_ts: float
    peak: float = 0.0
    stop_level: float | None = None
    reason: str = ""


@frozen
class StoredDailyState:
    """Per strategy, account and day: the day latch (limits hit, EOD done) and small extras."""

    TABLE: ClassVar[str] = "daily_state"
    strategy: str
    account: str
    trading_date: date
    updated_ts: float
    day_latched: bool = False
    latch_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@frozen
class StoredDayTransition:
    """One transition of the trading-day lifecycle (engine/market/day_cycle.py) and the one
    due next."""

    TABLE: ClassVar[str] = "day_transitions"
    account: str
    trading_date: date
    state: str
    ts: float
    next_state: str = ""
    next_ts: float | None = None
    detail: str = ""


@frozen
class StoredHolidays:
    """One year's exchange holidays as OpenAlgo listed them (``holidays``: ISO dates;
    ``special_sessions``: ``DATE HH:MM:SS HH:MM:SS``)."""

    TABLE: ClassVar[str] = "market_holidays"
    year: int
    holidays: tuple[str, ...]
    fetched_ts: float
    special_sessions: tuple[str, ...] = ()


@frozen
class StoredTimings:
    """One date's session hours as OpenAlgo's ``market/timings`` gave them (``HH:MM:SS``;
    both empty: closed)."""

    TABLE: ClassVar[str] = "market_timings"
    trading_date: date
    open: str
    close: str
    fetched_ts: float


@frozen
class StoredStrategyState:
    """A strategy's own state as a JSON blob; ``version`` is the blob's format version.

    Written often (a swing tracker after every bar), so it is encoded with orjson: strict JSON,
    keys sorted, non-string keys as strings. JSON has no infinities or NaN: a state must not
    hold them (orjson would write ``null``)."""

    TABLE: ClassVar[str] = "strategy_state"
    name: str
    version: int
    state: dict[str, Any]
    updated_ts: float


@frozen
class StoredTrade:
    """A closed trade; ``action`` is the entry side. Realized R is the sum of ``r_multiple``."""

    TABLE: ClassVar[str] = "trades"
    strategy: str
    account: str
    symbol: str
    trading_date: date
    action: Action
    quantity: int
    entry_ts: float
    entry_price: float
    exit_ts: float
    exit_price: float
    pnl: float
    r_multiple: float
    entry_client_id: str | None = None
    exit_client_id: str | None = None
    exit_reason: str = ""
    r_unit: str = ""  # what ``r_multiple`` is measured in (``[risk] r_unit``; "": not recorded)


@frozen
class Correction:
    """A reconciliation finding and what was done about it (phantom, orphan, mismatch, ...)."""

    TABLE: ClassVar[str] = "reconciliation"
    strategy: str
    account: str
    symbol: str
    kind: str
    action: str
    ts: float
    trading_date: date
    engine_quantity: int | None = None
    broker_quantity: int | None = None
    client_id: str | None = None
    broker_order_id: str | None = None
    detail: str = ""


@frozen
class StoredAccount:
    """A broker account; the API key and the proxy's password are stored only encrypted and never
    shown in a repr."""

    TABLE: ClassVar[str] = "accounts"
    name: str
    host: str
    ws_url: str
    role: str
    updated_ts: float
    api_key_encrypted: bytes | None = field(default=None, repr=False)
    basic_auth_user: str | None = None
    basic_auth_encrypted: bytes | None = field(default=None, repr=False)
    notify_encrypted: bytes | None = field(default=None, repr=False)  # apprise URLs


@frozen
class StoredInstrumentFacts:
    """The instrument facts an engine traded with on one day, per account and underlying
    (``expiries``: a JSON list of ISO dates)."""

    TABLE: ClassVar[str] = "instrument_facts"
    trading_date: date
    account: str
    underlying: str
    lot_size: int | None
    tick_size: float | None
    freeze_quantity: int | None
    expiries: str
    source: str
    fetched_ts: float

    @classmethod
    def of(cls, facts: InstrumentFacts, *, trading_date: date, account: str, underlying: str,
           fetched_ts: float) -> StoredInstrumentFacts:
        return cls(trading_date, account, underlying, facts.lot_size, facts.tick_size,
                   facts.freeze_quantity, json.dumps([d.isoformat() for d in facts.expiries]),
                   facts.source, fetched_ts)

    def facts(self, source: str | None = None) -> InstrumentFacts:
        return InstrumentFacts(self.lot_size, self.tick_size, self.freeze_quantity,
                               tuple(date.fromisoformat(d) for d in json.loads(self.expiries)),
                               source or self.source)


RecordRow = StoredRiskState | StoredDailyState | StoredStrategyState | StoredTrade | Correction \
    | StoredAccount | StoredInstrumentFacts | StoredDayTransition | StoredHolidays \
    | StoredTimings


def record(row: RecordRow, *, durable: bool = True, soon: bool = False) -> StoreRecord:
    """The ``StoreRecord`` message that asks the writer to persist ``row`` (``durable``: commit
    before answering; ``soon``: commit once nothing more urgent waits; otherwise it rides the
    next batch)."""
    if type(row) is StoredStrategyState:
        values = {"name": row.name, "version": row.version, "state": encode_state(row.state),
                  "updated_ts": row.updated_ts}
    else:
        values = sql_values(row)
    return StoreRecord(row.TABLE, tuple(values.items()), durable and not soon, soon)


def encode_state(state: Mapping[str, Any]) -> str:
    """A ``StoredStrategyState.state`` as the text stored (see there)."""
    return _json(state)


# ---------------------------------------------------------------------------------------------
# Values between Python and SQLite
# ---------------------------------------------------------------------------------------------


#: values stored as they are (checked by exact type first: most values are these)
_SQL_READY = frozenset({str, float, int, type(None), bytes})


def _sql_value(value: Any) -> Any:
    if type(value) in _SQL_READY:
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (tuple, list, dict)):
        return _json(value)
    return value


_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _json(value: Any) -> str:
    """Sorted-key JSON text, encoded by orjson (a strategy's state is encoded on every change:
    the stdlib encoder's cost grew with the day and held the GIL against the order path)."""
    return orjson.dumps(value, option=_JSON_OPTIONS).decode()


def sql_values(obj: Any, rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A dataclass instance as column values (enums, dates, bools and JSON made SQL-ready)."""
    rename = rename or {}
    return {rename.get(name, name): _sql_value(getattr(obj, name))
            for name in _field_names(type(obj))}


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _day(ts: float) -> str:
    return ist_date(ts).isoformat()


def _coercer(hint: Any) -> Callable[[Any], Any] | None:
    """How to turn a stored value back into a field of type ``hint`` (None: as stored)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner_hints = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _coercer(inner_hints[0]) if len(inner_hints) == 1 else None
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if origin is tuple:
        return lambda v: tuple(orjson.loads(v))
    if origin is dict:
        return orjson.loads
    if isinstance(hint, type):
        if issubclass(hint, Enum):
            return hint
        if hint is date:
            return date.fromisoformat
        if hint in (bool, float, bytes):
            return hint
    return None


@cache
def _coercers(cls: type) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, _coercer(hints[f.name])) for f in dataclasses.fields(cls))


def _build(cls: type[T], row: Mapping[str, Any], rename: Mapping[str, str] | None = None) -> T:
    rename = rename or {}
    kwargs: dict[str, Any] = {}
    for name, coerce in _coercers(cls):
        value = row[rename.get(name, name)]
        kwargs[name] = coerce(value) if coerce is not None and value is not None else value
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Writes: messages → rows (the one table), and the write transaction
# ---------------------------------------------------------------------------------------------


class Op(StrEnum):
    INSERT = "insert"  # a constraint violation rejects the write
    INSERT_NEW = "insert_new"  # a row whose unique key exists is a duplicate: not written
    UPSERT = "upsert"  # insert, or update the row with the same ``key``
    UPDATE = "update"  # update the row with this ``key``; no such row is "missing"
    DELETE = "delete"  # delete the row with this ``key``; no such row is "missing"


@fast_init  # the store builds one per row it writes
class RowWrite:
    table: str
    op: Op
    values: Mapping[str, Any]
    key: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[str, Op, tuple[str, ...], tuple[str, ...]]:
        """What decides the SQL statement: rows of one shape are written with one executemany."""
        return (self.table, self.op, self.key, tuple(self.values))


class Applied(StrEnum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"  # an INSERT_NEW row already existed (e.g. a fill reported twice)
    MISSING = "missing"  # an UPDATE found no row (e.g. an event for an unknown order)


#: the bars table's columns in ``Bar``'s field order (``Database.day_bar_rows``)
BAR_COLUMNS: tuple[str, ...] = _field_names(Bar)
_SWING_COLUMNS = {"index": "bar_index"}
_BREAK_COLUMNS = {"by": "broken_by"}


def _plain(table: str, op: Op = Op.INSERT, key: tuple[str, ...] = (), *,
           day_of: str | None = None,
           rename: Mapping[str, str] | None = None) -> Callable[[Any], tuple[RowWrite, ...]]:
    """Rows for a message stored as one row of its own fields (plus ``trading_date``)."""

    def rows(message: Any) -> tuple[RowWrite, ...]:
        values = sql_values(message, rename)
        if day_of is not None:
            values["trading_date"] = _day(getattr(message, day_of))
        return (RowWrite(table, op, values, key),)

    return rows


def _intent_rows(intent: OrderIntent) -> tuple[RowWrite, ...]:
    if intent.created_ts <= 0:
        raise StoreRejected(f"order intent {intent.client_id} has no created_ts")
    order = sql_values(intent) | {
        "status": OrderStatus.SUBMITTING.value, "filled_quantity": 0, "average_price": 0.0,
        "updated_ts": intent.created_ts, "trading_date": _day(intent.created_ts)}
    event_row = {"client_id": intent.client_id, "status": OrderStatus.SUBMITTING.value,
                 "ts": intent.created_ts, "broker_order_id": None, "filled_quantity": 0,
                 "average_price": 0.0, "reason": intent.reason}
    return (RowWrite("orders", Op.INSERT_NEW, order),
            RowWrite("order_events", Op.INSERT, event_row))


def _order_event_rows(ev: OrderEvent) -> tuple[RowWrite, ...]:
    # What an event does not know (no broker id yet, no fill, no reason) keeps the stored value:
    # an id once attached stays, and fills never un-happen.
    change: dict[str, Any] = {"client_id": ev.client_id, "status": ev.status.value,
                              "updated_ts": ev.ts}
    if ev.broker_order_id is not None:
        change["broker_order_id"] = ev.broker_order_id
    if ev.filled_quantity > 0:
        change |= {"filled_quantity": ev.filled_quantity, "average_price": ev.average_price}
    if ev.reason:
        change["reason"] = ev.reason
    event_row = {"client_id": ev.client_id, "status": ev.status.value, "ts": ev.ts,
                 "broker_order_id": ev.broker_order_id, "filled_quantity": ev.filled_quantity,
                 "average_price": ev.average_price, "reason": ev.reason}
    return (RowWrite("orders", Op.UPDATE, change, ("client_id",)),
            RowWrite("order_events", Op.INSERT, event_row))


def _position_rows(mark: PositionMark) -> tuple[RowWrite, ...]:
    position = sql_values(mark) | {"trading_date": _day(mark.ts)}
    rows = [RowWrite("positions", Op.UPSERT, position, ("strategy", "account", "symbol"))]
    if mark.fresh and mark.ltp > 0:  # a zero or stale price never replaces the last valid one
        rows.append(RowWrite("prices", Op.UPSERT,
                             {"symbol": mark.symbol, "ltp": mark.ltp, "ts": mark.ts}, ("symbol",)))
    return tuple(rows)


# Every store-bound message type → the rows it becomes. ``StoreRecord`` is handled through
# ``RECORD_TABLES`` because its table is named in the message.
_MESSAGE_ROWS: dict[type, Callable[[Any], tuple[RowWrite, ...]]] = {
    OrderIntent: _intent_rows,
    OrderEvent: _order_event_rows,
    Fill: _plain("fills", Op.INSERT_NEW, day_of="ts"),
    PendingFill: _plain("pending_fills", Op.INSERT_NEW, day_of="ts"),
    RiskEvent: _plain("risk_events", day_of="ts"),
    PositionMark: _position_rows,
    PositionRisk: _plain("position_risks", Op.UPSERT, ("strategy", "account", "symbol",
                                                        "trading_date"), day_of="ts"),
    Bar: _plain("bars", Op.UPSERT, ("symbol", "start"), day_of="start"),
    BarGap: _plain("bar_gaps", Op.INSERT_NEW, day_of="start"),
    Swing: _plain("swings", day_of="bar_start", rename=_SWING_COLUMNS),
    SwingBroken: _plain("swing_breaks", day_of="broken_ts", rename=_BREAK_COLUMNS),
    Heartbeat: _plain("heartbeats"),
    Alert: _plain("alerts"),
    DeadLetter: _plain("dead_letters"),
    RestartRecord: _plain("restarts"),
}

# Tables a ``StoreRecord`` may write: how, and by which key.
RECORD_TABLES: dict[str, tuple[Op, tuple[str, ...]]] = {
    "risk_state": (Op.UPSERT, ("strategy", "account")),
    "daily_state": (Op.UPSERT, ("strategy", "account", "trading_date")),
    "strategy_state": (Op.UPSERT, ("name",)),
    "trades": (Op.INSERT_NEW, ()),
    "reconciliation": (Op.INSERT, ()),
    "day_transitions": (Op.INSERT, ()),
    "market_holidays": (Op.UPSERT, ("year",)),
    "market_timings": (Op.UPSERT, ("trading_date",)),
    "accounts": (Op.UPSERT, ("name",)),
    "instrument_facts": (Op.UPSERT, ("trading_date", "account", "underlying")),
}

STORED_TYPES: tuple[type, ...] = (*_MESSAGE_ROWS, StoreRecord)


class ApplyAgain(Exception):
    """``WriteTx.apply_alone`` met what only ``WriteTx.apply`` handles: roll back, use that."""


class WriteTx:
    """One write transaction (``BEGIN IMMEDIATE``); handed out by ``Database.run_write``.

    Rows go straight to the DBAPI connection, each statement shape's SQL compiled once
    (``Database._sql``): SQLAlchemy Core's per-execute work (compiled-cache lookup, parameter
    processing, result setup) cost more than SQLite's own for the engine's small rows. A
    constraint violation is ``sqlite3.IntegrityError`` here; SQLite undoes the failing statement
    by itself, a savepoint undoes the rest of a message or batch."""

    def __init__(self, conn: Connection, sql: Callable[[RowWrite], str]) -> None:
        self._db: sqlite3.Connection = conn.connection.driver_connection
        self._sql = sql

    def _written(self, writes: Sequence[RowWrite]) -> Applied:
        """Write ``writes`` in order; stop at the first INSERT_NEW, UPDATE or DELETE that
        changes no row (then: what it means); ``StoreRejected`` for a constraint violation."""
        db, sql = self._db, self._sql
        for write in writes:
            try:
                count = db.execute(sql(write), _params(write)).rowcount
            except sqlite3.IntegrityError as exc:
                raise StoreRejected(f"{write.table}: {exc}") from None
            if count == 0 and write.op in _MUST_CHANGE:
                return Applied.DUPLICATE if write.op is Op.INSERT_NEW else Applied.MISSING
        return Applied.WRITTEN

    def apply(self, writes: Sequence[RowWrite]) -> Applied:
        """Write one message's rows all-or-nothing (a savepoint).

        A duplicate (INSERT_NEW) or a missing row (UPDATE) leaves the message unwritten and is
        reported; a constraint violation raises ``StoreRejected``. The transaction goes on.
        """
        db = self._db
        db.execute("SAVEPOINT message")
        try:
            applied = self._written(writes)
        except StoreRejected:
            _undo(db, "message")
            raise
        if applied is Applied.WRITTEN:
            db.execute("RELEASE message")
        else:
            _undo(db, "message")
        return applied

    def apply_alone(self, writes: Sequence[RowWrite]) -> Applied:
        """``apply`` for a transaction that holds nothing but these rows: no savepoint (a
        SAVEPOINT / RELEASE pair is two more statements on the order path, for an intent).
        Anything ``apply`` would report or refuse (a duplicate, a missing row, a constraint)
        raises ``ApplyAgain`` instead: the caller lets the transaction roll back and writes the
        rows again through ``apply``."""
        try:
            applied = self._written(writes)
        except StoreRejected as exc:
            raise ApplyAgain(str(exc)) from None
        if applied is not Applied.WRITTEN:
            raise ApplyAgain(applied.value)
        return applied

    def write_rows(self, writes: Sequence[RowWrite]) -> list[tuple[RowWrite, str]]:
        """Write many rows of one shape in one executemany.

        Returns the rows refused by a constraint, with the reason; the others are written.
        """
        db = self._db
        sql = self._sql(writes[0])
        params = [_params(w) for w in writes]
        db.execute("SAVEPOINT batch")
        try:
            db.executemany(sql, params)
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK TO batch")  # the rows before the bad one: again, one by one
        else:
            db.execute("RELEASE batch")
            return []
        refused: list[tuple[RowWrite, str]] = []
        for write, row_params in zip(writes, params, strict=True):
            try:
                db.execute(sql, row_params)  # one statement: undone by SQLite if refused
            except sqlite3.IntegrityError as exc:
                refused.append((write, str(exc)))
        db.execute("RELEASE batch")
        return refused


#: Ops whose statement must change a row; if it changes none the message is not written.
_MUST_CHANGE = frozenset({Op.INSERT_NEW, Op.UPDATE, Op.DELETE})


def _undo(db: sqlite3.Connection, savepoint: str) -> None:
    db.execute(f"ROLLBACK TO {savepoint}")
    db.execute(f"RELEASE {savepoint}")


def _params(write: RowWrite) -> Mapping[str, Any]:
    if write.op in (Op.UPDATE, Op.DELETE):
        return {(f"key_{c}" if c in write.key else f"set_{c}"): v for c, v in write.values.items()}
    return write.values


#: compiles the writer's statements for ``sqlite3``'s ``:name`` parameters (``WriteTx``)
_NAMED_PARAMS = SQLiteDialect_pysqlite(paramstyle="named")


def _is_busy(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# ---------------------------------------------------------------------------------------------
# The database
# ---------------------------------------------------------------------------------------------


class Database:
    """One engine database file: migrated on open; reads for everyone, writes for the writer."""

    def __init__(self, path: str | Path, settings: StoreSettings | None = None, *,
                 owner: DatabaseOwner | None = None) -> None:
        """Open (creating, migrating) the database; ``owner`` is recorded when the file has none
        yet (a new file, or one from before owners were recorded)."""
        self.settings = settings or StoreSettings()
        if self.settings.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"store.synchronous must be FULL or NORMAL, "
                             f"got {self.settings.synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(self.path.parent, os.W_OK):  # SQLite needs it for the -wal and -shm
            raise StoreUnavailable(f"{self.path}: its directory {self.path.parent} is not "
                                   f"writable")
        _check_version(self.path, self.settings.busy_timeout_ms)
        self._engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self._engine, "connect", self._on_connect)
        event.listen(self._engine, "begin", _on_begin)
        # each statement shape's SQL, compiled once for named parameters (see WriteTx)
        self._sqls: dict[tuple[str, Op, tuple[str, ...], tuple[str, ...]], str] = {}
        self._record_shapes: set[tuple[str, ...]] = set()  # (table, *columns) of valid records
        try:
            self._migrate()
            self._tables = self._reflect()
            self._columns = {name: tuple(c.name for c in t.columns)
                             for name, t in self._tables.items()}
            # NOT NULL columns without a default (``id INTEGER PRIMARY KEY`` is nullable: rowid)
            self._required = {name: frozenset(c.name for c in t.columns
                                              if not c.nullable and c.server_default is None)
                              for name, t in self._tables.items()}
            if owner is not None:
                self._claim(owner)
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections and schema -----------------------------------------------------------------
    def _on_connect(self, dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun explicitly (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
            mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot use WAL mode (journal_mode is {mode})")
            cur.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
            cur.execute("PRAGMA wal_autocheckpoint = 0")  # see checkpoint()
            cur.execute(f"PRAGMA cache_size = -{int(self.settings.cache_kib)}")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    def _migrate(self) -> None:
        try:
            self._apply_migrations()
        except OperationalError as exc:
            if _is_busy(exc.orig):
                raise StoreUnavailable(f"{self.path}: locked by another process while "
                                       f"migrating ({exc.orig})") from None
            raise StoreError(f"{self.path}: migration failed, nothing applied: "
                             f"{exc.orig}") from None

    def _apply_migrations(self) -> None:
        with self._write_connection() as conn, conn.begin():
            conn.exec_driver_sql(_VERSION_TABLE)
            current = conn.exec_driver_sql(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version").scalar_one()
            if current > LATEST_VERSION:  # a newer engine migrated it after our first look
                raise StoreVersionError(_newer_message(self.path, current))
            missing = [m for m in MIGRATIONS if m.version > current]
            if missing:
                # a new file is created at the latest schema: news only for an existing one
                logger.log("INFO" if current else "DEBUG",
                           "store: migrating {} from schema v{} to v{}", self.path, current,
                           LATEST_VERSION)
            for migration in missing:
                for step in migration.steps:
                    conn.exec_driver_sql(step)
                conn.exec_driver_sql(
                    f"INSERT INTO schema_version (version, description, applied_ts) "
                    f"VALUES (?, ?, {_NOW_SQL})", (migration.version, migration.description))

    def _reflect(self) -> dict[str, Table]:
        metadata = MetaData()
        with self._engine.connect() as conn:
            metadata.reflect(conn)
        missing = sorted(TABLES - set(metadata.tables))
        if missing:  # the schema says it is migrated, yet a table is gone
            raise StoreVersionError(f"{self.path} is a damaged engine database (missing "
                                    f"table{'s' if len(missing) > 1 else ''} "
                                    f"{', '.join(missing)}); not modified")
        return dict(metadata.tables)

    def _claim(self, owner: DatabaseOwner) -> None:
        try:
            with self._write_connection() as conn, conn.begin():
                conn.exec_driver_sql(
                    f"INSERT OR IGNORE INTO database_owner (id, mode, trading_date, created_ts) "
                    f"VALUES (1, ?, ?, {_NOW_SQL})", (owner.mode, owner.trading_date.isoformat()))
        except DBAPIError as exc:
            raise StoreUnavailable(f"{self.path}: {exc.orig}") from None

    def owner(self) -> DatabaseOwner | None:
        """The mode and day this database was created for (None: not recorded)."""
        rows = self._select("database_owner")
        if not rows:
            return None
        return DatabaseOwner(rows[0]["mode"], date.fromisoformat(rows[0]["trading_date"]))

    def _write_connection(self) -> Connection:
        return self._engine.connect().execution_options(store_begin="BEGIN IMMEDIATE")

    def table_columns(self, table: str) -> tuple[str, ...]:
        return self._columns[table]

    # -- writing (the store writer actor only) --------------------------------------------------
    def writes_for(self, message: object) -> tuple[RowWrite, ...]:
        """The rows a store-bound message becomes; ``StoreRejected`` if it cannot be stored."""
        if isinstance(message, StoreRecord):
            return (self._record_write(message),)
        rows = _MESSAGE_ROWS.get(type(message))
        if rows is None:
            raise StoreRejected(f"the store has no table for {type(message).__name__}")
        return rows(message)

    def _record_write(self, rec: StoreRecord) -> RowWrite:
        values = {name: _sql_value(value) for name, value in rec.values}
        if (rec.table, *values) not in self._record_shapes:  # each shape is checked once
            self._check_record(rec.table, values)
            self._record_shapes.add((rec.table, *values))
        op, key = RECORD_TABLES[rec.table]
        return RowWrite(rec.table, op, values, key)

    def _check_record(self, table: str, values: Mapping[str, Any]) -> None:
        """``StoreRejected`` unless ``table`` takes records and ``values`` name its columns,
        every required one included."""
        if table not in RECORD_TABLES:
            raise StoreRejected(f"StoreRecord: table {table!r} is not writable by record; "
                                f"use one of {sorted(RECORD_TABLES)}")
        unknown = sorted(values.keys() - self._columns[table])
        if unknown:
            raise StoreRejected(f"StoreRecord {table}: unknown columns {unknown}")
        missing = sorted(self._required[table] - values.keys())
        if missing:
            raise StoreRejected(f"StoreRecord {table}: missing columns {missing}")

    def run_write(self, work: Callable[[WriteTx], T], *, checkpoint: bool = False) -> T:
        """Run ``work`` in one write transaction and commit it.

        ``checkpoint``: once committed, if the WAL holds ``checkpoint_pages`` pages or more,
        copy them into the database file (a passive checkpoint: it waits for no reader, and a
        busy database just leaves it to the next one). Only the store writer's batched writes
        ask for it: connections never checkpoint on their own (``wal_autocheckpoint`` 0), as
        SQLite would do it inside the commit that crossed its threshold, an order intent's as
        likely as any, adding the database file's sync to the order path. The last connection
        to close checkpoints too.

        A locked database is retried (``lock_retry_attempts``, backoff doubling from
        ``lock_retry_backoff_s``; each attempt itself waits up to ``busy_timeout_ms``); ``work``
        is then run again from the start, so it must only write through the ``WriteTx``.
        Raises ``StoreUnavailable`` when the write cannot be made; nothing was committed then.
        """
        attempts = self.settings.lock_retry_attempts
        delay = self.settings.lock_retry_backoff_s
        for attempt in range(1, attempts + 1):
            try:
                with self._write_connection() as conn, \
                        self._checkpointing(conn, checkpoint), conn.begin():
                    return work(WriteTx(conn, self._sql))
            except (DBAPIError, sqlite3.Error) as exc:
                # SQLAlchemy wraps what it executes (BEGIN, COMMIT); WriteTx's rows raise raw
                error = exc.orig if isinstance(exc, DBAPIError) else exc
                if isinstance(error, sqlite3.IntegrityError):
                    raise StoreRejected(str(error)) from None
                if not isinstance(error, sqlite3.OperationalError):
                    raise StoreUnavailable(f"{self.path}: {error}") from None
                if _is_busy(error) and attempt < attempts:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise StoreUnavailable(f"{self.path}: {error} "
                                       f"(after {attempt} attempt(s))") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    @contextmanager
    def _checkpointing(self, conn: Connection, on: bool) -> Iterator[None]:
        """While on, ``conn``'s commits checkpoint a WAL of ``checkpoint_pages`` or more pages
        (SQLite's own count, after the commit, outside its lock). The connection goes back to
        the pool checkpointing never again, or not at all."""
        if not on:
            yield
            return
        raw = conn.connection.driver_connection
        raw.execute(f"PRAGMA wal_autocheckpoint = {int(self.settings.checkpoint_pages)}")
        try:
            yield
        finally:
            try:
                raw.execute("PRAGMA wal_autocheckpoint = 0")
            except sqlite3.Error:
                conn.invalidate()

    def _sql(self, write: RowWrite) -> str:
        """The SQL of ``write``'s statement shape, with ``:name`` parameters (``_params``)."""
        shape = write.shape
        sql = self._sqls.get(shape)
        if sql is None:
            sql = self._sqls[shape] = str(self._build_statement(write).compile(
                dialect=_NAMED_PARAMS, column_keys=list(_params(write))))
        return sql

    def _build_statement(self, write: RowWrite) -> Executable:
        t = self._tables[write.table]
        if write.op is Op.INSERT:
            return insert(t)
        if write.op is Op.INSERT_NEW:
            return sqlite_insert(t).on_conflict_do_nothing()
        if write.op is Op.UPSERT:
            stmt = sqlite_insert(t)
            changed = {c: stmt.excluded[c] for c in write.values if c not in write.key}
            return stmt.on_conflict_do_update(index_elements=[t.c[k] for k in write.key],
                                              set_=changed)
        where = and_(*(t.c[k] == bindparam(f"key_{k}") for k in write.key))
        if write.op is Op.DELETE:
            return delete(t).where(where)
        return update(t).where(where).values(
            {c: bindparam(f"set_{c}") for c in write.values if c not in write.key})

    # -- reading ----------------------------------------------------------------------------------
    def _select(self, table: str, where: Mapping[str, Any] | None = None,
                order_by: Sequence[str] = (),
                extra: Callable[[Table], Iterable[ColumnElement[bool]]] | None = None,
                ) -> list[RowMapping]:
        """Rows of ``table`` matching ``where`` (None values are "any"), in ``order_by`` order."""
        t = self._tables[table]
        conditions = [t.c[k] == _sql_value(v) for k, v in (where or {}).items() if v is not None]
        if extra is not None:
            conditions.extend(extra(t))
        stmt = select(t).where(*conditions).order_by(*(t.c[c] for c in order_by))
        with self._engine.connect() as conn:
            return list(conn.execute(stmt).mappings())

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar_one())

    def order(self, client_id: str) -> StoredOrder | None:
        rows = self._select("orders", {"client_id": client_id})
        return _build(StoredOrder, rows[0]) if rows else None

    def orders(self, trading_date: date | None = None, strategy: str | None = None,
               account: str | None = None) -> list[StoredOrder]:
        rows = self._select("orders", {"trading_date": trading_date, "strategy": strategy,
                                       "account": account}, ("created_ts", "client_id"))
        return [_build(StoredOrder, r) for r in rows]

    def open_orders(self, strategy: str | None = None,
                    account: str | None = None) -> list[StoredOrder]:
        """Orders not in a terminal state (including ``submitting`` and ``unknown``)."""
        terminal = [s.value for s in OrderStatus if s.is_terminal]
        rows = self._select("orders", {"strategy": strategy, "account": account},
                            ("created_ts", "client_id"),
                            lambda t: [t.c.status.not_in(terminal)])
        return [_build(StoredOrder, r) for r in rows]

    def order_events(self, client_id: str) -> list[OrderEvent]:
        """Every recorded state change of one order, oldest first."""
        o, e = self._tables["orders"], self._tables["order_events"]
        stmt = (select(e, o.c.strategy, o.c.account, o.c.symbol, o.c.purpose)
                .join(o, o.c.client_id == e.c.client_id)
                .where(e.c.client_id == client_id).order_by(e.c.id))
        with self._engine.connect() as conn:
            return [_build(OrderEvent, r) for r in conn.execute(stmt).mappings()]

    def fills(self, strategy: str | None = None, account: str | None = None,
              trading_date: date | None = None, client_id: str | None = None) -> list[Fill]:
        rows = self._select("fills", {"strategy": strategy, "account": account,
                                      "trading_date": trading_date, "client_id": client_id},
                            ("id",))
        return [_build(Fill, r) for r in rows]

    def pending_fills(self, account: str | None = None,
                      trading_date: date | None = None) -> list[PendingFill]:
        """Fills stored by quantity while their price was unknown (each priced later by a
        ``Fill`` of the same order), oldest first."""
        rows = self._select("pending_fills", {"account": account, "trading_date": trading_date},
                            ("id",))
        return [_build(PendingFill, r) for r in rows]

    def fill_keys(self, strategy: str | None = None, account: str | None = None,
                  trading_date: date | None = None) -> set[tuple[str, int]]:
        """(broker order id, cumulative quantity) of every stored fill: the apply-once keys."""
        return {f.key for f in self.fills(strategy, account, trading_date)}

    def positions(self, strategy: str | None = None, account: str | None = None,
                  open_only: bool = True) -> list[PositionMark]:
        rows = self._select("positions", {"strategy": strategy, "account": account},
                            ("strategy", "account", "symbol"),
                            (lambda t: [t.c.quantity != 0]) if open_only else None)
        return [_build(PositionMark, r) for r in rows]

    def position_risks(self, account: str | None = None,
                       trading_date: date | None = None) -> list[PositionRisk]:
        """The stop distance each position of the day was declared with (the latest for each
        strategy and symbol), by strategy and symbol."""
        rows = self._select("position_risks", {"account": account, "trading_date": trading_date},
                            ("strategy", "account", "symbol"))
        return [_build(PositionRisk, r) for r in rows]

    def last_prices(self) -> dict[str, StoredPrice]:
        return {r["symbol"]: _build(StoredPrice, r) for r in self._select("prices")}

    def realized_r(self, strategy: str, trading_date: date, account: str | None = None) -> float:
        """The day's realized R of a strategy: the sum over its closed trades."""
        t = self._tables["trades"]
        conditions = [t.c.strategy == strategy, t.c.trading_date == trading_date.isoformat()]
        if account is not None:
            conditions.append(t.c.account == account)
        stmt = select(func.coalesce(func.sum(t.c.r_multiple), 0.0)).where(*conditions)
        with self._engine.connect() as conn:
            return float(conn.execute(stmt).scalar_one())

    def trades(self, strategy: str | None = None, trading_date: date | None = None,
               account: str | None = None) -> list[StoredTrade]:
        rows = self._select("trades", {"strategy": strategy, "trading_date": trading_date,
                                       "account": account}, ("exit_ts", "id"))
        return [_build(StoredTrade, r) for r in rows]

    def risk_state(self, strategy: str, account: str) -> StoredRiskState | None:
        rows = self._select("risk_state", {"strategy": strategy, "account": account})
        return _build(StoredRiskState, rows[0]) if rows else None

    def daily_state(self, strategy: str, account: str,
                    trading_date: date) -> StoredDailyState | None:
        rows = self._select("daily_state", {"strategy": strategy, "account": account,
                                            "trading_date": trading_date})
        return _build(StoredDailyState, rows[0]) if rows else None

    def risk_events(self, strategy: str | None = None,
                    trading_date: date | None = None) -> list[RiskEvent]:
        rows = self._select("risk_events", {"strategy": strategy, "trading_date": trading_date},
                            ("ts", "id"))
        return [_build(RiskEvent, r) for r in rows]

    def strategy_state(self, name: str) -> StoredStrategyState | None:
        rows = self._select("strategy_state", {"name": name})
        return _build(StoredStrategyState, rows[0]) if rows else None

    @staticmethod
    def state_from_row(values: Mapping[str, Any]) -> StoredStrategyState:
        """A ``strategy_state`` row's values (as written) back as the stored state."""
        return _build(StoredStrategyState, values)

    def strategy_states(self, prefix: str) -> list[StoredStrategyState]:
        """Every state row whose name starts with ``prefix``, by name."""
        rows = self._select("strategy_state", order_by=("name",),
                            extra=lambda t: [t.c.name.startswith(prefix, autoescape=True)])
        return [_build(StoredStrategyState, r) for r in rows]

    def bars(self, symbol: str, trading_date: date) -> list[Bar]:
        rows = self._select("bars", {"symbol": symbol, "trading_date": trading_date}, ("start",))
        return [_build(Bar, r) for r in rows]

    def day_bar_rows(self, trading_date: date) -> list[tuple[Any, ...]]:
        """Every bar of the day, every symbol, as plain tuples in ``Bar``'s field order
        (``BAR_COLUMNS``), by symbol and start: one query and no row objects, for reading a
        whole day back at once (a replay's summary digests 31k of them)."""
        return self._plain_rows(f"SELECT {', '.join(BAR_COLUMNS)} FROM bars "
                                f"WHERE trading_date = ? ORDER BY symbol, start",
                                (trading_date.isoformat(),))

    def day_gap_counts(self, trading_date: date) -> dict[str, int]:
        """How many bar gaps each symbol has on the day (symbols without any are absent)."""
        return dict(self._plain_rows("SELECT symbol, COUNT(*) FROM bar_gaps "
                                     "WHERE trading_date = ? GROUP BY symbol",
                                     (trading_date.isoformat(),)))

    def _plain_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one read statement as the DBAPI's tuples (no SQLAlchemy row objects)."""
        with self._engine.connect() as conn:
            return conn.connection.driver_connection.execute(sql, params).fetchall()

    def bar_gaps(self, symbol: str, trading_date: date) -> list[BarGap]:
        rows = self._select("bar_gaps", {"symbol": symbol, "trading_date": trading_date},
                            ("start",))
        return [_build(BarGap, r) for r in rows]

    def swings(self, symbol: str, trading_date: date) -> list[Swing]:
        """Swing creations and updates of a symbol's day, in the order they happened."""
        rows = self._select("swings", {"symbol": symbol, "trading_date": trading_date}, ("id",))
        return [_build(Swing, r, _SWING_COLUMNS) for r in rows]

    def swing_breaks(self, symbol: str, trading_date: date) -> list[SwingBroken]:
        rows = self._select("swing_breaks", {"symbol": symbol, "trading_date": trading_date},
                            ("id",))
        return [_build(SwingBroken, r, _BREAK_COLUMNS) for r in rows]

    def restarts(self, name: str | None = None, since: float | None = None) -> list[RestartRecord]:
        rows = self._select("restarts", {"name": name}, ("ts", "id"), _since(since))
        return [_build(RestartRecord, r) for r in rows]

    def dead_letters(self, since: float | None = None) -> list[DeadLetter]:
        rows = self._select("dead_letters", None, ("ts", "id"), _since(since))
        return [_build(DeadLetter, r) for r in rows]

    def alerts(self, since: float | None = None) -> list[Alert]:
        rows = self._select("alerts", None, ("ts", "id"), _since(since))
        return [_build(Alert, r) for r in rows]

    def heartbeats(self, since: float | None = None) -> list[Heartbeat]:
        rows = self._select("heartbeats", None, ("ts", "id"), _since(since))
        return [_build(Heartbeat, r) for r in rows]

    def corrections(self, trading_date: date | None = None,
                    strategy: str | None = None) -> list[Correction]:
        rows = self._select("reconciliation", {"trading_date": trading_date, "strategy": strategy},
                            ("ts", "id"))
        return [_build(Correction, r) for r in rows]

    def accounts(self) -> list[StoredAccount]:
        return [_build(StoredAccount, r) for r in self._select("accounts", None, ("name",))]

    def instrument_facts(self, trading_date: date, account: str,
                         underlying: str) -> StoredInstrumentFacts | None:
        rows = self._select("instrument_facts", {"trading_date": trading_date,
                                                 "account": account, "underlying": underlying})
        return _build(StoredInstrumentFacts, rows[0]) if rows else None

    def day_transitions(self, account: str | None = None) -> list[StoredDayTransition]:
        rows = self._select("day_transitions", {"account": account}, ("ts", "id"))
        return [_build(StoredDayTransition, r) for r in rows]

    def holidays(self, year: int) -> StoredHolidays | None:
        rows = self._select("market_holidays", {"year": year})
        return _build(StoredHolidays, rows[0]) if rows else None

    def timings(self, day: date) -> StoredTimings | None:
        rows = self._select("market_timings", {"trading_date": day})
        return _build(StoredTimings, rows[0]) if rows else None


def _since(since: float | None) -> Callable[[Table], list[ColumnElement[bool]]]:
    return lambda t: [] if since is None else [t.c.ts >= since]


def _on_begin(conn: Connection) -> None:
    """Begin explicitly: ``BEGIN IMMEDIATE`` for writes (takes the write lock up front, so the
    busy timeout applies and no deadlock can arise), a plain deferred ``BEGIN`` for reads."""
    conn.exec_driver_sql(conn.get_execution_options().get("store_begin", "BEGIN"))


def _newer_message(path: Path, version: int) -> str:
    return (f"{path} has schema version {version}, newer than this engine knows "
            f"(v{LATEST_VERSION}); it was not modified — run a newer engine")


def owner_of(path: Path) -> DatabaseOwner | None:
    """Whose ``path`` is, read without modifying it: the owner recorded in an engine database,
    or None for an engine database that records none (made before owners were recorded).
    ``StoreVersionError`` for anything else: not SQLite, another program's database, an empty
    file, a newer engine's database."""
    if path.is_dir():
        raise StoreVersionError(f"{path} is a directory, not an engine database")
    if path.stat().st_size == 0:
        raise StoreVersionError(f"{path} is an empty file, not an engine database")
    _check_version(path, 0)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreVersionError(f"{path} cannot be read as a database: {exc}") from None
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            raise StoreVersionError(f"{path} is not an engine database (no schema_version "
                                    f"table)")
        if "database_owner" not in tables:
            return None
        row = conn.execute("SELECT mode, trading_date FROM database_owner").fetchone()
        return DatabaseOwner(str(row[0]), date.fromisoformat(row[1])) if row else None
    except (sqlite3.Error, ValueError, TypeError) as exc:
        raise StoreVersionError(f"{path} cannot be read as a database: {exc}") from None
    finally:
        conn.close()


def _check_version(path: Path, busy_timeout_ms: int) -> None:
    """Refuse a newer or foreign database before any pragma or migration touches it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            if tables:
                raise StoreVersionError(f"{path} is a SQLite database but not an engine "
                                        f"database (no schema_version table); not modified")
            return
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise StoreUnavailable(f"{path}: locked by another process ({exc})") from None
        raise StoreVersionError(f"{path} cannot be read as a database: {exc}") from None
    finally:
        conn.close()
    if version > LATEST_VERSION:
        raise StoreVersionError(_newer_message(path, version))
