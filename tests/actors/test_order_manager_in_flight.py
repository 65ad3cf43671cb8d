"""A placeorder the server processes after its client gave up (found by the chaos run,
tests/chaos): the request times out, the order manager marks the order ``unknown``, and the
server places it a moment later. An orderbook read before that moment shows nothing; re-sending
then made a second order at the broker that the engine never knew. ``unknown_settle_s`` makes
the order manager wait that long after the failed attempt before absence counts.

Over real sockets (the simulator's ``stall`` fault holds the request past the client's 0.5 s
timeout, then processes it), with the shared set-up of test_order_manager_sockets.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engine.messages import OrderStatus
from tests.actors.test_order_manager_sockets import SETTINGS, Paper, make, order
from tests.support import until as wait_for

__all__ = ["make"]  # the fixture, used by name

S = OrderStatus
STALL_S = 1.5  # the server answers after this; the client gives up after 0.5 s


def test_an_order_placed_after_its_request_timed_out_is_adopted_not_doubled(
        make: Callable[..., Paper]) -> None:
    paper = make(settings=replace(SETTINGS, unknown_settle_s=STALL_S + 0.5))
    paper.sim.faults.stall(STALL_S, count=1, endpoints="placeorder")
    paper.send(order("slow-1"))
    wait_for(paper.reached("slow-1", S.COMPLETE))
    assert paper.statuses("slow-1") == [S.SUBMITTING, S.UNKNOWN, S.COMPLETE]
    assert paper.sim.rest_calls("placeorder") == 1
    [only] = paper.sim.broker.orderbook()
    assert [f.broker_order_id for f in paper.fills()] == [only.orderid]
    assert paper.status()["counts"]["adopted"] == 1


def test_without_a_settle_time_the_same_fault_makes_a_second_order(
        make: Callable[..., Paper]) -> None:
    paper = make(settings=replace(SETTINGS, unknown_settle_s=0.0))
    paper.sim.faults.stall(STALL_S, count=1, endpoints="placeorder")
    paper.send(order("slow-1"))
    wait_for(lambda: len(paper.sim.broker.orderbook()) == 2)  # one intent, two orders
    assert paper.sim.rest_calls("placeorder") == 2
    assert paper.status()["counts"]["resent"] == 1
