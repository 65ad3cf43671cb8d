"""The ``chaos`` control command (fault injection, only with ``[control] chaos_enabled``): refused
by default, carried over the real control socket when enabled, and, in a running engine, a named
actor crashes and its supervisor restarts it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.app.control import (
    CHAOS_COMMAND,
    CommandFailed,
    CommandRejected,
    ControlServer,
    handle_request,
    send_command,
)
from engine.app.operator import EngineOperator
from engine.app.sections import load_config
from engine.app.tree import Engine, EngineParts
from engine.market.instruments import trading_date
from engine.runtime.clock import VirtualClock, WallClock, ist_epoch

ROOT = Path(__file__).resolve().parents[3]
DAY = ist_epoch(2025, 1, 30, 9, 15)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    cfg = load_config(ROOT / "config.toml", env={})
    clock = VirtualClock(DAY)
    running = Engine(cfg, EngineParts(
        mode="replay", clock=clock, symbols=[("NIFTY", "NSE_INDEX")],
        trading_day=trading_date(DAY),
        db_path=tmp_path / "engine.db", supervision_clock=WallClock()))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    short = Path(tempfile.mkdtemp(prefix="nekx", dir="/tmp"))
    yield short / "ctl" / "engine.sock"
    shutil.rmtree(short, ignore_errors=True)


class Recorder:
    """A handler that records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def status(self) -> dict[str, object]:
        return {}

    def command(self, name: str, args: dict[str, object]) -> dict[str, object]:
        self.calls.append((name, dict(args)))
        return {"summary": f"{name}: ok"}


def test_chaos_is_refused_unless_enabled() -> None:
    handler = Recorder()
    reply = handle_request(handler, b'{"command": "chaos", "args": {"actor": "feed"}}')
    assert reply == {"ok": False, "error": "chaos is disabled: set [control] chaos_enabled = "
                                           "true (tests and drills only)"}
    assert handler.calls == []
    reply = handle_request(handler, b'{"command": "chaos", "args": {"actor": "feed"}}',
                           chaos_enabled=True)
    assert reply == {"ok": True, "result": {"summary": "chaos: ok"}}
    assert handler.calls == [("chaos", {"actor": "feed"})]


def test_the_control_socket_carries_chaos_only_when_enabled(sock_path: Path) -> None:
    handler = Recorder()
    with ControlServer(sock_path, handler), pytest.raises(CommandFailed, match="disabled"):
        send_command(sock_path, CHAOS_COMMAND, {"actor": "feed"}, timeout=5)
    with ControlServer(sock_path, handler, chaos_enabled=True):
        assert send_command(sock_path, CHAOS_COMMAND, {"actor": "feed"}, timeout=5) == {
            "summary": "chaos: ok"}
    assert handler.calls == [("chaos", {"actor": "feed"})]


def test_chaos_crashes_a_named_actor_and_its_supervisor_restarts_it(engine: Engine) -> None:
    operator = EngineOperator(engine)
    listed = operator.command(CHAOS_COMMAND, {})["actors"]
    assert {"store", "health", "market_data", "feed", "bars.NIFTY"} <= set(listed)
    assert "engine" not in listed  # the root: crashing it would be a safe stop, not a drill
    with pytest.raises(CommandRejected, match="no actor 'nope'"):
        operator.command(CHAOS_COMMAND, {"actor": "nope"})
    assert operator.command(CHAOS_COMMAND, {"actor": "bars.NIFTY"}) == {
        "summary": "chaos: crash sent to bars.NIFTY", "actor": "bars.NIFTY"}
    deadline = time.monotonic() + 10
    while engine.restart_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    [record] = engine.supervisor.restart_history() if engine.supervisor else []
    assert record.name == "bars.NIFTY" and "InjectedFault" in record.reason
    assert engine.safe_stop_reason is None
