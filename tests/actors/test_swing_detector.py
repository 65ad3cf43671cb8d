"""The SwingDetector actor with real threads, registry and SQLite store: forwarding and event
order, history hold-back, the swing log, and restoring trackers after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.store import StoreWriter
from actors.swing_detector import SwingDetector, state_name, stored_snapshot
from engine.market.swings import SwingSettings, SwingTracker
from engine.messages import Bar, BarUpdate, Ping, StatusRequest, Swing, SwingBroken, SwingKind
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.runtime.registry import Registry
from engine.store.database import Database, StoredStrategyState, StoreSettings, record
from tests.support import Collector

T = ist_epoch(2025, 1, 30, 9, 15)
DAY = date(2025, 1, 30)
# bar 3 confirms a swing LOW at bar 1 (95); bar 4 trades below it (a break by the bar)
ROWS = [(105, 110, 100, 105), (100, 108, 95, 97), (101, 112, 100, 110), (110, 115, 108, 113),
        (110, 112, 90, 100)]
DOWN = "strategy.test"


def bar(symbol: str, k: int, source: str = "live", day_shift: float = 0.0) -> Bar:
    o, h, low, c = ROWS[k]
    return Bar(symbol, T + 60 * k + day_shift, o, h, low, c, 10, 5, 96.0 + k, source)


class World:
    def __init__(self, path: Path) -> None:
        self.clock = VirtualClock(T)
        self.registry = Registry(self.clock)
        self.db = Database(path, StoreSettings(flush_interval_s=1.0))
        self.got: list[Any] = []
        self.refs: list[pykka.ActorRef[Any]] = []
        self._start("store", StoreWriter.start(self.db, name="store", clock=self.clock))
        self._start(DOWN, Collector.start(self.got, name=DOWN, registry=self.registry,
                                          clock=self.clock))

    def _start(self, name: str, ref: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
        self.registry.declare(name)
        self.registry.register(name, ref)
        self.refs.append(ref)
        return ref

    def detector(self) -> pykka.ActorRef[Any]:
        return self._start("swings", SwingDetector.start(
            settings=SwingSettings(), downstream=(DOWN,), load_states=self.db.strategy_states,
            registry=self.registry, clock=self.clock))

    def send(self, *messages: Any) -> None:
        for message in messages:
            self.registry.tell("swings", message)
        self.registry.ask("swings", Ping(0), timeout=10)
        self.registry.ask(DOWN, Ping(0), timeout=10)

    def flush_store(self) -> None:
        self.clock.advance_to(self.clock.time() + 1.5)
        self.registry.ask("store", Ping(0), timeout=10)

    def stop_detector(self) -> None:
        ref = self.registry.ref("swings")
        assert ref is not None
        self.registry.suspend("swings", ref)
        ref.stop(timeout=10)

    def close(self) -> None:
        for ref in reversed(self.refs):
            if ref.is_alive():
                ref.stop(timeout=10)
        self.db.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "engine.db")
    w.detector()
    yield w
    w.close()


def kinds(messages: list[Any]) -> list[str]:
    return [type(m).__name__ for m in messages]


def test_every_bar_and_update_is_forwarded_with_its_events_right_after(world: World) -> None:
    update = BarUpdate("A", T + 240, 114.0, 94.5, 95.0, T + 250)
    world.send(*(bar("A", k) for k in range(4)), update)
    assert kinds(world.got) == ["Bar"] * 4 + ["Swing", "BarUpdate", "SwingBroken"]
    swing, broken = world.got[4], world.got[6]
    assert swing == Swing("A", SwingKind.LOW, 95, T + 60, 1, 97.0)
    assert world.got[3] == bar("A", 3)  # the bar that made the swing came first
    assert world.got[5] == update
    assert broken == SwingBroken("A", SwingKind.LOW, 95, T + 60, T + 250, "tick")


def test_swings_and_breaks_are_logged_in_the_store(world: World) -> None:
    world.send(*(bar("A", k) for k in range(5)))
    world.flush_store()
    assert world.db.swings("A", DAY) == [Swing("A", SwingKind.LOW, 95, T + 60, 1, 97.0)]
    [broken] = world.db.swing_breaks("A", DAY)
    assert (broken.price, broken.by, broken.broken_ts) == (95, "bar", T + 300)


def test_history_swings_are_held_back_until_live_data(world: World) -> None:
    history = [bar("A", k, "history") for k in range(4)]
    history += [bar("B", k, "history") for k in range(5)]  # B's low breaks in history
    world.send(*history)
    assert kinds(world.got) == ["Bar"] * 9  # history bars go on; their swings wait
    world.got.clear()
    live_a = Bar("A", T + 240, 113, 116, 109, 115, 10, 5, 100.0)
    live_b = Bar("B", T + 300, 110, 116, 101, 114, 10, 5, 100.0)  # makes no new swing
    world.send(live_a, live_b)
    assert world.got == [Swing("A", SwingKind.LOW, 95, T + 60, 1, 97.0), live_a, live_b]


def test_a_break_of_an_announced_swing_is_forwarded_during_a_backfill(world: World) -> None:
    world.send(*(bar("A", k) for k in range(4)))
    world.got.clear()
    world.send(bar("A", 4, "history"))  # e.g. the bar builder restarted and backfilled
    assert kinds(world.got) == ["Bar", "SwingBroken"]


def test_trackers_are_restored_after_a_restart(world: World) -> None:
    world.send(*(bar("A", k) for k in range(4)))
    world.stop_detector()
    world.flush_store()
    stored = world.db.strategy_state(state_name("A"))
    rows = {row.name: row for row in world.db.strategy_states("swings.")}
    assert stored is not None and len(stored_snapshot(stored, rows).starts) == 4
    world.got.clear()

    world.detector()
    update = BarUpdate("A", T + 240, 114.0, 94.5, 95.0, T + 250)
    world.send(update)
    # the restored swing is announced again on the first live message, and it still breaks
    assert kinds(world.got) == ["Swing", "BarUpdate", "SwingBroken"]
    assert world.got[0].price == 95 and world.got[2].by == "tick"
    world.send(bar("A", 3))  # a duplicate of a bar before the restart: rejected
    status = world.registry.ask("swings", StatusRequest(), timeout=10)
    assert status["restored"] == 1 and status["rejected_bars"] == 1


def test_a_whole_snapshot_row_of_the_previous_version_still_restores(world: World) -> None:
    """A state written before snapshots were split (a restart right after an upgrade)."""
    world.stop_detector()
    tracker = SwingTracker("A", SwingSettings())
    for k in range(4):
        tracker.on_bar(bar("A", k))
    world.registry.ask("store", record(StoredStrategyState(
        state_name("A"), 1, tracker.snapshot().as_dict(), T)), timeout=10)
    world.detector()
    world.send(BarUpdate("A", T + 240, 114.0, 94.5, 95.0, T + 250))
    assert kinds(world.got) == ["Swing", "BarUpdate", "SwingBroken"]
    status = world.registry.ask("swings", StatusRequest(), timeout=10)
    assert status["restored"] == 1


def test_a_snapshot_of_another_day_is_ignored(world: World) -> None:
    world.send(*(bar("A", k) for k in range(4)))
    world.stop_detector()
    world.flush_store()
    world.got.clear()
    world.clock.advance_to(T + 86_400)
    world.detector()
    world.send(bar("A", 0, day_shift=86_400))
    assert kinds(world.got) == ["Bar"]
    status = world.registry.ask("swings", StatusRequest(), timeout=10)
    assert status["restored"] == 0 and status["bars"] == 1
