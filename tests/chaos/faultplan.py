"""The chaos run's fault timeline: what breaks, when, in the simulator and in the engine.

Owns the schedule of one chaos run, built from a seed and the run's real-time length:

- the simulator's part, written as the JSON file ``run.py simulator --faults`` plays
  (engine/sim/schedule.py): random REST faults on every call (``REST_ERROR_RATE`` answer 500,
  ``REST_TIMEOUT_RATE`` are held past the client's timeout and then processed) and, every
  ``scene_every_s``, the next fault "scene" of ``SIM_SCENES`` (sockets dropped, the feed frozen
  with the sockets open, a burst of 429s, an accepted order whose reply is lost, a rejection, a
  position closed and an order cancelled by hand at the broker, the broker restarted with its
  books lost, ...),
  with a final ``clear`` when the market closes so the last reconciliation sees a healthy broker;
- the engine's part, which the harness itself carries out: an injected exception (``chaos``
  control command) into the next kind of actor every ``crash_every_s``, cycling through every
  kind, and the engine database held locked by another process (SQLite busy) now and then,
  once for longer than the store's retry budget.

Times are real seconds from the start of the simulator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

REST_ERROR_RATE = 0.10
REST_TIMEOUT_RATE = 0.05
#: The engine's REST timeout in a chaos run (``[openalgo] timeout_s``); a "timeout" is held longer.
CLIENT_TIMEOUT_S = 0.5

#: One simulator fault scene per entry: the events, as (offset seconds, fault, arguments).
SIM_SCENES: tuple[tuple[str, tuple[tuple[float, str, dict[str, Any]], ...]], ...] = (
    ("sockets dropped (TCP abort)", ((0.0, "drop_connections", {"abrupt": True}),)),
    ("feed frozen, sockets open", ((0.0, "freeze_feed", {"frozen": True}),
                                   (3.5, "freeze_feed", {"frozen": False}))),
    ("429 burst", ((0.0, "rate_limit", {"count": 8, "retry_after": 0.2}),)),
    ("order accepted, reply lost", ((0.0, "lose_reply", {"count": 1,
                                                         "endpoints": ["placeorder"]}),)),
    ("sockets dropped (close frame)", ((0.0, "drop_connections", {"abrupt": False}),)),
    ("order rejected by the broker", ((0.0, "reject_orders", {"n": 1}),)),
    ("500 burst on the books", ((0.0, "http_error", {"status": 503, "count": 4, "endpoints": [
        "orderbook", "positionbook", "tradebook", "orderstatus"]}),)),
    ("cancel accepted, reply lost", ((0.0, "lose_reply", {"count": 1,
                                                          "endpoints": ["cancelorder"]}),)),
    ("zero prices", ((0.0, "zero_prices", {"n": 6}),)),
    ("garbage frames", ((0.0, "malformed_frames", {"n": 3}),
                        (0.5, "error_frames", {"n": 2}))),
    ("position closed by hand at the broker", ((0.0, "close_by_hand", {}),)),
    ("order cancelled by hand at the broker", ((0.0, "cancel_by_hand", {}),)),
    # the harness names the file the lost books are written to (``with_archives``)
    ("broker restarted, its state lost", ((0.0, "lose_state", {}),)),
)

#: Actor kinds an exception is injected into, in the order they are hit (groups interleaved so
#: one supervisor's restart budget is never spent by two crashes in a row). ``bars`` and
#: ``strategy`` stand for a bar builder and the strategy host; supervisors are group actors.
ACTOR_KINDS = ("feed", "orders", "store", "bars", "positions", "swings", "health", "risk",
               "strategy_host", "reconciler", "market_data", "strategy", "execution")


@dataclass(frozen=True, slots=True)
class DbLock:
    """Hold the engine database's write lock from another process for ``seconds``."""

    at_s: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Crash:
    """Inject an exception into the actor of ``kind`` (resolved to a name by the harness)."""

    at_s: float
    kind: str


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Everything scheduled for one run; ``simulator_json`` is the ``--faults`` file body."""

    simulator_json: dict[str, Any]
    scenes: tuple[tuple[float, str], ...]
    crashes: tuple[Crash, ...]
    db_locks: tuple[DbLock, ...]

    def summary(self) -> str:
        if not self.simulator_json["events"] and not self.crashes and not self.db_locks:
            return "none (a baseline run)"
        kinds = sorted({c.kind for c in self.crashes})
        locked = sum(lock.seconds for lock in self.db_locks)
        return (f"{len(self.scenes)} simulator scenes, random REST faults "
                f"{REST_ERROR_RATE:.0%} HTTP 500 + {REST_TIMEOUT_RATE:.0%} timeouts, "
                f"{len(self.crashes)} injected exceptions ({len(kinds)} actor kinds), "
                f"{len(self.db_locks)} SQLite busy spells ({locked:.1f} s)")


def with_archives(plan: FaultPlan, directory: str) -> FaultPlan:
    """The plan with each ``lose_state`` event told where to write the books it loses
    (``lost-books-N.json`` in ``directory``): the invariants compare with them."""
    events = []
    for event in plan.simulator_json["events"]:
        if event["fault"] == "lose_state":
            event = {**event, "archive": f"{directory}/lost-books-{len(events):03d}.json"}
        events.append(event)
    return FaultPlan({**plan.simulator_json, "events": events}, plan.scenes, plan.crashes,
                     plan.db_locks)


def no_faults() -> FaultPlan:
    """An empty plan: the same run with nothing broken (a baseline, e.g. for memory)."""
    return FaultPlan({"events": []}, (), (), ())


def build_fault_plan(*, seed: int, start_s: float, market_end_s: float,
                     scene_every_s: float = 6.0, crash_every_s: float = 4.0,
                     lock_every_s: float = 20.0, store_budget_s: float = 3.3) -> FaultPlan:
    """The timeline for a run whose engine is trading from ``start_s`` until the market closes
    at ``market_end_s`` (real seconds after the simulator started). ``store_budget_s`` is how
    long the store keeps retrying a locked database; one lock lasts longer than that."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    scenes: list[tuple[float, str]] = []
    t, n = start_s, rng.randrange(len(SIM_SCENES))
    while t < market_end_s - 4.0:
        name, steps = SIM_SCENES[n % len(SIM_SCENES)]
        scenes.append((round(t, 2), name))
        events += [{"at_s": round(t + offset, 2), "fault": fault, **args}
                   for offset, fault, args in steps]
        t += scene_every_s * rng.uniform(0.7, 1.3)
        n += 1
    events.append({"at_s": round(market_end_s + 0.5, 2), "fault": "clear"})
    crashes: list[Crash] = []
    t, n = start_s + 1.0, 0
    while t < market_end_s - 2.0:
        crashes.append(Crash(round(t, 2), ACTOR_KINDS[n % len(ACTOR_KINDS)]))
        t += crash_every_s * rng.uniform(0.8, 1.2)
        n += 1
    locks: list[DbLock] = []
    t, spells = start_s + lock_every_s / 2, (1.5, store_budget_s + 1.0, 2.5)
    while t < market_end_s - 6.0:
        locks.append(DbLock(round(t, 2), spells[len(locks) % len(spells)]))
        t += lock_every_s * rng.uniform(0.8, 1.2)
    random_faults = {"http_error_rate": REST_ERROR_RATE, "http_error_status": 500,
                     "timeout_rate": REST_TIMEOUT_RATE, "timeout_s": CLIENT_TIMEOUT_S + 0.3,
                     "seed": seed}
    return FaultPlan({"random": random_faults, "events": events}, tuple(scenes), tuple(crashes),
                     tuple(locks))
