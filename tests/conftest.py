"""Shared fixtures: logging through the redacting sinks, a fresh state dir per test, and the
tests' environment (``tests.support.TEST_ENV``: dashboards on free ports)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from engine.runtime.logs import setup_logging
from tests.support import TEST_ENV


@pytest.fixture(autouse=True, scope="session")
def _test_environment() -> Iterator[None]:
    """``TEST_ENV`` in ``os.environ`` for the whole run (subprocesses inherit it)."""
    saved = {name: os.environ.get(name) for name in TEST_ENV}
    os.environ.update(TEST_ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
