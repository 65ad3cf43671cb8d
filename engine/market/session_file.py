"""The recorded-session file: one SQLite file (WAL while written) holding one session's ticks.

Owns the on-disk format shared by the recorder, the synthetic-day generator and replay:

- ``ticks``: one row per tick in arrival order (``seq`` 1, 2, 3, ...) with the raw fields of
  ``engine.messages.Tick`` (symbol, exchange, ltp, cumulative volume, exchange time, receive time,
  bid, ask, oi);
- ``meta``: key/value text (format marker, schema version, and whatever the producer records:
  date, seed, generator version, instrument facts, universe, created);
- ``symbols``: the instruments of the session (symbol, exchange, kind, strike, expiry).

``SessionWriter`` appends ticks in batches, one transaction per batch: a process killed at any
moment loses at most the batch not yet committed and never leaves a corrupt file. ``SessionReader``
streams the ticks back as ``Tick`` objects in arrival order, in chunks, so memory stays flat for
any file size. A path that is missing, not SQLite, or not a session file raises
``SessionFileError`` naming the path, and so does, when opened, a file without ticks or with a
value of the wrong type in one (text in ``ltp``: counted, the first named). A file whose receive
times go back is played in receive-time order, with a warning that counts the ticks concerned
(docs/operations, "What the engine refuses").
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from math import isfinite
from pathlib import Path
from types import TracebackType
from typing import Any

from loguru import logger

from engine.market.instruments import parse_option_symbol
from engine.market.tick_columns import CachedTicks, CacheUnusable, ColumnWriter
from engine.messages import Tick, tick_from_row
from engine.runtime.clock import Clock, WallClock, fmt_ist
from engine.settings import setting

FORMAT_NAME = "nifty-engine-session"
SCHEMA_VERSION = 1

# Column order of the ``ticks`` table after ``seq`` is exactly ``Tick``'s field order, so a row
# is turned into a Tick positionally (the fastest way there is); a test pins the match.
TICK_COLUMNS: tuple[str, ...] = ("symbol", "exchange", "ltp", "recv_ts", "exchange_ts", "volume",
                                 "bid", "ask", "oi")

_TICK_TYPES: dict[str, type] = {"seq": int, "symbol": str, "exchange": str, "ltp": float,
                                 "recv_ts": float, "exchange_ts": float, "volume": int,
                                 "bid": float, "ask": float, "oi": int}
_TICK_NOT_NULL = {"symbol", "exchange", "ltp", "recv_ts", "bid", "ask"}
_INSERT_TICK = (f"INSERT INTO ticks (seq, {', '.join(TICK_COLUMNS)}) "
                f"VALUES ({', '.join('?' * (len(TICK_COLUMNS) + 1))})")
_SELECT_TICKS = f"SELECT {', '.join(TICK_COLUMNS)} FROM ticks"
_REQUIRED_COLUMNS: dict[str, set[str]] = {
    "meta": {"key", "value"},
    "symbols": {"symbol", "exchange", "kind", "strike", "expiry"},
    "ticks": {"seq", *TICK_COLUMNS},
}
_READ_CHUNK = 8192
_RESERVED_META = frozenset({"format", "schema_version"})


class SessionFileError(Exception):
    """A session file cannot be opened, read or written as asked; names the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"session file {self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class SessionFileSettings:
    """Tunables of session-file writing (section ``session_file``)."""

    batch_size: int = setting(500, "ticks per write transaction (a crash loses at most one batch)",
                              min=1, max=1_000_000)


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One instrument of a session. ``kind`` is INDEX, CE, PE or OTHER."""

    symbol: str
    exchange: str
    kind: str
    strike: int | None = None
    expiry: date | None = None

    @classmethod
    def for_symbol(cls, symbol: str, exchange: str) -> SymbolInfo:
        """Describe a symbol from its name: an option symbol is parsed, an index is named so."""
        if exchange.endswith("_INDEX"):
            return cls(symbol, exchange, "INDEX")
        try:
            option = parse_option_symbol(symbol)
        except ValueError:
            return cls(symbol, exchange, "OTHER")
        return cls(symbol, exchange, option.kind, option.strike, option.expiry)


def _meta_text(value: object) -> str:
    """Meta values are text: strings as they are, anything else as canonical JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _check_not_reserved(meta: Mapping[str, object]) -> None:
    reserved = sorted(_RESERVED_META & set(meta))
    if reserved:
        raise ValueError(f"meta keys {reserved} are set by the session file itself")


def _now(clock: Clock | None) -> float:
    """Engine time from ``clock``; without one, the wall clock (for tools run outside an engine)."""
    if clock is not None:
        return clock.time()
    wall = WallClock()
    try:
        return wall.time()
    finally:
        wall.stop()


def _remove_with_sidecars(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


class SessionWriter:
    """Appends ticks to a session file in batches (one transaction per batch, WAL).

    ``append``/``extend`` buffer; a full batch is committed at once. ``flush`` commits a partial
    batch (the owner calls it on a timer so a quiet feed is not held back). ``close`` flushes and
    leaves a self-contained file (journal mode back to DELETE). A new file gets the format marker,
    the schema version, ``created`` (from ``clock``) and the given ``meta``; ``append=True`` opens
    an existing session file and continues its sequence. ``batch_size`` defaults to
    ``SessionFileSettings.batch_size``.
    """

    def __init__(self, path: str | Path, *, batch_size: int | None = None,
                 meta: Mapping[str, object] | None = None,
                 symbols: Iterable[SymbolInfo] = (), append: bool = False,
                 overwrite: bool = False, clock: Clock | None = None) -> None:
        if batch_size is None:
            batch_size = SessionFileSettings().batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_not_reserved(meta or {})
        self.path = Path(path)
        self.batch_size = batch_size
        self._buffer: list[tuple[Any, ...]] = []
        self._closed = False
        exists = self.path.exists()
        if exists and overwrite:
            _remove_with_sidecars(self.path)
            exists = False
        if exists and not append:
            raise SessionFileError(self.path, "already exists (pass append=True to continue it "
                                              "or overwrite=True to replace it)")
        if not exists and not self.path.parent.is_dir():
            raise SessionFileError(self.path, "its directory does not exist")
        # imported here: sqlite_utils imports pandas when it is installed (half a second), and
        # only a writer uses it (a replay only reads)
        import sqlite_utils

        self._conn = _connect(self.path, read_only=False)
        self._db = sqlite_utils.Database(self._conn)
        try:
            if exists:
                self._next_seq = self._continue(meta or {}, symbols)
            else:
                self._next_seq = self._create(meta or {}, symbols, clock)
        except BaseException:
            self._conn.close()
            raise

    # -- schema and side tables ----------------------------------------------------------------
    def _create(self, meta: Mapping[str, object], symbols: Iterable[SymbolInfo],
                clock: Clock | None) -> int:
        """A new file: schema, marker, meta and symbols in one transaction (all or nothing)."""
        self._prepare()
        with self._db.atomic():
            self._create_schema()
            self._put_meta({"format": FORMAT_NAME, "schema_version": str(SCHEMA_VERSION),
                            "created": fmt_ist(_now(clock), with_date=True), **meta})
            self.add_symbols(symbols)
        return 1

    def _continue(self, meta: Mapping[str, object], symbols: Iterable[SymbolInfo]) -> int:
        """An existing session file: check it, then carry on after its last tick."""
        _validate(self.path, self._conn)
        self._prepare()
        with self._db.atomic():
            self._put_meta(meta)
            self.add_symbols(symbols)
        return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM ticks").fetchone()[0])

    def _prepare(self) -> None:
        try:
            self._db.enable_wal()
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise SessionFileError(self.path, f"cannot open for writing: {exc}") from exc

    # -- schema and side tables ----------------------------------------------------------------
    def _create_schema(self) -> None:
        with self._db.atomic():
            self._db["meta"].create({"key": str, "value": str}, pk="key",
                                    not_null={"value"})
            self._db["symbols"].create({"symbol": str, "exchange": str, "kind": str,
                                        "strike": int, "expiry": str},
                                       pk=("symbol", "exchange"), not_null={"kind"})
            self._db["ticks"].create(_TICK_TYPES, pk="seq", not_null=_TICK_NOT_NULL)

    def set_meta(self, values: Mapping[str, object]) -> None:
        """Insert or replace meta keys (committed at once)."""
        self._check_open()
        _check_not_reserved(values)
        self._put_meta(values)

    def _put_meta(self, values: Mapping[str, object]) -> None:
        rows = [{"key": str(k), "value": _meta_text(v)} for k, v in values.items()]
        if rows:
            with self._db.atomic():
                self._db["meta"].upsert_all(rows, pk="key")

    def add_symbols(self, symbols: Iterable[SymbolInfo]) -> None:
        """Insert or replace instrument rows (committed at once)."""
        self._check_open()
        rows = [{"symbol": s.symbol, "exchange": s.exchange, "kind": s.kind, "strike": s.strike,
                 "expiry": s.expiry.isoformat() if s.expiry else None} for s in symbols]
        if rows:
            with self._db.atomic():
                self._db["symbols"].upsert_all(rows, pk=("symbol", "exchange"))

    # -- ticks ---------------------------------------------------------------------------------
    def append(self, tick: Tick) -> None:
        """Buffer one tick; commits when the batch is full. A bad tick raises and adds nothing."""
        self._check_open()
        self._buffer.append(self._row(tick, self._next_seq + len(self._buffer)))
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def extend(self, ticks: Iterable[Tick]) -> None:
        """``append`` each tick in order."""
        for tick in ticks:
            self.append(tick)

    def flush(self) -> None:
        """Commit every buffered tick now (one transaction per full batch).

        A failed commit (disk full, file locked) raises ``SessionFileError`` and keeps the batch
        buffered, so a later ``flush`` can still write it.
        """
        self._check_open()
        while self._buffer:
            batch = self._buffer[:self.batch_size]
            try:
                with self._db.atomic():
                    self._conn.executemany(_INSERT_TICK, batch)
            except sqlite3.Error as exc:
                raise SessionFileError(self.path, f"cannot write ticks: {exc}") from exc
            del self._buffer[:len(batch)]
            self._next_seq += len(batch)

    @property
    def pending(self) -> int:
        """Ticks buffered and not yet committed."""
        return len(self._buffer)

    @property
    def written(self) -> int:
        """Ticks committed to the file by this writer and any earlier one (the last seq)."""
        return self._next_seq - 1

    def close(self) -> None:
        """Flush, then leave a single self-contained file (journal mode DELETE) unless another
        connection still reads it (then the file stays in WAL mode, complete). Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
            try:
                self._db.disable_wal()
            except sqlite3.OperationalError as exc:
                logger.debug("session file {} stays in WAL mode: {}", self.path, exc)
        finally:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionFileError(self.path, "writer is closed")

    def _row(self, tick: Tick, seq: int) -> tuple[Any, ...]:
        """The row for ``tick``, or a clear error for a value the file could not hold as given
        (checked here so one bad tick can never block the batch it would have joined)."""
        if type(tick) is Tick:
            sym, exch, ltp, recv, ex_ts, vol, bid, ask, oi = (
                tick.symbol, tick.exchange, tick.ltp, tick.recv_ts, tick.exchange_ts,
                tick.volume, tick.bid, tick.ask, tick.oi)
            # the common case in one expression; anything unusual gets the precise check below
            if (type(sym) is str and sym and type(exch) is str and exch
                    and type(ltp) in _PLAIN_NUMBERS and type(recv) in _PLAIN_NUMBERS
                    and type(bid) in _PLAIN_NUMBERS and type(ask) in _PLAIN_NUMBERS
                    and (ex_ts is None or type(ex_ts) in _PLAIN_NUMBERS)
                    and (vol is None or type(vol) is int) and (oi is None or type(oi) is int)
                    and isfinite(ltp) and isfinite(recv) and isfinite(bid) and isfinite(ask)
                    and (ex_ts is None or isfinite(ex_ts))):
                return (seq, sym, exch, ltp, recv, ex_ts, vol, bid, ask, oi)
        _check_tick(tick)
        return (seq, tick.symbol, tick.exchange, tick.ltp, tick.recv_ts, tick.exchange_ts,
                tick.volume, tick.bid, tick.ask, tick.oi)


_PLAIN_NUMBERS = frozenset({int, float})


def _check_tick(tick: object) -> None:
    """Raise the precise error for a tick the file cannot hold as given."""
    if not isinstance(tick, Tick):
        raise TypeError(f"SessionWriter.append expects a Tick, got {type(tick).__name__}")
    for name in ("symbol", "exchange"):
        text = getattr(tick, name)
        if not isinstance(text, str) or not text:
            raise ValueError(f"tick {name} must be a non-empty string, got {text!r}")
    for name in ("ltp", "recv_ts", "bid", "ask", "exchange_ts"):
        value = getattr(tick, name)
        if value is None and name == "exchange_ts":
            continue
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"{tick.symbol}: {name} is not a finite number ({value!r})")
    for name in ("volume", "oi"):
        value = getattr(tick, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{tick.symbol}: {name} must be an integer or None, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SessionReader:
    """Reads a session file: meta, symbols, count, time range and the ticks in arrival order.

    With ``column_cache`` (the default) the ticks come from the file's column cache
    (``engine.market.tick_columns``) while the file is unchanged, and a full read builds it.
    """

    def __init__(self, path: str | Path, *, column_cache: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SessionFileError(self.path, "does not exist")
        if not self.path.is_file():
            raise SessionFileError(self.path, "is not a file")
        self._conn = _connect(self.path, read_only=True)
        self._column_cache = column_cache
        try:
            self._meta = _validate(self.path, self._conn)
            self.identity = file_identity(self.path)
            self._cached = CachedTicks.load(self.path, self.identity) if column_cache else None
            recorded = _recorded_scan(self._cached)
            if recorded is None:
                self._cached = None
            self.scan = _scanned(self.path, self._conn, self.identity, recorded)
        except SessionFileError:
            self._conn.close()
            raise
        self.out_of_order = self.scan.out_of_order
        # receive time is what the replay clock runs on: a file whose receive times go back is
        # played in receive-time order (the file is not changed)
        self._order = "recv_ts, seq" if self.out_of_order else "seq"
        if self._cached is not None and self._cached.order != self._order:
            self._cached = None
        if self.out_of_order:
            logger.warning("session file {}: {:,} of {:,} ticks are out of receive-time order; "
                           "they are played in receive-time order", self.path,
                           self.out_of_order, self.scan.ticks)

    def meta(self) -> dict[str, str]:
        """Every meta key with its text value (JSON for structured values)."""
        return dict(self._meta)

    def symbols(self) -> list[SymbolInfo]:
        rows = self._query("SELECT symbol, exchange, kind, strike, expiry FROM symbols "
                           "ORDER BY rowid")
        return [SymbolInfo(s, e, k, strike, date.fromisoformat(x) if x else None)
                for s, e, k, strike, x in rows]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM ticks")[0][0])

    def time_range(self) -> tuple[float, float] | None:
        """Earliest and latest receive time, or None for a file with no ticks (from the scan on
        opening while the file is unchanged since)."""
        if self.identity is not None and file_identity(self.path) == self.identity:
            return self.scan.first_recv, self.scan.last_recv
        lo, hi = self._query("SELECT MIN(recv_ts), MAX(recv_ts) FROM ticks")[0]
        return None if lo is None else (float(lo), float(hi))

    def ticks(self, start: float | None = None, end: float | None = None) -> Iterator[Tick]:
        """Ticks in arrival (seq) order with ``start <= recv_ts < end`` (either bound optional);
        in receive-time order (then seq) when the file's receive times go back somewhere.

        Streams in chunks; from SQLite, the iterator holds a read snapshot of the file until
        exhausted. The column cache gives the same ticks (equal values of the same types, in
        the same order); a full SQLite read of an unchanged file builds it.
        """
        cached = self._cached
        if (cached is not None and _exact_bound(start) and _exact_bound(end)
                and file_identity(self.path) == cached.identity):
            return self._cached_stream(cached, start, end)
        return self._stream(self._select(start, end),
                            build=self._column_cache and start is None and end is None)

    def _select(self, start: float | None, end: float | None, skip: int = 0) -> sqlite3.Cursor:
        where: list[str] = []
        params: list[float] = []
        if start is not None:
            where.append("recv_ts >= ?")
            params.append(start)
        if end is not None:
            where.append("recv_ts < ?")
            params.append(end)
        sql = (_SELECT_TICKS + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {self._order}" + (" LIMIT -1 OFFSET ?" if skip else ""))
        try:
            return self._conn.execute(sql, [*params, skip] if skip else params)
        except sqlite3.Error as exc:
            raise SessionFileError(self.path, f"cannot read ticks: {exc}") from exc

    def _stream(self, cursor: sqlite3.Cursor, *, build: bool = False) -> Iterator[Tick]:
        """The cursor's rows as ticks; with ``build``, the column cache is written on the way
        (made here, not in ``ticks``, so an iterator never started leaves no temporary file)."""
        writer = (ColumnWriter.for_read(self.path, self.identity, self.scan.ticks, self._order,
                                        asdict(self.scan)) if build else None)
        try:
            while True:
                try:
                    rows = cursor.fetchmany(_READ_CHUNK)
                except sqlite3.Error as exc:
                    raise SessionFileError(self.path, f"cannot read ticks: {exc}") from exc
                if not rows:
                    break
                if writer is not None:
                    writer.add(rows)
                yield from map(tick_from_row, rows)
            if writer is not None:
                writer.finish(file_identity(self.path))
                writer = None
                self._cached = CachedTicks.load(self.path, self.identity)
        finally:
            if writer is not None:
                writer.abort()
            cursor.close()

    def _cached_stream(self, cached: CachedTicks, start: float | None,
                       end: float | None) -> Iterator[Tick]:
        """The ticks from the column cache; one that turns out unusable part way (changed under
        the reader) hands over to SQLite at the first tick not yet given."""
        done = 0
        try:
            for count, ticks in cached.chunks(*cached.bounds(start, end)):
                yield from ticks
                done += count
            return
        except CacheUnusable as exc:
            logger.info("session file {}: tick cache unusable, reading SQLite ({})",
                        self.path, exc)
        self._cached = None
        yield from self._stream(self._select(start, end, done),
                                build=not done and start is None and end is None)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise SessionFileError(self.path, f"cannot read: {exc}") from exc


def _exact_bound(bound: float | None) -> bool:
    """A bound the cache compares exactly as SQLite does: a number a float64 holds (no NaN)."""
    return bound is None or (isinstance(bound, (int, float)) and float(bound) == bound)


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """Open without ever creating a file by accident (URI mode ro/rwc), autocommit mode."""
    mode = "ro" if read_only else "rwc"
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SessionFileError(path, f"cannot open: {exc}") from exc


def _number(column: str, *, nullable: bool = False) -> str:
    """SQL: ``column`` holds a finite number. Comparisons, not ``typeof()`` (several times
    faster over a day's ticks): SQLite orders every number before any text or blob, reads the
    literal 1e999 as infinity, and NULL makes the test NULL (counted as failed below)."""
    check = f"({column} > -1e999 AND {column} < 1e999)"
    return f"({column} IS NULL OR {check})" if nullable else check


def _text(column: str) -> str:
    """SQL: ``column`` holds non-empty text (text sorts after '' and before any blob)."""
    return f"({column} > '' AND {column} < x'')"


_TICK_CHECKS: dict[str, str] = {
    name: f"ifnull({check}, 0)" for name, check in {
        "symbol": _text("symbol"), "exchange": _text("exchange"),
        "ltp": _number("ltp"), "recv_ts": _number("recv_ts"),
        "exchange_ts": _number("exchange_ts", nullable=True),
        "volume": "typeof(volume) IN ('integer', 'null')",
        "bid": _number("bid"), "ask": _number("ask"),
        "oi": "typeof(oi) IN ('integer', 'null')",
    }.items()}
_TICK_OK = " AND ".join(_TICK_CHECKS.values())


def _check_ticks(path: Path, conn: sqlite3.Connection) -> tuple[int, float, float]:
    """The number of ticks and the earliest and latest receive time; ``SessionFileError`` for a
    file with none, or with a value of the wrong type (text in ``ltp``, a blob, an infinity):
    counted, the first one named."""
    try:
        total, bad, first, last = conn.execute(
            f"SELECT COUNT(*), TOTAL(NOT ({_TICK_OK})), MIN(recv_ts), MAX(recv_ts) FROM ticks")\
            .fetchone()
        if not total:
            raise SessionFileError(path, "holds no ticks")
        if not bad:
            return int(total), float(first), float(last)
        row = conn.execute(f"SELECT seq, {', '.join(_TICK_CHECKS)} FROM ticks "
                           f"WHERE NOT ({_TICK_OK}) ORDER BY seq LIMIT 1").fetchone()
        flags = conn.execute(f"SELECT {', '.join(_TICK_CHECKS.values())} FROM ticks "
                             f"WHERE seq = ?", (row[0],)).fetchone()
    except sqlite3.Error as exc:
        raise SessionFileError(path, f"cannot read ticks: {exc}") from exc
    column = next(c for c, ok in zip(_TICK_CHECKS, flags, strict=True) if not ok)
    value = row[1 + list(_TICK_CHECKS).index(column)]
    raise SessionFileError(path, f"{int(bad):,} of {int(total):,} ticks hold a value of the "
                                 f"wrong type (the first: seq {row[0]}, {column} = "
                                 f"{_shown(value)})")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True, slots=True)
class TickScan:
    """What the full check of a file's ticks found (``SessionReader`` scans on opening)."""

    ticks: int
    out_of_order: int
    first_recv: float  # the earliest and latest receive time
    last_recv: float


#: A file's identity for the scan cache: resolved path, device, inode, size, mtime (ns).
FileIdentity = tuple[str, int, int, int, int]

# Files already scanned by this process, by identity: a replay opens its session up to three
# times (the cache check, the database name, the driver), and each full scan reads every tick.
_SCANNED: dict[FileIdentity, TickScan] = {}


def file_identity(path: str | Path) -> FileIdentity | None:
    """The identity the scan cache knows a file by; None for a file being written (a ``-wal``
    beside it) or one that cannot be stat'ed: such a file is scanned on every open."""
    path = Path(path)
    try:
        st = path.stat()
        if path.with_name(path.name + "-wal").exists():
            return None
    except OSError:
        return None
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def trust_scan(identity: FileIdentity, scan: TickScan) -> None:
    """Take ``scan`` as the result of scanning the file known by ``identity`` (a scan recorded
    earlier, e.g. by the bundled day's stamp), so opening that unchanged file does not scan."""
    _SCANNED[identity] = scan


def _recorded_scan(cached: CachedTicks | None) -> TickScan | None:
    """The scan a column cache recorded, if it is a sound one of its rows."""
    if cached is None:
        return None
    try:
        scan = TickScan(**cached.scan)
    except TypeError:
        return None
    numbers = all(isinstance(v, (int, float)) for v in (scan.first_recv, scan.last_recv))
    return scan if (scan.ticks == cached.rows and type(scan.out_of_order) is int
                    and numbers) else None


def _scanned(path: Path, conn: sqlite3.Connection, identity: FileIdentity | None,
             recorded: TickScan | None) -> TickScan:
    """The file's ``TickScan``, scanned once per process for a file that has not changed since
    (same ``identity``: inode, size and mtime, no ``-wal`` beside it), and not at all while its
    column cache matches (``recorded``: the scan that built it). The identity is taken before
    the scan, so a file changed while it is scanned is scanned again next time."""
    if identity is not None and identity in _SCANNED:
        return _SCANNED[identity]
    found = recorded
    if found is None:
        ticks, first, last = _check_ticks(path, conn)
        found = TickScan(ticks, _out_of_order(path, conn), first, last)
    if identity is not None:
        _SCANNED[identity] = found
    return found


def _out_of_order(path: Path, conn: sqlite3.Connection) -> int:
    """How many ticks arrived (by seq) with a receive time earlier than one before them."""
    late = 0
    latest = -math.inf
    try:
        for (recv,) in conn.execute("SELECT recv_ts FROM ticks ORDER BY seq"):
            if recv < latest:
                late += 1
            else:
                latest = recv
    except sqlite3.Error as exc:
        raise SessionFileError(path, f"cannot read ticks: {exc}") from exc
    return late


def _validate(path: Path, conn: sqlite3.Connection) -> dict[str, str]:
    """Check the format marker, schema version and columns; return the meta table."""
    try:
        tables = {name: {row[1] for row in conn.execute(f"PRAGMA table_info({name})")}
                  for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise SessionFileError(path, f"not an SQLite database ({exc})") from exc
    missing = sorted(set(_REQUIRED_COLUMNS) - set(tables))
    if missing:
        raise SessionFileError(path, f"not a session file (missing tables: {', '.join(missing)})")
    for table, needed in _REQUIRED_COLUMNS.items():
        lacking = sorted(needed - tables[table])
        if lacking:
            raise SessionFileError(path, f"wrong schema: table {table} lacks "
                                         f"{', '.join(lacking)}")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT_NAME:
        raise SessionFileError(path, f"not a session file (format {meta.get('format')!r})")
    version = meta.get("schema_version", "")
    if version != str(SCHEMA_VERSION):
        raise SessionFileError(path, f"unsupported schema version {version!r} "
                                     f"(this engine reads {SCHEMA_VERSION})")
    return meta
