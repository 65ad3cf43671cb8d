"""Fuzzing session files: a valid schema holding hostile ticks.

Rows are inserted as raw SQL values, column by column either plausible (a symbol, a price, a
receive time in any order) or hostile: text where a number belongs (``ltp = 'abc'``), blobs,
NULLs, infinities, integers at the 64-bit edge, floats at every limit; and sometimes no row at
all. Property (issue 16, "Why" item 7): ``SessionReader`` refuses the file with one
``SessionFileError`` line naming it, or every tick it gives has the types ``Tick`` promises
and arrives in receive-time order, all of them. Never any other exception.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from engine.market.session_file import SessionFileError, SessionReader, SessionWriter
from tests.fuzz.support import EDGE_FLOATS, fuzz_settings, odd_text

T0 = 1_756_871_100.0  # 2025-09-03 09:15 IST

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
HOSTILE = st.one_of(st.none(), odd_text, st.binary(max_size=8), INT64,
                    st.sampled_from([*EDGE_FLOATS, "abc", "12.5", "", b"\x00"]),
                    st.floats(allow_nan=True, allow_infinity=True))
PRICE = st.floats(min_value=0.05, max_value=30_000, allow_nan=False)
TIME = st.floats(min_value=T0, max_value=T0 + 22_500, allow_nan=False)
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "symbol": st.sampled_from(["NIFTY", "NIFTY09SEP2524000CE"]),
    "exchange": st.sampled_from(["NSE_INDEX", "NFO"]),
    "ltp": PRICE, "recv_ts": TIME, "exchange_ts": st.none() | TIME,
    "volume": st.none() | st.integers(0, 10**9), "bid": PRICE, "ask": PRICE,
    "oi": st.none() | st.integers(0, 10**7),
}
COLUMNS = tuple(PLAUSIBLE)


@st.composite
def rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    hostile = draw(st.floats(0, 0.3))  # how dirty this file is
    out = []
    for _ in range(draw(st.integers(0, 12))):
        out.append(tuple(draw(HOSTILE) if draw(st.floats(0, 1)) < hostile
                         else draw(PLAUSIBLE[c]) for c in COLUMNS))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz-sessions")


def write(path: Path, ticks: list[tuple[Any, ...]]) -> None:
    path.unlink(missing_ok=True)
    SessionWriter(path).close()
    conn = sqlite3.connect(path)
    conn.executemany(f"INSERT OR IGNORE INTO ticks (seq, {', '.join(COLUMNS)}) "
                     f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                     [(i + 1, *row) for i, row in enumerate(ticks)])
    conn.commit()
    conn.close()


def number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


@fuzz_settings(200)
@given(rows())
# the holes a user found: text in ltp, an empty ticks table, receive times going back
@example([("NIFTY", "NSE_INDEX", "abc", T0, T0, 1, 1.0, 1.0, None)])
@example([])
@example([("NIFTY", "NSE_INDEX", 100.0, T0 + 60, T0, 1, 1.0, 1.0, None),
          ("NIFTY", "NSE_INDEX", 101.0, T0, T0, 2, 1.0, 1.0, None)])
def test_a_session_file_is_refused_in_one_line_or_read_whole_in_time_order(
        folder: Path, ticks: list[tuple[Any, ...]]) -> None:
    path = folder / "s.sqlite"
    write(path, ticks)
    try:
        reader = SessionReader(path)
    except SessionFileError as error:  # anything else fails the test
        message = str(error)
        assert len(message.splitlines()) == 1 and str(path) in message, message
        event("refused: " + message.rpartition(": ")[2].split(" (")[0][:40])
        return
    with reader:
        got = list(reader.ticks())
        assert len(got) == reader.count() > 0
    for tick in got:
        assert type(tick.symbol) is str and tick.symbol and type(tick.exchange) is str
        assert all(number(v) for v in (tick.ltp, tick.recv_ts, tick.bid, tick.ask))
        assert tick.exchange_ts is None or number(tick.exchange_ts)
        assert all(v is None or type(v) is int for v in (tick.volume, tick.oi))
    assert [t.recv_ts for t in got] == sorted(t.recv_ts for t in got)
    event("read")
