"""Where a run's instrument facts come from, per mode (configuration.md, "Instrument facts").

- live, paper and record ask OpenAlgo at start (``engine.openalgo.instruments``); when it cannot
  be asked, today's facts stored in the engine database by an earlier start are used, and
  failing that none (the ``[instrument]`` values apply);
- replay uses the facts its session file recorded for its day;
- ``instrument_spec`` merges facts and config: a key listed in ``[instrument] override`` keeps
  its config value, every other fact the broker gave replaces it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from engine.broker import BrokerError
from engine.config import Config
from engine.market.instruments import InstrumentFacts, InstrumentSpec, resolve_spec
from engine.market.session_file import SessionReader
from engine.store.database import Database

if TYPE_CHECKING:  # only the modes that ask OpenAlgo need these (a replay does not)
    from engine.openalgo.rest import OpenAlgoClient


def instrument_spec(cfg: Config, facts: InstrumentFacts | None) -> InstrumentSpec:
    """The spec the engine trades with: ``[instrument]`` with the facts put in, overrides
    kept."""
    settings = cfg.instrument
    return resolve_spec(settings.spec(), facts, tuple(settings.override))


def broker_facts(cfg: Config, client: OpenAlgoClient, day: date, *, db_path: Path,
                 account: str) -> tuple[InstrumentFacts | None, float | None]:
    """The day's facts from OpenAlgo and the underlying's price seen while reading them; when
    OpenAlgo cannot answer, today's stored facts (``source`` "stored"), else None."""
    from engine.openalgo.instruments import InstrumentProvider

    provider = InstrumentProvider(client)
    try:
        facts = provider.facts(day)
    except BrokerError as exc:
        stored = _stored_facts(cfg, db_path, day, account, provider.underlying)
        logger.warning("instruments: OpenAlgo did not give the {} expiries ({}); using {}",
                       provider.underlying, exc,
                       "today's stored facts" if stored else "the [instrument] config values")
        return stored, None
    spec = instrument_spec(cfg, facts)
    logger.info("instruments: from OpenAlgo for {}: lot {}, tick {}, freeze {}, next expiry {}"
                "{}", day, spec.lot_size, spec.tick_size, spec.freeze_quantity,
                facts.expiries[0] if facts.expiries else "-",
                f" (config overrides: {', '.join(cfg.instrument.override)})"
                if cfg.instrument.override else "")
    return facts, provider.spot


def session_facts(reader: SessionReader) -> InstrumentFacts | None:
    """The facts a session file recorded for its day (None for an older file without them)."""
    raw = reader.meta().get("instrument")
    try:
        return InstrumentFacts.from_meta(raw, source="session")
    except ValueError as exc:
        logger.warning("{}: instrument facts not readable ({}); [instrument] applies",
                       reader.path.name, exc)
        return None


def _stored_facts(cfg: Config, db_path: Path, day: date, account: str,
                  underlying: str) -> InstrumentFacts | None:
    if not db_path.exists():
        return None
    db = Database(db_path, cfg.store)
    try:
        row = db.instrument_facts(day, account, underlying)
    finally:
        db.close()
    return row.facts("stored") if row is not None else None
