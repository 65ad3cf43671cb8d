"""Checks every strategy test gets: baseline_v1's cached snapshot is never stale.

baseline_v1 hands the host the same snapshot object until something in its day changes, and
the host persists only a new object (``Strategy.snapshot_cached``). A change that forgets
``_touch()`` would leave a stale state on disk for a restart to trade on. Every call of
``snapshot()`` in these tests (the host calls it after every hook) compares the cached object
with a fresh dump of the day; a difference fails the test at teardown, with the fields that
differ (a failure inside an actor thread would only restart the actor).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import strategies.baseline_v1 as baseline


@pytest.fixture(autouse=True)
def baseline_snapshot_never_stale(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    stale: list[str] = []
    original = baseline.BaselineV1.snapshot

    def checked(self: baseline.BaselineV1) -> dict[str, Any]:
        cached = self._snap
        if cached is not None:
            fresh = baseline._dump_day(self.d)
            if fresh != cached:
                stale.append(", ".join(k for k in fresh if fresh[k] != cached.get(k)))
        return original(self)

    monkeypatch.setattr(baseline.BaselineV1, "snapshot", checked)
    yield
    assert not stale, f"baseline_v1 changed its day without _touch(): fields {stale[:5]}"
