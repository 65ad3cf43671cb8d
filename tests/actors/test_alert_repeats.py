"""A failure that repeats alerts once, then at growing intervals, never on every retry (issue
16, "Why" item 4: with a refused API key the reconciler's startup pass failed every 5 s and each
failure logged CRITICAL lines, forever). Real actors on a virtual clock, the broker over real
loopback sockets refusing the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from actors.reconciler import ReconcileSettings
from tests.actors.exec_harness import ORDERS, Options, Stack


def test_a_refused_key_is_logged_once_then_at_growing_intervals(tmp_path: Path,
                                                                log_capture) -> None:
    reconcile = ReconcileSettings(interval_s=5.0, startup_retry_s=1.0)
    st = Stack(tmp_path, Options(sockets=True, risk=None, reconcile=reconcile,
                                 orders=replace(ORDERS, start_open=False)))
    try:
        assert st.server is not None
        st.server.faults.http_error(403, count=100_000, endpoints="positionbook")
        st.advance(300.0, step=1.0)  # five minutes of startup retries, one a second
        failures = st.critical("reconcile_failed")
    finally:
        st.close()
    assert len(failures) >= 250  # every retry still fails, and health hears of each
    lines = [line for line in log_capture.getvalue().splitlines()
             if "reconciliation (startup) failed" in line]
    # at 0 s, then after 60 s and 120 s more (the next would be 240 s later)
    assert len(lines) == 3, lines
    assert "CRITICAL" in lines[0] and "API key refused" in lines[0]
    assert "more like it held back" in lines[1] and "more like it held back" in lines[2]
