"""The subcommands of ``run.py``: their options and the functions that run them.

Owns the mapping from a command name to the engine code that does the work. Handlers stay thin:
parse what the command needs, set up logging, call into the engine, turn the outcome into an exit
code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import EXIT_CONFIG, EXIT_OK, CommandSpec, _no_args
from engine.config import Config
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


def _configure_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", nargs="?", help="session file (default: the bundled trading day)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="pace at N times real time (default: as fast as possible)")


def _configure_paper(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="session file the simulator plays (default: bundled day)")
    p.add_argument("--speed", type=float, default=1.0, help="clock speed (e.g. 60)")


def _configure_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="random seed (default: synth.default_seed)")
    p.add_argument("--date", help="trading date YYYY-MM-DD (default: synth.default_date)")
    p.add_argument("--out", help="output session file")


def _configure_record(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="session file to write (default: state_dir/sessions/DATE.db)")


def _configure_simulator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--session", help="session file to play (default: the bundled day)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed")
    p.add_argument("--rest-port", type=int, help="REST port (default: simulator.rest_port)")
    p.add_argument("--ws-port", type=int, help="WebSocket port (default: simulator.ws_port)")


def _configure_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", nargs="?", help="engine database (default: the store path)")
    p.add_argument("--out", help="HTML file to write")


def _live(args: argparse.Namespace, cfg: Config) -> int:
    missing = _require_live_secrets(cfg)
    if missing is not None:
        return missing
    print("live: not available yet — built by the execution and risk issue (#6).",
          file=sys.stderr)
    return 3


COMMANDS: list[CommandSpec] = [
    CommandSpec("replay", "replay a recorded session on the virtual clock", _configure_replay,
                None, "built by the market data pipeline issue (#4)"),
    CommandSpec("paper", "trade against the built-in OpenAlgo-compatible simulator",
                _configure_paper, None, "built by the execution and risk issue (#6)"),
    CommandSpec("live", "trade through your OpenAlgo server", _no_args, _live),
    CommandSpec("record", "record the live feed to a session file", _configure_record, None,
                "built by the market data pipeline issue (#4)"),
    CommandSpec("synth", "generate a synthetic trading day", _configure_synth, None,
                "built by the market data pipeline issue (#4)"),
    CommandSpec("simulator", "run the OpenAlgo-compatible simulator standalone",
                _configure_simulator, None, "built by the OpenAlgo protocol issue (#3)"),
    CommandSpec("report", "write the day report (HTML)", _configure_report, None,
                "built by the benchmarks and report issue (#7)"),
    CommandSpec("status", "ask a running engine for its status", _no_args, None,
                "built by the execution and risk issue (#6)"),
    CommandSpec("config", "validate the configuration, or write its defaults", _configure_config,
                run_config),
]
