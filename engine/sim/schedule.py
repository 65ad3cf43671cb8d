"""Fault schedules for a standalone simulator: ``run.py simulator --faults FILE``.

Owns the schedule file format, its validation, and the thread that plays it against a running
simulator's ``FaultInjector`` (``engine.sim.faults``). This is how another process (the chaos
harness, an operator rehearsing an outage) switches faults on: no extra port, no admin API.

The file is JSON::

    {
      "random": {"http_error_rate": 0.10, "http_error_status": 500,
                 "timeout_rate": 0.05, "timeout_s": 1.5, "seed": 7},
      "events": [
        {"at_s": 5.0,  "fault": "drop_connections", "abrupt": true},
        {"at_s": 9.0,  "fault": "freeze_feed", "frozen": true},
        {"at_s": 14.0, "fault": "freeze_feed", "frozen": false},
        {"at_s": 20.0, "fault": "rate_limit", "count": 8, "retry_after": 1.0},
        {"at_s": 30.0, "fault": "lose_reply", "count": 1, "endpoints": ["placeorder"]}
      ]
    }

``random`` (optional) holds the arguments of ``FaultInjector.random_rest_faults``, applied as the
schedule starts. Each event names a ``FaultInjector`` method (``SCHEDULABLE``) and its keyword
arguments; ``at_s`` is real seconds after the schedule starts (when the simulator is listening),
whatever the playback speed, because the client timeouts these faults test are real-time too.
Events run in ``at_s`` order. Anything malformed (unknown key, unknown fault, an argument the
method does not take, a negative time) is a ``FaultScheduleError`` naming the event, raised
before the simulator starts.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from engine.sim.faults import FaultInjector, RandomRestFaults

#: ``FaultInjector`` methods a schedule may call.
SCHEDULABLE = ("drop_connections", "freeze_feed", "zero_prices", "malformed_frames",
               "error_frames", "http_error", "stall", "lose_reply", "rate_limit", "malformed",
               "reject_orders", "close_by_hand", "cancel_by_hand", "lose_state", "clear",
               "random_rest_faults")
_TOP_KEYS = frozenset({"random", "events"})
_NUMBER = (int, float)
#: The JSON type each argument name must have (any method, ``random`` included).
_ARG_TYPES: dict[str, tuple[type, ...]] = {
    "abrupt": (bool,), "frozen": (bool,), "n": (int,), "count": (int,), "status": (int,),
    "http_error_status": (int,), "seed": (int, type(None)), "seconds": _NUMBER,
    "retry_after": _NUMBER, "timeout_s": _NUMBER, "http_error_rate": _NUMBER,
    "timeout_rate": _NUMBER, "reason": (str,), "code": (str,), "message": (str,),
    "endpoints": (str, list, type(None)), "archive": (str, type(None)),
}


class FaultScheduleError(ValueError):
    """The schedule file cannot be used; the message names the file and the event."""


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """One ``FaultInjector`` call, ``at_s`` real seconds after the schedule starts."""

    at_s: float
    fault: str
    args: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args)
        return f"{self.fault}({args}) at {self.at_s:g} s"


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """The random REST chances (``random_rest_faults`` keyword arguments) and the timed events."""

    random: tuple[tuple[str, Any], ...] = ()
    events: tuple[ScheduledFault, ...] = ()


def parse_fault_schedule(data: object, source: str = "fault schedule") -> FaultSchedule:
    """A validated schedule from decoded JSON; raises ``FaultScheduleError``."""
    if not isinstance(data, Mapping):
        raise FaultScheduleError(f"{source}: expected a JSON object with 'random' and 'events'")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise FaultScheduleError(f"{source}: unknown key(s) {unknown}; known: "
                                 f"{sorted(_TOP_KEYS)}")
    random_args = data.get("random", {})
    if not isinstance(random_args, Mapping):
        raise FaultScheduleError(f"{source}: 'random' must be an object")
    _check_call(FaultInjector.random_rest_faults, random_args, f"{source}: random")
    try:
        RandomRestFaults(**{k: v for k, v in random_args.items() if k not in ("seed",
                                                                             "endpoints")})
    except ValueError as exc:
        raise FaultScheduleError(f"{source}: random: {exc}") from None
    raw_events = data.get("events", [])
    if not isinstance(raw_events, list):
        raise FaultScheduleError(f"{source}: 'events' must be a list")
    events = [_event(raw, f"{source}: event {n}") for n, raw in enumerate(raw_events)]
    events.sort(key=lambda e: e.at_s)
    return FaultSchedule(tuple(sorted(random_args.items())), tuple(events))


def load_fault_schedule(path: str | Path) -> FaultSchedule:
    """Read and validate a schedule file; raises ``FaultScheduleError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FaultScheduleError(f"{path}: cannot read the fault schedule: "
                                 f"{exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FaultScheduleError(f"{path}: the fault schedule is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FaultScheduleError(f"{path}: not JSON: {exc}") from None
    return parse_fault_schedule(data, str(path))


def _event(raw: object, where: str) -> ScheduledFault:
    if not isinstance(raw, Mapping):
        raise FaultScheduleError(f"{where}: expected an object with 'at_s' and 'fault'")
    at_s, fault = raw.get("at_s"), raw.get("fault")
    if isinstance(at_s, bool) or not isinstance(at_s, (int, float)) or not math.isfinite(at_s) \
            or at_s < 0:
        raise FaultScheduleError(f"{where}: 'at_s' must be a number of seconds >= 0, "
                                 f"got {at_s!r}")
    if fault not in SCHEDULABLE:
        raise FaultScheduleError(f"{where}: unknown fault {fault!r}; known: "
                                 f"{', '.join(SCHEDULABLE)}")
    args = {k: v for k, v in raw.items() if k not in ("at_s", "fault")}
    _check_call(getattr(FaultInjector, str(fault)), args, where)
    return ScheduledFault(float(at_s), str(fault), tuple(sorted(args.items())))


def _check_call(method: Any, args: Mapping[str, Any], where: str) -> None:
    """The arguments must bind to the method's keywords (``self`` aside), with JSON types."""
    try:
        inspect.signature(method).bind(None, **args)
    except TypeError as exc:
        raise FaultScheduleError(f"{where}: {exc}") from None
    for name, value in args.items():
        expected = _ARG_TYPES.get(name, ())
        wrong_bool = isinstance(value, bool) and bool not in expected
        if not isinstance(value, expected) or wrong_bool:
            kinds = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
            raise FaultScheduleError(f"{where}: {name!r} must be {kinds}, got {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise FaultScheduleError(f"{where}: {name!r} must list endpoint names")


class FaultScheduleRunner:
    """Plays a ``FaultSchedule`` against ``faults`` on a daemon thread (``start`` / ``stop``).

    An event whose call fails (a value the method refuses) is logged and skipped; the rest of
    the schedule goes on. ``applied`` counts the events carried out.
    """

    def __init__(self, faults: FaultInjector, schedule: FaultSchedule) -> None:
        self._faults = faults
        self._schedule = schedule
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.failed = 0

    def start(self) -> FaultScheduleRunner:
        if self._thread is not None:
            raise RuntimeError("a fault schedule runs once")
        if self._schedule.random:
            self._faults.random_rest_faults(**dict(self._schedule.random))
        self._thread = threading.Thread(target=self._run, name="sim-fault-schedule",
                                        daemon=True)
        self._thread.start()
        logger.info("fault schedule: {} event(s) over {:g} s", len(self._schedule.events),
                    self._schedule.events[-1].at_s if self._schedule.events else 0.0)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("fault schedule: {} event(s) applied, {} failed; random REST faults {}",
                    self.applied, self.failed, self._faults.random_faults_injected())

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the last event; True when the schedule has been played out."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        started = time.monotonic()
        for event in self._schedule.events:
            if self._stop.wait(max(0.0, started + event.at_s - time.monotonic())):
                return
            try:
                getattr(self._faults, event.fault)(**dict(event.args))
            except (TypeError, ValueError) as exc:
                self.failed += 1
                logger.error("fault schedule: {} failed: {}", event.describe(), exc)
                continue
            self.applied += 1
