"""The paper pacer (engine/runtime/pacing.py): the next tick waits while the engine is behind or
a tick is still in transit, and a silent consumer never holds the market forever."""

from __future__ import annotations

import threading
import time

from engine.runtime.pacing import Pacer


def test_a_tick_waits_while_the_engine_lags_and_goes_once_it_catches_up() -> None:
    pacer = Pacer(max_lag_s=2.0, stall_s=5.0)
    pacer.published(100.0, 100.0)
    pacer.consumed(100.0)
    pacer.published(103.0, 103.0)  # 3 s ahead of what the engine has taken in
    assert pacer.behind()
    threading.Timer(0.05, lambda: pacer.consumed(103.0)).start()
    assert pacer.wait(threading.Event())
    assert pacer.waits == 1 and pacer.waited_s > 0.0


def test_the_clock_waits_for_a_tick_in_transit_not_for_a_close_one() -> None:
    pacer = Pacer(transit_s=0.25, stall_s=5.0)
    pacer.published(10.0, 10.0)
    assert not pacer.in_transit(10.2)  # within the allowance: pipelined
    assert pacer.in_transit(10.5)
    pacer.consumed(10.0, 1)
    assert not pacer.in_transit(10.5)


def test_a_backlog_of_messages_holds_the_next_tick() -> None:
    depth = [5000]
    pacer = Pacer(max_backlog=2000, backlog=lambda: depth[0], check_every_s=0.0)
    assert pacer.behind()
    depth[0] = 10
    assert not pacer.behind()


def test_a_silent_consumer_is_given_up_after_stall_s() -> None:
    pacer = Pacer(transit_s=0.25, stall_s=0.1)
    pacer.published(10.0, 10.0)  # a tick the engine drops as invalid: never consumed
    t0 = time.monotonic()
    assert pacer.wait_transit(20.0, threading.Event())
    assert 0.05 < time.monotonic() - t0 < 2.0
