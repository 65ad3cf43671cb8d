"""Fixtures for the OpenAlgo client tests: the real simulator over loopback, and helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date

import pytest

from engine.market.instruments import InstrumentSpec, option_symbol
from engine.messages import Tick
from engine.runtime.clock import WallClock
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorServer, SimulatorSettings

API_KEY = "sim-secret-key-7f3a9c1e55d2"
SYMBOLS = [option_symbol("NIFTY", date(2025, 1, 30), strike, kind)
           for strike in (23950, 24000, 24050) for kind in ("CE", "PE")]


@pytest.fixture
def wall_clock() -> Iterator[WallClock]:
    clock = WallClock()
    yield clock
    clock.stop()


@pytest.fixture
def sim(wall_clock: WallClock) -> Iterator[SimulatorServer]:
    settings = SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                                 lost_reply_hold_s=3.0)
    server = SimulatorServer(settings, api_key=API_KEY, clock=wall_clock,
                             instrument=InstrumentSpec(), tick_source=None,
                             matching=MatchingSettings(broker="ideal"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def publish(sim: SimulatorServer, wall_clock: WallClock) -> Callable[..., Tick]:
    """Publish one tick for ``symbol`` (NFO) at ``ltp`` with a spread of one tick."""
    volume = {"n": 1000}

    def _publish(symbol: str, ltp: float, exchange: str = "NFO") -> Tick:
        volume["n"] += 65
        tick = Tick(symbol, exchange, ltp, wall_clock.time(), wall_clock.time(), volume["n"],
                    round(ltp - 0.05, 2), round(ltp + 0.05, 2), 1000)
        sim.publish(tick)
        return tick

    return _publish
