"""The column cache of a session file's ticks: the same ticks, read back without SQLite.

Owns one cache entry per session file under ``<cache dir>/ticks/``: ``<name>-<key>.npy`` (one
fixed-size record per tick, in the order the reader plays them) and ``<name>-<key>.json`` (the
manifest: the session file's identity, the play order, what the reader's scan found, the symbol
and exchange strings the records point into, and the data file's own inode, size and mtime).
``ColumnWriter`` builds an entry from the rows of a full SQLite read; ``CachedTicks`` streams
``Tick``s back from it in chunks (plain reads into one reused buffer, so memory stays flat).
An entry is used only while both files match what the manifest records; anything else is
"no cache" and the reader goes to SQLite. The rules (when built, when used, where, how to
delete) are in docs/architecture.md, "The column cache of session ticks".
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from pathlib import Path
from time import time_ns
from typing import TYPE_CHECKING, Any, BinaryIO

from loguru import logger

from engine.messages import Tick, tick_from_row

if TYPE_CHECKING:  # numpy is imported where records are read or written: a command that
    import numpy as np  # lists the settings (run.py status, ...) does not pay for it

CACHE_ENV = "NIFTY_ENGINE_CACHE"
FORMAT_VERSION = 1



@cache
def record_dtype() -> np.dtype[Any]:
    """One tick: the eight-byte fields first, then the string codes and the null flags, padded
    to 64 bytes so every record (and every field in it) stays aligned."""
    import numpy as np

    return np.dtype([("ltp", "<f8"), ("recv_ts", "<f8"), ("exchange_ts", "<f8"),
                     ("volume", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("oi", "<i8"),
                     ("symbol", "<u4"), ("exchange", "<u2"), ("nulls", "u1"), ("_pad", "u1")])

# Bits of ``nulls``: these fields are None in the tick (their stored value is 0)
_NULLABLE = (("exchange_ts", 1), ("volume", 2), ("oi", 4))
_CHUNK = 8192
# A file modified within the file system's timestamp granularity could keep its mtime: only a
# file last written well before it was read gets an entry (as for the bundled day's stamp).
STABLE_AGE_NS = 2_000_000_000
_MAX_SYMBOLS = 2**32
_MAX_EXCHANGES = 2**16


class CacheUnusable(Exception):
    """The entry cannot be read as recorded (changed, truncated, corrupt); read SQLite instead."""


def default_cache_dir() -> Path:
    """``$NIFTY_ENGINE_CACHE``, else ``~/.cache/nifty-engine``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "nifty-engine"


def entry_paths(source: Path, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """The data and manifest paths of ``source``'s entry (one entry per resolved path)."""
    resolved = str(source.resolve())
    key = hashlib.sha256(resolved.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    folder = (cache_dir if cache_dir is not None else default_cache_dir()) / "ticks"
    stem = f"{source.name}-{key}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies a written data file: inode, size, mtime."""
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True, slots=True)
class CachedTicks:
    """A usable entry: ``scan`` is what the reader's scan found, as a plain dict."""

    data_path: Path
    identity: tuple[Any, ...]
    order: str
    rows: int
    scan: dict[str, Any]
    symbols: tuple[str, ...]
    exchanges: tuple[str, ...]
    data_stat: tuple[int, int, int]

    @classmethod
    def load(cls, source: Path, identity: tuple[Any, ...] | None,
             cache_dir: Path | None = None) -> CachedTicks | None:
        """The entry of ``source`` if it records exactly ``identity`` and its data file is as
        written; None otherwise (missing, stale, unreadable: the reader goes to SQLite)."""
        if identity is None:
            return None
        data, manifest = entry_paths(source, cache_dir)
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
            if info.get("version") != FORMAT_VERSION or tuple(info["identity"]) != identity:
                return None
            entry = cls(data, identity, str(info["order"]), int(info["rows"]), dict(info["scan"]),
                        tuple(map(str, info["symbols"])), tuple(map(str, info["exchanges"])),
                        tuple(info["data"]))
            if _stat_key(data.stat()) != entry.data_stat:
                return None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.debug("tick cache {} is unreadable: {}", manifest, exc)
            return None
        return entry

    def bounds(self, start: float | None, end: float | None) -> tuple[int, int]:
        """The records with ``start <= recv_ts < end``: a slice, since the records are in play
        order and play order never lets receive time go back."""
        if start is None and end is None:
            return 0, self.rows
        import numpy as np

        with self._open() as (fh, offset):
            recv = np.memmap(fh, dtype=record_dtype(), mode="r", offset=offset,
                             shape=(self.rows,))["recv_ts"]
            # bisect over the memory map touches a few pages; numpy's searchsorted would first
            # copy the whole strided column
            lo = 0 if start is None else bisect.bisect_left(recv, start)
            hi = self.rows if end is None else bisect.bisect_left(recv, end, lo)
            del recv
        return lo, max(lo, hi)

    def chunks(self, lo: int, hi: int) -> Iterator[tuple[int, Iterator[Tick]]]:
        """Records ``lo`` to ``hi`` as (count, ticks) per chunk; ``CacheUnusable`` if the data
        file turns out shorter or holds a code that points nowhere."""
        import numpy as np

        row = record_dtype()
        # every tick of a symbol shares one interned string (SQLite builds one per row)
        symbols = np.array([sys.intern(s) for s in self.symbols], dtype=object)
        exchanges = np.array([sys.intern(s) for s in self.exchanges], dtype=object)
        raw = np.empty(_CHUNK * row.itemsize, dtype=np.uint8)
        with self._open() as (fh, offset):
            fh.seek(offset + lo * row.itemsize)
            at = lo
            while at < hi:
                n = min(_CHUNK, hi - at)
                size = n * row.itemsize
                if fh.readinto(raw[:size]) != size:
                    raise CacheUnusable(f"{self.data_path} is shorter than recorded")
                rec = raw[:size].view(row)
                try:
                    sym = symbols[rec["symbol"]].tolist()
                    exch = exchanges[rec["exchange"]].tolist()
                except IndexError as exc:
                    raise CacheUnusable(f"{self.data_path}: {exc}") from exc
                nulls = rec["nulls"]
                ex_ts, vol, oi = (_nullable(rec[name], nulls & bit, n)
                                  for name, bit in _NULLABLE)
                # one zip and one map per chunk: no Python frame per tick
                yield n, map(tick_from_row, zip(
                    sym, exch, rec["ltp"].tolist(), rec["recv_ts"].tolist(), ex_ts, vol,
                    rec["bid"].tolist(), rec["ask"].tolist(), oi, strict=True))
                at += n

    @contextmanager
    def _open(self) -> Iterator[tuple[BinaryIO, int]]:
        """The data file opened and checked (the same inode, size and mtime as recorded, a
        ``.npy`` header of exactly ``rows`` ``record_dtype`` records): (file, offset of the
        records)."""
        import numpy as np

        try:
            fh = open(self.data_path, "rb")  # noqa: SIM115 (entered just below)
        except OSError as exc:
            raise CacheUnusable(f"{self.data_path}: {exc}") from exc
        with fh:
            if _stat_key(os.fstat(fh.fileno())) != self.data_stat:
                raise CacheUnusable(f"{self.data_path} changed since it was written")
            try:
                if np.lib.format.read_magic(fh) != (1, 0):
                    raise ValueError("not a version 1.0 .npy file")
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            except Exception as exc:  # numpy's parser raises ValueError, SyntaxError,
                # TokenError... on a garbled header: each means "not this cache"
                raise CacheUnusable(f"{self.data_path}: {exc!r}") from exc
            if dtype != record_dtype() or fortran or shape != (self.rows,):
                raise CacheUnusable(f"{self.data_path} does not hold {self.rows} tick records")
            yield fh, fh.tell()


def _nullable(column: np.ndarray, nulls: np.ndarray, n: int) -> list[Any]:
    """The column's values as a list, None where flagged."""
    import numpy as np

    flagged = int(np.count_nonzero(nulls))
    if not flagged:
        return column.tolist()
    if flagged == n:
        return list(repeat(None, n))
    return np.where(nulls != 0, None, column.astype(object)).tolist()


class _Codes(dict[str, int]):
    """String -> small integer code, a new code for each new string (C-level lookups)."""

    def __missing__(self, key: str) -> int:
        code = self[key] = len(self)
        return code


class ColumnWriter:
    """Builds ``source``'s entry from the rows of a full read (``TICK_COLUMNS`` order, in play
    order), ``rows`` of them as the scan counted: ``add`` per fetched chunk, then ``finish``
    (or ``abort``). Writes go to temporary files renamed into place, so a reader never sees a
    partial entry; a failed write drops the entry and the read goes on (one info line)."""

    def __init__(self, source: Path, identity: tuple[Any, ...], rows: int, order: str,
                 scan: dict[str, Any], cache_dir: Path | None = None) -> None:
        self.source = source
        self.identity = identity
        self.rows = rows
        self.order = order
        self.scan = scan
        self.data, self.manifest = entry_paths(source, cache_dir)
        self._symbols = _Codes()
        self._exchanges = _Codes()
        self._written = 0
        self._fh: Any = None
        self._tmp: str | None = None
        try:
            self.data.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.data.name}.", suffix=".tmp",
                                             dir=self.data.parent)
            self._fh = os.fdopen(fd, "wb")
            import numpy as np

            np.lib.format.write_array_header_1_0(
                self._fh, {"descr": np.lib.format.dtype_to_descr(record_dtype()),
                           "fortran_order": False,
                           "shape": (rows,)})
        except (OSError, ValueError) as exc:
            self._failed(exc)

    @classmethod
    def for_read(cls, source: Path, identity: tuple[Any, ...] | None, rows: int, order: str,
                 scan: dict[str, Any], cache_dir: Path | None = None) -> ColumnWriter | None:
        """A writer if ``source`` may get an entry now: its identity is known (no ``-wal``
        beside it) and it was last written well before now."""
        if identity is None or time_ns() - identity[4] <= STABLE_AGE_NS:
            return None
        return cls(source, identity, rows, order, scan, cache_dir)

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Append one chunk of rows (symbol, exchange, ltp, recv_ts, exchange_ts, volume, bid,
        ask, oi)."""
        if self._fh is None or not rows:
            return
        n = len(rows)
        if self._written + n > self.rows:
            self._failed(ValueError("more ticks than the scan counted"))
            return
        import numpy as np

        sym, exch, ltp, recv, ex_ts, vol, bid, ask, oi = zip(*rows, strict=True)
        rec = np.zeros(n, dtype=record_dtype())
        rec["symbol"] = list(map(self._symbols.__getitem__, sym))
        rec["exchange"] = list(map(self._exchanges.__getitem__, exch))
        rec["ltp"], rec["recv_ts"], rec["bid"], rec["ask"] = ltp, recv, bid, ask
        nulls = rec["nulls"]
        for (name, bit), values in zip(_NULLABLE, (ex_ts, vol, oi), strict=True):
            if None not in values:
                rec[name] = values
            elif values.count(None) == n:
                nulls |= bit
            else:
                flagged = np.array([v is None for v in values])
                nulls[flagged] |= bit
                rec[name] = [0 if v is None else v for v in values]
        if len(self._symbols) > _MAX_SYMBOLS or len(self._exchanges) > _MAX_EXCHANGES:
            self._failed(ValueError("too many distinct symbols or exchanges"))
            return
        try:
            self._fh.write(rec.view(np.uint8))
        except OSError as exc:
            self._failed(exc)
            return
        self._written += n

    def finish(self, identity_now: tuple[Any, ...] | None) -> None:
        """Publish the entry if every row was added and the source is still ``identity``."""
        if self._fh is None:
            return
        if self._written != self.rows or identity_now != self.identity:
            self.abort()
            return
        try:
            self._fh.flush()
            # the stat of this very file (a rename keeps inode and mtime): an entry a racing
            # process renames over it then no longer matches this manifest
            written = _stat_key(os.fstat(self._fh.fileno()))
            self._fh.close()
            self._fh = None
            assert self._tmp is not None
            os.replace(self._tmp, self.data)
            self._tmp = None
            info = {"version": FORMAT_VERSION, "source": str(self.source.resolve()),
                    "identity": list(self.identity), "order": self.order, "rows": self.rows,
                    "scan": self.scan, "symbols": list(self._symbols),
                    "exchanges": list(self._exchanges), "data": written}
            write_atomic(self.manifest, json.dumps(info))
        except OSError as exc:
            self._failed(exc)
            return
        logger.debug("tick cache written: {} ({:,} ticks)", self.data, self.rows)
        _prune(self.data.parent)

    def abort(self) -> None:
        """Drop the entry being written (the published one, if any, is left as it was)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None

    def _failed(self, exc: BaseException) -> None:
        self.abort()
        _note_unwritable(self.data.parent, exc)


_ORPHAN_AGE_NS = 3600 * 10**9


def _prune(folder: Path) -> None:
    """Remove the entries of session files that no longer exist, and temporary files left by a
    process killed while writing (over an hour old)."""
    now = time_ns()
    for path in folder.iterdir():
        try:
            if path.suffix == ".json" and not path.name.startswith("."):
                source = json.loads(path.read_text(encoding="utf-8"))["source"]
                if not Path(source).exists():
                    path.with_suffix(".npy").unlink(missing_ok=True)
                    path.unlink(missing_ok=True)
            elif path.name.endswith(".tmp") and now - path.stat().st_mtime_ns > _ORPHAN_AGE_NS:
                path.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.debug("tick cache: cannot prune {}: {}", path, exc)


_WARNED: set[Path] = set()


def _note_unwritable(folder: Path, exc: BaseException) -> None:
    """One info line per cache folder and process: the reads still go to SQLite."""
    if folder not in _WARNED:
        _WARNED.add(folder)
        logger.info("tick cache not written in {} ({}); session files are read from SQLite",
                    folder, exc)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once (temporary file beside it, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
