"""The broker boundary: one interface, typed results and typed errors.

Two implementations satisfy ``Broker``: the OpenAlgo HTTP client (``engine.openalgo.rest``) and
the in-process simulated broker (``engine.sim.matching``). Everything above this line (order
manager, reconciler, position monitor) sees only these types. Numbers are already parsed
(never strings), statuses are OpenAlgo's lowercase strings as the broker reports them.

Errors never carry an API key: they carry the endpoint, the HTTP status (if any), the server's
message and the account name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order as the broker reports it (orderbook row or orderstatus data)."""

    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: float
    trigger_price: float
    pricetype: str
    product: str
    status: str  # open | trigger pending | complete | rejected | cancelled | ...
    timestamp: str = ""
    average_price: float | None = 0.0  # None: the reply has no such field (e.g. Zerodha's)
    filled_quantity: int | None = 0  # None: the reply has no such field
    strategy: str = ""
    rejection_reason: str = ""


@dataclass(frozen=True, slots=True)
class TradeRow:
    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    average_price: float
    product: str
    timestamp: str = ""
    trade_value: float = 0.0


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    exchange: str
    product: str
    quantity: int  # signed: short < 0
    average_price: float
    ltp: float = 0.0
    pnl: float = 0.0


@dataclass(frozen=True, slots=True)
class Funds:
    availablecash: float
    collateral: float
    m2mrealized: float
    m2munrealized: float
    utiliseddebits: float


@dataclass(frozen=True, slots=True)
class Quote:
    ltp: float
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    bid: float = 0.0
    ask: float = 0.0
    prev_close: float = 0.0
    volume: int = 0
    oi: int = 0


@dataclass(frozen=True, slots=True)
class DepthLevel:
    price: float
    quantity: int


@dataclass(frozen=True, slots=True)
class Depth:
    ltp: float
    volume: int
    oi: int
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]


@dataclass(frozen=True, slots=True)
class HistoryBar:
    timestamp: float  # epoch seconds of the bar start
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: int = 0


@dataclass(frozen=True, slots=True)
class CancelAllResult:
    cancelled: tuple[str, ...]
    failed: tuple[str, ...]
    message: str = ""


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class BrokerError(Exception):
    """A broker call failed. ``status`` is the HTTP status (None for transport failures)."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None,
                 account: str = "") -> None:
        self.message = message
        self.endpoint = endpoint
        self.status = status
        self.account = account
        where = f"{account}: " if account else ""
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{where}{endpoint or 'broker'}{code}: {message}")


class AuthError(BrokerError):
    """403: the API key was refused. Never retried."""


class ProxyAuthError(AuthError):
    """401/403 from the reverse proxy in front of OpenAlgo (not OpenAlgo's JSON): its basic-auth
    credentials, or its access rules, refused the request. Never retried."""


class RejectedError(BrokerError):
    """400 or a broker-side rejection: the request was understood and refused. Never retried."""


class OrderNotFound(BrokerError):
    """404: the broker does not know this order id."""


class RateLimited(BrokerError):
    """429 after the retries ran out; ``retry_after`` seconds as the server asked."""

    def __init__(self, message: str, *, retry_after: float, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class BrokerUnavailable(BrokerError):
    """Timeouts, connection errors or 5xx after the retries ran out."""


class UntrustedServer(BrokerUnavailable):
    """The server's TLS certificate was refused (not trusted, or for another host): nothing was
    sent. Retried like any connection failure; at start it is a configuration error."""


class MalformedResponse(BrokerError):
    """The reply could not be understood (not JSON, missing fields, unparsable numbers)."""


class OutcomeUnknown(BrokerError):
    """A placeorder whose reply never came: the order may exist. Never re-sent blindly."""


class SemiAutoMode(BrokerError):
    """OpenAlgo is in semi-auto (Action Center) mode: orders are queued for a person to approve
    (no order id), cancels and modifications refused. The engine must not trade through it."""

    HINT = ("OpenAlgo is in semi-auto (Action Center) mode: switch it to auto mode "
            "(API key page, order mode) before trading with this engine")


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Broker(Protocol):
    """What the engine needs from a broker. ``strategy`` is OpenAlgo's strategy tag."""

    account: str

    def ping(self) -> str: ...

    def place_order(self, *, strategy: str, symbol: str, exchange: str, action: str,
                    quantity: int, pricetype: str = "MARKET", product: str = "MIS",
                    price: float = 0.0, trigger_price: float = 0.0,
                    disclosed_quantity: int = 0) -> str: ...

    def modify_order(self, *, strategy: str, orderid: str, symbol: str, exchange: str,
                     action: str, quantity: int, pricetype: str, product: str, price: float,
                     trigger_price: float, disclosed_quantity: int = 0) -> str: ...

    def cancel_order(self, *, strategy: str, orderid: str) -> str: ...

    def cancel_all_orders(self, *, strategy: str) -> CancelAllResult: ...

    def close_position(self, *, strategy: str) -> str: ...

    def order_status(self, *, strategy: str, orderid: str) -> OrderRow: ...

    def open_position(self, *, strategy: str, symbol: str, exchange: str,
                      product: str) -> int: ...

    def orderbook(self) -> list[OrderRow]: ...

    def tradebook(self) -> list[TradeRow]: ...

    def positionbook(self) -> list[PositionRow]: ...

    def funds(self) -> Funds: ...

    def quotes(self, *, symbol: str, exchange: str) -> Quote: ...

    def depth(self, *, symbol: str, exchange: str) -> Depth: ...

    def history(self, *, symbol: str, exchange: str, interval: str, start_date: str,
                end_date: str) -> list[HistoryBar]: ...
