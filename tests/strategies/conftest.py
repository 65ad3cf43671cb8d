"""Checks every strategy test gets: baseline_v1 never changes its day without counting it.

baseline_v1 counts every change of its day in ``state_version`` (``_touch()``, which also drops
its cached snapshot), and the host writes the strategy's state only after a counted change
(``Strategy.state_version``). A change that forgets ``_touch()`` would leave a stale state on
disk for a restart to trade on. In these tests every hook of baseline_v1 is followed by a fresh
dump of its day: one that differs from the dump after the previous hook while the version did
not move fails the test at teardown, with the fields that differ; so does a cached snapshot that
differs from a fresh dump (a failure inside an actor thread would only restart the actor).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import strategies.baseline_v1 as baseline
from strategies.base import Strategy

HOOKS = sorted({name for name in vars(Strategy) if name.startswith("on_")} | {"restore"})


def _differ(fresh: dict[str, Any], old: dict[str, Any]) -> str:
    return ", ".join(k for k in fresh if fresh[k] != old.get(k))


@pytest.fixture(autouse=True)
def baseline_changes_are_counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    stale: list[str] = []
    # each strategy's version and day after its last hook
    seen: weakref.WeakKeyDictionary[baseline.BaselineV1, tuple[int, dict[str, Any]]] = \
        weakref.WeakKeyDictionary()

    def counted(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def hook(self: baseline.BaselineV1, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, *args, **kwargs)
            finally:
                fresh = baseline._dump_day(self.d)
                before = seen.get(self)
                if before is not None and before[0] == self.state_version \
                        and fresh != before[1]:
                    stale.append(f"{name}: {_differ(fresh, before[1])}")
                seen[self] = (self.state_version, fresh)
        return hook

    for name in HOOKS:
        monkeypatch.setattr(baseline.BaselineV1, name,
                            counted(name, getattr(baseline.BaselineV1, name)))
    original_snapshot = baseline.BaselineV1.snapshot

    def snapshot(self: baseline.BaselineV1) -> dict[str, Any]:
        cached = self._snap
        if cached is not None:
            fresh = baseline._dump_day(self.d)
            if fresh != cached:
                stale.append(f"snapshot: {_differ(fresh, cached)}")
        return original_snapshot(self)

    monkeypatch.setattr(baseline.BaselineV1, "snapshot", snapshot)
    yield
    assert not stale, f"baseline_v1 changed its day without _touch(): {stale[:5]}"
