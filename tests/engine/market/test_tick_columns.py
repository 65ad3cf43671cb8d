"""The column cache of session ticks: the SQLite path's ticks exactly (values, types, order,
bounds), rebuilt when the file changes, and never a failure: a missing, stale, truncated,
corrupt or unwritable cache means reading SQLite."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.market import session_file, tick_columns
from engine.market.session_file import SessionReader, SessionWriter
from engine.market.tick_columns import CACHE_ENV, entry_paths, record_dtype
from engine.messages import Tick
from engine.runtime.clock import ist_epoch

ROOT = Path(__file__).resolve().parents[3]
T0 = ist_epoch(2025, 9, 3, 9, 15)
OLD = 60  # seconds: files are aged past the cache's "written well before" rule


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.setattr(session_file, "_SCANNED", {})
    monkeypatch.setattr(tick_columns, "_WARNED", set())
    return folder


def _age(path: Path, seconds: float = OLD) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def odd_ticks(n: int, *, seed: int = 3, back: bool = False) -> list[Tick]:
    """``n`` ticks over several chunks: None fields alone, mixed and in runs, awkward floats
    (-0.0, subnormal, the largest double, integral values), int64's extremes, odd symbols; with
    ``back`` some receive times go back."""
    rng = random.Random(seed)
    symbols = [("NIFTY", "NSE_INDEX"), ("NIFTY09SEP2524000CE", "NFO"), ("ÑÎFTY 🚀", "NFO"),
               ("x", "BSE"), ("NIFTY09SEP2524000PE", "NFO")]
    floats = [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 172.35, 3.0, -1e-300]
    ints = [0, -(2**63), 2**63 - 1, 65, 2**62]
    ticks = []
    recv = T0
    for i in range(n):
        recv += rng.choice([0.0, 0.001, 0.0123456789])
        at = recv - 5.0 if back and i % 97 == 5 else recv
        sym, exch = rng.choice(symbols)
        # None runs longer than a chunk, then mixed
        none_run = (i // 9000) % 2 == 0
        ticks.append(Tick(sym, exch, rng.choice(floats), at,
                          None if none_run or rng.random() < 0.3 else rng.choice(floats),
                          None if rng.random() < 0.5 else rng.choice(ints),
                          rng.choice(floats), rng.choice(floats),
                          None if none_run else rng.choice([None, *ints])))
    return ticks


def _write(path: Path, ticks: list[Tick]) -> Path:
    with SessionWriter(path, batch_size=5000, overwrite=True) as writer:
        writer.extend(ticks)
    _age(path)
    return path


def _same(a: list[Tick], b: list[Tick]) -> bool:
    """Equal ticks whose every field has the same type (-0.0 kept apart from 0.0)."""
    return len(a) == len(b) and all(
        type(x) is type(y) and (x == y if not isinstance(x, float)
                                else math.copysign(1, x) == math.copysign(1, y) and x == y)
        for t, u in zip(a, b, strict=True) for x, y in zip(t, u, strict=True))


def _sqlite_ticks(path: Path, *bounds: float | None) -> list[Tick]:
    with SessionReader(path, column_cache=False) as reader:
        return list(reader.ticks(*bounds))


def _bounds(ticks: list[Tick]) -> list[tuple[float | None, float | None]]:
    recv = sorted(t.recv_ts for t in ticks)
    inner = recv[len(recv) // 3], recv[2 * len(recv) // 3]
    return [(None, None), (inner[0], None), (None, inner[1]), inner, (recv[0], recv[-1]),
            (recv[-1], None), (recv[-1] + 1, None), (None, recv[0]), (-math.inf, math.inf),
            (int(recv[0]) + 1, int(recv[0]) + 30), (math.nan, None), (None, math.nan),
            (np.float64(inner[0]), None)]


@pytest.mark.parametrize("back", [False, True], ids=["in order", "receive times go back"])
def test_the_cache_gives_the_sqlite_ticks_exactly(cache_dir: Path, tmp_path: Path,
                                                  back: bool) -> None:
    ticks = odd_ticks(20_000, back=back)
    path = _write(tmp_path / "s.sqlite", ticks)
    before = path.read_bytes(), path.stat().st_mtime_ns
    with SessionReader(path) as reader:
        assert reader._cached is None
        assert reader.out_of_order == (207 if back else 0)
        first = list(reader.ticks())  # from SQLite, building the cache
        assert reader._cached is not None
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # the session file untouched
    data, manifest = entry_paths(path, cache_dir)
    assert data.is_file() and manifest.is_file()
    assert not [p for p in data.parent.iterdir() if p.name.endswith(".tmp")]
    with SessionReader(path) as reader:
        assert reader._cached is not None
        for bound in _bounds(ticks):
            assert _same(list(reader.ticks(*bound)), _sqlite_ticks(path, *bound)), bound
        cached = list(reader.ticks())
    assert _same(first, _sqlite_ticks(path)) and _same(cached, first)
    # every tick of a symbol shares one string
    assert len({id(t.symbol) for t in cached}) == len({t.symbol for t in cached})


def test_a_cached_file_opens_without_a_scan(cache_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "s.sqlite", odd_ticks(300, back=True))
    with SessionReader(path) as reader:
        scan = reader.scan
        list(reader.ticks())
    monkeypatch.setattr(session_file, "_SCANNED", {})  # a new process

    def no_scan(*args: object) -> None:
        raise AssertionError("scanned")

    monkeypatch.setattr(session_file, "_check_ticks", no_scan)
    with SessionReader(path) as reader:
        assert reader.scan == scan and reader.out_of_order == scan.out_of_order


def test_a_changed_file_is_read_from_sqlite_and_the_cache_rebuilt(cache_dir: Path,
                                                                  tmp_path: Path) -> None:
    ticks = odd_ticks(3000)
    path = _write(tmp_path / "s.sqlite", ticks)
    with SessionReader(path) as reader:
        list(reader.ticks())
        extra = Tick("NEW", "NFO", 1.5, ticks[-1].recv_ts + 1)
        with SessionWriter(path, append=True) as writer:  # changes under the open reader
            writer.append(extra)
        assert list(reader.ticks())[-1] == extra
    _age(path)
    want = _sqlite_ticks(path)
    assert len(want) == len(ticks) + 1
    with SessionReader(path) as reader:
        assert reader._cached is None  # stale: another identity
        assert _same(list(reader.ticks()), want)
        assert reader._cached is not None
    manifest = json.loads(entry_paths(path, cache_dir)[1].read_text())
    assert manifest["rows"] == len(ticks) + 1 and "NEW" in manifest["symbols"]
    with SessionReader(path) as reader:
        assert reader._cached is not None
        assert _same(list(reader.ticks()), want)


def _corrupt(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place, keeping the size and the mtime (so only reading finds it)."""
    st = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("damage", ["truncated", "header", "code mid-way", "manifest",
                                    "manifest fields", "deleted data"])
def test_a_damaged_cache_falls_back_to_sqlite_and_is_rebuilt(cache_dir: Path, tmp_path: Path,
                                                             damage: str) -> None:
    ticks = odd_ticks(20_000, back=True)
    path = _write(tmp_path / "s.sqlite", ticks)
    with SessionReader(path) as reader:
        list(reader.ticks())
    data, manifest = entry_paths(path, cache_dir)
    header = data.stat().st_size - len(ticks) * record_dtype().itemsize
    if damage == "truncated":
        with data.open("r+b") as fh:
            fh.truncate(data.stat().st_size - 100)
    elif damage == "header":
        _corrupt(data, 10, b"{'descr': 'garbage'")
    elif damage == "code mid-way":  # a symbol code that points nowhere, in the third chunk
        at = header + 17_000 * record_dtype().itemsize + record_dtype().fields["symbol"][1]
        _corrupt(data, at, np.uint32(999_999).tobytes())
    elif damage == "manifest":
        manifest.write_text("{not json")
    elif damage == "manifest fields":
        info = json.loads(manifest.read_text())
        info["scan"] = {"ticks": "many"}
        manifest.write_text(json.dumps(info))
    else:
        data.unlink()
    session_file._SCANNED.clear()
    want = _sqlite_ticks(path)
    with SessionReader(path) as reader:
        assert _same(list(reader.ticks()), want)
        if damage == "code mid-way":  # found part way: SQLite from there on, no entry yet
            assert reader._cached is None
            assert _same(list(reader.ticks()), want)
        assert reader._cached is not None  # rebuilt
        assert _same(list(reader.ticks()), want)
    assert json.loads(manifest.read_text())["rows"] == len(ticks)


def test_an_unwritable_cache_reads_sqlite_with_one_info_line(cache_dir: Path, tmp_path: Path,
                                                             log_capture: object) -> None:
    cache_dir.mkdir()
    (cache_dir / "ticks").write_text("a file where the cache folder would be")
    ticks = odd_ticks(500)
    path = _write(tmp_path / "s.sqlite", ticks)
    want = _sqlite_ticks(path)
    for _ in range(2):
        with SessionReader(path) as reader:
            assert _same(list(reader.ticks()), want)
            assert reader._cached is None
    lines = [line for line in log_capture.getvalue().splitlines()  # type: ignore[attr-defined]
             if "tick cache not written" in line]
    assert len(lines) == 1 and "INFO" in lines[0]


def test_no_cache_for_a_file_just_written_being_written_or_read_in_part(
        cache_dir: Path, tmp_path: Path) -> None:
    ticks = odd_ticks(20_000)
    young = tmp_path / "young.sqlite"
    with SessionWriter(young) as writer:
        writer.extend(ticks)
    with SessionReader(young) as reader:  # mtime within the last 2 s: might still change
        assert len(list(reader.ticks())) == len(ticks)
    growing = _write(tmp_path / "growing.sqlite", ticks)
    with SessionWriter(growing, append=True) as writer:  # a -wal beside it: being written
        writer.append(Tick("NEW", "NFO", 1.5, ticks[-1].recv_ts + 1))
        writer.flush()
        with SessionReader(growing) as reader:
            assert len(list(reader.ticks())) == len(ticks) + 1
    part = _write(tmp_path / "part.sqlite", ticks)
    with SessionReader(part) as reader:
        iterator = reader.ticks()
        next(iterator)
        iterator.close()  # abandoned: no entry, no temporary file
        assert list(reader.ticks(None, ticks[100].recv_ts))  # bounded: no entry
    assert not (cache_dir / "ticks").exists() or not list((cache_dir / "ticks").iterdir())


def test_entries_of_deleted_files_and_old_temporary_files_are_pruned(cache_dir: Path,
                                                                     tmp_path: Path) -> None:
    gone = _write(tmp_path / "gone.sqlite", odd_ticks(200))
    with SessionReader(gone) as reader:
        list(reader.ticks())
    gone_data, gone_manifest = entry_paths(gone, cache_dir)
    orphan = gone_data.parent / ".x.npy.123.tmp"
    fresh = gone_data.parent / ".y.npy.456.tmp"  # maybe being written right now: kept
    orphan.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    _age(orphan, 7200)
    gone.unlink()
    kept = _write(tmp_path / "kept.sqlite", odd_ticks(200))
    with SessionReader(kept) as reader:
        list(reader.ticks())
    assert not gone_data.exists() and not gone_manifest.exists() and not orphan.exists()
    assert fresh.exists() and all(p.exists() for p in entry_paths(kept, cache_dir))


def test_the_cli_imports_numpy_only_to_read_or_write_records() -> None:
    # start-up of every command (run.py status, ...): the sections are listed, the session
    # file's reader is imported, numpy is not
    code = "import sys, engine.app.cli; print('numpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    assert done.stdout.strip() == "False"
