"""The subcommands of ``run.py``: their options and the functions that run them.

Owns the mapping from a command name to the engine code that does the work. Handlers stay thin:
parse what the command needs, set up logging, call into the engine, turn the outcome into an exit
code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_NOT_BUILT,
    EXIT_OK,
    EXIT_SAFE_STOP,
    CommandSpec,
    _no_args,
)
from engine.config import Config, ConfigError
from engine.logs import setup_logging


def init_logging(cfg: Config, *, console: bool | None = None) -> None:
    state = Path(cfg.engine.state_dir)
    log_file = state / cfg.logging.file if cfg.logging.file else None
    setup_logging(level=cfg.logging.level, log_file=log_file, rotation=cfg.logging.rotation,
                  retention=cfg.logging.retention,
                  console=cfg.logging.console if console is None else console,
                  secrets=cfg.secrets.values())


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
    from engine.config_doc import render_config_toml

    if args.write_defaults:
        Path(args.write_defaults).write_text(render_config_toml(), encoding="utf-8")
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


def _db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="engine database to write (default: "
                   "state_dir/<mode>-<date>.db)")


def _configure_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", nargs="?", help="session file (default: the bundled trading day)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="pace at N times real time (default: as fast as possible)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strategy", help="strategy to run (default: engine.strategy)")
    p.add_argument("--no-strategy", action="store_true",
                   help="market data only: bars and swings, no orders")
    _db_option(p)


def _configure_paper(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="session file the simulator plays (default: bundled day)")
    p.add_argument("--speed", type=float, default=60.0,
                   help="market seconds per real second (default 60)")
    p.add_argument("--record", metavar="FILE", help="also record every received tick")
    _db_option(p)


def _configure_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="random seed (default: synth.default_seed)")
    p.add_argument("--date", help="trading date YYYY-MM-DD (default: synth.default_date)")
    p.add_argument("--out", help="output session file (default: state_dir/sessions/"
                   "synth-DATE-seedS.db)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


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


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", nargs="?", help="engine database (default: the store path)")
    p.add_argument("--out", help="HTML file to write")


def _state(cfg: Config) -> Path:
    path = Path(cfg.engine.state_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _session_arg(cfg: Config, given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise SessionArgError(f"session file not found: {path}")
        return path
    from engine.synth import bundled_day_path

    print("using the bundled trading day (generated on first use; this takes a few seconds)",
          file=sys.stderr)
    return bundled_day_path(settings=cfg.section("synth"), spec=cfg.instrument.spec())


class SessionArgError(Exception):
    """A session file given on the command line cannot be used."""


def _fresh_db(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def run_replay(args: argparse.Namespace, cfg: Config) -> int:
    from engine.replay import ReplayDriver
    from engine.session_file import SessionFileError

    init_logging(cfg)
    try:
        session = _session_arg(cfg, args.session)
        db = Path(args.db) if args.db else _state(cfg) / f"replay-{session.stem}.db"
        driver = ReplayDriver(cfg, session, db_path=_fresh_db(db), speed=args.speed,
                              progress=(not args.no_progress) and sys.stderr.isatty(),
                              strategies=() if args.no_strategy else _strategies(
                                  cfg, args.strategy))
    except (SessionArgError, SessionFileError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    summary = driver.run()
    print("\n".join(summary.lines()))
    return EXIT_OK if summary.stuck_steps == 0 else EXIT_FAILURE


def run_synth(args: argparse.Namespace, cfg: Config) -> int:
    from engine.synth import generate_session

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

    from engine.modes import run_paper, stop_on_signals

    init_logging(cfg)
    try:
        session = _session_arg(cfg, args.session)
    except SessionArgError as exc:
        print(f"paper: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    db = Path(args.db) if args.db else _state(cfg) / f"paper-{session.stem}.db"
    with stop_on_signals(threading.Event()) as stop:
        result = run_paper(cfg, session, speed=args.speed, db_path=_fresh_db(db),
                           record_to=Path(args.record) if args.record else None,
                           strategies=_strategies(cfg), stop=stop)
    print(f"paper: published {result.ticks_published:,} ticks; database {result.db_path}"
          + (f"; recorded to {result.record_to}" if result.record_to else ""))
    if result.safe_stop:
        return EXIT_SAFE_STOP
    return EXIT_OK


def _strategies(cfg: Config, chosen: str | None = None) -> tuple[str, ...]:
    from strategies.registry import STRATEGIES

    name = chosen or cfg.engine.strategy
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}",
                          key="engine.strategy", source="command line" if chosen else cfg.source)
    return (name,)


def run_simulator_cmd(args: argparse.Namespace, cfg: Config) -> int:
    import os
    import secrets as pysecrets

    from engine.modes import run_simulator

    init_logging(cfg)
    session = _session_arg(cfg, args.session)
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
                              on_started=started)
    print(f"simulator: stopped after {published:,} ticks", file=sys.stderr)
    return EXIT_OK


def run_record_cmd(args: argparse.Namespace, cfg: Config) -> int:
    import threading
    from datetime import date

    from engine.modes import run_record, stop_on_signals

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


def _live(args: argparse.Namespace, cfg: Config) -> int:
    missing = _require_live_secrets(cfg)
    if missing is not None:
        return missing
    print("live: not available yet — built by the execution and risk issue (#6).",
          file=sys.stderr)
    return EXIT_NOT_BUILT


COMMANDS: list[CommandSpec] = [
    CommandSpec("replay", "replay a recorded session on the virtual clock", _configure_replay,
                run_replay),
    CommandSpec("paper", "run against the built-in OpenAlgo-compatible simulator over real "
                "sockets", _configure_paper, run_paper_cmd),
    CommandSpec("live", "trade through your OpenAlgo server", _no_args, _live),
    CommandSpec("record", "record the live feed to a session file", _configure_record,
                run_record_cmd),
    CommandSpec("synth", "generate a synthetic trading day", _configure_synth, run_synth),
    CommandSpec("simulator", "run the OpenAlgo-compatible simulator standalone",
                _configure_simulator, run_simulator_cmd),
    CommandSpec("report", "write the day report (HTML)", _configure_report, None,
                "built by the benchmarks and report issue (#7)"),
    CommandSpec("status", "ask a running engine for its status", _no_args, None,
                "built by the execution and risk issue (#6)"),
    CommandSpec("config", "validate the configuration, or write its defaults", _configure_config,
                run_config),
]
