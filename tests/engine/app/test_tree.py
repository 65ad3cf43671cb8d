"""The engine runtime's history source for bar builders over REST: paced and bounded, so that a
restart of the whole market-data group (82 builders asking at once, each answer the whole day)
never holds every answer in memory at the same moment (the soak, RELIABILITY.md)."""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import pytest

from engine.app.tree import rest_history_source
from engine.broker import BrokerUnavailable, HistoryBar

DAY = date(2025, 9, 3)


class SlowHistory:
    """Stands in for the REST broker's ``history`` (the part under test is the gate in front
    of it): each answer takes ``delay`` seconds; it records how many were in flight at once."""

    def __init__(self, delay: float, fail_for: str = "") -> None:
        self.delay = delay
        self.fail_for = fail_for
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.calls: list[tuple[str, str, str, str]] = []

    def history(self, *, symbol: str, exchange: str, interval: str, start_date: str,
                end_date: str) -> list[HistoryBar]:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.calls.append((symbol, exchange, interval, start_date))
        try:
            time.sleep(self.delay)
            if symbol == self.fail_for:
                raise BrokerUnavailable("history: HTTP 500", endpoint="history", status=500)
            return [HistoryBar(1.0, 1.0, 1.0, 1.0, 1.0, 1)]
        finally:
            with self.lock:
                self.in_flight -= 1


def _ask_all(source: Any, symbols: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def one(sym: str) -> None:
        try:
            results[sym] = source(sym, DAY)
        except BrokerUnavailable as exc:
            results[sym] = exc

    threads = [threading.Thread(target=one, args=(sym,)) for sym in symbols]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


@pytest.mark.parametrize("concurrency", [1, 3])
def test_history_reads_never_exceed_the_configured_concurrency(concurrency: int) -> None:
    broker = SlowHistory(delay=0.03)
    symbols = [f"SYM{i}" for i in range(12)]
    source = rest_history_source(broker, {s: "NFO" for s in symbols}, calls_per_s=1000.0,
                                 concurrency=concurrency)
    results = _ask_all(source, symbols)
    assert sorted(results) == sorted(symbols)
    assert broker.most == concurrency  # reached, never passed
    assert sorted(c[0] for c in broker.calls) == sorted(symbols)
    assert {c[1:] for c in broker.calls} == {("NFO", "1m", "2025-09-03")}


def test_a_failing_read_gives_its_turn_back() -> None:
    """A read that raises releases its slot: the others all get their answer."""
    broker = SlowHistory(delay=0.01, fail_for="SYM0")
    symbols = [f"SYM{i}" for i in range(6)]
    source = rest_history_source(broker, {s: "NFO" for s in symbols}, calls_per_s=1000.0,
                                 concurrency=1)
    results = _ask_all(source, symbols)
    assert isinstance(results["SYM0"], BrokerUnavailable)
    assert all(isinstance(results[s], list) for s in symbols[1:])
    assert broker.in_flight == 0
