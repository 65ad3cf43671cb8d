"""The command line: argument parsing, configuration loading, logging set-up, dispatch.

Owns the user-facing surface of ``run.py`` (also installed as the ``nifty-engine`` script). Each
subcommand is a ``CommandSpec`` in ``engine.app.commands.COMMANDS``; exit codes are in
``engine.app.command_spec``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.app.command_spec import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    CommandError,
    CommandSpec,
)
from engine.app.commands import COMMANDS
from engine.app.sections import load_config
from engine.config import Config, ConfigError, default_config_path
from engine.runtime.memory import limit_malloc_arenas


def _common_options(*, inherit: bool = False) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. ``inherit``: the subcommand's
    copy, whose options default to "not given" so it keeps what was given before the name
    (argparse otherwise resets them to its own defaults): an option given after the name wins,
    and ``--set`` values from both places add up (``_overrides``)."""
    common = argparse.ArgumentParser(add_help=False)
    unset = {"default": argparse.SUPPRESS} if inherit else {}
    common.add_argument("--config", metavar="PATH", help="config file (default: ./config.toml, "
                        "else the shipped defaults)", **unset)
    common.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append",
                        dest="command_overrides" if inherit else "overrides",
                        help="override one setting (repeatable)", default=[])
    common.add_argument("--log-level", metavar="LEVEL", help="override logging.level", **unset)
    common.add_argument("--state-dir", metavar="DIR", help="override engine.state_dir",
                        **unset)
    loud = common.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="console: warnings and "
                      "errors only (the summary and tables still print)", **unset)
    loud.add_argument("-v", "--verbose", action="store_true", help="console: every detail "
                      "(DEBUG: each order step, each rejected tick kind per symbol, every "
                      "heartbeat)", **unset)
    return common


def build_parser(commands: Sequence[CommandSpec]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", parents=[_common_options()],
        description="Actor-model NIFTY options trading engine over OpenAlgo.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inherited = _common_options(inherit=True)
    for spec in commands:
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help, parents=[inherited])
        spec.configure(p)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in [*args.overrides, *getattr(args, "command_overrides", [])]:
        if "=" not in item:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}",
                              source="command line")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    if args.log_level:
        out["logging.level"] = args.log_level.upper()
    if args.state_dir:
        out["engine.state_dir"] = args.state_dir
    if getattr(args, "quiet", False):
        out["logging.console_level"] = "WARNING"
    if getattr(args, "verbose", False):
        out["logging.console_level"] = "DEBUG"
    if getattr(args, "broker", None):
        out["matching.broker"] = args.broker
    if getattr(args, "semi_auto", False):
        out["simulator.semi_auto"] = "true"
    return out


def load_from_args(args: argparse.Namespace) -> Config:
    path = Path(args.config) if args.config else default_config_path()
    return load_config(path, overrides=_overrides(args))


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread starts

    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_CONFIG
    spec = next(c for c in COMMANDS if c.name == args.command)
    try:
        cfg = load_from_args(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return spec.handler(args, cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = start_failure(exc)
        if failure is None:
            raise  # a bug: its traceback is what a developer needs
        code, text = failure
        print(f"{spec.name}: {text}", file=sys.stderr)
        return code


def start_failure(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and one line for a failure a command can meet at start-up or on I/O
    (docs/operations, "Exit codes"); None for anything else. 2: the input needs the
    operator (configuration, usage, authentication, a file that is not the engine's own);
    1: at run time (the broker unreachable, the disk, a damaged session file)."""
    from engine.broker import AuthError, BrokerError
    from engine.market.session_file import SessionFileError
    from engine.store.database import StoreError, StoreVersionError

    if isinstance(exc, CommandError):
        return exc.exit_code, str(exc)
    if isinstance(exc, AuthError):
        return EXIT_CONFIG, f"authentication failed: {exc}"
    if isinstance(exc, BrokerError):
        return EXIT_FAILURE, f"the broker cannot be reached: {exc}"
    if isinstance(exc, StoreVersionError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, (StoreError, SessionFileError)):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_FAILURE, f"{where}{exc.strerror or exc}"
    return None
