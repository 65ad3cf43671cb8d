"""Fault injection for the simulator: what to break, how often, and for which endpoints.

``FaultInjector`` is the object tests hold (``sim.faults``). Every method is thread-safe and takes
effect immediately. It owns the counters; the REST server asks it per request
(``take_rest_faults``) and the feed asks it per tick / per frame (``take_zero_price``,
``take_malformed_frame``, ``feed_frozen``). Actions that must happen *now* on live connections
(dropping sockets, pushing error frames) and broker rejections are delegated to callables the
server wires in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loguru import logger


@dataclass(frozen=True, slots=True)
class RestFault:
    """How one REST call is answered instead of normally."""

    kind: str  # "rate_limit" | "http_error" | "malformed" | "lose_reply"
    status: int = 200
    retry_after: float = 0.0


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
                 reject: Callable[[int, str], None]) -> None:
        self._lock = threading.Lock()
        self._drop = drop
        self._push_error_frames = push_error_frames
        self._reject = reject
        self._rest: dict[str, list[_Armed]] = {}  # armed faults by kind, oldest first
        self._frozen = False
        self._zero_prices = 0
        self._malformed_frames = 0

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

    def malformed(self, count: int = 1, endpoints: Iterable[str] | str | None = None) -> None:
        """The next ``count`` calls answer 200 with a body that is not valid JSON."""
        self._arm("malformed", _Armed(count, _endpoints(endpoints)))

    # -- broker faults -----------------------------------------------------------------------------
    def reject_orders(self, n: int, reason: str = "Simulated rejection by broker RMS") -> None:
        """The next ``n`` orders are accepted with an order id, then rejected by the 'broker'
        (status ``rejected`` with ``reason``), as a broker's RMS does."""
        logger.info("fault: reject_orders({}, {!r})", n, reason)
        self._reject(max(0, n), reason)

    def clear(self) -> None:
        """Disarm every fault (connections already dropped stay dropped)."""
        logger.info("fault: clear")
        with self._lock:
            self._rest.clear()
            self._frozen = False
            self._zero_prices = 0
            self._malformed_frames = 0
        self._reject(0, "")

    # -- queried by the server -------------------------------------------------------------------
    def take_rest_faults(self, endpoint: str) -> tuple[float, RestFault | None]:
        """For one REST call: the stall (seconds, 0 if none) and how to answer (None = normally).

        A stall that applies is consumed (one of its count); then the answer faults are tried
        in the order rate_limit, http_error, malformed, lose_reply and only the first that
        applies is consumed. Faults of one kind armed several times apply oldest first.
        """
        with self._lock:
            if not self._rest:
                return 0.0, None
            stall = self._consume("stall", endpoint)
            delay = stall.seconds if stall is not None else 0.0
            for kind in ("rate_limit", "http_error", "malformed", "lose_reply"):
                armed = self._consume(kind, endpoint)
                if armed is not None:
                    return delay, RestFault(kind, armed.status, armed.seconds)
            return delay, None

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
