"""Shared fixtures: logging through the redacting sinks, a fresh state dir per test."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from engine.runtime.logs import setup_logging


@pytest.fixture(autouse=True, scope="session")
def _quiet_redacting_logs() -> Iterator[None]:
    """Every test logs through the same redacting filter the engine uses (to a buffer)."""
    setup_logging(level="DEBUG", console=True, stream=io.StringIO())
    yield


@pytest.fixture
def log_capture() -> Iterator[io.StringIO]:
    """Collects log lines written during the test (after redaction)."""
    from loguru import logger

    from engine.runtime.logs import add_sink

    buf = io.StringIO()
    sink_id = add_sink(buf)
    yield buf
    logger.remove(sink_id)
