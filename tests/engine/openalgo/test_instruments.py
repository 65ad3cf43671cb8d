"""The instrument provider against the simulator over real sockets: expiries, lot size, tick
size and freeze quantity come from OpenAlgo's master contract; config overrides and falls back."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from engine.app.facts import broker_facts, instrument_spec
from engine.app.sections import load_config
from engine.market.instruments import InstrumentFacts, InstrumentSpec, resolve_spec
from engine.market.universe import select_universe
from engine.messages import Tick
from engine.openalgo.instruments import InstrumentProvider, parse_expiry
from engine.openalgo.rest import OpenAlgoClient, RestSettings
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.store.database import Database, StoredInstrumentFacts, record

DAY = date(2026, 1, 7)  # a Wednesday
T0 = ist_epoch(2026, 1, 7, 9, 20)
MOVED = date(2026, 1, 12)  # Tuesday 13 Jan a holiday: the weekly expiry moved to Monday
KEY = "provider-key"


@pytest.fixture
def sim() -> SimulatorServer:
    clock = VirtualClock(T0)
    spec = InstrumentSpec(lot_size=75, freeze_quantity=1800)
    server = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False),
                             api_key=KEY, clock=clock, instrument=spec)
    server.start()
    for strike in range(25900, 26150, 50):
        for kind in ("CE", "PE"):
            server.declare_symbols([(f"NIFTY12JAN26{strike}{kind}", "NFO"),
                                    (f"NIFTY20JAN26{strike}{kind}", "NFO")])
    server.declare_symbols([("NIFTY06JAN2626000CE", "NFO")])  # expired yesterday
    server.publish(Tick("NIFTY", "NSE_INDEX", 26012.0, T0, T0))
    yield server
    server.stop()


def client(url: str) -> OpenAlgoClient:
    return OpenAlgoClient(RestSettings(host=url, retries=1, timeout_s=2.0), api_key=KEY,
                          clock=VirtualClock(T0))


def test_facts_and_the_holiday_moved_expiry_come_from_the_broker(sim: SimulatorServer,
                                                                 tmp_path: Path) -> None:
    cfg = load_config(None)  # [instrument]: lot 65, Tuesday expiries, no holidays listed
    facts, spot = broker_facts(cfg, client(sim.rest_url), DAY, db_path=tmp_path / "e.db",
                               account="a")
    assert facts == InstrumentFacts(lot_size=75, tick_size=0.05, freeze_quantity=1800,
                                    expiries=(MOVED, date(2026, 1, 20)))
    assert spot == 26012.0
    spec = instrument_spec(cfg, facts)
    assert (spec.lot_size, spec.freeze_quantity) == (75, 1800)
    symbols = select_universe(spot, DAY, spec, width=1)
    assert symbols[0] == "NIFTY12JAN2625950CE"  # the weekday rule alone would say 13JAN26
    listed = InstrumentProvider(client(sim.rest_url)).listed_options(MOVED, strike_count=3)
    assert set(symbols) <= listed


def test_config_override_wins_and_offline_falls_back(sim: SimulatorServer,
                                                     tmp_path: Path) -> None:
    cfg = load_config(None, overrides={"instrument.override": "lot_size"})
    facts, _ = broker_facts(cfg, client(sim.rest_url), DAY, db_path=tmp_path / "e.db",
                            account="a")
    spec = instrument_spec(cfg, facts)
    assert (spec.lot_size, spec.expiries[0]) == (65, MOVED)  # override kept, expiries broker's
    gone = sim.rest_url
    sim.stop()
    db_path = tmp_path / "e.db"
    offline, spot = broker_facts(cfg, client(gone), DAY, db_path=db_path, account="a")
    assert (offline, spot) == (None, None)  # nothing stored yet: [instrument] alone
    with Database(db_path) as db:
        row = StoredInstrumentFacts.of(facts, trading_date=DAY, account="a",
                                       underlying="NIFTY", fetched_ts=T0)
        db.run_write(lambda tx: tx.apply(db.writes_for(record(row))))
    stored, _ = broker_facts(load_config(None), client(gone), DAY, db_path=db_path,
                             account="a")
    assert stored == replace(facts, source="stored")


def test_resolve_spec_rules() -> None:
    base = InstrumentSpec(holidays=frozenset({date(2026, 1, 13)}))
    facts = InstrumentFacts(lot_size=75, freeze_quantity=None, expiries=(MOVED,))
    spec = resolve_spec(base, facts)
    assert (spec.lot_size, spec.freeze_quantity, spec.expiries) == (75, 1800, (MOVED,))
    assert resolve_spec(base, facts, ("holidays",)).expiries == ()
    assert resolve_spec(base, None) is base
    assert parse_expiry("12-JAN-26") == parse_expiry("12-jan-2026") == MOVED
    assert InstrumentFacts.from_meta(facts.to_meta(), source="broker") == facts
    with pytest.raises(ValueError, match="lot_size"):
        InstrumentFacts.from_meta({"lot_size": 0})
