"""Shared test helpers: an actor that collects what it is told, polling with a deadline, and
the environment every test's engine runs with (``TEST_ENV``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.runtime.actor import EngineActor

#: what the tests' engines read from the environment whatever the developer's shell holds: every
#: paper or live engine serves its dashboard on a free port, never the default 8780, so tests
#: running side by side (and an engine the developer runs meanwhile) never collide. conftest.py
#: puts it in ``os.environ`` (``load_config`` and every ``run.py`` subprocess see it); a test
#: that builds its configuration from an empty environment passes ``env=TEST_ENV``.
TEST_ENV = {"NIFTY_ENGINE__DASHBOARD__PORT": "0"}


class Collector(EngineActor):
    """Stands in for another actor: appends every message it is told to ``got`` (only those of
    ``kinds`` when given). Liveness pings, flush tokens and crashes are handled by the base."""

    def __init__(self, got: list[Any], *, kinds: tuple[type, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.got = got
        self.kinds = kinds

    def handle(self, message: Any) -> None:
        if not self.kinds or isinstance(message, self.kinds):
            self.got.append(message)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` real seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Like ``wait_for`` but fails the test when the condition never holds."""
    if not wait_for(cond, timeout):
        raise AssertionError("condition not met before the timeout")
