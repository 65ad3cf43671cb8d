"""Shared fixtures for the simulator tests: a virtual clock, tick helpers, running simulators."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import websocket

from engine.market.instruments import InstrumentSpec
from engine.messages import Tick
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorServer, SimulatorSettings

T0 = ist_epoch(2025, 1, 30, 9, 20)
SYM = "NIFTY30JAN2524000CE"
PE = "NIFTY30JAN2524000PE"
API_KEY = "test-key-123"
BASE_SETTINGS = SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                                  lost_reply_hold_s=10.0)


def tick(ltp: float, ts: float = T0, *, symbol: str = SYM, exchange: str = "NFO",
         volume: int | None = None, bid: float = 0.0, ask: float = 0.0,
         oi: int | None = None) -> Tick:
    return Tick(symbol, exchange, ltp, recv_ts=ts, exchange_ts=ts, volume=volume, bid=bid,
                ask=ask, oi=oi)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


SimFactory = Callable[..., SimulatorServer]


@pytest.fixture
def sim_factory(clock: VirtualClock) -> Iterator[SimFactory]:
    started: list[SimulatorServer] = []

    def make(matching: MatchingSettings | None = None, instrument: InstrumentSpec | None = None,
             **overrides: Any) -> SimulatorServer:
        sim = SimulatorServer(replace(BASE_SETTINGS, **overrides), api_key=API_KEY, clock=clock,
                              matching=matching or MatchingSettings(broker="ideal"),
                              instrument=instrument)
        started.append(sim.start())
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(sim_factory: SimFactory) -> SimulatorServer:
    server = sim_factory()
    server.publish(tick(100.0, volume=1000, bid=99.95, ask=100.05))
    return server


# -- WebSocket helpers ---------------------------------------------------------------------------


def ws_connect(sim: SimulatorServer, *, auth: bool = True) -> websocket.WebSocket:
    ws = websocket.create_connection(sim.ws_url, timeout=5, skip_utf8_validation=True)
    if auth:
        ws.send(json.dumps({"action": "authenticate", "api_key": API_KEY}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "auth" and reply["status"] == "success"
    return ws


def recv_json(ws: websocket.WebSocket, timeout: float = 5.0) -> dict[str, Any]:
    ws.settimeout(timeout)
    return json.loads(ws.recv())


def recv_until(ws: websocket.WebSocket, pred: Callable[[dict[str, Any]], bool],
               timeout: float = 5.0) -> dict[str, Any]:
    """The first message matching ``pred`` (others are skipped); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching message before the timeout")
        msg = recv_json(ws, left)
        if pred(msg):
            return msg


def assert_silent(ws: websocket.WebSocket, seconds: float = 0.3) -> None:
    """Nothing arrives on ``ws`` for ``seconds``."""
    ws.settimeout(seconds)
    try:
        msg = ws.recv()
    except websocket.WebSocketTimeoutException:
        return
    raise AssertionError(f"unexpected message: {msg!r}")


def subscribe(ws: websocket.WebSocket, symbols: list[tuple[str, str]], mode: object) -> dict:
    ws.send(json.dumps({"action": "subscribe", "mode": mode,
                        "symbols": [{"symbol": s, "exchange": e} for s, e in symbols]}))
    return recv_until(ws, lambda m: m.get("type") == "subscribe")


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the timeout")
        time.sleep(0.01)
