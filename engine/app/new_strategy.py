"""``run.py new-strategy NAME``: a commented strategy template and a test for it, in a folder.

Owns the two files' text. The strategy is a plugin: the engine finds it through
``[engine] strategy_paths``; nothing in the engine is edited. The template trades nothing until
its author writes the rule; its test replays a small generated session through the real actors.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from engine.app.sections import SECTIONS

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

STRATEGY = '''"""{name}: describe the idea in one sentence.

Written by ``run.py new-strategy``. The engine finds this file through ``[engine] strategy_paths``
(a list of folders); its settings are the ``[{name}]`` section of config.toml. Run it with
``python run.py replay --set engine.strategy_paths={folder} --strategy {name}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.messages import Bar, Fill, OrderEvent, TimerFired
from engine.settings import setting
from strategies.base import Strategy, StrategyContext


# Every tunable: a default, a one-line help and a range. ``config --check`` validates them and
# ``config --write-defaults`` documents them.
@dataclass(frozen=True, slots=True)
class {cls}Settings:
    lots: int = setting(1, "lots per entry", min=1, max=100)
    symbols: tuple[str, ...] = setting((), "symbols this strategy looks at (empty: every one)")

    def problems(self) -> list[tuple[str, str]]:
        """Checks across keys, as (key, problem); the config loader reports the first."""
        return []


class {cls}(Strategy):
    name = "{name}"  # setting a name is what registers the class
    settings_class = {cls}Settings

    def __init__(self, ctx: StrategyContext, settings: {cls}Settings | None = None) -> None:
        super().__init__(ctx, settings or {cls}Settings())
        self.cfg: {cls}Settings = self.settings
        # Plain values only: snapshot() must be JSON-able.
        self.state: dict[str, Any] = {{"bars": 0, "last_close": {{}}}}

    # -- restarts: the host persists snapshot() after every hook that changed it -------------
    def snapshot(self) -> dict[str, Any]:
        return {{"bars": self.state["bars"], "last_close": dict(self.state["last_close"])}}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.state = {{"bars": int(state["bars"]), "last_close": dict(state["last_close"])}}

    def on_start(self) -> None:
        """After ``restore``. Timers are not restored: schedule them here (engine time)."""

    # -- market data ---------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> None:
        if self.cfg.symbols and bar.symbol not in self.cfg.symbols:
            return
        self.state["bars"] += 1
        self.state["last_close"][bar.symbol] = bar.close
        if bar.source != "live" or not self.ctx.can_trade:
            return  # never trade on history backfill, nor before the engine opens the gate
        # Your rule goes here. An order is an intent the order manager carries out; its outcome
        # comes back through on_order_event and on_fill. For example:
        #
        #   self.entry = self.ctx.place(
        #       symbol=bar.symbol, exchange=OPTION_EXCHANGE, action=Action.BUY,
        #       quantity=self.cfg.lots * self.ctx.instrument.lot_size,
        #       pricetype=PriceType.MARKET, purpose=OrderPurpose.ENTRY, reason="why")
        #
        # and in on_fill, protect every entry fill with a stop (purpose=OrderPurpose.STOP,
        # parent_id=fill.client_id). To close everything, call self.ctx.exit_all("reason"):
        # the risk manager's exit coordinator is the one exit path.

    # -- execution -----------------------------------------------------------------------------
    def on_fill(self, fill: Fill) -> None:
        """Each fill of one of this strategy's orders, exactly once."""

    def on_order_event(self, event: OrderEvent) -> None:
        """One of this strategy's orders changed state (accepted, rejected, cancelled, ...)."""

    def on_timer(self, timer: TimerFired) -> None:
        """A timer from ``self.ctx.schedule_at`` / ``schedule_every`` is due."""

    def on_exit(self, reason: str) -> None:
        """The exit coordinator is closing this strategy's positions: stop placing orders."""
'''

TEST = '''"""{name} through the real engine: a small generated session replayed with the strategy.

Written by ``run.py new-strategy``. Run it from the engine's folder:
``python -m pytest {folder}/test_{name}.py``.
"""

from __future__ import annotations

from pathlib import Path

from engine.app.replay import ReplayDriver
from engine.app.sections import load_config
from engine.market.synth import small_session
from engine.store.database import Database

HERE = Path(__file__).resolve().parent


def test_{name}_replays_a_generated_session(tmp_path: Path) -> None:
    cfg = load_config(None, env={{}}, overrides={{"engine.strategy_paths": str(HERE),
                                                "engine.strategy": "{name}"}})
    session = small_session(tmp_path / "session.db", date="2025-09-03", seed=1, minutes=5).path
    summary = ReplayDriver(cfg, session, db_path=tmp_path / "engine.db", progress=False,
                           strategies=("{name}",)).run()
    assert summary.bars > 0
    with Database(tmp_path / "engine.db") as db:
        saved = db.strategy_state("strategy.{name}")  # what the host persisted for it
    assert saved is not None and saved.state["strategy"]["bars"] > 0  # it saw bars
    # Add what your rule must do: the orders it placed (db.orders(strategy="{name}")), its
    # trades (db.trades(strategy="{name}")), what it must never do.
'''


class NewStrategyError(Exception):
    """The name or the folder cannot be used; one line."""


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or "Strategy"


def write_strategy(name: str, folder: Path, known: set[str]) -> tuple[Path, Path]:
    """Write ``folder/name.py`` and ``folder/test_name.py``; never overwrite a file."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise NewStrategyError(f"{name!r} is not a usable name: lowercase letters, digits and "
                               f"underscores, starting with a letter")
    if name in SECTIONS or name in known:
        raise NewStrategyError(f"{name!r} is taken (a strategy or an engine section of that "
                               f"name exists)")
    module, test = folder / f"{name}.py", folder / f"test_{name}.py"
    for path in (module, test):
        if path.exists():
            raise NewStrategyError(f"{path} exists; choose another name or folder")
    text = {"name": name, "cls": class_name(name), "folder": folder}
    folder.mkdir(parents=True, exist_ok=True)
    module.write_text(STRATEGY.format(**text), encoding="utf-8")
    test.write_text(TEST.format(**text), encoding="utf-8")
    return module, test
