"""The layers and the absence of import circles, as import-linter contracts (setup.cfg,
``[importlinter]``), and the size of the ``engine/`` base."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "actors", "strategies")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the tree at ``cwd`` (its own setup.cfg), without a cache."""
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", code, "--config", "setup.cfg", "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_every_contract_is_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def copy_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def test_a_lower_layer_importing_a_higher_one_breaks_the_contracts(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    bars = tree / "engine" / "market" / "bars.py"
    bars.write_text(bars.read_text() + "\nfrom engine.app import cli  # noqa: E402\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert "engine.market is not allowed to import engine.app" in done.stdout
    assert "engine.market.bars -> engine.app.cli" in done.stdout


def test_an_import_circle_between_siblings_breaks_the_contracts(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    risk = tree / "engine" / "trading" / "risk.py"  # trades imports nothing of risk's today
    risk.write_text(risk.read_text() + "\nfrom engine.trading import trades  # noqa: E402\n")
    trades = tree / "engine" / "trading" / "trades.py"
    trades.write_text(trades.read_text() + "\nfrom engine.trading import risk  # noqa: E402\n")
    done = lint_imports(tree)
    assert done.returncode == 1
    assert "No cycles are allowed in engine.trading" in done.stdout


def test_the_engine_base_holds_few_modules() -> None:
    """Everything else lives in a layer package (engine/runtime, market, store, ...)."""
    base = sorted(p.name for p in (ROOT / "engine").glob("*.py"))
    assert len(base) <= 8, base
