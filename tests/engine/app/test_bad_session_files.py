"""Session files validated when opened, and a damaged database for ``report`` (issue 16, "Why"
item 7): ticks out of receive-time order are played in receive-time order (before, more than
half of them were dropped as late, exit 0); text in ``ltp``, or no ticks at all, is one line and
exit 1; ``report`` on an engine database missing a table is one line and exit 2. Never a
traceback."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from engine.app.command_spec import EXIT_CONFIG, EXIT_FAILURE
from engine.app.replay import ReplayDriver
from engine.app.sections import load_config
from engine.market.session_file import SessionReader, SessionWriter
from engine.store.database import Database, DatabaseOwner
from tests.engine.app.cli_support import one_line, run_cli, small_day

DAY = date(2025, 9, 3)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_day(tmp_path_factory.mktemp("bad-sessions"), seed=8, minutes=4)


def swapped_halves(session: Path, out: Path) -> Path:
    """The same ticks, the later half of the day first (each half in its own order)."""
    with SessionReader(session) as reader:
        ticks = list(reader.ticks())
        meta = {k: v for k, v in reader.meta().items() if k not in ("format", "schema_version")}
        symbols = reader.symbols()
    middle = sorted(t.recv_ts for t in ticks)[len(ticks) // 2]
    late = [t for t in ticks if t.recv_ts >= middle]
    early = [t for t in ticks if t.recv_ts < middle]
    with SessionWriter(out, meta=meta, symbols=symbols) as writer:
        writer.extend(late + early)
    return out


def test_ticks_out_of_time_order_are_played_in_time_order(session: Path, tmp_path: Path) -> None:
    shuffled = swapped_halves(session, tmp_path / "shuffled.db")
    with SessionReader(shuffled) as reader:
        assert reader.out_of_order > reader.count() // 3
        assert [t.recv_ts for t in reader.ticks()] == sorted(t.recv_ts for t in reader.ticks())
    cfg = load_config(None, env={}, overrides={"store.synchronous": "NORMAL"})
    plain = ReplayDriver(cfg, session, db_path=tmp_path / "a.db", progress=False).run()
    mixed = ReplayDriver(cfg, shuffled, db_path=tmp_path / "b.db", progress=False).run()
    assert (mixed.ticks, mixed.late, mixed.invalid, mixed.bars_hash) == (
        plain.ticks, plain.late, plain.invalid, plain.bars_hash)


def test_text_in_ltp_is_one_line_and_exit_1(session: Path, tmp_path: Path) -> None:
    bad = tmp_path / "text.db"
    bad.write_bytes(session.read_bytes())
    conn = sqlite3.connect(bad)
    conn.execute("UPDATE ticks SET ltp = 'abc' WHERE seq IN (10, 20)")
    conn.commit()
    conn.close()
    text = one_line(run_cli("replay", str(bad), "--no-progress", cwd=tmp_path), EXIT_FAILURE)
    assert text.startswith(f"replay: session file {bad}: 2 of ")
    assert "ticks hold a value of the wrong type (the first: seq 10, ltp = 'abc')" in text
    assert not (tmp_path / "var" / "replay-text.db").exists()  # refused before any database


def test_a_session_without_ticks_is_one_line_and_exit_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    SessionWriter(empty).close()
    for command in (("replay", str(empty), "--no-progress"), ("paper", "--session", str(empty))):
        text = one_line(run_cli(*command, cwd=tmp_path), EXIT_FAILURE)
        assert text == f"{command[0]}: session file {empty}: holds no ticks\n"


def test_report_on_a_database_missing_a_table_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "engine.db"
    Database(db, owner=DatabaseOwner("replay", DAY)).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE trades")
    conn.close()
    text = one_line(run_cli("report", str(db), cwd=tmp_path), EXIT_CONFIG)
    assert text == (f"report: {db} is a damaged engine database (missing table trades); "
                    f"not modified\n")
