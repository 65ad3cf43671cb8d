"""OpenAlgo REST client: the ``Broker`` that speaks HTTP to one OpenAlgo account.

Owns the account's single ``requests.Session``, the retry policy, the mapping of HTTP outcomes to
the typed errors of ``engine.broker``, the parsing of replies into its dataclasses, and the request
log (every attempt at debug level, plus ``last_request`` for the status command).

Every endpoint is ``POST {host}/api/v1/<endpoint>`` with a JSON body holding ``apikey`` and only
the fields OpenAlgo accepts (it rejects unknown fields with 400).

Retry policy (``RestSettings.retries`` attempts in total, ``retry_delay_s`` apart):

- timeouts, connection errors and 5xx are retried; 429 is retried after the server's
  ``retry_after`` (capped by ``max_retry_after_s``). When the attempts run out: ``RateLimited``
  for 429, ``BrokerUnavailable`` otherwise.
- 400 → ``RejectedError``, 403 → ``AuthError`` (names the account, never the key),
  404 → ``OrderNotFound``; other 4xx → ``RejectedError``. None of them is retried.
- A reverse proxy in front of OpenAlgo (``engine.openalgo.access``) is told apart by its body,
  which is not OpenAlgo's JSON: its 401/403 → ``ProxyAuthError`` (never retried), its 502/503/504
  are 5xx as above, each with one line saying the proxy, not OpenAlgo, answered. A TLS failure
  (a refused certificate) happens before anything is sent: retried, then
  ``UntrustedServer`` (a ``BrokerUnavailable``) naming ``[openalgo] ca_bundle``.
- Order-creating endpoints (placeorder, placesmartorder, closeposition) are never re-sent once the
  request may have reached the server, because a second copy can double (or reverse) a position.
  A read timeout, a connection dropped after sending, a 5xx, or a 2xx reply that cannot be read
  all raise ``OutcomeUnknown`` at once; the order manager then looks in the orderbook. A 5xx is
  included deliberately: OpenAlgo answers 500 when anything fails after the broker call (e.g.
  parsing the broker's reply), and a proxy in front of it answers 502/504 while OpenAlgo may still
  be placing the order. Only failures that prove the request never arrived (connection refused,
  connect timeout) and 429 (refused before processing) are retried for them.

A 2xx reply that cannot be read (not JSON, not an OpenAlgo object, fields missing or of the wrong
type) is counted per endpoint in ``malformed`` and logged at most once a minute per endpoint.

The API key lives in a ``_Secret`` holder and is scrubbed from anything the server echoes back, so
it appears in no exception, log line or repr. Typed errors are raised ``from None``: the underlying
``requests`` exception holds the request body, and a traceback printer must not reach it.
"""

from __future__ import annotations

import copy
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from engine.broker import (
    AuthError,
    BrokerError,
    BrokerUnavailable,
    CancelAllResult,
    Depth,
    DepthLevel,
    Funds,
    HistoryBar,
    MalformedResponse,
    OrderNotFound,
    OrderRow,
    OutcomeUnknown,
    PositionRow,
    ProxyAuthError,
    Quote,
    RateLimited,
    RejectedError,
    SemiAutoMode,
    TradeRow,
    UntrustedServer,
)
from engine.openalgo.access import ProxyAccess, proxy_refusal
from engine.openalgo.wire import Fields, WireError, to_float
from engine.runtime import probes
from engine.runtime.clock import Clock
from engine.runtime.logs import Throttle
from engine.settings import setting

if TYPE_CHECKING:  # imported by the first client (``OpenAlgoClient``): a replay never needs it
    import requests

T = TypeVar("T")

ORDER_CREATING = frozenset({"placeorder", "placesmartorder", "closeposition"})
_MESSAGE_LIMIT = 300
_MALFORMED_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class RestSettings:
    """Section ``[openalgo]``: how the REST client reaches OpenAlgo and how it retries."""

    host: str = setting("http://127.0.0.1:5000",
                        "OpenAlgo base URL; REST endpoints live under /api/v1/")
    ca_bundle: str = setting("", "CA certificates (PEM file) trusted for the https:// and wss:// "
                             "URLs instead of the default store; verification is always on")
    timeout_s: float = setting(10.0, "timeout of one HTTP request (connect and read), seconds",
                               min=0.05, max=120.0)
    retries: int = setting(3, "attempts in total for a retryable failure (1 = never retry)",
                           min=1, max=10)
    retry_delay_s: float = setting(2.0, "pause between attempts, seconds", min=0.0, max=60.0)
    max_retry_after_s: float = setting(30.0, "longest wait honoured for a 429's retry_after, "
                                       "seconds", min=0.0, max=600.0)

    def problems(self) -> list[tuple[str, str]]:
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            return [("ca_bundle", f"no such file: {self.ca_bundle!r}")]
        return []


@dataclass(frozen=True, slots=True)
class LastRequest:
    """The most recent request, for ``status``: ``outcome`` is "ok" or the error in short."""

    endpoint: str
    status: int | None
    ts: float
    duration_s: float
    outcome: str
    orderid: str | None = None


@dataclass(frozen=True, slots=True)
class AnalyzerStatus:
    """Whether OpenAlgo runs in analyzer (sandbox) mode."""

    mode: str  # "analyze" | "live"
    analyze_mode: bool


class _Secret:
    """Holds the API key; prints as a mask so no repr, log or traceback can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class _Retryable(Exception):
    """An attempt failed in a way worth another attempt; ``error`` is raised if none is left."""

    def __init__(self, error: BrokerError, wait: float) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait = wait


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request surely never reached the server (no connection was made)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        cause = exc.args[0]
        # NewConnectionError (refused) and NameResolutionError derive from ConnectTimeoutError.
        return isinstance(cause, MaxRetryError) and isinstance(cause.reason, ConnectTimeoutError)
    return False


def _refused_certificate(exc: requests.RequestException) -> str | None:
    """Why the server's certificate was refused (untrusted, expired, for another host), or None
    for any other failure. A refused certificate ends the handshake: nothing was sent."""
    import requests
    from urllib3.exceptions import MaxRetryError

    if not isinstance(exc, requests.exceptions.SSLError) or not exc.args:
        return None
    cause = exc.args[0]
    reason = cause.reason if isinstance(cause, MaxRetryError) else cause
    for error in (reason, *getattr(reason, "args", ())):
        if isinstance(error, ssl.SSLCertVerificationError):
            return str(error.verify_message or error.reason or "certificate verify failed")
    return None


class OpenAlgoClient:
    """``engine.broker.Broker`` over OpenAlgo's REST API, for one account.

    ``clock`` stamps ``last_request``; ``sleep`` is the pause between attempts (injectable so
    tests need not wait for real); ``access`` is the proxy login and CA bundle (none by default).
    """

    def __init__(self, settings: RestSettings, *, api_key: str, clock: Clock,
                 account: str = "default", sleep: Callable[[float], None] = time.sleep,
                 access: ProxyAccess | None = None) -> None:
        if not api_key:
            raise ValueError(f"account {account!r}: empty OpenAlgo API key")
        self.account = account
        self._settings = settings
        self._key = _Secret(api_key)
        self._clock = clock
        self._sleep = sleep
        self._base = settings.host.rstrip("/") + "/api/v1/"
        self._access = access or ProxyAccess()
        import requests  # here, not at the top: the settings are imported by every command

        self._session = requests.Session()
        self._session.headers.update(self._access.headers())
        self.last_request: LastRequest | None = None
        self.last_order_id: str | None = None
        self.malformed: Counter[str] = Counter()  # endpoint → unreadable 2xx replies
        self._malformed_log = Throttle(_MALFORMED_LOG_INTERVAL_S)

    def __repr__(self) -> str:
        return f"OpenAlgoClient(account={self.account!r}, host={self._settings.host!r})"

    def close(self) -> None:
        self._session.close()

    def without_retries(self) -> OpenAlgoClient:
        """This client (same connection pool, key and request log) making one attempt per call:
        for an actor that repeats a failed read on its own timer, so its thread never sleeps
        in a retry pause (an order status read answered 500 cost the order manager 2 s in
        which no order could leave)."""
        once = copy.copy(self)
        once._settings = replace(self._settings, retries=1)
        return once

    # -- orders ----------------------------------------------------------------------------------
    def place_order(self, *, strategy: str, symbol: str, exchange: str, action: str,
                    quantity: int, pricetype: str = "MARKET", product: str = "MIS",
                    price: float = 0.0, trigger_price: float = 0.0,
                    disclosed_quantity: int = 0) -> str:
        fields = {"strategy": strategy, "exchange": exchange, "symbol": symbol, "action": action,
                  "quantity": quantity, "pricetype": pricetype, "product": product,
                  "price": price, "trigger_price": trigger_price,
                  "disclosed_quantity": disclosed_quantity}
        return self._call("placeorder", fields, _order_id)

    def place_smart_order(self, *, strategy: str, symbol: str, exchange: str, action: str,
                          quantity: int, position_size: int, pricetype: str = "MARKET",
                          product: str = "MIS", price: float = 0.0, trigger_price: float = 0.0,
                          disclosed_quantity: int = 0) -> str | None:
        """Move the position to ``position_size``; None when it already matched (no order)."""
        fields = {"strategy": strategy, "exchange": exchange, "symbol": symbol, "action": action,
                  "quantity": quantity, "position_size": position_size, "pricetype": pricetype,
                  "product": product, "price": price, "trigger_price": trigger_price,
                  "disclosed_quantity": disclosed_quantity}
        return self._call("placesmartorder", fields, _smart_order_id)

    def modify_order(self, *, strategy: str, orderid: str, symbol: str, exchange: str,
                     action: str, quantity: int, pricetype: str, product: str, price: float,
                     trigger_price: float, disclosed_quantity: int = 0) -> str:
        fields = {"strategy": strategy, "exchange": exchange, "symbol": symbol,
                  "orderid": orderid, "action": action, "product": product,
                  "pricetype": pricetype, "price": price, "quantity": quantity,
                  "disclosed_quantity": disclosed_quantity, "trigger_price": trigger_price}
        return self._call("modifyorder", fields, _order_id)

    def cancel_order(self, *, strategy: str, orderid: str) -> str:
        return self._call("cancelorder", {"strategy": strategy, "orderid": orderid}, _order_id)

    def cancel_all_orders(self, *, strategy: str) -> CancelAllResult:
        return self._call("cancelallorder", {"strategy": strategy}, _cancel_all)

    def close_position(self, *, strategy: str) -> str:
        return self._call("closeposition", {"strategy": strategy},
                          lambda body: body.text("message", ""))

    def order_status(self, *, strategy: str, orderid: str) -> OrderRow:
        return self._call("orderstatus", {"strategy": strategy, "orderid": orderid},
                          lambda body: _order_row(body.obj("data"), strategy))

    def open_position(self, *, strategy: str, symbol: str, exchange: str, product: str) -> int:
        fields = {"strategy": strategy, "symbol": symbol, "exchange": exchange,
                  "product": product}
        return self._call("openposition", fields, lambda body: body.whole("quantity"))

    # -- books and account -----------------------------------------------------------------------
    def orderbook(self) -> list[OrderRow]:
        return self._call("orderbook", {}, lambda body: [
            _order_row(row, "") for row in body.obj("data").objects("orders")])

    def tradebook(self) -> list[TradeRow]:
        return self._call("tradebook", {}, lambda body: [
            _trade_row(row) for row in body.objects("data")])

    def positionbook(self) -> list[PositionRow]:
        return self._call("positionbook", {}, lambda body: [
            _position_row(row) for row in body.objects("data")])

    def funds(self) -> Funds:
        return self._call("funds", {}, lambda body: _funds(body.obj("data")))

    # -- market data ------------------------------------------------------------------------------
    def quotes(self, *, symbol: str, exchange: str) -> Quote:
        return self._call("quotes", {"symbol": symbol, "exchange": exchange},
                          lambda body: _quote(body.obj("data")))

    def depth(self, *, symbol: str, exchange: str) -> Depth:
        return self._call("depth", {"symbol": symbol, "exchange": exchange},
                          lambda body: _depth(body.obj("data")))

    def history(self, *, symbol: str, exchange: str, interval: str, start_date: str,
                end_date: str) -> list[HistoryBar]:
        fields = {"symbol": symbol, "exchange": exchange, "interval": interval,
                  "start_date": start_date, "end_date": end_date}
        return self._call("history", fields, lambda body: [
            _history_bar(row) for row in body.objects("data")])

    # -- server ----------------------------------------------------------------------------------
    def ping(self) -> str:
        """The broker name OpenAlgo is connected to (proves the key and the server work)."""
        return self._call("ping", {}, lambda body: body.obj("data").text("broker"))

    def order_mode(self) -> str:
        """Whether OpenAlgo queues orders: "semi_auto" or "auto". OpenAlgo has no endpoint for
        its order mode, but it refuses a cancel in semi-auto mode before it looks the order up
        (services/cancel_order_service.py), so a cancel of an order id no broker issues tells
        the modes apart and changes nothing."""
        try:
            self.cancel_order(strategy="mode-probe", orderid="0")
        except SemiAutoMode:
            return "semi_auto"
        except (RejectedError, OrderNotFound):
            return "auto"
        return "auto"

    def analyzer_status(self) -> AnalyzerStatus:
        return self._call("analyzer", {}, lambda body: _analyzer(body.obj("data")))

    def analyzer_toggle(self, *, analyze: bool) -> AnalyzerStatus:
        return self._call("analyzer/toggle", {"mode": analyze},
                          lambda body: _analyzer(body.obj("data")))

    def request(self, endpoint: str, fields: Mapping[str, Any],
                parse: Callable[[Fields], T]) -> T:
        """A read-only endpoint whose reply is parsed elsewhere (the instrument provider), with
        the same retries, typed errors and request log as every other call."""
        if endpoint in ORDER_CREATING:
            raise ValueError(f"{endpoint} creates orders; use its own method")
        return self._call(endpoint, fields, parse)

    # -- transport -------------------------------------------------------------------------------
    def _call(self, endpoint: str, fields: Mapping[str, Any],
              parse: Callable[[Fields], T]) -> T:
        """Send with the retry policy; parse the success body; record and log every attempt."""
        attempts = self._settings.retries
        attempt = 1
        while True:
            started = time.monotonic()
            try:
                status, body = self._attempt(endpoint, fields)
                result = self._parse(endpoint, body, parse)
            except _Retryable as retry:
                self._record(endpoint, fields, retry.error.status, started, retry.error)
                if attempt >= attempts:
                    raise retry.error from None
                logger.debug("openalgo[{}] {}: attempt {}/{} failed, next in {:.2f} s",
                             self.account, endpoint, attempt, attempts, retry.wait)
                self._sleep(retry.wait)
                attempt += 1
                continue
            except BrokerError as error:
                self._record(endpoint, fields, error.status, started, error)
                raise
            orderid = result if isinstance(result, str) and endpoint in _ORDER_ID_ENDPOINTS \
                else None
            self._record(endpoint, fields, status, started, None, orderid)
            return result

    def _attempt(self, endpoint: str, fields: Mapping[str, Any]) -> tuple[int, Fields]:
        """One HTTP exchange: the success body, or a typed error (``_Retryable`` if retryable)."""
        creating = endpoint in ORDER_CREATING
        probe = probes.request_sending  # benchmarks only; None otherwise
        import requests  # imported already by __init__: a lookup
        if probe is not None:
            probe(endpoint, fields, time.monotonic())
        try:
            response = self._session.post(self._base + endpoint,
                                          json={"apikey": self._key.reveal(), **fields},
                                          timeout=self._settings.timeout_s,
                                          verify=self._access.verify)
        except requests.RequestException as exc:
            what = self._key.scrub(f"{type(exc).__name__}: {exc}")[:_MESSAGE_LIMIT]
            refused = _refused_certificate(exc)
            if refused is not None:  # in the TLS handshake: nothing was sent
                raise _Retryable(self._error(
                    UntrustedServer, endpoint, None,
                    f"the server's TLS certificate was refused ({refused}); if your own CA "
                    f"signed it, set [openalgo] ca_bundle to that CA's PEM file"),
                    self._settings.retry_delay_s) from None
            if _never_sent(exc):
                raise _Retryable(self._error(BrokerUnavailable, endpoint, None,
                                             f"cannot connect ({what})"),
                                 self._settings.retry_delay_s) from None
            if creating:
                raise self._error(OutcomeUnknown, endpoint, None,
                                  f"no reply, the request may have been processed ({what})"
                                  ) from None
            raise _Retryable(self._error(BrokerUnavailable, endpoint, None, what),
                             self._settings.retry_delay_s) from None
        status = response.status_code
        payload = _json_or_none(response.content)
        if 200 <= status < 300:
            return status, self._success_body(endpoint, status, payload, creating)
        refused = proxy_refusal(status, payload, self._access)
        if refused is not None and status in (401, 403):
            raise self._error(ProxyAuthError, endpoint, status, refused)
        message = refused or self._server_message(payload, response.text)
        if status == 429:
            retry_after = self._retry_after(payload)
            error = RateLimited(message, retry_after=retry_after, endpoint=endpoint,
                                status=status, account=self.account)
            raise _Retryable(error, min(retry_after, self._settings.max_retry_after_s))
        if status >= 500:
            if creating:
                raise self._error(OutcomeUnknown, endpoint, status,
                                  f"server error, the order may exist: {message}")
            raise _Retryable(self._error(BrokerUnavailable, endpoint, status, message),
                             self._settings.retry_delay_s)
        if status == 403 and "semi-auto" in message.lower():
            raise self._error(SemiAutoMode, endpoint, status, f"{message} ({SemiAutoMode.HINT})")
        if status in (401, 403):
            raise self._error(AuthError, endpoint, status,
                              f"API key refused for account {self.account!r}: {message}")
        if status == 404:
            raise self._error(OrderNotFound, endpoint, status, message)
        raise self._error(RejectedError, endpoint, status, message)

    def _success_body(self, endpoint: str, status: int, payload: object,
                      creating: bool) -> Fields:
        if isinstance(payload, dict) and payload.get("status") == "success":
            return Fields(payload)
        if isinstance(payload, dict) and payload.get("status") == "error":
            raise self._error(RejectedError, endpoint, status,
                              self._server_message(payload, ""))
        kind = OutcomeUnknown if creating else MalformedResponse
        raise self._malformed(kind, endpoint, status, "reply is not an OpenAlgo success object")

    def _parse(self, endpoint: str, body: Fields, parse: Callable[[Fields], T]) -> T:
        try:
            if body.has("mode") and body.text("mode") == "semi_auto":
                # services/order_router_service.py queue_order: queued, no order id
                raise self._error(SemiAutoMode, endpoint, 200, "order queued for approval in "
                                  f"the Action Center, not placed ({SemiAutoMode.HINT})")
            return parse(body)
        except WireError as exc:
            kind = OutcomeUnknown if endpoint in ORDER_CREATING else MalformedResponse
            raise self._malformed(kind, endpoint, 200,
                                  self._key.scrub(str(exc))[:_MESSAGE_LIMIT]) from None

    def _retry_after(self, payload: object) -> float:
        raw = payload.get("retry_after") if isinstance(payload, dict) else None
        if raw is None:
            return self._settings.retry_delay_s
        try:
            return max(0.0, to_float(raw, "retry_after"))
        except WireError:
            return self._settings.retry_delay_s

    def _server_message(self, payload: object, fallback: str) -> str:
        if isinstance(payload, dict):
            text = payload.get("message") or payload.get("error") or json.dumps(payload)
        else:
            text = fallback or "(empty reply)"
        return self._key.scrub(str(text)).strip()[:_MESSAGE_LIMIT]

    def _error(self, kind: type[BrokerError], endpoint: str, status: int | None,
               message: str) -> BrokerError:
        return kind(self._key.scrub(message), endpoint=endpoint, status=status,
                    account=self.account)

    def _malformed(self, kind: type[BrokerError], endpoint: str, status: int | None,
                   message: str) -> BrokerError:
        """The error for an unreadable 2xx reply: counted, and logged now and then."""
        self.malformed[endpoint] += 1
        emit, suppressed = self._malformed_log.allow(endpoint, self._clock.time())
        if emit:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            logger.warning("openalgo[{}] {}: unreadable reply{}: {}", self.account, endpoint,
                           more, self._key.scrub(message))
        return self._error(kind, endpoint, status, message)

    def _record(self, endpoint: str, fields: Mapping[str, Any], status: int | None,
                started: float, error: BrokerError | None, orderid: str | None = None) -> None:
        duration = time.monotonic() - started
        outcome = "ok" if error is None else f"{type(error).__name__}: {error.message}"
        self.last_request = LastRequest(endpoint, status, self._clock.time(), duration, outcome,
                                        orderid)
        if orderid is not None:
            self.last_order_id = orderid
        logger.debug("openalgo[{}] {} {} -> {} in {:.0f} ms: {}", self.account, endpoint,
                     dict(fields), status if status is not None else "no reply",
                     duration * 1000.0, outcome)


_ORDER_ID_ENDPOINTS = frozenset({"placeorder", "placesmartorder", "modifyorder", "cancelorder"})


def _json_or_none(content: bytes) -> object:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
        return None


# -- reply parsers (pure: Fields in, engine.broker dataclass out) -------------------------------
def _order_id(body: Fields) -> str:
    orderid = body.text("orderid").strip()
    if not orderid:
        raise WireError("reply.orderid: empty")
    return orderid


def _smart_order_id(body: Fields) -> str | None:
    """placesmartorder: the order id, or None for "Positions Already Matched" (no order)."""
    return _order_id(body) if body.has("orderid") else None


def _cancel_all(body: Fields) -> CancelAllResult:
    def ids(key: str) -> tuple[str, ...]:
        out: list[str] = []
        for i, item in enumerate(body.values(key, [])):
            if isinstance(item, dict):
                out.append(Fields(item, f"reply.{key}[{i}]").text("orderid"))
            elif isinstance(item, (str, int)) and not isinstance(item, bool):
                out.append(str(item))
            else:
                raise WireError(f"reply.{key}[{i}]: not an order id: {item!r}")
        return tuple(out)

    return CancelAllResult(ids("canceled_orders"), ids("failed_cancellations"),
                           body.text("message", ""))


def _order_row(row: Fields, strategy: str) -> OrderRow:
    return OrderRow(
        orderid=row.text("orderid"),
        symbol=row.text("symbol"),
        exchange=row.text("exchange"),
        action=row.text("action").strip().upper(),
        quantity=row.whole("quantity"),
        price=row.number("price", 0.0),
        trigger_price=row.number("trigger_price", 0.0),
        pricetype=row.first_text("pricetype", "price_type").strip().upper(),
        product=row.text("product"),
        status=row.status("order_status"),
        timestamp=row.text("timestamp", ""),
        average_price=row.number("average_price") if row.has("average_price") else None,
        filled_quantity=row.whole("filled_quantity") if row.has("filled_quantity") else None,
        strategy=row.text("strategy", strategy),
        rejection_reason=row.text("rejection_reason", ""),
    )


def _trade_row(row: Fields) -> TradeRow:
    return TradeRow(
        orderid=row.text("orderid"),
        symbol=row.text("symbol"),
        exchange=row.text("exchange"),
        action=row.text("action").strip().upper(),
        quantity=row.whole("quantity"),
        average_price=row.number("average_price"),
        product=row.text("product"),
        timestamp=row.text("timestamp", ""),
        trade_value=row.number("trade_value", 0.0),
    )


def _position_row(row: Fields) -> PositionRow:
    return PositionRow(
        symbol=row.text("symbol"),
        exchange=row.text("exchange"),
        product=row.text("product"),
        quantity=row.whole("quantity"),
        average_price=row.number("average_price", 0.0),
        ltp=row.number("ltp", 0.0),
        pnl=row.number("pnl", 0.0),
    )


def _funds(data: Fields) -> Funds:
    return Funds(
        availablecash=data.number("availablecash"),
        collateral=data.number("collateral", 0.0),
        m2mrealized=data.number("m2mrealized", 0.0),
        m2munrealized=data.number("m2munrealized", 0.0),
        utiliseddebits=data.number("utiliseddebits", 0.0),
    )


def _quote(data: Fields) -> Quote:
    return Quote(
        ltp=data.number("ltp"),
        open=data.number("open", 0.0),
        high=data.number("high", 0.0),
        low=data.number("low", 0.0),
        bid=data.number("bid", 0.0),
        ask=data.number("ask", 0.0),
        prev_close=data.number("prev_close", 0.0),
        volume=data.whole("volume", 0),
        oi=data.whole("oi", 0),
    )


def _depth(data: Fields) -> Depth:
    def levels(key: str) -> tuple[DepthLevel, ...]:
        return tuple(DepthLevel(level.number("price"), level.whole("quantity"))
                     for level in data.objects(key))

    return Depth(ltp=data.number("ltp"), volume=data.whole("volume", 0),
                 oi=data.whole("oi", 0), bids=levels("bids"), asks=levels("asks"))


def _history_bar(row: Fields) -> HistoryBar:
    return HistoryBar(
        timestamp=row.number("timestamp"),
        open=row.number("open"),
        high=row.number("high"),
        low=row.number("low"),
        close=row.number("close"),
        volume=row.whole("volume", 0),
        oi=row.whole("oi", 0),
    )


def _analyzer(data: Fields) -> AnalyzerStatus:
    return AnalyzerStatus(mode=data.text("mode"), analyze_mode=data.flag("analyze_mode"))
