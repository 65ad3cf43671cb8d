"""The options every command takes (``--config``, ``--set``, ``--log-level``, ``--state-dir``) count
wherever they are given: before the command's name or after it. (Found by the chaos harness: given
before the name, argparse silently reset them to the subcommand's defaults, so ``run.py --config
X paper`` ran with ./config.toml.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.app.cli import _overrides, build_parser
from engine.app.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("argv", [
    ["--config", "c.toml", "--state-dir", "s", "--log-level", "debug", "replay"],
    ["replay", "--config", "c.toml", "--state-dir", "s", "--log-level", "debug"],
    ["--config", "c.toml", "replay", "--state-dir", "s", "--log-level", "debug"],
])
def test_common_options_count_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser(COMMANDS).parse_args(argv)
    assert (args.command, args.config) == ("replay", "c.toml")
    assert _overrides(args) == {"logging.level": "DEBUG", "engine.state_dir": "s"}


def test_set_given_on_both_sides_adds_up_and_the_later_wins() -> None:
    args = build_parser(COMMANDS).parse_args(
        ["--set", "a.x=1", "--set", "b.y=2", "replay", "--set", "a.x=3"])
    assert _overrides(args) == {"a.x": "3", "b.y": "2"}
    assert _overrides(build_parser(COMMANDS).parse_args(["replay"])) == {}


def test_a_config_given_before_the_command_is_the_one_loaded(tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('[engine]\nstrategy = "vwap_cross"\n')
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", str(cfg), "config",
                           "--show"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "strategy='vwap_cross'" in proc.stdout
