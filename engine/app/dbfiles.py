"""Which engine database file a run may write, and when an existing one may be replaced.

Owns the rule that files are sacred (docs/operations, "Files the engine writes"): a run that
starts a fresh database (``replay``, in-process ``paper``) writes to a path that does not exist,
or replaces, with ``--fresh`` only, a database the engine itself created for the same mode and
trading day (its ``database_owner`` row). Anything else at the path (a session file, a text
file, another program's database, the journal of a live engine, a database of another day) is
refused with one line and left as it was.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from engine.app.command_spec import EXIT_CONFIG, CommandError
from engine.store.database import DatabaseOwner, StoreVersionError, owner_of

SIDECARS = ("-wal", "-shm")


def fresh_database(path: Path, mode: str, day: date, *, fresh: bool,
                   derived: bool = False) -> Path:
    """``path``, ready for a new database of ``mode`` on ``day``: absent, or (with ``fresh``)
    the engine's own database of that mode and day, removed with its WAL files. ``derived``: the
    database is the default one of a replay, which its session file reproduces exactly, so the
    engine's own (also one an older engine wrote) is replaced without ``--fresh``. Raises
    ``CommandError`` (exit 2) for anything else."""
    sidecars = [Path(f"{path}{s}") for s in SIDECARS]
    if not path.exists() and not path.is_symlink():
        stray = [p.name for p in sidecars if p.exists()]
        if stray:
            raise _refuse(f"{path} does not exist but {', '.join(stray)} does (left by another "
                          f"program or a crash): not touched; remove it or choose another --db")
        return path
    wanted = DatabaseOwner(mode, day)
    try:
        owner = owner_of(path)
    except StoreVersionError as exc:
        raise _refuse(f"{exc} (choose another --db)") from None
    if owner is None and not derived:
        raise _refuse(f"{path} is an engine database that does not record what it was created "
                      f"for (an older version wrote it): not replaced; move it away or choose "
                      f"another --db")
    if owner is not None and owner != wanted:
        raise _refuse(f"{path} is {owner.describe()}, not {wanted.describe()}: not replaced; "
                      f"choose another --db")
    if not fresh and not derived:
        raise _refuse(f"{path} already holds {owner.describe()}: pass --fresh to start it over, "
                      f"or choose another --db")
    for p in (path, *sidecars):
        p.unlink(missing_ok=True)
    return path


def _refuse(message: str) -> CommandError:
    return CommandError(message, EXIT_CONFIG)
