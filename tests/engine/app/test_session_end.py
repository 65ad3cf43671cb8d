"""The end of a run (engine/app/session_end.py) against the real simulator over loopback: a failed
end-of-session check makes the run exit 1 and says why; a safe stop cancels working entries
from the database and verifies them, leaving stops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.store import StoreWriter
from engine.app.commands import _end_of_run
from engine.app.sections import load_config
from engine.app.session_end import (
    SessionChecks,
    cancel_entries_at_safe_stop,
    check_dead_letters,
    check_session,
)
from engine.market.instruments import trading_date
from engine.messages import (
    Action,
    DeadLetter,
    Fill,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PositionMark,
    PositionQuery,
    PriceType,
    StatusRequest,
)
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.actor import EngineActor, handles
from engine.runtime.clock import VirtualClock
from engine.runtime.registry import Registry
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorServer
from engine.store.database import Database, StoreSettings
from tests.engine.sim.conftest import API_KEY, BASE_SETTINGS, SYM, T0, tick

CFG = load_config(None, env={})


class Books(EngineActor):
    """Stands in for the position monitor and the risk manager: what the engine believes."""

    def __init__(self, marks: tuple[PositionMark, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.marks = marks

    @handles(PositionQuery)
    def positions(self, _: PositionQuery) -> tuple[PositionMark, ...]:
        return self.marks

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, Any]:
        return {"strategies": {}}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    clock = VirtualClock(T0)
    sim = SimulatorServer(BASE_SETTINGS, api_key=API_KEY, clock=clock,
                          matching=MatchingSettings(broker="ideal")).start()
    sim.declare_symbols([(SYM, "NFO")])
    sim.publish(tick(100.0))
    client = OpenAlgoClient(replace(CFG.openalgo, host=sim.rest_url), api_key=API_KEY,
                            clock=clock, account="paper")
    registry = Registry(clock)
    refs: list[pykka.ActorRef[Any]] = []
    for name in ("positions", "risk"):
        registry.declare(name)
        ref = Books.start(name=name, registry=registry, clock=clock)
        registry.register(name, ref)
        refs.append(ref)
    db = Database(tmp_path / "engine.db", StoreSettings())
    yield {"sim": sim, "client": client, "registry": registry, "db": db, "clock": clock,
           "path": tmp_path / "engine.db"}
    for ref in refs:
        ref.stop()
    client.close()
    db.close()
    sim.stop()


def test_a_failed_check_exits_1_and_prints_why(world: dict[str, Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The broker holds a short the engine never heard of (a fill it lost): an orphan, and a
    tradebook quantity no engine fill matches. The run exits 1 and prints both."""
    client: OpenAlgoClient = world["client"]
    client.place_order(strategy="hand", symbol=SYM, exchange="NFO", action="SELL",
                       quantity=65, pricetype="MARKET")
    checks = SessionChecks()
    check_session(checks, registry=world["registry"], db=world["db"], broker=client,
                  account="paper", day_over=True, attempts=2, pause_s=0.01)
    assert any(f.startswith(f"orphan position on {SYM}: engine 0, broker -65")
               for f in checks.failures), checks.failures
    assert any(f.startswith(f"exit not completed: -65 of {SYM}") for f in checks.failures)
    code = _end_of_run(CFG, world["path"], ("baseline_v1",), date(2025, 1, 30), "paper", checks,
                       None)
    out = capsys.readouterr().out
    assert code == 1
    assert "[TRADES] baseline_v1 2025-01-30 (paper)" in out  # the table is always printed
    assert "[CHECKS] end of session: 2 FAILED" in out
    assert f"FAILED orphan position on {SYM}: engine 0, broker -65" in out


def test_clean_books_pass_and_exit_0(world: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    checks = SessionChecks()
    check_session(checks, registry=world["registry"], db=world["db"], broker=world["client"],
                  account="paper", day_over=True, attempts=1)
    check_dead_letters(checks, world["registry"])
    assert checks.ok, checks.failures
    assert _end_of_run(CFG, world["path"], ("baseline_v1",), None, "paper", checks, None) == 0
    assert "[CHECKS] end of session: all passed" in capsys.readouterr().out


def test_yesterdays_fills_are_not_compared_with_todays_tradebook(world: dict[str, Any]) -> None:
    """A process that runs for days: the database holds yesterday's fills, the broker's
    tradebook is today's only (OpenAlgo's books start empty each morning). Found by the
    multi-day soak: day 2 failed with "fills of broker order X: engine 390, broker tradebook
    0" for every order of day 1."""
    clock: VirtualClock = world["clock"]
    registry = Registry(clock)
    registry.declare("store")
    store = StoreWriter.start(world["db"], name="store", registry=registry, clock=clock)
    registry.register("store", store)
    yesterday = T0 - 86400.0
    registry.ask("store", OrderIntent("s-1", "s", "paper", SYM, "NFO", Action.SELL, 65,
                                      PriceType.MARKET, created_ts=yesterday))
    registry.ask("store", OrderEvent("s-1", OrderStatus.COMPLETE, yesterday, "s", "paper", SYM,
                                     broker_order_id="old-1", filled_quantity=65,
                                     average_price=100.0))
    registry.ask("store", Fill("s-1", "old-1", "s", "paper", SYM, "NFO", Action.SELL, 65, 100.0,
                               65, yesterday))
    store.stop()
    assert world["db"].fills(account="paper"), "the fill of yesterday is stored"
    checks = SessionChecks()
    check_session(checks, registry=world["registry"], db=world["db"], broker=world["client"],
                  account="paper", day_over=True, trading_day=trading_date(T0), attempts=1)
    assert checks.ok, checks.failures


def test_a_trading_dead_letter_fails_the_run(world: dict[str, Any]) -> None:
    registry: Registry = world["registry"]
    registry.declare("orders")
    registry.retire("orders", "test")
    registry.tell("orders", OrderIntent("c1", "s", "paper", SYM, "NFO", Action.SELL, 65,
                                        PriceType.MARKET))
    registry.tell("orders", DeadLetter("x", "Bar", "test", T0))  # not a trading message
    checks = SessionChecks()
    check_dead_letters(checks, registry)
    assert checks.failures == ["1 OrderIntent message(s) to orders became dead letters"]


def test_a_safe_stop_cancels_working_entries_and_leaves_stops(world: dict[str, Any]) -> None:
    client: OpenAlgoClient = world["client"]
    clock: VirtualClock = world["clock"]
    entry_id = client.place_order(strategy="s", symbol=SYM, exchange="NFO", action="SELL",
                                  quantity=65, pricetype="SL", price=89.0, trigger_price=90.0)
    stop_id = client.place_order(strategy="s", symbol=SYM, exchange="NFO", action="BUY",
                                 quantity=65, pricetype="SL", price=121.0, trigger_price=120.0)
    registry = Registry(clock)
    registry.declare("store")
    store = StoreWriter.start(world["db"], name="store", registry=registry, clock=clock)
    registry.register("store", store)
    for cid, oid, purpose in (("s-1", entry_id, OrderPurpose.ENTRY),
                              ("s-2", stop_id, OrderPurpose.STOP)):
        registry.ask("store", OrderIntent(cid, "s", "paper", SYM, "NFO", Action.SELL, 65,
                                          PriceType.SL, purpose=purpose, created_ts=T0))
        registry.ask("store", OrderEvent(cid, OrderStatus.TRIGGER_PENDING, T0, "s", "paper", SYM,
                                         broker_order_id=oid, purpose=purpose))
    store.stop()
    checks = SessionChecks()
    cancel_entries_at_safe_stop(world["db"], lambda: OpenAlgoClient(
        replace(CFG.openalgo, host=world["sim"].rest_url), api_key=API_KEY, clock=clock,
        account="paper"), "paper", checks, pause_s=0.01)
    assert checks.ok, checks.failures
    assert checks.notes == [f"safe stop: entry s-1 ({entry_id}) ended cancelled"]
    assert client.order_status(strategy="s", orderid=entry_id).status == "cancelled"
    assert client.order_status(strategy="s", orderid=stop_id).status == "trigger pending"
