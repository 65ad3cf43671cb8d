"""The engine as `live` / `paper --attach` run it (``engine.app.live.run_trading``) against the
simulator over real sockets: fail-closed start, the operator channel, and the stop-signal
policies — ``keep_stops`` cancels the working entries and leaves the stops resting at the broker,
``flatten`` closes everything before the engine stops. Also ``live``'s account choice."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from engine.app.control import ControlSettings, send_command
from engine.app.live import run_trading
from engine.app.operator import graceful_stop
from engine.app.sections import load_config
from engine.app.tree import Engine
from engine.app.venues import Venue, live_venue
from engine.config import Config, ConfigError
from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    InstrumentSpec,
    next_expiry,
    option_symbol,
    trading_date,
)
from engine.market.universe import UniverseSettings
from engine.messages import Action, OrderIntent, OrderPurpose, PriceType, Tick
from engine.runtime.clock import WallClock
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.trading.risk import RiskSettings
from tests.support import until

KEY = "live-test-key-7d1f0a9c3e"
ATM = 24000
SPEC = InstrumentSpec()


@dataclass
class Running:
    sim: SimulatorServer
    engine: Engine
    stop: threading.Event
    thread: threading.Thread
    sock: str
    ce: str

    def tick(self, symbol: str, ltp: float) -> None:
        now = time.time()
        self.sim.publish(Tick(symbol, "NFO", ltp, recv_ts=now, exchange_ts=now,
                              bid=round(ltp - 0.05, 2), ask=round(ltp + 0.05, 2)))

    def order(self, cid: str, action: Action, pricetype: PriceType, purpose: OrderPurpose,
              price: float = 0.0, trigger: float = 0.0) -> None:
        self.engine.tell("orders", OrderIntent(
            client_id=cid, strategy="baseline_v1", account="paper", symbol=self.ce,
            exchange="NFO", action=action, quantity=65, pricetype=pricetype, price=price,
            trigger_price=trigger, purpose=purpose, created_ts=time.time()))

    def resting(self) -> dict[str, str]:
        """orderid -> status of the orders still working at the broker."""
        return {r.orderid: r.action for r in self.sim.broker.orderbook()
                if r.status in ("open", "trigger pending")}


def config(tmp: Path, policy: str) -> Config:
    cfg = load_config(None)
    return cfg.replace(
        engine=replace(cfg.engine, on_signal=policy, state_dir=str(tmp)),
        universe=UniverseSettings(width=0),
        control=ControlSettings(socket_path=str(Path(tempfile.mkdtemp(dir="/tmp")) / "e.sock")),
        risk=RiskSettings(eod_exit="23:59"))


@pytest.fixture(params=["keep_stops", "flatten"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    day = trading_date(time.time())
    ce = option_symbol("NIFTY", next_expiry(day, SPEC), ATM, "CE")
    pe = option_symbol("NIFTY", next_expiry(day, SPEC), ATM, "PE")
    sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False),
                          api_key=KEY, clock=WallClock(), instrument=SPEC)
    sim.declare_symbols([(ce, "NFO"), (pe, "NFO"), (INDEX_SYMBOL, INDEX_EXCHANGE)])
    sim.start()
    cfg = config(tmp_path, request.param)
    venue = Venue("paper", sim.rest_url, sim.ws_url, KEY, WallClock(), "paper")
    stop = threading.Event()
    started: dict[str, Engine] = {}
    thread = threading.Thread(target=run_trading, args=(cfg, venue), kwargs=dict(
        db_path=tmp_path / "engine.db", strategies=("baseline_v1",), stop=stop, atm=ATM,
        on_started=lambda e: started.update(engine=e)), daemon=True)
    thread.start()
    until(lambda: "engine" in started, timeout=30)
    r = Running(sim, started["engine"], stop, thread, cfg.section("control").socket_path, ce)
    r.tick(ce, 100.0)
    try:
        yield r
    finally:
        stop.set()
        thread.join(60)
        sim.stop()


def test_entries_open_only_after_reconciliation_and_status_answers(running: Running) -> None:
    until(lambda: send_command(running.sock, "status")["api"]["reconciled"], timeout=20)
    status = send_command(running.sock, "status")
    assert status["connection"]["openalgo_url"] == running.sim.rest_url
    assert status["risk"]["strategies"]["baseline_v1"]["state"] == "ACTIVE"
    reply = send_command(running.sock, "kill", {"strategy": "baseline_v1"})
    assert "REDUCING" in reply["summary"]
    with pytest.raises(Exception, match="unknown strategy"):
        send_command(running.sock, "pause", {"strategy": "nope"})


def test_the_stop_policy_is_carried_out(running: Running, request: pytest.FixtureRequest) -> None:
    until(lambda: send_command(running.sock, "status")["api"]["reconciled"], timeout=20)
    running.order("t-entry", Action.SELL, PriceType.MARKET, OrderPurpose.ENTRY)
    until(lambda: any(p.quantity == -65 for p in running.sim.broker.positionbook()), timeout=10)
    running.order("t-stop", Action.BUY, PriceType.SL, OrderPurpose.STOP, 130.0, 125.0)
    running.order("t-entry2", Action.SELL, PriceType.LIMIT, OrderPurpose.ENTRY, 150.0)
    until(lambda: len(running.resting()) == 2, timeout=10)
    policy = running.engine.cfg.engine.on_signal
    assert graceful_stop(running.engine, policy, timeout_s=20)
    resting = running.resting()
    positions = {p.symbol: p.quantity for p in running.sim.broker.positionbook()}
    if policy == "keep_stops":
        # the working entry is gone, the stop still protects the short
        assert list(resting.values()) == ["BUY"] and positions[running.ce] == -65
    else:
        assert resting == {} and positions.get(running.ce, 0) == 0


def test_live_picks_one_account_or_says_how(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    from engine.app.accounts import AccountVault, KeyCipher
    from engine.store.database import Database

    fernet = Fernet.generate_key().decode()
    monkeypatch.setenv("NIFTY_ENGINE_FERNET_KEY", fernet)
    cfg = load_config(None)
    cfg = cfg.replace(store=replace(cfg.store, path=str(tmp_path / "accounts.db")))
    with Database(tmp_path / "accounts.db") as db:
        vault = AccountVault(db, KeyCipher(fernet), WallClock())
        vault.add("alpha", "http://127.0.0.1:5001", "ws://127.0.0.1:8001", "primary",
                  "alpha-key-0123456789abcdef")
        vault.add("beta", "http://127.0.0.1:5002", "ws://127.0.0.1:8002", "primary",
                  "beta-key-0123456789abcdef")
    with pytest.raises(ConfigError, match="one engine per account"):
        live_venue(cfg)
    venue = live_venue(cfg, "beta")
    assert (venue.rest_url, venue.ws_url, venue.account) == (
        "http://127.0.0.1:5002", "ws://127.0.0.1:8002", "beta")
    assert venue.api_key == "beta-key-0123456789abcdef"
    with pytest.raises(ConfigError, match="no account 'gamma'"):
        live_venue(cfg, "gamma")



def test_live_refuses_to_trade_through_semi_auto_mode(tmp_path: Path) -> None:
    """OpenAlgo in semi-auto mode queues every order in its Action Center: live stops at start
    with one line telling the operator to switch to auto mode (exit 2 at the command line)."""
    sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                                            semi_auto=True), api_key=KEY, clock=WallClock(),
                          instrument=SPEC)
    with sim:
        venue = Venue("live", sim.rest_url, sim.ws_url, KEY, WallClock(), "acct")
        with pytest.raises(ConfigError, match="switch it to auto mode"):
            run_trading(config(tmp_path, "keep_stops"), venue, db_path=tmp_path / "e.db",
                        strategies=("baseline_v1",), stop=threading.Event(), atm=ATM)
    assert sim.rest_calls("placeorder") == 0
