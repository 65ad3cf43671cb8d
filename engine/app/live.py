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

Both first ask the server for a ``ping``: a refusal (the API key, or the login of a proxy in
front of OpenAlgo) or a TLS certificate the engine does not trust ends the start with one line
(``AccessRefused``, a configuration error: exit 2); an unreachable server does not (the engine
starts and keeps trying). Both then select the day's universe from the index spot
(``[universe]``), start the engine (the
reconciler opens entries only after startup reconciliation: fail-closed), serve the operator
control socket, and on SIGTERM / SIGINT stop by ``[engine] on_signal`` (``graceful_stop``).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from loguru import logger

from engine.app.dashboard.channel import dashboard_channel
from engine.app.facts import broker_facts, instrument_spec
from engine.app.modes import entries_at_safe_stop, feed_connector, past_eod
from engine.app.operator import control_channel, graceful_stop
from engine.app.session_end import SessionChecks, check_dead_letters, check_session
from engine.app.tree import Engine, EngineParts
from engine.app.venues import Venue
from engine.broker import AuthError, BrokerError, ProxyAuthError, SemiAutoMode, UntrustedServer
from engine.config import Config, ConfigError
from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    parse_option_symbol,
    trading_date,
)
from engine.market.universe import select_universe, universe_pairs
from engine.openalgo.instruments import InstrumentProvider
from engine.openalgo.rest import OpenAlgoClient


def _refuse_semi_auto(broker: OpenAlgoClient) -> None:
    """OpenAlgo in semi-auto (Action Center) mode queues every order for a person to approve:
    the engine refuses to trade through it (ConfigError: one line, exit 2). A probe that cannot
    be read leaves it to the first order reply, which shows the mode too."""
    try:
        mode = broker.order_mode()
    except BrokerError as exc:
        logger.warning("OpenAlgo order mode not read ({}); an order reply will show it", exc)
        return
    if mode == "semi_auto":
        raise ConfigError(SemiAutoMode.HINT, key="openalgo")


def day_engine(cfg: Config, venue: Venue, broker: OpenAlgoClient, *, db_path: Path,
               strategies: tuple[str, ...], atm: int | None = None,
               expiry: date | None = None) -> tuple[Engine, float | None]:
    """The engine of the day the clock is in: the instrument facts, the spot and the universe
    read from the broker now (so at or after the open, for that day); returns it unstarted,
    with the spot it was selected at."""
    clock = venue.clock
    day = trading_date(clock.time())
    facts, spot = broker_facts(cfg, broker, day, db_path=db_path, account=venue.account)
    if atm:
        spot = None
    elif spot is None:
        spot = broker.quotes(symbol=INDEX_SYMBOL, exchange=INDEX_EXCHANGE).ltp
    uni = cfg.section("universe")
    symbols = select_universe(spot, day, instrument_spec(cfg, facts), expiry=expiry, atm=atm,
                              width=uni.width, rounding=uni.atm_rounding)
    if facts is not None and facts.source == "broker":
        symbols = _listed_only(broker, symbols, uni.width)
    parts = EngineParts(mode=venue.name, clock=clock, symbols=universe_pairs(symbols),
                        trading_day=day, broker=broker, facts=facts,
                        connect=feed_connector(cfg, api_key=venue.api_key, clock=clock,
                                               ws_url=venue.ws_url, account=venue.account,
                                               access=venue.access),
                        db_path=db_path, strategies=strategies, account=venue.account,
                        notify_urls=venue.notify_urls)
    return Engine(cfg, parts), spot


def venue_broker(cfg: Config, venue: Venue, *, session_may_wait: bool = False) -> OpenAlgoClient:
    """The REST client of ``venue``, its access checked (``check_access``; live: refused when
    OpenAlgo is in semi-auto mode)."""
    broker = OpenAlgoClient(replace(cfg.openalgo, host=venue.rest_url), api_key=venue.api_key,
                            clock=venue.clock, account=venue.account, access=venue.access)
    try:
        check_access(broker, venue, session_may_wait=session_may_wait)
        if venue.name == "live":
            _refuse_semi_auto(broker)
    except BaseException:
        broker.close()
        raise
    return broker


def run_trading(cfg: Config, venue: Venue, *, db_path: Path, strategies: tuple[str, ...],
                stop: threading.Event, atm: int | None = None, expiry: date | None = None,
                control_path: str | None = None, on_started: Any = None,
                checks: SessionChecks | None = None) -> Engine:
    """Assemble, start and run the engine at ``venue`` until ``stop`` (a signal) or a safe
    stop; returns the stopped engine. With ``checks``, the end-of-session checks are run into
    it (engine.app.session_end), and a safe stop cancels the working entries."""
    clock = venue.clock
    try:
        broker = venue_broker(cfg, venue)
        try:
            # the host and the key, checked before anything starts (AuthError,
            # BrokerUnavailable: one line and an exit code from the command line, not an
            # engine retrying forever)
            broker.funds()
            engine, spot = day_engine(cfg, venue, broker, db_path=db_path,
                                      strategies=strategies, atm=atm, expiry=expiry)
        except BaseException:
            broker.close()
            raise
    except BaseException:
        clock.stop()
        raise
    engine.start()
    try:
        with control_channel(engine, openalgo_url=venue.rest_url, path=control_path), \
                dashboard_channel(engine, openalgo_url=venue.rest_url):
            logger.info("{}: trading {} symbols at {} (spot {}), database {}", venue.name,
                        len(engine.parts.symbols), venue.rest_url, spot, db_path)
            if on_started is not None:
                on_started(engine)
            while not stop.wait(0.2):
                if engine.stopped.is_set():
                    break
            if stop.is_set() and not engine.safe_stop_reason:
                graceful_stop(engine, cfg.engine.on_signal,
                              timeout_s=cfg.engine.shutdown_timeout_s)
            if checks is not None and strategies and not engine.safe_stop_reason:
                check_session(checks, registry=engine.registry, db=engine.db, broker=broker,
                              account=venue.account, day_over=not stop.is_set()
                              and past_eod(cfg, clock.time()),
                              trading_day=engine.parts.trading_day)
    finally:
        engine.stop()
        if checks is not None and engine.safe_stop_reason:
            entries_at_safe_stop(cfg, db_path, venue.account, checks, lambda: OpenAlgoClient(
                replace(cfg.openalgo, host=venue.rest_url), api_key=venue.api_key, clock=clock,
                account=venue.account))
        if checks is not None and strategies:
            check_dead_letters(checks, engine.registry)
        clock.stop()
    return engine


class AccessRefused(ConfigError):
    """The server refused this engine at start: its API key, its proxy login, or its TLS
    certificate. One line; the command exits 2."""


def check_access(broker: OpenAlgoClient, venue: Venue, *, session_may_wait: bool = False) -> None:
    """Ask the server for a ``ping``; raise ``AccessRefused`` if it refuses us (see the module
    docstring). Any other failure is logged and the start goes on. ``session_may_wait`` (the
    day lifecycle): OpenAlgo's own refusal, which is also how it answers once the day's broker
    session is gone, is left to the lifecycle's broker-session wait; a proxy's refusal and an
    untrusted certificate still end the start."""
    try:
        broker.ping()
    except AuthError as exc:
        if session_may_wait and not isinstance(exc, ProxyAuthError):
            logger.warning("{}: OpenAlgo refused the start-up ping ({}): the broker session is "
                           "waited for (log in to OpenAlgo, or check the API key)", venue.name,
                           exc.message)
            return
        hint = (" (the login comes from the stored account, else from "
                "NIFTY_ENGINE_BASIC_AUTH_USER / NIFTY_ENGINE_BASIC_AUTH_PASSWORD)"
                if isinstance(exc, ProxyAuthError) else "")
        raise AccessRefused(f"{venue.rest_url} refused the engine: {exc.message}{hint}") \
            from None
    except UntrustedServer as exc:
        raise AccessRefused(f"{venue.rest_url}: {exc.message}") from None
    except BrokerError as exc:
        logger.warning("{}: OpenAlgo did not answer the start-up ping ({}); starting anyway",
                       venue.name, exc)


def _listed_only(broker: OpenAlgoClient, symbols: list[str], width: int) -> list[str]:
    """``symbols`` without those the broker's option chain does not list (each dropped one is
    logged); all of them when the chain cannot be read."""
    expiry = parse_option_symbol(symbols[0]).expiry
    # the chain's ATM is the listed strike nearest the spot, ours the spot rounded to 100:
    # two strikes more on each side cover the difference
    try:
        listed = InstrumentProvider(broker).listed_options(expiry, strike_count=width + 2)
    except BrokerError as exc:
        logger.warning("instruments: option chain not readable ({}); trading the universe as "
                       "built from the naming rule", exc)
        return symbols
    missing = [s for s in symbols if s not in listed]
    if missing:
        logger.warning("instruments: the broker does not list {} of the universe's symbols, "
                       "left out: {}", len(missing), ", ".join(missing))
    return [s for s in symbols if s in listed]
