"""The subcommands of ``run.py``: their options and the functions that run them.

Owns the mapping from a command name to the engine code that does the work. Handlers stay thin:
parse what the command needs, set up logging, call into the engine, turn the outcome into an exit
code.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from engine.app.command_spec import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_SAFE_STOP,
    CommandError,
    CommandSpec,
)
from engine.app.config_doc import render_config_toml
from engine.app.control_settings import ControlSettings
from engine.app.research_cli import (
    CliHelpers,
    configure_backtest,
    configure_sweep,
    configure_synth_days,
    run_backtest_cmd,
    run_sweep_cmd,
    run_synth_days,
)
from engine.app.sections import catalog
from engine.config import Config, ConfigError
from engine.runtime.logs import setup_logging
from engine.sim.personalities import NAMES
from strategies.registry import discover


def init_logging(cfg: Config, *, console: bool | None = None) -> None:
    state = Path(cfg.engine.state_dir)
    log_file = state / cfg.logging.file if cfg.logging.file else None
    setup_logging(level=cfg.logging.level, log_file=log_file, rotation=cfg.logging.rotation,
                  retention=cfg.logging.retention,
                  console=cfg.logging.console if console is None else console,
                  secrets=cfg.secrets.values(), console_level=cfg.logging.console_level or None)


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------


def _configure_config(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="validate and print 'ok' (the default)")
    g.add_argument("--write-defaults", metavar="PATH",
                   help="write a config.toml holding every setting at its default")
    g.add_argument("--show", action="store_true", help="print the effective settings")


def run_config(args: argparse.Namespace, cfg: Config) -> int:
    if args.write_defaults:
        text = render_config_toml(catalog(cfg.engine))
        Path(args.write_defaults).write_text(text, encoding="utf-8")
        print(f"wrote {args.write_defaults}")
        return EXIT_OK
    if args.show:
        for name in cfg.section_names():
            print(f"[{name}] {cfg.section(name)}")
        print(repr(cfg.secrets))
        return EXIT_OK
    print(f"ok: {cfg.source}")
    return EXIT_OK


def _require_live_secrets(cfg: Config) -> int | None:
    try:
        cfg.secrets.require("openalgo_api_key", "live mode talks to your OpenAlgo server")
    except Exception as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return None


def _db_option(p: argparse.ArgumentParser, *, fresh: bool = False) -> None:
    if not fresh:
        p.add_argument("--db", metavar="PATH", help="engine database, continued if it exists "
                       "(an existing file that is not an engine database is refused)")
        return
    p.add_argument("--db", metavar="PATH", help="engine database to create (default: "
                   "state_dir/<mode>-<session>.db); an existing file is never replaced "
                   "unless it is this engine's database of the same mode and day and --fresh "
                   "is given")
    p.add_argument("--fresh", action="store_true", help="replace the engine's own database of "
                   "the same mode and trading day at --db (with its -wal and -shm)")


def _broker_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", choices=NAMES, help="broker personality of the simulated broker: "
                   "what OpenAlgo returns in front of it (default: matching.broker, zerodha)")


def _configure_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", nargs="?", help="session file (default: the bundled trading day)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="pace at N times real time (default: as fast as possible)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strategy", help="strategy to run (default: engine.strategy)")
    p.add_argument("--no-strategy", action="store_true",
                   help="market data only: bars and swings, no orders")
    p.add_argument("--threaded", action="store_true",
                   help="one thread per actor with the step barrier (the live runtime), "
                   "instead of every actor on one thread; for comparison")
    _broker_option(p)
    _db_option(p, fresh=True)


def _configure_paper(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="session file the simulator plays (default: bundled day)")
    p.add_argument("--speed", type=float, default=60.0,
                   help="market seconds per real second (default 60)")
    p.add_argument("--record", metavar="FILE", help="also record every received tick")
    p.add_argument("--attach", action="store_true",
                   help="trade against a standalone `run.py simulator` (found through "
                   "state_dir/simulator.json) instead of an in-process one; the simulator "
                   "keeps running when the engine stops or is restarted")
    p.add_argument("--atm", type=int, help="with --attach: ATM strike (default: from the spot)")
    p.add_argument("--expiry", help="with --attach: option expiry YYYY-MM-DD (pins one day: "
                   "no day lifecycle)")
    _broker_option(p)
    _db_option(p, fresh=True)


def _configure_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="random seed (default: synth.default_seed)")
    p.add_argument("--date", help="trading date YYYY-MM-DD (default: synth.default_date)")
    p.add_argument("--out", help="output session file (default: state_dir/sessions/"
                   "synth-DATE-seedS.db)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    configure_synth_days(p)


def _configure_record(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="session file to write (default: state_dir/sessions/"
                   "recorded-DATE.db)")
    p.add_argument("--symbols", help="comma-separated EXCHANGE:SYMBOL list (default: the "
                   "baseline universe around the current spot)")
    _db_option(p)


def _configure_simulator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="session file to play (default: the bundled day)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed")
    p.add_argument("--rest-port", type=int, help="REST port (default: simulator.rest_port)")
    p.add_argument("--ws-port", type=int, help="WebSocket port (default: simulator.ws_port)")
    p.add_argument("--faults", metavar="FILE", help="play this fault schedule (JSON: random "
                   "REST faults and timed events; see engine/sim/schedule.py) while serving")
    p.add_argument("--days", type=int, metavar="N", help="play N consecutive generated trading "
                   "days (weekends and [instrument] holidays skipped), nights jumped over")
    p.add_argument("--start", help="with --days: the first day YYYY-MM-DD (default: today or "
                   "the next trading day)")
    p.add_argument("--sessions", metavar="DIR", help="play every session file in DIR, one day "
                   "after another, nights jumped over")
    _broker_option(p)
    p.add_argument("--semi-auto", action="store_true", help="answer as OpenAlgo in semi-auto "
                   "(Action Center) mode: orders queued, never placed")


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", nargs="?", help="engine database (default: the store path)")
    p.add_argument("--date", help="trading date YYYY-MM-DD (default: the latest one recorded)")
    p.add_argument("--symbol", help="symbol charted as candles (default: the most traded)")
    p.add_argument("--strategy", help="only this strategy (default: every strategy)")
    p.add_argument("--out", help="HTML file to write (default: <db stem>-report-<date>.html "
                   "beside the database)")


def _state(cfg: Config) -> Path:
    path = Path(cfg.engine.state_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _session_arg(cfg: Config, given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise CommandError(f"session file not found: {path}")
        return path
    from engine.market.synth import bundled_day_path

    print("using the bundled trading day (generated on first use; this takes a few seconds)",
          file=sys.stderr)
    return bundled_day_path(settings=cfg.section("synth"), spec=cfg.instrument.spec())


def _fresh_db(args: argparse.Namespace, cfg: Config, mode: str, session: Path) -> Path:
    """The database of a run that starts fresh: ``--db`` or ``state_dir/<mode>-<session>.db``,
    checked by ``engine.app.dbfiles`` (never a file that is not the engine's own for this mode
    and the session's day; the engine's own only with ``--fresh``)."""
    from engine.app.dbfiles import fresh_database
    from engine.market.instruments import trading_date
    from engine.market.session_file import SessionReader

    with SessionReader(session) as reader:  # validated on opening: never empty
        span = reader.time_range()
    assert span is not None
    db = Path(args.db) if args.db else _state(cfg) / f"{mode}-{session.stem}.db"
    # a replay's default database is derived from its session: replaying again replaces it
    return fresh_database(db, mode, trading_date(span[0]), fresh=args.fresh,
                          derived=mode == "replay" and not args.db)


def run_replay(args: argparse.Namespace, cfg: Config) -> int:
    from engine.app.replay import ReplayDriver

    init_logging(cfg)
    session = _session_arg(cfg, args.session)
    strategies = () if args.no_strategy else _strategies(cfg, args.strategy)
    driver = ReplayDriver(cfg, session, db_path=_fresh_db(args, cfg, "replay", session),
                          speed=args.speed,
                          progress=(not args.no_progress) and sys.stderr.isatty(),
                          strategies=strategies, threaded=args.threaded)
    summary = driver.run()
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.stuck_steps == 0 else EXIT_FAILURE


def run_synth(args: argparse.Namespace, cfg: Config) -> int:
    from engine.market.synth import generate_session

    if args.days is not None:
        return run_synth_days(args, cfg, _helpers())
    init_logging(cfg)
    synth = cfg.section("synth")
    day = args.date or synth.default_date
    seed = synth.default_seed if args.seed is None else args.seed
    out = Path(args.out) if args.out else _state(cfg) / "sessions" / f"synth-{day}-seed{seed}.db"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not args.force:
        print(f"synth: {out} exists (use --force to overwrite)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        summary = generate_session(out, date=day, seed=seed, settings=synth,
                                   spec=cfg.instrument.spec(), overwrite=args.force)
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {out}: {summary.ticks:,} ticks, {summary.symbols} symbols, ATM {summary.atm}, "
          f"expiry {summary.expiry}, spot {summary.spot_open:.2f} -> {summary.spot_close:.2f}")
    return EXIT_OK


def run_paper_cmd(args: argparse.Namespace, cfg: Config) -> int:
    import threading

    from engine.app.modes import run_paper, stop_on_signals

    if args.attach:
        from engine.app.venues import attached_venue

        if args.fresh:
            raise CommandError("--fresh is for a database started fresh (in-process paper, "
                               "replay); paper --attach continues its database", EXIT_CONFIG)
        return _trade(args, cfg, attached_venue(cfg, _state(cfg)), "paper")
    init_logging(cfg)
    session = _session_arg(cfg, args.session)
    db = _fresh_db(args, cfg, "paper", session)
    with stop_on_signals(threading.Event()) as stop:
        result = run_paper(cfg, session, speed=args.speed, db_path=db,
                           record_to=Path(args.record) if args.record else None,
                           strategies=_strategies(cfg), stop=stop)
    print(f"paper: published {result.ticks_published:,} ticks; database {result.db_path}"
          + (f"; recorded to {result.record_to}" if result.record_to else ""))
    code = _end_of_run(cfg, result.db_path, result.strategies, result.trading_day, "paper",
                       result.checks, result.safe_stop)
    from engine.market.bars import quality_table

    table = quality_table(result.quality)  # as a replay ends
    if table:
        print("\n".join(table))
    return code


def _end_of_run(cfg: Config, db_path: Path, strategies: tuple[str, ...], day: date | None,
                account: str, checks: Any, safe_stop: str | None) -> int:
    """The trade tables and the end-of-session checks, always printed; the exit code: 4 at a
    safe stop, 1 when a check failed, else 0."""
    from engine.store.database import Database
    from engine.trading.trades import day_report

    if strategies and day is not None:
        db = Database(db_path, cfg.store)
        try:
            for name in strategies:
                print(day_report(db, name, day, account, cfg.section("charges")))
        finally:
            db.close()
    if strategies:
        print("\n".join(checks.lines()))
    if safe_stop:
        return EXIT_SAFE_STOP
    return EXIT_OK if checks.ok else EXIT_FAILURE


def _strategies(cfg: Config, chosen: str | None = None) -> tuple[str, ...]:
    """The strategy to run: ``--strategy`` if given (checked here), else ``engine.strategy``
    (checked when the configuration was loaded)."""
    if chosen is None:
        return (cfg.engine.strategy,)
    known = discover(cfg.engine.strategy_paths)
    if chosen not in known:
        raise ConfigError(f"unknown strategy {chosen!r}; known: {', '.join(sorted(known))}",
                          key="engine.strategy", source="--strategy")
    return (chosen,)


def run_simulator_cmd(args: argparse.Namespace, cfg: Config) -> int:
    import os
    import secrets as pysecrets

    from engine.app.modes import run_simulator
    from engine.sim.schedule import FaultScheduleError, load_fault_schedule

    init_logging(cfg)
    try:
        faults = load_fault_schedule(args.faults) if args.faults else None
    except FaultScheduleError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        days = _simulated_days(cfg, args)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None
    session = days[0] if days else _session_arg(cfg, args.session)
    api_key = cfg.secrets.openalgo_api_key
    if not api_key:
        key_file = _state(cfg) / "simulator.key"
        api_key = pysecrets.token_urlsafe(24)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(api_key + "\n")
        print(f"simulator: OPENALGO_API_KEY is not set; the key for this run is in {key_file} "
              "(readable by you only)", file=sys.stderr)

    def started(sim: object) -> None:
        print(f"simulator: REST {getattr(sim, 'rest_url', '')}  WebSocket "
              f"{getattr(sim, 'ws_url', '')}  playing {session.name} at {args.speed}x",
              file=sys.stderr)

    published = run_simulator(cfg, session, speed=args.speed, api_key=api_key,
                              rest_port=args.rest_port, ws_port=args.ws_port,
                              on_started=started, faults=faults, days=days)
    print(f"simulator: stopped after {published:,} ticks", file=sys.stderr)
    return EXIT_OK


def _simulated_days(cfg: Config, args: argparse.Namespace) -> list[Path]:
    """The session files of ``--sessions DIR`` or ``--days N`` (generated once into
    ``<state_dir>/sessions``); empty for a one-session run."""
    if getattr(args, "sessions", None):
        folder = Path(args.sessions)
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        if not files:
            raise CommandError(f"no session files in {folder}", EXIT_CONFIG)
        return files
    if not getattr(args, "days", None):
        return []
    from engine.market.instruments import is_trading_day, trading_date
    from engine.market.synth_days import generate_days, plan_days
    from engine.runtime.clock import WallClock

    spec = cfg.instrument.spec()
    wall = WallClock()
    start = date.fromisoformat(args.start) if args.start else trading_date(wall.time())
    wall.stop()
    while not is_trading_day(start, spec):
        start += timedelta(days=1)
    seed = cfg.section("synth").default_seed
    plans = plan_days(start, args.days, seed, cfg.section("synth"), spec)
    out = _state(cfg) / "sessions" / f"days-{start}-{args.days}-{seed}"
    missing = [p for p in plans if not (out / p.file_name(seed)).exists()]
    if missing:
        print(f"simulator: generating {len(missing)} trading day(s) into {out}",
              file=sys.stderr)
        generate_days(out, missing, seed, spec=spec)
    return [out / p.file_name(seed) for p in plans]


def run_record_cmd(args: argparse.Namespace, cfg: Config) -> int:
    import threading
    from datetime import date

    from engine.app.modes import run_record, stop_on_signals

    missing = _require_live_secrets(cfg)
    if missing is not None:
        return missing
    init_logging(cfg)
    if not args.symbols:
        print("record: pass --symbols EXCHANGE:SYMBOL,... (universe selection from the live "
              "spot arrives with the strategy issue)", file=sys.stderr)
        return EXIT_CONFIG
    pairs = []
    for item in args.symbols.split(","):
        exch, _, sym = item.strip().partition(":")
        if not sym:
            print(f"record: expected EXCHANGE:SYMBOL, got {item!r}", file=sys.stderr)
            return EXIT_CONFIG
        pairs.append((sym, exch))
    out = Path(args.out) if args.out else (
        _state(cfg) / "sessions" / f"recorded-{date.today().isoformat()}.db")  # noqa: DTZ011
    out.parent.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else _state(cfg) / "record.db"
    with stop_on_signals(threading.Event()) as stop:
        run_record(cfg, out, symbols=pairs, db_path=db, stop=stop)
    print(f"record: wrote {out}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# accounts
# ---------------------------------------------------------------------------------------------


def _configure_accounts(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="accounts_action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", allow_abbrev=False, help="store an account (adding an existing name replaces "
        "it); the API key comes from OPENALGO_API_KEY or, with --key-stdin, from standard input "
        "— never an argument")
    add.add_argument("name", help="account name (letters, digits, '_' or '-')")
    add.add_argument("--host", required=True, metavar="URL", help="OpenAlgo base URL (http/https)")
    add.add_argument("--ws-url", required=True, metavar="URL",
                     help="OpenAlgo WebSocket URL (ws/wss)")
    add.add_argument("--role", choices=("primary", "backup"), default="primary",
                     help="primary (default) or backup (a market-data fallback)")
    add.add_argument("--key-stdin", action="store_true",
                     help="read the API key from standard input instead of OPENALGO_API_KEY")
    add.add_argument("--basic-auth-user", metavar="USER",
                     help="the login of a proxy (nginx) in front of OpenAlgo; its password comes "
                     "from NIFTY_ENGINE_BASIC_AUTH_PASSWORD or, with --basic-auth-stdin, from "
                     "standard input — never an argument")
    add.add_argument("--basic-auth-stdin", action="store_true",
                     help="read the proxy's password from standard input (after the API key's "
                     "line when --key-stdin is given too)")
    notify = actions.add_parser(
        "set-notify", allow_abbrev=False, help="where the account's alerts and trade events go: "
        "apprise URLs (Telegram, Discord, Slack, e-mail, webhooks), stored encrypted; they come "
        "from NIFTY_ENGINE_NOTIFY_URLS or, with --stdin, one line of standard input — never an "
        "argument")
    notify.add_argument("name")
    how = notify.add_mutually_exclusive_group()
    how.add_argument("--stdin", action="store_true", help="read the URLs from standard input")
    how.add_argument("--clear", action="store_true", help="remove the stored URLs")
    listing = actions.add_parser("list", help="show the stored accounts (never their keys)")
    remove = actions.add_parser("remove", help="delete a stored account")
    remove.add_argument("name")
    for action in (add, notify, listing, remove):
        action.add_argument("--db", metavar="PATH",
                            help="engine database (default: store.path)")


def _secret_input(from_stdin: bool, prompt: str, env_name: str, flag: str) -> str:
    """A secret for ``accounts add``: one line of standard input (hidden when a terminal) or
    the environment variable ``env_name``."""
    import getpass
    import os

    from engine.app.accounts import InvalidAccount

    if from_stdin:
        return getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()
    value = os.environ.get(env_name, "")
    if not value:
        raise InvalidAccount(f"no {prompt.rstrip(': ')}: set {env_name}, or pipe it in with "
                             f"{flag}")
    return value


def _basic_auth_input(args: argparse.Namespace) -> Any:
    """The proxy login for ``accounts add`` (None without ``--basic-auth-user``)."""
    from engine.app.accounts import BASIC_AUTH_PASSWORD_ENV, InvalidAccount, check_basic_auth

    if not args.basic_auth_user:
        if args.basic_auth_stdin:
            raise InvalidAccount("--basic-auth-stdin needs --basic-auth-user")
        return None
    password = _secret_input(args.basic_auth_stdin, "basic-auth password: ",
                             BASIC_AUTH_PASSWORD_ENV, "--basic-auth-stdin")
    return check_basic_auth(args.basic_auth_user, password, "basic auth")


def run_accounts(args: argparse.Namespace, cfg: Config) -> int:
    import os

    from engine.app.accounts import (
        API_KEY_ENV,
        FERNET_ENV,
        AccountError,
        AccountVault,
        KeyCipher,
        WrongFernetKey,
        check_account,
    )
    from engine.runtime.clock import WallClock
    from engine.runtime.notify import URLS_ENV
    from engine.store.database import Database, StoreError

    init_logging(cfg, console=False)
    clock = WallClock()
    try:
        cipher = KeyCipher.from_env(os.environ)
        path = Path(args.db) if args.db else Path(cfg.section("store").path)
        with Database(path, cfg.section("store")) as db:
            vault = AccountVault(db, cipher, clock)
            if args.accounts_action == "add":
                check_account(args.name, args.host, args.ws_url, args.role)  # before the key
                api_key = _secret_input(args.key_stdin, "API key: ", API_KEY_ENV, "--key-stdin")
                created = vault.add(args.name, args.host, args.ws_url, args.role, api_key,
                                    _basic_auth_input(args))
                print(f"{'added' if created else 'updated'} account {args.name} in {path}")
            elif args.accounts_action == "set-notify":
                urls = "" if args.clear else _secret_input(
                    args.stdin, "notification URLs: ", URLS_ENV, "--stdin")
                count = vault.set_notify(args.name, urls)
                print(f"account {args.name}: notices go to {count} URL(s)" if count else
                      f"account {args.name}: no notification URLs stored")
            elif args.accounts_action == "remove":
                vault.remove(args.name)
                print(f"removed account {args.name} from {path}")
            else:
                infos = vault.list()
                print("\n".join(i.line() for i in infos) or f"no accounts in {path}")
                unreadable = [i.name for i in infos if not i.readable]
                if unreadable:
                    raise WrongFernetKey(f"the API keys of {', '.join(unreadable)} cannot be "
                                         f"decrypted: they were stored with another {FERNET_ENV}")
    except AccountError as exc:
        print(f"accounts: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"accounts: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        clock.stop()
    return EXIT_OK


def run_report(args: argparse.Namespace, cfg: Config) -> int:
    from engine.report.data import ReportError
    from engine.report.page import write_report

    try:
        out = write_report(Path(args.db or cfg.store.path), args.out, trading_date=args.date,
                           symbol=args.symbol, strategy=args.strategy,
                           charges=cfg.section("charges"))
    except ReportError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(out)
    return EXIT_OK


def _configure_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="a finished run's engine database (default: the store path)")
    p.add_argument("--date", help="trading date YYYY-MM-DD (default: the latest one recorded)")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: [dashboard] port; "
                   "0: any free port)")


def run_dashboard(args: argparse.Namespace, cfg: Config) -> int:
    """Serve the dashboard of a finished run's database until interrupted; the link (token
    included) is printed on stdout, never logged."""
    import threading
    from dataclasses import replace

    from engine.app.dashboard.server import DashboardError, DashboardServer
    from engine.app.dashboard.view import DashboardView
    from engine.app.modes import stop_on_signals
    from engine.report.data import ReportError
    from engine.store.database import StoreError

    path = Path(args.db or cfg.store.path)
    if not path.is_file():
        print(f"dashboard: {path}: no such database file", file=sys.stderr)
        return EXIT_CONFIG
    settings = cfg.section("dashboard")
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            print(f"dashboard: --port {args.port} is not a port (0..65535)", file=sys.stderr)
            return EXIT_CONFIG
        settings = replace(settings, port=args.port)
    try:
        view = DashboardView(path, day=args.date)
    except (ReportError, StoreError) as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    server = DashboardServer(view, settings)
    try:
        server.start()
    except DashboardError as exc:
        server.close()
        print(f"dashboard: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        print(server.url, flush=True)
        print(f"serving {path} ({view.day.isoformat()}); Ctrl-C stops", file=sys.stderr,
              flush=True)
        with stop_on_signals(threading.Event()) as stop:
            stop.wait()
    finally:
        server.close()
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# status and the operator commands (a client of the running engine's control socket)
# ---------------------------------------------------------------------------------------------


def _configure_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", metavar="PATH",
                   help="the engine's control socket (default: control.socket_path)")


def _configure_operator_command(p: argparse.ArgumentParser) -> None:
    _configure_status(p)
    p.add_argument("--strategy", metavar="NAME", help="only this strategy (default: all)")


def _control_settings(cfg: Config) -> ControlSettings:
    settings: ControlSettings = cfg.section("control")
    return settings


def run_status(args: argparse.Namespace, cfg: Config) -> int:
    from engine.app.control import ControlError, render_status, send_command

    settings = _control_settings(cfg)
    try:
        status = send_command(args.socket or settings.socket_path, "status",
                              timeout=settings.client_timeout_s)
    except ControlError as exc:
        print(f"status: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return _print_out(render_status(status))


def _print_out(text: str) -> int:
    """Print to stdout; a reader that went away (``status | head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # so the flush at exit cannot fail again
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def run_operator_command(args: argparse.Namespace, cfg: Config) -> int:
    from engine.app.control import ControlError, send_command, summarize

    settings = _control_settings(cfg)
    command_args = {"strategy": args.strategy} if args.strategy else {}
    try:
        result = send_command(args.socket or settings.socket_path, args.command, command_args,
                              timeout=settings.client_timeout_s)
    except ControlError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return _print_out(summarize(args.command, result))


def _configure_live(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", help="the stored account to trade (one engine per account "
                   "mirrors a strategy; default: the only primary account); its database and "
                   "control socket are then state_dir/engine-NAME.db and control/NAME.sock")
    p.add_argument("--atm", type=int, help="ATM strike (default: from the index spot)")
    p.add_argument("--expiry", help="option expiry YYYY-MM-DD (default: the nearest weekly)")
    _db_option(p)


def _live(args: argparse.Namespace, cfg: Config) -> int:
    from engine.app.venues import live_venue

    venue = live_venue(cfg, args.account)
    control = None
    if args.account:
        args.db = args.db or str(_state(cfg) / f"engine-{args.account}.db")
        control = str(Path(cfg.section("control").socket_path).parent / f"{args.account}.sock")
    return _trade(args, cfg, venue, "live", control)


def _trade(args: argparse.Namespace, cfg: Config, venue: Any, label: str,
           control: str | None = None) -> int:
    """Run the engine at ``venue`` (live, or a standalone simulator) until a signal."""
    import threading

    from engine.app.live import run_trading
    from engine.app.modes import stop_on_signals

    init_logging(cfg)
    db = Path(args.db) if args.db else Path(cfg.store.path)
    expiry = date.fromisoformat(args.expiry) if getattr(args, "expiry", None) else None
    from engine.app.session_end import SessionChecks

    checks = SessionChecks()
    strategies = _strategies(cfg)
    with stop_on_signals(threading.Event()) as stop:
        if expiry is None:  # day after day (engine/app/daily.py)
            from engine.app.daily import DayLifecycle

            life = DayLifecycle(cfg, venue, db_path=db, strategies=strategies, stop=stop,
                                atm=args.atm, control_path=control, checks=checks)
            life.run()
            print(f"{label}: stopped after {life.days_run} day(s); database {db}")
            return _end_of_run(cfg, db, strategies, life.last_trading_date, venue.account,
                               checks, life.safe_stop_reason)
        engine = run_trading(cfg, venue, db_path=db, strategies=strategies, stop=stop,
                             atm=args.atm, expiry=expiry, control_path=control, checks=checks)
    print(f"{label}: stopped; database {db}")
    return _end_of_run(cfg, db, strategies, engine.parts.trading_day, venue.account, checks,
                       engine.safe_stop_reason)


# ---------------------------------------------------------------------------------------------
# new-strategy
# ---------------------------------------------------------------------------------------------


def _configure_new_strategy(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the strategy's name (lowercase, digits, underscores): its "
                   "--strategy name and its [section] in config.toml")
    p.add_argument("--dir", default="strategies_local",
                   help="folder to write NAME.py and test_NAME.py into (default: "
                   "./strategies_local)")


def run_new_strategy(args: argparse.Namespace, cfg: Config) -> int:
    from engine.app.new_strategy import NewStrategyError, write_strategy

    folder = Path(args.dir)
    try:
        module, test = write_strategy(args.name, folder,
                                      set(discover(cfg.engine.strategy_paths)))
    except NewStrategyError as exc:
        print(f"new-strategy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"new-strategy: cannot write into {folder}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {module} and {test}")
    print(f"run it:  python run.py replay --set engine.strategy_paths={folder} "
          f"--strategy {args.name}")
    print(f"test it: python -m pytest {test}")
    print(f'keep it: add to config.toml  [engine] strategy_paths = ["{folder}"]')
    return EXIT_OK


def _helpers() -> CliHelpers:
    return CliHelpers(init_logging, _state, _strategies)


def _run_backtest(args: argparse.Namespace, cfg: Config) -> int:
    return run_backtest_cmd(args, cfg, _helpers())


def _run_sweep(args: argparse.Namespace, cfg: Config) -> int:
    return run_sweep_cmd(args, cfg, _helpers())


COMMANDS: list[CommandSpec] = [
    CommandSpec("replay", "replay a recorded session on the virtual clock", _configure_replay,
                run_replay),
    CommandSpec("paper", "run against the built-in OpenAlgo-compatible simulator over real "
                "sockets", _configure_paper, run_paper_cmd),
    CommandSpec("live", "trade through your OpenAlgo server", _configure_live, _live),
    CommandSpec("record", "record the live feed to a session file", _configure_record,
                run_record_cmd),
    CommandSpec("synth", "generate a synthetic trading day", _configure_synth, run_synth),
    CommandSpec("backtest", "replay many days, each in a fresh engine: per-day table, combined "
                "summary and HTML report", configure_backtest, _run_backtest),
    CommandSpec("sweep", "replay a grid of parameter sets over many days (process pool or "
                "Ray), ranked", configure_sweep, _run_sweep),
    CommandSpec("simulator", "run the OpenAlgo-compatible simulator standalone",
                _configure_simulator, run_simulator_cmd),
    CommandSpec("report", "write the day report (HTML)", _configure_report, run_report),
    CommandSpec("dashboard", "serve the dashboard of a finished run's database (a running "
                "paper or live engine serves its own)", _configure_dashboard, run_dashboard),
    CommandSpec("status", "ask a running engine for its status", _configure_status, run_status),
    CommandSpec("pause", "block new entries (working orders, stops and positions stay)",
                _configure_operator_command, run_operator_command),
    CommandSpec("resume", "allow new entries again after a pause or a kill",
                _configure_operator_command, run_operator_command),
    CommandSpec("kill", "kill switch: cancel working entries and block new ones; stops and "
                "positions stay", _configure_operator_command, run_operator_command),
    CommandSpec("flatten", "cancel every working order and close every position",
                _configure_operator_command, run_operator_command),
    CommandSpec("unhalt", "clear a risk halt after review", _configure_operator_command,
                run_operator_command),
    CommandSpec("config", "validate the configuration, or write its defaults", _configure_config,
                run_config),
    CommandSpec("accounts", "add, list or remove broker accounts (API keys encrypted at rest)",
                _configure_accounts, run_accounts),
    CommandSpec("new-strategy", "write a commented strategy template and its test into a "
                "folder of your own", _configure_new_strategy, run_new_strategy),
]
