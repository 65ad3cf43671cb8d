"""Fault injection for the simulator: what to break, how often, and for which endpoints.

``FaultInjector`` is the object tests hold (``sim.faults``). Every method is thread-safe and takes
effect immediately. It owns the counters; the REST server asks it per request
(``take_rest_faults``: the armed faults first, then the random per-call chances set by
``random_rest_faults``) and the feed asks it per tick / per frame (``take_zero_price``,
``take_malformed_frame``, ``feed_frozen``). Actions that must happen *now* on live connections
(dropping sockets, pushing error frames) and broker rejections are delegated to callables the
server wires in.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loguru import logger


class BehindTheBack(Protocol):
    """What an operator (or a crash) does to the broker's books behind the engine's back."""

    def close_by_hand(self) -> str | None: ...

    def cancel_by_hand(self) -> str | None: ...

    def lose_state(self) -> dict[str, list[dict[str, object]]]: ...


@dataclass(frozen=True, slots=True)
class RestFault:
    """How one REST call is answered instead of normally."""

    kind: str  # "rate_limit" | "http_error" | "malformed" | "lose_reply"
    status: int = 200
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class RandomRestFaults:
    """Chances applied to every REST call that no armed fault answers (``random_rest_faults``).

    A call times out with ``timeout_rate``: it is held ``timeout_s`` (longer than the client
    waits), then processed and answered to a client that has gone. Otherwise it answers
    ``http_error_status`` with ``http_error_rate``, before being processed.
    """

    http_error_rate: float = 0.0
    http_error_status: int = 500
    timeout_rate: float = 0.0
    timeout_s: float = 0.0
    endpoints: frozenset[str] | None = None  # None = every endpoint

    def __post_init__(self) -> None:
        for name in ("http_error_rate", "timeout_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.http_error_rate + self.timeout_rate > 1.0:
            raise ValueError("http_error_rate + timeout_rate must not exceed 1")
        if not 400 <= self.http_error_status <= 599:
            raise ValueError(f"http_error_status must be 4xx or 5xx, got "
                             f"{self.http_error_status}")
        if self.timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {self.timeout_s}")

    @property
    def active(self) -> bool:
        return self.http_error_rate > 0 or self.timeout_rate > 0


@dataclass(slots=True)
class _Armed:
    count: int
    endpoints: frozenset[str] | None  # None = every endpoint
    status: int = 200
    seconds: float = 0.0

    def applies(self, endpoint: str) -> bool:
        return self.count > 0 and (self.endpoints is None or endpoint in self.endpoints)


def _endpoints(endpoints: Iterable[str] | str | None) -> frozenset[str] | None:
    if endpoints is None:
        return None
    if isinstance(endpoints, str):
        return frozenset({endpoints.strip("/")})
    return frozenset(e.strip("/") for e in endpoints)


class FaultInjector:
    """Arms faults for the next N calls / ticks / frames (see engine/sim/server.py).

    REST faults accumulate: arming a kind again (e.g. a 500 for ``funds`` and a 503 for
    ``orderbook``) adds to what is armed; each applies to its own next calls, oldest first.
    """

    def __init__(self, *, drop: Callable[[bool], int],
                 push_error_frames: Callable[[int, str, str], int],
                 reject: Callable[[int, str], None],
                 broker: BehindTheBack | None = None) -> None:
        self._lock = threading.Lock()
        self._drop = drop
        self._push_error_frames = push_error_frames
        self._reject = reject
        self._broker = broker
        self._rest: dict[str, list[_Armed]] = {}  # armed faults by kind, oldest first
        self._frozen = False
        self._zero_prices = 0
        self._malformed_frames = 0
        self._random = RandomRestFaults()
        self._rng = random.Random()
        self._random_counts: Counter[str] = Counter()  # random faults injected, by kind
        self._session_expired_until: float | None = None

    # -- WebSocket faults ------------------------------------------------------------------------
    def drop_connections(self, abrupt: bool = True) -> int:
        """Close every WS connection now: ``abrupt`` = TCP abort without a close frame, else a
        close frame (1001 "going away"). Returns how many connections were closed."""
        logger.info("fault: drop_connections(abrupt={})", abrupt)
        return self._drop(abrupt)

    def freeze_feed(self, frozen: bool = True) -> None:
        """Keep sockets open but send no market_data at all (until unfrozen)."""
        logger.info("fault: freeze_feed({})", frozen)
        with self._lock:
            self._frozen = frozen

    def zero_prices(self, n: int) -> None:
        """The next ``n`` published ticks go out (and reach the broker) with ltp 0."""
        logger.info("fault: zero_prices({})", n)
        with self._lock:
            self._zero_prices = max(0, n)

    def malformed_frames(self, n: int) -> None:
        """The next ``n`` WS messages sent (any type, any client) are garbage / truncated JSON."""
        logger.info("fault: malformed_frames({})", n)
        with self._lock:
            self._malformed_frames = max(0, n)

    def error_frames(self, n: int, code: str = "BROKER_ERROR",
                     message: str = "Simulated broker error") -> int:
        """Push ``n`` error frames ``{"status":"error","code","message"}`` to every connection now.
        Returns how many frames were queued."""
        logger.info("fault: error_frames({}, {})", n, code)
        return self._push_error_frames(max(0, n), code, message)

    # -- REST faults -------------------------------------------------------------------------------
    def http_error(self, status: int = 500, count: int = 1,
                   endpoints: Iterable[str] | str | None = None) -> None:
        """The next ``count`` REST calls (to ``endpoints``, or any) answer ``status`` with an
        OpenAlgo error body."""
        if not 400 <= status <= 599:
            raise ValueError(f"http_error status must be 4xx or 5xx, got {status}")
        self._arm("http_error", _Armed(count, _endpoints(endpoints), status=status))

    def stall(self, seconds: float, count: int = 1,
              endpoints: Iterable[str] | str | None = None) -> None:
        """The next ``count`` calls are answered only after ``seconds``."""
        if seconds < 0:
            raise ValueError(f"stall seconds must be >= 0, got {seconds}")
        self._arm("stall", _Armed(count, _endpoints(endpoints), seconds=seconds))

    def lose_reply(self, count: int = 1,
                   endpoints: Iterable[str] | str | None = ("placeorder",)) -> None:
        """The next ``count`` calls ARE processed, but the reply is never sent: the server holds
        the connection until the client gives up (or ``lost_reply_hold_s``), then closes it."""
        self._arm("lose_reply", _Armed(count, _endpoints(endpoints)))

    def rate_limit(self, count: int = 1, retry_after: float = 1.0,
                   endpoints: Iterable[str] | str | None = None) -> None:
        """The next ``count`` calls answer 429 with ``{"retry_after": retry_after}``."""
        self._arm("rate_limit", _Armed(count, _endpoints(endpoints), status=429,
                                       seconds=retry_after))

    def random_rest_faults(self, http_error_rate: float = 0.0, http_error_status: int = 500,
                           timeout_rate: float = 0.0, timeout_s: float = 0.0,
                           endpoints: Iterable[str] | str | None = None,
                           seed: int | None = None) -> None:
        """From now on, every REST call (to ``endpoints``, or any) that no armed fault answers
        answers ``http_error_status`` with chance ``http_error_rate``, or is held ``timeout_s``
        before it is processed (a timeout for the client) with chance ``timeout_rate``. Rates of
        0 switch it off; ``seed`` makes the draws repeatable."""
        chances = RandomRestFaults(http_error_rate, http_error_status, timeout_rate, timeout_s,
                                   _endpoints(endpoints))
        logger.info("fault: random REST faults: {:.0%} HTTP {}, {:.0%} held {} s, endpoints={}",
                    http_error_rate, http_error_status, timeout_rate, timeout_s,
                    sorted(chances.endpoints) if chances.endpoints else "any")
        with self._lock:
            self._random = chances
            if seed is not None:
                self._rng.seed(seed)

    def malformed(self, count: int = 1, endpoints: Iterable[str] | str | None = None) -> None:
        """The next ``count`` calls answer 200 with a body that is not valid JSON."""
        self._arm("malformed", _Armed(count, _endpoints(endpoints)))

    # -- broker faults -----------------------------------------------------------------------------
    def expire_session(self, until: float = math.inf) -> None:
        """The broker session expires now: every API call is refused the way OpenAlgo refuses
        it once the day's broker token is revoked (403 "Invalid openalgo apikey",
        database/auth_db.py ``get_auth_token_broker`` → None) until engine time ``until``,
        the moment the operator logs in again (``math.inf``: until ``clear``)."""
        with self._lock:
            self._session_expired_until = until
        logger.warning("fault: broker session expired until {}", until)

    def session_expired(self, now: float) -> bool:
        until = self._session_expired_until
        return until is not None and now < until

    def reject_orders(self, n: int, reason: str = "Simulated rejection by broker RMS") -> None:
        """The next ``n`` orders are accepted with an order id, then rejected by the 'broker'
        (status ``rejected`` with ``reason``), as a broker's RMS does."""
        logger.info("fault: reject_orders({}, {!r})", n, reason)
        self._reject(max(0, n), reason)

    def close_by_hand(self) -> str | None:
        """An operator closes one open position at the broker (a MARKET order tagged
        ``by_hand``). Returns its order id (None: nothing was open)."""
        orderid = self._broker.close_by_hand() if self._broker else None
        logger.info("fault: close_by_hand: {}", orderid or "no open position")
        return orderid

    def cancel_by_hand(self) -> str | None:
        """An operator cancels one working order at the broker (a resting stop first)."""
        orderid = self._broker.cancel_by_hand() if self._broker else None
        logger.info("fault: cancel_by_hand: {}", orderid or "no working order")
        return orderid

    def lose_state(self, archive: str | None = None) -> int:
        """The broker restarts with empty books: every order, trade and position is gone (order
        ids keep counting). ``archive``: a file the lost books are written to as JSON (for the
        chaos invariants and post-mortems). Returns how many orders were lost."""
        lost = self._broker.lose_state() if self._broker else {"orders": []}
        logger.warning("fault: lose_state: {} order(s), {} trade(s), {} position(s) lost",
                       len(lost["orders"]), len(lost.get("trades", [])),
                       len(lost.get("positions", [])))
        if archive:
            Path(archive).write_text(json.dumps(lost, indent=1))
        return len(lost["orders"])

    def clear(self) -> None:
        """Disarm every fault (connections already dropped stay dropped)."""
        logger.info("fault: clear")
        with self._lock:
            self._rest.clear()
            self._random = RandomRestFaults()
            self._frozen = False
            self._zero_prices = 0
            self._malformed_frames = 0
            self._session_expired_until = None
        self._reject(0, "")

    # -- queried by the server -------------------------------------------------------------------
    def take_rest_faults(self, endpoint: str) -> tuple[float, RestFault | None]:
        """For one REST call: the stall (seconds, 0 if none) and how to answer (None = normally).

        A stall that applies is consumed (one of its count); then the answer faults are tried
        in the order rate_limit, http_error, malformed, lose_reply and only the first that
        applies is consumed. Faults of one kind armed several times apply oldest first. A call
        neither stalled nor answered by an armed fault gets the random chances, if any.
        """
        with self._lock:
            if not self._rest and not self._random.active:
                return 0.0, None
            stall = self._consume("stall", endpoint)
            delay = stall.seconds if stall is not None else 0.0
            for kind in ("rate_limit", "http_error", "malformed", "lose_reply"):
                armed = self._consume(kind, endpoint)
                if armed is not None:
                    return delay, RestFault(kind, armed.status, armed.seconds)
            if stall is None:
                return self._draw(endpoint)
            return delay, None

    def _draw(self, endpoint: str) -> tuple[float, RestFault | None]:
        """The random chances for one call (called holding the lock)."""
        chances = self._random
        if not chances.active or (chances.endpoints is not None
                                  and endpoint not in chances.endpoints):
            return 0.0, None
        draw = self._rng.random()
        if draw < chances.timeout_rate:
            self._random_counts["timeout"] += 1
            return chances.timeout_s, None
        if draw < chances.timeout_rate + chances.http_error_rate:
            self._random_counts["http_error"] += 1
            return 0.0, RestFault("http_error", chances.http_error_status)
        return 0.0, None

    def _consume(self, kind: str, endpoint: str) -> _Armed | None:
        queue = self._rest.get(kind)
        if not queue:
            return None
        for armed in queue:
            if armed.applies(endpoint):
                armed.count -= 1
                if armed.count == 0:
                    queue.remove(armed)
                return armed
        return None

    def random_faults_injected(self) -> dict[str, int]:
        """How many calls the random chances answered so far, by kind (timeout, http_error)."""
        with self._lock:
            return dict(self._random_counts)

    def take_zero_price(self) -> bool:
        if not self._zero_prices:
            return False
        with self._lock:
            if self._zero_prices <= 0:
                return False
            self._zero_prices -= 1
            return True

    def take_malformed_frame(self) -> bool:
        if not self._malformed_frames:
            return False
        with self._lock:
            if self._malformed_frames <= 0:
                return False
            self._malformed_frames -= 1
            return True

    @property
    def feed_frozen(self) -> bool:
        return self._frozen

    def armed(self) -> int:
        """REST calls the armed faults will still answer (0: every one spent)."""
        with self._lock:
            return sum(a.count for queue in self._rest.values() for a in queue)

    def _arm(self, kind: str, armed: _Armed) -> None:
        if armed.count < 0:
            raise ValueError(f"{kind} count must be >= 0, got {armed.count}")
        logger.info("fault: {} x{} endpoints={} status={} seconds={}", kind, armed.count,
                    sorted(armed.endpoints) if armed.endpoints else "any", armed.status,
                    armed.seconds)
        if armed.count == 0:
            return
        with self._lock:
            self._rest.setdefault(kind, []).append(armed)
