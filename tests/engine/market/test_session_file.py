"""Session files: exact round trip, batching, append, crash safety, and clear errors."""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import tracemalloc
from datetime import date
from pathlib import Path

import pytest

from engine.market.session_file import (
    FORMAT_NAME,
    TICK_COLUMNS,
    SessionFileError,
    SessionFileSettings,
    SessionReader,
    SessionWriter,
    SymbolInfo,
)
from engine.messages import Tick
from engine.runtime.clock import VirtualClock, ist_epoch

T0 = ist_epoch(2025, 9, 3, 9, 15)


def sample_ticks() -> list[Tick]:
    """Ticks exercising every field: None where allowed, awkward floats, big integers."""
    return [
        Tick("NIFTY", "NSE_INDEX", 24000.05, T0 + 0.012345, T0, 0),
        Tick("NIFTY09SEP2524000CE", "NFO", 172.35, T0 + 0.5, T0 + 0.497, 65, 172.1, 172.6, None),
        Tick("NIFTY09SEP2524000PE", "NFO", 0.0, T0 + 0.75, None, None, 0.0, 0.0, 123_456),
        Tick("NIFTY09SEP2524000PE", "NFO", 0.1 + 0.2, T0 + 1.0000001, T0 + 0.9999999,
             2**62, 1e-300, 1.7976931348623157e308, 0),
        Tick("NIFTY09SEP2525000CE", "NFO", 0.05, T0 + 3.5, T0 + 0.5, 6_500, 0.05, 0.1, 99),
    ]


def expected_tick(i: int) -> Tick:
    """The i-th tick the crash-test child writes (same arithmetic in both processes)."""
    return Tick("NIFTY09SEP2524000CE", "NFO", 100.0 + (i % 400) * 0.05, T0 + i * 0.001,
                T0 + i * 0.001 - 0.004, 65 * i, 99.0, 101.0, None)


def test_tick_columns_follow_the_tick_fields() -> None:
    assert Tick._fields == TICK_COLUMNS


def test_every_field_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ticks = sample_ticks()
    symbols = [SymbolInfo.for_symbol("NIFTY", "NSE_INDEX"),
               SymbolInfo.for_symbol("NIFTY09SEP2524000CE", "NFO"),
               SymbolInfo.for_symbol("BANKNIFTY", "NSE")]
    clock = VirtualClock(start=T0 - 3600)
    with SessionWriter(path, batch_size=2, meta={"date": "2025-09-03", "universe": ["A", "B"],
                                                  "seed": 7}, symbols=symbols,
                       clock=clock) as writer:
        writer.extend(ticks)
    with SessionReader(path) as reader:
        back = list(reader.ticks())
        assert back == ticks
        for a, b in zip(back, ticks, strict=True):
            for name in TICK_COLUMNS:
                got, want = getattr(a, name), getattr(b, name)
                assert type(got) is type(want) or (isinstance(want, int) and
                                                    isinstance(got, float)), name
        meta = reader.meta()
        assert meta["format"] == FORMAT_NAME
        assert meta["date"] == "2025-09-03"
        assert meta["universe"] == '["A","B"]'
        assert meta["seed"] == "7"
        assert meta["created"] == "2025-09-03 08:15:00 IST"
        assert reader.symbols() == symbols
        assert reader.symbols()[1] == SymbolInfo("NIFTY09SEP2524000CE", "NFO", "CE", 24000,
                                                 date(2025, 9, 9))
        assert reader.symbols()[2].kind == "OTHER"
        assert reader.count() == len(ticks)
        assert reader.time_range() == (T0 + 0.012345, T0 + 3.5)


def test_time_range_comes_from_the_scan_while_the_file_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionWriter(path) as writer:
        writer.extend(expected_tick(i) for i in range(5))
    with SessionReader(path) as reader:
        assert reader.scan.ticks == 5 and reader.scan.out_of_order == 0
        assert reader.time_range() == (T0, T0 + 0.004)
        with SessionWriter(path, append=True) as writer:  # the file changes under the reader
            writer.append(expected_tick(9))
        assert reader.time_range() == (T0, T0 + 0.009)


def test_arrival_order_and_time_window(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ticks = sample_ticks()
    with SessionWriter(path) as writer:
        writer.extend(ticks)
    with SessionReader(path) as reader:
        assert list(reader.ticks(start=T0 + 0.5)) == ticks[1:]
        assert list(reader.ticks(end=T0 + 0.75)) == ticks[:2]
        assert list(reader.ticks(start=T0 + 0.5, end=T0 + 1.0000001)) == ticks[1:3]
        assert list(reader.ticks(start=T0 + 10)) == []


def test_a_session_without_ticks_is_refused_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SessionWriter(path).close()
    with pytest.raises(SessionFileError, match="holds no ticks"):
        SessionReader(path)


def test_batches_commit_whole_and_flush_commits_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = SessionWriter(path, batch_size=3)
    try:
        writer.extend(expected_tick(i) for i in range(7))
        assert writer.pending == 1
        with SessionReader(path) as reader:  # a second connection sees committed rows only
            assert reader.count() == 6
            writer.flush()
            assert reader.count() == 7
        assert writer.written == 7
    finally:
        writer.close()
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == [expected_tick(i) for i in range(7)]


def test_append_continues_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionWriter(path, meta={"date": "2025-09-03"}) as writer:
        writer.extend(expected_tick(i) for i in range(5))
    with pytest.raises(SessionFileError, match="already exists"):
        SessionWriter(path)
    with SessionWriter(path, append=True, meta={"restarts": 1}) as writer:
        assert writer.written == 5
        writer.extend(expected_tick(i) for i in range(5, 9))
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == [expected_tick(i) for i in range(9)]
        assert reader.meta()["date"] == "2025-09-03"
        assert reader.meta()["restarts"] == "1"
        seqs = [row[0] for row in reader._conn.execute("SELECT seq FROM ticks ORDER BY seq")]
    assert seqs == list(range(1, 10))
    with SessionWriter(path, overwrite=True) as writer:
        writer.append(expected_tick(42))
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == [expected_tick(42)]


def test_bad_ticks_raise_and_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionWriter(path, batch_size=10) as writer:
        writer.append(expected_tick(0))
        with pytest.raises(TypeError, match="expects a Tick"):
            writer.append(("NIFTY", "NSE_INDEX", 1.0))  # type: ignore[arg-type]
        bad = [({"ltp": math.nan}, "ltp is not a finite number"),
               ({"exchange_ts": math.inf}, "exchange_ts is not a finite number"),
               ({"recv_ts": "09:15"}, "recv_ts is not a finite number"),
               ({"symbol": None}, "symbol must be a non-empty string"),
               ({"exchange": ""}, "exchange must be a non-empty string"),
               ({"volume": 1.5}, "volume must be an integer"),
               ({"oi": True}, "oi must be an integer")]
        for change, message in bad:
            with pytest.raises(ValueError, match=message):
                writer.append(expected_tick(1)._replace(**change))
        assert writer.pending == 1
        writer.append(expected_tick(1))
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == [expected_tick(0), expected_tick(1)]


def test_closed_writer_refuses_ticks(tmp_path: Path) -> None:
    writer = SessionWriter(tmp_path / "s.sqlite")
    writer.close()
    writer.close()
    with pytest.raises(SessionFileError, match="writer is closed"):
        writer.append(expected_tick(0))
    assert writer.batch_size == SessionFileSettings().batch_size
    with pytest.raises(ValueError, match="batch_size"):
        SessionWriter(tmp_path / "other.sqlite", batch_size=0)


def test_writer_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(SessionFileError, match="directory does not exist"):
        SessionWriter(tmp_path / "nope" / "s.sqlite")


def test_reading_streams_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    n = 100_000
    with SessionWriter(path, batch_size=10_000) as writer:
        writer.extend(expected_tick(i) for i in range(n))
    with SessionReader(path) as reader:
        tracemalloc.start()
        try:
            count = 0
            last = None
            for tick in reader.ticks():
                count += 1
                last = tick
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == n and last == expected_tick(n - 1)
    # every tick alive at once takes about 40 MB; one streamed chunk a few MB
    assert peak < 15_000_000


_CHILD = textwrap.dedent("""
    import sys
    from engine.market.session_file import SessionWriter
    from tests.engine.market.test_session_file import expected_tick
    writer = SessionWriter(sys.argv[1], batch_size=int(sys.argv[2]))
    i = 0
    while True:
        writer.append(expected_tick(i))
        i += 1
        if i == 3 * writer.batch_size:
            print("ready", flush=True)
""")


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.037])
def test_killed_writer_loses_at_most_one_batch(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "killed.sqlite"
    batch = 97
    root = Path(__file__).resolve().parents[3]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(batch)],
                             stdout=subprocess.PIPE, text=True, cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        if delay:
            time.sleep(delay + random.random() * 0.01)  # a short pause: kill at another moment
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert path.with_name(path.name + "-wal").exists()  # killed mid-stream, in WAL mode
    with SessionReader(path) as reader:
        count = reader.count()
        assert count >= 2 * batch
        assert count % batch == 0
        assert list(reader.ticks()) == [expected_tick(i) for i in range(count)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_reader_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(SessionFileError, match="does not exist") as info:
        SessionReader(missing)
    assert str(missing) in str(info.value) and info.value.path == str(missing)
    assert not missing.exists()

    with pytest.raises(SessionFileError, match="is not a file"):
        SessionReader(tmp_path)

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(SessionFileError, match="not an SQLite database") as info:
        SessionReader(garbage)
    assert str(garbage) in str(info.value)

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(SessionFileError, match="not a session file"):
        SessionReader(other)


def _tamper(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def test_reader_rejects_wrong_marker_version_and_schema(tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        path = tmp_path / name
        with SessionWriter(path) as writer:
            writer.append(expected_tick(0))
        return path

    marker = fresh("marker.sqlite")
    _tamper(marker, "UPDATE meta SET value = 'something-else' WHERE key = 'format'")
    with pytest.raises(SessionFileError, match="not a session file"):
        SessionReader(marker)

    version = fresh("version.sqlite")
    _tamper(version, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SessionFileError, match="unsupported schema version '99'"):
        SessionReader(version)
    with pytest.raises(SessionFileError, match="unsupported schema version"):
        SessionWriter(version, append=True)

    schema = fresh("schema.sqlite")
    _tamper(schema, "ALTER TABLE ticks DROP COLUMN oi")
    with pytest.raises(SessionFileError, match="wrong schema: table ticks lacks oi"):
        SessionReader(schema)


def test_reserved_meta_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with pytest.raises(ValueError, match="set by the session file itself"):
        SessionWriter(path, meta={"format": "mine"})
    assert not path.exists()
    with SessionWriter(path) as writer:
        with pytest.raises(ValueError, match="schema_version"):
            writer.set_meta({"schema_version": "2"})
        writer.set_meta({"note": {"a": 1}})
        writer.append(sample_ticks()[0])
    with SessionReader(path) as reader:
        assert reader.meta()["note"] == '{"a":1}'


def test_append_refuses_a_file_that_is_not_a_session(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"not sqlite at all " * 200)
    with pytest.raises(SessionFileError, match="not an SQLite database"):
        SessionWriter(path, append=True)
    assert path.read_bytes() == b"not sqlite at all " * 200


def test_failed_commit_keeps_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = SessionWriter(path, batch_size=100)
    writer._conn.execute("PRAGMA busy_timeout=50")  # fail fast instead of waiting 5 s
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        writer.extend(expected_tick(i) for i in range(5))
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        with pytest.raises(SessionFileError, match="cannot write ticks") as info:
            writer.flush()
        assert str(path) in str(info.value)
        assert writer.pending == 5 and writer.written == 0
        blocker.execute("ROLLBACK")
        writer.flush()
        assert writer.pending == 0 and writer.written == 5
    finally:
        blocker.close()
        writer.close()
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == [expected_tick(i) for i in range(5)]


def test_close_while_a_reader_is_streaming(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = SessionWriter(path, batch_size=10)
    writer.extend(expected_tick(i) for i in range(25))
    with SessionReader(path) as reader:
        stream = reader.ticks()
        assert next(stream) == expected_tick(0)
        writer.close()  # cannot leave WAL mode while read; still closes cleanly
        assert list(stream) == [expected_tick(i) for i in range(1, 20)]
        assert reader.count() == 25
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == [expected_tick(i) for i in range(25)]
