"""A remote OpenAlgo as production runs it: behind nginx, ``https://host`` for REST and
``wss://host/ws`` for the WebSocket, TLS (a CA and a certificate made here, trusted through
``[openalgo] ca_bundle``) and HTTP basic auth in front.

A paper engine trades through the proxy (its login stored encrypted with the account); wrong
credentials, or a certificate the engine does not trust, end ``run.py live`` and ``run.py paper
--attach`` with one line and exit 2, the password in no output and no file."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from engine.app.accounts import AccountVault, KeyCipher
from engine.app.control import send_command
from engine.app.live import run_trading
from engine.app.sections import load_config
from engine.app.tree import Engine
from engine.app.venues import live_venue, write_simulator_file
from engine.config import ConfigError
from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    InstrumentSpec,
    next_expiry,
    option_symbol,
    trading_date,
)
from engine.messages import Action, OrderIntent, OrderPurpose, PriceType, Tick
from engine.openalgo.access import BasicAuth
from engine.runtime.clock import WallClock
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.store.database import Database
from tests.engine.app.test_cli_modes import ROOT, clean_env
from tests.engine.app.test_live import config
from tests.engine.proxy import Nginx, Tls, make_tls
from tests.support import until

KEY = "remote-test-key-4e8a1c0b7d"
USER = "trader"
PASSWORD = "nginx-pass-93c1f0aa7e"
ATM = 24000
SPEC = InstrumentSpec()


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    day = trading_date(time.time())
    server = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0,
                                               rate_limits_enabled=False),
                             api_key=KEY, clock=WallClock(), instrument=SPEC)
    server.declare_symbols([(option_symbol("NIFTY", next_expiry(day, SPEC), ATM, kind), "NFO")
                            for kind in ("CE", "PE")] + [(INDEX_SYMBOL, INDEX_EXCHANGE)])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nginx(sim: SimulatorServer, tls: Tls, tmp_path: Path) -> Iterator[Nginx]:
    rest_port, ws_port = (int(url.rsplit(":", 1)[1]) for url in (sim.rest_url, sim.ws_url))
    proxy = Nginx(tmp_path / "nginx", rest_port=rest_port, ws_port=ws_port, tls=tls,
                  user=USER, password=PASSWORD).start()
    yield proxy
    proxy.stop()


def test_a_paper_engine_trades_through_nginx_with_tls_and_basic_auth(
        sim: SimulatorServer, nginx: Nginx, tls: Tls, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, log_capture: io.StringIO) -> None:
    fernet = Fernet.generate_key().decode()
    monkeypatch.setenv("NIFTY_ENGINE_FERNET_KEY", fernet)
    cfg = config(tmp_path, "keep_stops")  # as test_live runs an attached engine
    cfg = cfg.replace(store=replace(cfg.store, path=str(tmp_path / "accounts.db")),
                      openalgo=replace(cfg.openalgo, ca_bundle=str(tls.ca)))
    with Database(tmp_path / "accounts.db") as db:
        AccountVault(db, KeyCipher(fernet), WallClock()).add(
            "remote", nginx.url, nginx.ws_url, "primary", KEY, BasicAuth(USER, PASSWORD))
    assert PASSWORD.encode() not in (tmp_path / "accounts.db").read_bytes()
    venue = live_venue(cfg, "remote")  # the stored account, its login decrypted
    assert venue.access.basic_auth == BasicAuth(USER, PASSWORD)
    day = trading_date(time.time())
    ce = option_symbol("NIFTY", next_expiry(day, SPEC), ATM, "CE")
    stop = threading.Event()
    started: dict[str, Engine] = {}
    thread = threading.Thread(target=run_trading, args=(cfg, venue), kwargs=dict(
        db_path=tmp_path / "engine.db", strategies=("baseline_v1",), stop=stop, atm=ATM,
        on_started=lambda e: started.update(engine=e)), daemon=True)
    thread.start()
    sock = cfg.section("control").socket_path
    try:
        until(lambda: "engine" in started, timeout=30)
        engine = started["engine"]
        until(lambda: send_command(sock, "status")["api"]["reconciled"], timeout=20)
        now = time.time()
        sim.publish(Tick(ce, "NFO", 100.0, recv_ts=now, exchange_ts=now, bid=99.95,
                         ask=100.05))
        until(lambda: send_command(sock, "status")["connection"]["websocket"] == "connected",
              timeout=20)
        engine.tell("orders", OrderIntent(
            client_id="remote-entry", strategy="baseline_v1", account="remote", symbol=ce,
            exchange="NFO", action=Action.SELL, quantity=65, pricetype=PriceType.MARKET,
            price=0.0, trigger_price=0.0, purpose=OrderPurpose.ENTRY, created_ts=now))
        until(lambda: any(p.symbol == ce and p.quantity == -65
                          for p in sim.broker.positionbook()), timeout=15)
        # the engine heard the fill back through the proxy and holds the short
        until(lambda: any(p.get("symbol") == ce and p.get("quantity") == -65
                          for p in send_command(sock, "status").get("positions", [])),
              timeout=15)
    finally:
        stop.set()
        thread.join(60)
    access_log = (nginx.prefix / "access.log").read_text()
    assert '"POST /api/v1/placeorder HTTP/1.1" 200' in access_log
    assert '"GET /ws HTTP/1.1" 101' in access_log
    logged = log_capture.getvalue()
    assert "openalgo[remote] placeorder" in logged  # the run's debug log, all of it
    assert PASSWORD not in logged and venue.access.secrets()[-1] not in logged


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args, "--state-dir", str(tmp_path / "state"),
         "--atm", str(ATM)], cwd=tmp_path, env=clean_env(OPENALGO_API_KEY=KEY, **env),
        capture_output=True, text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command's only stderr line (console logging goes to stderr too: turned off)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_wrong_credentials_give_one_line_and_exit_2(nginx: Nginx, tls: Tls,
                                                    tmp_path: Path) -> None:
    quiet = ("--set", "logging.console=false")
    ca = ("--set", f"openalgo.ca_bundle={tls.ca}")
    remote = ("--set", f"openalgo.host={nginx.url}", "--set", f"feed.ws_url={nginx.ws_url}")
    wrong = {"NIFTY_ENGINE_BASIC_AUTH_USER": USER,
             "NIFTY_ENGINE_BASIC_AUTH_PASSWORD": "wrong-" + PASSWORD}

    live = run_cli(tmp_path, "live", *quiet, *ca, *remote, **wrong)
    assert live.returncode == 2
    line = one_line(live)
    assert f"{nginx.url} refused the engine: the proxy in front of OpenAlgo refused the " \
        f"basic-auth credentials of user 'trader' (HTTP 401 Unauthorized)" in line
    assert "NIFTY_ENGINE_BASIC_AUTH_PASSWORD" in line and "Traceback" not in live.stderr

    (tmp_path / "state").mkdir(exist_ok=True)
    write_simulator_file(tmp_path / "state", rest_url=nginx.url, ws_url=nginx.ws_url,
                         clock=WallClock())
    attached = run_cli(tmp_path, "paper", "--attach", *quiet, *ca, **wrong)
    assert attached.returncode == 2
    assert "refused the basic-auth credentials of user 'trader'" in one_line(attached)

    none_set = run_cli(tmp_path, "paper", "--attach", *quiet, *ca)
    assert none_set.returncode == 2
    assert "asks for basic-auth credentials (HTTP 401 Unauthorized) and none are set" in \
        one_line(none_set)

    untrusted = run_cli(tmp_path, "live", *quiet, *remote, **wrong)  # no CA bundle
    assert untrusted.returncode == 2
    assert "TLS certificate was refused (unable to get local issuer" in one_line(untrusted)
    assert "[openalgo] ca_bundle" in one_line(untrusted)

    clear = run_cli(tmp_path, "live", *quiet, "--set", "openalgo.host=http://openalgo.example",
                    "--set", "feed.ws_url=ws://openalgo.example/ws", **wrong)
    assert clear.returncode == 2
    assert "would travel in clear text" in one_line(clear)

    for proc in (live, attached, none_set, untrusted, clear):
        assert PASSWORD not in proc.stdout + proc.stderr
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert "401" in (nginx.prefix / "access.log").read_text()


def test_a_ca_bundle_that_is_not_a_file_is_a_configuration_error(tls: Tls) -> None:
    with pytest.raises(ConfigError, match=r"openalgo\.ca_bundle: no such file"):
        load_config(None, overrides={"openalgo.ca_bundle": "/nonexistent/ca.pem"})
    cfg = load_config(None, overrides={"openalgo.ca_bundle": str(tls.ca)})
    assert cfg.section("openalgo").ca_bundle == str(tls.ca)
