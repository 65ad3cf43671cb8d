"""Strategies as plugins: a folder named by ``[engine] strategy_paths``, an installed package's
entry point, and ``run.py new-strategy``; each through the real command line and a real replay.

The plugin below records one trade on its first live bar, with the exit reason taken from its own
config section, so the trade table proves the engine found it, built its section from the file
and the command line, and ran its hooks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.app.sections import catalog, load_config
from engine.config import ConfigError, EngineSettings
from engine.market.synth import small_session
from strategies.registry import ENTRY_POINT_GROUP, StrategyError, discover

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
from dataclasses import dataclass

from engine.messages import Action, Bar
from engine.settings import setting
from strategies.base import Strategy


@dataclass(frozen=True, slots=True)
class {cls}Settings:
    tag: str = setting("default-tag", "exit reason written on the one trade")
    size: int = setting(1, "quantity of the one trade", min=1, max=1000)

    def problems(self):
        return [("tag", "must not be 'forbidden'")] if self.tag == "forbidden" else []


class {cls}(Strategy):
    name = "{name}"
    settings_class = {cls}Settings

    def __init__(self, ctx, settings=None):
        super().__init__(ctx, settings)
        self.done = False

    def snapshot(self):
        return {{"done": self.done}}

    def restore(self, state):
        self.done = bool(state["done"])

    def on_bar(self, bar: Bar) -> None:
        if self.done or bar.source != "live":
            return
        self.done = True
        self.ctx.record_trade(
            symbol=bar.symbol, action=Action.BUY, quantity=self.settings.size,
            entry_ts=bar.start, entry_price=bar.open, exit_ts=bar.start + 59,
            exit_price=bar.close, pnl=round((bar.close - bar.open) * self.settings.size, 2),
            r_multiple=0.0, exit_client_id="", exit_reason=self.settings.tag)
'''


def plugin_source(name: str, cls: str) -> str:
    return PLUGIN.format(name=name, cls=cls)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "NIFTY_ENGINE_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugin-session") / "session.db"
    return small_session(path, date="2025-09-03", seed=3, minutes=4).path


def trade_line(stdout: str, title: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"[TRADES] {title}"))
    return lines[start + 3:start + 4]


def test_a_strategy_in_a_folder_runs_in_replay_with_its_own_section(tmp_path: Path,
                                                                    session: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "tagger.py").write_text(plugin_source("tagger", "Tagger"))
    (folder / "test_tagger.py").write_text("raise RuntimeError('a test file is not scanned')\n")
    (folder / "_private.py").write_text("raise RuntimeError('neither is a private one')\n")
    (tmp_path / "config.toml").write_text(
        f'[engine]\nstrategy_paths = ["{folder}"]\n\n[tagger]\ntag = "from-the-file"\n')
    done = run_cli("replay", str(session), "--strategy", "tagger", "--no-progress",
                   "--set", "tagger.size=7", "--state-dir", str(tmp_path / "var"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = trade_line(done.stdout, "tagger")
    assert row.split()[2] == "7"  # --set reached the plugin's section
    assert row.split()[-1] == "from-the-file"  # and so did config.toml


def test_an_installed_package_registers_through_its_entry_point(tmp_path: Path,
                                                                session: Path) -> None:
    pkg = tmp_path / "src"
    (pkg / "demo_plugin").mkdir(parents=True)
    (pkg / "demo_plugin" / "__init__.py").write_text(plugin_source("demo_pkg", "DemoPkg"))
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "demo-plugin"
        version = "0.1.0"

        [project.entry-points."{ENTRY_POINT_GROUP}"]
        demo_pkg = "demo_plugin:DemoPkg"
        """))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(pkg)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    assert list(site.glob("demo_plugin-0.1.0.dist-info/entry_points.txt"))
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    checked = run_cli("config", "--check", "--set", "demo_pkg.tag=forbidden", cwd=tmp_path,
                      env=env)
    assert checked.returncode == 2
    assert "demo_pkg.tag: must not be 'forbidden'" in checked.stderr
    done = run_cli("replay", str(session), "--strategy", "demo_pkg", "--no-progress",
                   "--state-dir", str(tmp_path / "var"), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = trade_line(done.stdout, "demo_pkg")
    assert row.split()[-1] == "default-tag"


def test_discovery_finds_the_built_ins_and_refuses_two_strategies_of_one_name(
        tmp_path: Path) -> None:
    assert {"baseline_v1", "vwap_cross"} <= set(discover())
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "twin.py").write_text(plugin_source("twin", "Twin"))
    assert set(discover([str(tmp_path / "a")])) >= {"twin", "baseline_v1"}
    with pytest.raises(StrategyError, match="two strategies named 'twin'"):
        discover([str(tmp_path / "a"), str(tmp_path / "b")])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "clash.py").write_text(plugin_source("baseline_v1", "Clash"))
    with pytest.raises(StrategyError, match="two strategies named 'baseline_v1'"):
        discover([str(tmp_path / "c")])


@pytest.mark.parametrize(("content", "expected"), [
    (None, "is not a folder"),
    ("import no_such_module_here\n", "failed to import: ModuleNotFoundError"),
    ("def broken(:\n", "failed to import: SyntaxError"),
])
def test_a_bad_plugin_folder_is_one_config_line_and_exit_2(tmp_path: Path, content: str | None,
                                                           expected: str) -> None:
    folder = tmp_path / "plugins"
    if content is not None:
        folder.mkdir()
        (folder / "bad.py").write_text(content)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(None, env={}, overrides={"engine.strategy_paths": str(folder)})
    assert "engine.strategy_paths" in str(info.value)
    done = run_cli("config", "--check", "--set", f"engine.strategy_paths={folder}",
                   cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr
    assert "Traceback" not in done.stderr


def test_config_documents_plugin_sections(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "tagger.py").write_text(plugin_source("tagger", "Tagger"))
    engine = EngineSettings(strategy_paths=(str(folder),))
    assert "tagger" in catalog(engine) and "tagger" not in catalog(EngineSettings())
    out = tmp_path / "written.toml"
    done = run_cli("config", "--set", f"engine.strategy_paths={folder}", "--write-defaults",
                   str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "[tagger]" in text and "# exit reason written on the one trade" in text
    with pytest.raises(ConfigError, match=r"tagger.size: 0 is below the minimum 1"):
        load_config(None, env={}, overrides={"engine.strategy_paths": str(folder),
                                             "tagger.size": "0"})


def test_new_strategy_writes_a_template_whose_test_passes(tmp_path: Path) -> None:
    done = run_cli("new-strategy", "my_breakout", "--dir", "mine", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module, test = tmp_path / "mine" / "my_breakout.py", tmp_path / "mine" / "test_my_breakout.py"
    assert "class MyBreakout(Strategy):" in module.read_text()
    checked = run_cli("config", "--check", "--set", "engine.strategy_paths=mine", "--set",
                      "engine.strategy=my_breakout", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(test)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "1 passed" in tested.stdout
    again = run_cli("new-strategy", "my_breakout", "--dir", "mine", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr
    for bad in ("BadName", "class", "baseline_v1", "risk"):
        refused = run_cli("new-strategy", bad, "--dir", "other", cwd=tmp_path)
        assert refused.returncode == 2, bad
        assert refused.stderr.startswith("new-strategy: ") and "Traceback" not in refused.stderr
    assert not (tmp_path / "other").exists()
