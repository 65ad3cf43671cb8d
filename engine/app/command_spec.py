"""What a subcommand is (``CommandSpec``) and the exit codes every command returns.

Owns the contract between the command line (``engine.app.cli``) and the commands
(``engine.app.commands``): exit codes 0 success, 1 runtime failure, 2 bad configuration, usage
or authentication (one line, no traceback), 4 the engine stopped itself safely (supervisor
escalation), 130 interrupted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_SAFE_STOP = 4
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, Config], int]


class CommandError(Exception):
    """A command cannot do what was asked: one line for stderr (the command's name is put in
    front) and the exit code to return."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Handler


def _no_args(_: argparse.ArgumentParser) -> None:
    """A subcommand without options of its own."""
