"""Trading against an OpenAlgo server that runs on its own: live, or paper attached to a simulator.

Owns the assembly and the run loop of an engine whose broker and market outlive it:

- ``run.py live [--account NAME]``: the user's OpenAlgo server (a stored account with its
  Fernet-encrypted key, or ``[openalgo] host``, ``[feed] ws_url`` and ``OPENALGO_API_KEY``), the
  wall clock (IST). Mirroring a strategy on several accounts is one engine per account;
- ``run.py paper --attach``: a standalone ``run.py simulator`` (which writes
  ``<state_dir>/simulator.json``: its URLs and its market clock — market time, wall time and
  speed — so every engine that attaches, and every restart of one, runs on the simulator's
  market time). Killing and restarting the engine leaves the simulator's orders, positions and
  market running: this is how recovery is exercised for real.

Both select the day's universe from the index spot (``[universe]``), start the engine (the
reconciler opens entries only after startup reconciliation: fail-closed), serve the operator
control socket, and on SIGTERM / SIGINT stop by ``[engine] on_signal`` (``graceful_stop``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from loguru import logger

from engine.clock import Clock, ScaledClock, WallClock
from engine.config import Config, ConfigError
from engine.control import ControlError, ControlServer
from engine.instruments import INDEX_EXCHANGE, INDEX_SYMBOL, trading_date
from engine.modes import feed_connector
from engine.openalgo.rest import OpenAlgoClient
from engine.operator import EngineOperator, graceful_stop
from engine.runtime import Engine, EngineParts
from engine.universe import select_universe, universe_pairs

SIM_FILE = "simulator.json"


@dataclass(frozen=True, slots=True)
class Venue:
    """Where the engine trades: the server's URLs, the API key, the clock to run on."""

    name: str  # "live" | "paper"
    rest_url: str
    ws_url: str
    api_key: str
    clock: Clock
    account: str


def live_venue(cfg: Config, account: str | None = None) -> Venue:
    """The user's OpenAlgo server for ``account`` (a stored account, keys decrypted; or the
    single account of ``[openalgo]`` + ``OPENALGO_API_KEY``). A strategy is mirrored on several
    accounts by running one engine per account (``--account``): each has its own order manager,
    rate limit, database and control socket, and one account's failure cannot stop another."""
    from engine.accounts import Role, resolve_accounts
    from engine.store import Database

    path = Path(cfg.store.path)
    if path.exists():
        with Database(path, cfg.store) as db:
            accounts = resolve_accounts(cfg, db, os.environ)
    else:  # no database yet, so no stored account
        accounts = resolve_accounts(cfg, None, os.environ)
    if account is not None:
        chosen = [a for a in accounts if a.name == account]
        if not chosen:
            raise ConfigError(f"no account {account!r}; known: "
                              f"{', '.join(a.name for a in accounts)}", key="live.account")
    else:
        chosen = [a for a in accounts if a.role is Role.PRIMARY]
        if len(chosen) > 1:
            names = ", ".join(a.name for a in chosen)
            raise ConfigError(f"{len(chosen)} primary accounts ({names}): run one engine per "
                              f"account (run.py live --account NAME)", key="live.account")
    a = chosen[0]
    return Venue("live", a.host, a.ws_url, a.api_key, WallClock(), a.name)


def write_simulator_file(state_dir: Path, *, rest_url: str, ws_url: str, clock: Clock) -> Path:
    """What a standalone simulator publishes for engines that attach (no secret in it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SIM_FILE
    facts = {"rest_url": rest_url, "ws_url": ws_url, "market_ts": clock.time(),
             "wall_ts": time.time(), "speed": clock.speed, "pid": os.getpid()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts))
    tmp.replace(path)
    return path


def attached_venue(cfg: Config, state_dir: Path) -> Venue:
    """The simulator described in ``<state_dir>/simulator.json``, on its market clock."""
    path = state_dir / SIM_FILE
    try:
        facts = json.loads(path.read_text())
        speed = float(facts["speed"])
        market = float(facts["market_ts"]) + (time.time() - float(facts["wall_ts"])) * speed
        rest_url, ws_url = str(facts["rest_url"]), str(facts["ws_url"])
    except FileNotFoundError:
        raise ConfigError(f"no simulator to attach to: {path} does not exist (start "
                          f"`run.py simulator` first)", key="paper.attach") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a simulator file ({exc})", key="paper.attach") \
            from None
    key = cfg.secrets.openalgo_api_key
    key_file = state_dir / "simulator.key"
    if not key and key_file.exists():
        key = key_file.read_text().strip()
    if not key:
        raise ConfigError("no API key for the simulator: set OPENALGO_API_KEY or start the "
                          "simulator without it (it then writes simulator.key)",
                          key="openalgo_api_key")
    return Venue("paper", rest_url, ws_url, key, ScaledClock(market, speed), "paper")


def run_trading(cfg: Config, venue: Venue, *, db_path: Path, strategies: tuple[str, ...],
                stop: threading.Event, atm: int | None = None, expiry: date | None = None,
                control_path: str | None = None, on_started: Any = None) -> Engine:
    """Assemble, start and run the engine at ``venue`` until ``stop`` (a signal) or a safe
    stop; returns the stopped engine."""
    clock = venue.clock
    broker = OpenAlgoClient(replace(cfg.openalgo, host=venue.rest_url), api_key=venue.api_key,
                            clock=clock, account=venue.account)
    day = trading_date(clock.time())
    spot = None if atm else broker.quotes(symbol=INDEX_SYMBOL, exchange=INDEX_EXCHANGE).ltp
    uni = cfg.section("universe")
    symbols = select_universe(spot, day, cfg.instrument.spec(), expiry=expiry, atm=atm,
                              width=uni.width, rounding=uni.atm_rounding)
    parts = EngineParts(mode=venue.name, clock=clock, symbols=universe_pairs(symbols),
                        trading_day=day, broker=broker,
                        connect=feed_connector(cfg, api_key=venue.api_key, clock=clock,
                                               ws_url=venue.ws_url, account=venue.account),
                        db_path=db_path, strategies=strategies, account=venue.account)
    engine = Engine(cfg, parts)
    server: ControlServer | None = None
    settings = cfg.section("control")
    engine.start()
    try:
        if settings.enabled:
            server = ControlServer(control_path or settings.socket_path,
                                   EngineOperator(engine, openalgo_url=venue.rest_url),
                                   max_request_bytes=settings.max_request_bytes,
                                   idle_timeout_s=settings.idle_timeout_s,
                                   chaos_enabled=settings.chaos_enabled)
            try:
                server.start()
            except ControlError as exc:
                logger.error("control channel not available: {}", exc)
                server = None
        logger.info("{}: trading {} symbols at {} (spot {}), database {}", venue.name,
                    len(symbols), venue.rest_url, spot, db_path)
        if on_started is not None:
            on_started(engine)
        while not stop.wait(0.2):
            if engine.stopped.is_set():
                break
        if stop.is_set() and not engine.safe_stop_reason:
            graceful_stop(engine, cfg.engine.on_signal,
                          timeout_s=cfg.engine.shutdown_timeout_s)
    finally:
        if server is not None:
            server.stop()
        engine.stop()
        clock.stop()
    return engine
