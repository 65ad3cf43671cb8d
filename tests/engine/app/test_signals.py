"""SIGTERM / SIGINT handling of the long-running modes (engine.app.modes.stop_on_signals)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from loguru import logger

from engine.app.modes import stop_on_signals


def test_a_signal_arriving_while_the_main_thread_logs_stops_cleanly(
        capfd: pytest.CaptureFixture[str]) -> None:
    """The CI run of 2026-12-06: SIGTERM landed while the main thread was writing a log line;
    the handler's own log call re-entered loguru, which printed "Logging error" with the
    record and a traceback (a refused key's error text among it) to stderr."""
    lines: list[str] = []
    delivered = threading.Event()

    def sink(message: object) -> None:
        lines.append(str(message))
        if "while logging" in str(message):
            os.kill(os.getpid(), signal.SIGTERM)  # handled right here, inside the sink
            delivered.set()

    sink_id = logger.add(sink, level="INFO", format="{message}", catch=True)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            logger.warning("while logging")
            deadline = time.monotonic() + 10
            while not any("stopping gracefully" in line for line in lines):
                assert time.monotonic() < deadline, lines
                time.sleep(0.01)
    finally:
        logger.remove(sink_id)
    assert delivered.is_set() and stop.is_set()
    assert any("received SIGTERM; stopping gracefully" in line for line in lines)
    assert "Logging error" not in capfd.readouterr().err
