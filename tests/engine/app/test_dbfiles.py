"""Files are sacred: ``--db`` never replaces a file the engine did not create for that mode and
day; the engine's own database of the same mode and day only with ``--fresh`` (issue 16, "Why"
item 3: ``_fresh_db`` used to delete whatever ``--db`` named, with its -wal and -shm)."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import date
from pathlib import Path

import pytest

from engine.app.command_spec import EXIT_CONFIG, CommandError
from engine.app.dbfiles import fresh_database
from engine.store.database import Database, DatabaseOwner, owner_of
from tests.engine.app.cli_support import one_line, run_cli, small_day

DAY = date(2025, 9, 3)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_day(tmp_path_factory.mktemp("dbfiles"), seed=5, minutes=2)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    quiet = ["--no-progress"] if args[0] == "replay" else []
    return run_cli(*args, *quiet, "--set", "store.synchronous=NORMAL", cwd=cwd)


def foreign_sqlite(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("kind", ["session file", "text file", "another program's database",
                                  "empty file"])
def test_replay_never_replaces_a_file_that_is_not_the_engines(session: Path, tmp_path: Path,
                                                              kind: str) -> None:
    target = tmp_path / "target.db"
    if kind == "session file":
        target.write_bytes(session.read_bytes())
    elif kind == "text file":
        target.write_text("my notes\n")
    elif kind == "another program's database":
        foreign_sqlite(target)
    else:
        target.write_bytes(b"")
    wal = Path(f"{target}-wal")
    before = target.read_bytes()
    for fresh in ((), ("--fresh",)):
        done = run("replay", str(session), "--db", str(target), *fresh, cwd=tmp_path)
        one_line(done, EXIT_CONFIG, f"replay: {target}")
        assert target.read_bytes() == before and not wal.exists()


def test_the_engines_own_database_is_started_over_only_with_fresh(session: Path,
                                                                  tmp_path: Path) -> None:
    first = run("replay", str(session), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "var" / "replay-s.db"
    assert owner_of(db) == DatabaseOwner("replay", DAY)
    named = tmp_path / "named.db"
    assert run("replay", str(session), "--db", str(named), cwd=tmp_path).returncode == 0
    again = run("replay", str(session), "--db", str(named), cwd=tmp_path)
    assert again.returncode == EXIT_CONFIG
    assert again.stderr == (f"replay: {named} already holds a replay database of "
                            "2025-09-03: pass --fresh to start it over, or choose another "
                            "--db\n")
    fresh = run("replay", str(session), "--db", str(named), "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    # the default database of a replay is derived from its session: replaying again replaces
    # it without --fresh (as the README's first command, run twice, must work)
    repeat = run("replay", str(session), cwd=tmp_path)
    assert repeat.returncode == 0, repeat.stderr
    assert owner_of(db) == DatabaseOwner("replay", DAY)
    # a paper run may not take the replay's database, --fresh or not
    paper = run("paper", "--session", str(session), "--db", str(db), "--fresh",
                    cwd=tmp_path)
    assert paper.returncode == EXIT_CONFIG
    assert "is a replay database of 2025-09-03, not a paper database" in paper.stderr
    # ... but only the engine's own: anything else at that path stays refused
    db.unlink()
    foreign_sqlite(db)
    refused = run("replay", str(session), cwd=tmp_path)
    assert refused.returncode == EXIT_CONFIG and "not an engine database" in refused.stderr


def engine_db(path: Path, owner: DatabaseOwner | None) -> Path:
    Database(path, owner=owner).close()
    return path


@pytest.mark.parametrize("owner", [DatabaseOwner("live", DAY), DatabaseOwner("paper", DAY),
                                   DatabaseOwner("replay", date(2025, 9, 4)), None])
def test_another_mode_or_day_or_no_owner_is_refused_even_with_fresh(tmp_path: Path,
                                                                    owner: DatabaseOwner | None
                                                                    ) -> None:
    path = engine_db(tmp_path / "e.db", owner)
    with pytest.raises(CommandError) as refused:
        fresh_database(path, "replay", DAY, fresh=True)
    assert refused.value.exit_code == EXIT_CONFIG and path.exists()


def test_a_stray_wal_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    Path(f"{path}-wal").write_bytes(b"journal")
    with pytest.raises(CommandError, match=r"e\.db-wal"):
        fresh_database(path, "replay", DAY, fresh=True)
    assert Path(f"{path}-wal").read_bytes() == b"journal"


def test_fresh_removes_the_engines_own_database_with_its_wal_files(tmp_path: Path) -> None:
    path = engine_db(tmp_path / "e.db", DatabaseOwner("replay", DAY))
    Path(f"{path}-wal").write_bytes(b"")
    assert fresh_database(path, "replay", DAY, fresh=True) == path
    assert not path.exists() and not Path(f"{path}-wal").exists()


def test_the_owner_is_recorded_once_by_the_first_engine(tmp_path: Path) -> None:
    path = engine_db(tmp_path / "e.db", DatabaseOwner("live", DAY))
    with Database(path, owner=DatabaseOwner("paper", date(2025, 9, 4))) as db:
        assert db.owner() == DatabaseOwner("live", DAY)
    assert owner_of(path) == DatabaseOwner("live", DAY)
