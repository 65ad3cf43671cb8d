"""The simulator's REST side: OpenAlgo's ``/api/v1/<endpoint>`` API over HTTP/1.1 on loopback.

Two parts:
- ``RestApi``: transport-free request handling: JSON body (or, for a GET endpoint, the query
  parameters) → schema validation (400) → API key (403) → the simulated broker → OpenAlgo's
  reply body. Broker errors map to 400 (rejected), 404 (order not found) or 500; a number or
  date too large for the broker to compute with is a 400; the analyzer flag adds
  ``"mode": "analyze"`` to replies.
- ``RestServer``: a threaded ``http.server`` (one thread per connection, keep-alive) that applies,
  per request and in this order, the armed faults (stall, then 429 / HTTP error / malformed body /
  lost reply) and the per-client-IP moving-window rate limits, then answers from ``RestApi``.

A lost reply is processed, then the connection is held without an answer until the client hangs
up, the hold time passes or the server stops, and then closed.
"""

from __future__ import annotations

import hmac
import itertools
import json
import math
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from loguru import logger

from engine.broker import BrokerError, OrderNotFound, RejectedError
from engine.market.instruments import trading_date
from engine.sim import wire
from engine.sim.analytics import Analytics
from engine.sim.contracts import MasterContract
from engine.sim.faults import FaultInjector, RestFault
from engine.sim.groups import OrderGroups
from engine.sim.matching import INTERVALS, SimulatedBroker
from engine.sim.personalities import RateLimits
from engine.sim.ratelimit import MovingWindowLimiter

if TYPE_CHECKING:
    from engine.sim.settings import SimulatorSettings

ORDER_ENDPOINTS = frozenset({"placeorder", "modifyorder", "cancelorder", "optionsorder",
                             "optionsmultiorder"})
#: endpoints OpenAlgo refuses in semi-auto mode, with the operation name of its message
_SEMI_AUTO_REFUSED = {"cancelorder": "Cancel order", "modifyorder": "Modify order",
                      "cancelallorder": "Cancel all orders", "closeposition": "Close position",
                      "analyzer/toggle": "Analyzer toggle"}
_API_PREFIX = "/api/v1/"
#: How each endpoint words a validation error (its restx_api/ module): a message with the
#: errors apart, or the errors themselves as the message; every other: the errors as text.
_ERRORS_APART = {"optionsymbol": "Validation error", "optionchain": "Validation error",
                 "optionsorder": "Validation error", "optionsmultiorder": "Validation error",
                 "syntheticfuture": "Validation error", "optiongreeks": "Validation failed"}
_ERRORS_AS_MESSAGE = frozenset({"instruments", "market/holidays", "market/timings"})
#: Endpoints with their own wrong-key answer (restx_api/telegram_bot.py).
_AUTH_ERRORS = {"telegram/notify": (401, "Invalid or missing API key")}
_TELEGRAM_STOPPED = "Telegram bot is stopped. Start the bot to send notifications."
_MALFORMED_BODIES = (b'{"status": "success", "data": {"orders": [{"orderid": ',
                     b"<html><body><h1>502 Bad Gateway</h1></body></html>")

Reply = tuple[int, dict[str, Any]]


def error_body(message: str) -> dict[str, Any]:
    return {"status": "error", "message": message}


class RestApi:
    """Validates, authenticates and answers one OpenAlgo REST request (no transport)."""

    def __init__(self, broker: SimulatedBroker, api_key: str,
                 settings: SimulatorSettings) -> None:
        self._broker = broker
        self._contract = MasterContract(broker, broker.instrument)
        self._groups = OrderGroups(broker, self._contract)
        self._analytics = Analytics(broker, self._contract)
        self._key = api_key.encode()
        self._settings = settings
        self._strings = settings.string_numbers
        self._personality = broker.personality
        self._string_fields = broker.personality.string_fields
        self.analyze = settings.analyze_mode or broker.personality.analyze
        self._pending_ids = itertools.count(1)

    def handle(self, endpoint: str, body: bytes, query: str | None = None) -> Reply:
        """One request: the JSON ``body``, or for a GET endpoint the ``query`` string."""
        if query is not None:
            data: object = dict(reversed(parse_qsl(query)))  # the first of repeated names
        else:
            try:
                data = json.loads(body) if body else None
            except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
                return 400, error_body("Invalid JSON body")
        try:
            fields = wire.validate(endpoint, data)
        except wire.ValidationFailed as exc:
            if endpoint in _ERRORS_APART:
                return 400, {**error_body(_ERRORS_APART[endpoint]), "errors": exc.errors}
            if endpoint in _ERRORS_AS_MESSAGE:
                return 400, {"status": "error", "message": exc.errors}
            return 400, error_body(str(exc))
        if not hmac.compare_digest(fields.pop("apikey").encode("utf-8", "surrogatepass"),
                                   self._key):
            status, message = _AUTH_ERRORS.get(endpoint, (403, "Invalid openalgo apikey"))
            return status, error_body(message)
        if self._settings.semi_auto and not self.analyze:
            queued = self._semi_auto(endpoint)
            if queued is not None:
                return queued
        try:
            payload = self._dispatch(endpoint, fields)
        except OrderNotFound as exc:
            return 404, error_body(exc.message)
        except RejectedError as exc:
            return 400, error_body(exc.message)
        except BrokerError as exc:
            return exc.status or 500, error_body(exc.message)
        except OverflowError as exc:  # a valid-looking number or date the broker cannot hold
            logger.warning("simulator: {} refused, a value out of range: {}", endpoint, exc)
            return 400, error_body(f"Value out of range: {exc}")
        except Exception:
            logger.exception("simulator: {} failed", endpoint)
            return 500, error_body("An unexpected error occurred in the API endpoint")
        if self.analyze:
            payload["mode"] = "analyze"
        return 200, payload

    def now(self) -> float:
        return self._broker.clock.time()

    @property
    def rate_limits(self) -> RateLimits:
        return self._personality.rate_limits

    def _semi_auto(self, endpoint: str) -> Reply | None:
        """services/order_router_service.py: orders go to the Action Center (success, no
        orderid); services/cancel_order_service.py and its siblings refuse with 403."""
        if endpoint in ("placeorder", "placesmartorder"):
            return 200, {"status": "success",
                         "message": "Order queued for approval in Action Center",
                         "mode": "semi_auto", "pending_order_id": next(self._pending_ids)}
        refused = _SEMI_AUTO_REFUSED.get(endpoint)
        if refused is not None:
            return 403, error_body(f"{refused} operation is not allowed in Semi-Auto mode. "
                                   f"Please switch to Auto mode.")
        return None

    def _dispatch(self, endpoint: str, fields: dict[str, Any]) -> dict[str, Any]:
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(
            self, "_on_" + endpoint.replace("/", "_"))
        return {"status": "success", **handler(fields)}

    # -- one method per endpoint: the reply body minus "status" -----------------------------------
    def _on_ping(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": {"message": "pong", "broker": self._settings.broker_name}}

    def _on_placeorder(self, f: dict[str, Any]) -> dict[str, Any]:
        f.pop("underlying_ltp", None)
        return {"orderid": self._broker.place_order(**self._order_args(f))}

    def _on_placesmartorder(self, f: dict[str, Any]) -> dict[str, Any]:
        orderid = self._broker.place_smart_order(position_size=f.pop("position_size"),
                                                 **self._order_args(f))
        if orderid is None:
            return {"message": "Positions Already Matched. No Action needed."}
        return {"orderid": orderid}

    def _on_modifyorder(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"orderid": self._broker.modify_order(orderid=f.pop("orderid"),
                                                     **self._order_args(f))}

    def _on_cancelorder(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"orderid": self._broker.cancel_order(strategy=f["strategy"],
                                                     orderid=f["orderid"])}

    def _on_cancelallorder(self, f: dict[str, Any]) -> dict[str, Any]:
        result = self._broker.cancel_all_orders(strategy=f["strategy"])
        return {"canceled_orders": list(result.cancelled),
                "failed_cancellations": list(result.failed), "message": result.message}

    def _on_closeposition(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"message": self._broker.close_position(strategy=f["strategy"])}

    def _on_orderstatus(self, f: dict[str, Any]) -> dict[str, Any]:
        row = self._broker.order_status(strategy=f["strategy"], orderid=f["orderid"])
        return {"data": wire.order_status_json(row, analyze=self.analyze, strings=self._strings,
                                               string_fields=self._string_fields)}

    def _on_openposition(self, f: dict[str, Any]) -> dict[str, Any]:
        qty = self._broker.open_position(strategy=f["strategy"], symbol=f["symbol"],
                                         exchange=f["exchange"], product=f["product"])
        return {"quantity": str(qty) if self._strings else qty}

    def _on_orderbook(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": wire.orderbook_json(self._broker.orderbook(), strings=self._strings,
                                            string_fields=self._string_fields)}

    def _on_tradebook(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": [wire.trade_json(t, strings=self._strings)
                         for t in self._broker.tradebook()]}

    def _on_positionbook(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": [wire.position_json(p, strings=self._strings,
                                            personality=self._personality)
                         for p in self._broker.positionbook()]}

    def _on_funds(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": wire.funds_json(self._broker.funds())}

    def _on_quotes(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": wire.quote_json(self._broker.quotes(symbol=f["symbol"],
                                                            exchange=f["exchange"]))}

    def _on_depth(self, f: dict[str, Any]) -> dict[str, Any]:
        b, symbol, exchange = self._broker, f["symbol"], f["exchange"]
        quote = b.quotes(symbol=symbol, exchange=exchange)
        depth = b.depth(symbol=symbol, exchange=exchange)
        last_quantity = b.snapshot(symbol, exchange).last_trade_quantity
        return {"data": wire.depth_json(depth, quote, last_quantity)}

    def _on_history(self, f: dict[str, Any]) -> dict[str, Any]:
        bars = self._broker.history(symbol=f["symbol"], exchange=f["exchange"],
                                    interval=f["interval"],
                                    start_date=f["start_date"].isoformat(),
                                    end_date=f["end_date"].isoformat())
        return {"data": wire.history_json(bars)}

    def _on_intervals(self, f: dict[str, Any]) -> dict[str, Any]:
        names = list(INTERVALS)
        return {"data": {"seconds": [], "minutes": [n for n in names if n.endswith("m")],
                         "hours": [n for n in names if n.endswith("h")], "days": ["D"],
                         "weeks": [], "months": []}}

    # -- the master contract (engine/sim/contracts.py) ---------------------------------------------
    def _on_holdings(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.holdings()

    def _on_multiquotes(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.multiquotes(f["symbols"])

    def _on_symbol(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.symbol(f["symbol"], f["exchange"])

    def _on_search(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.search(f["query"], f.get("exchange"))

    def _on_expiry(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.expiry(f["symbol"], f["exchange"], f["instrumenttype"])

    def _on_optionsymbol(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.option_symbol(f["underlying"], f["exchange"],
                                            f.get("expiry_date"), f.get("strike_int"),
                                            f["offset"], f["option_type"])

    def _on_optionchain(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.option_chain(f["underlying"], f["exchange"], f["expiry_date"],
                                           f.get("strike_count"), self._broker.clock.time())

    def _on_instruments(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._contract.instruments(f.get("exchange"))

    # -- order groups (engine/sim/groups.py) ---------------------------------------------------
    def _on_basketorder(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._groups.basket(f["strategy"], f["orders"])

    def _on_splitorder(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._groups.split(f["strategy"], f, f["splitsize"])

    def _on_optionsorder(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._groups.options_order(f["strategy"], f)

    def _on_optionsmultiorder(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._groups.options_multiorder(f["strategy"], f, f["legs"],
                                               "analyze" if self.analyze else "live")

    # -- computed from prices (engine/sim/analytics.py) ----------------------------------------
    def _on_syntheticfuture(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._analytics.synthetic_future(f["underlying"], f["exchange"],
                                                f["expiry_date"])

    def _on_optiongreeks(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._analytics.option_greeks(f, self._broker.clock.time())

    def _on_margin(self, f: dict[str, Any]) -> dict[str, Any]:
        return self._analytics.margin(f["positions"])

    # -- the market calendar (engine/market/calendar.py) ---------------------------------------
    def _on_market_holidays(self, f: dict[str, Any]) -> dict[str, Any]:
        year = f.get("year") or trading_date(self._broker.clock.time()).year
        calendar = self._broker.instrument.calendar
        specials = [(d, *calendar.session_bounds(d)) for d, _, _ in
                    sorted(calendar.special_sessions) if d.year == year]
        return {"year": year, "timezone": "Asia/Kolkata",
                "data": wire.holidays_json(calendar.holidays_in(year), calendar.exchanges,
                                           specials)}

    def _on_market_timings(self, f: dict[str, Any]) -> dict[str, Any]:
        try:
            day = date.fromisoformat(f["date"]) if len(f["date"]) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise RejectedError("Invalid date format. Use YYYY-MM-DD")
        if not date(2020, 1, 1) <= day <= date(2050, 12, 31):
            raise RejectedError("Date must be between 2020-01-01 and 2050-12-31")
        calendar = self._broker.instrument.calendar
        return {"data": wire.timings_json(calendar.session(day), calendar.exchanges)}

    def _on_telegram_notify(self, f: dict[str, Any]) -> dict[str, Any]:
        # the simulator runs no Telegram bot: OpenAlgo's answer while its bot is stopped
        raise BrokerError(_TELEGRAM_STOPPED, status=409)

    def _on_analyzer(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"data": self._analyzer_data()}

    def _on_analyzer_toggle(self, f: dict[str, Any]) -> dict[str, Any]:
        self.analyze = bool(f["mode"])
        mode = "analyze" if self.analyze else "live"
        return {"data": {**self._analyzer_data(), "message": f"Analyzer mode switched to {mode}"}}

    def _analyzer_data(self) -> dict[str, Any]:
        return {"mode": "analyze" if self.analyze else "live", "analyze_mode": self.analyze,
                "total_logs": 0}

    @staticmethod
    def _order_args(f: dict[str, Any]) -> dict[str, Any]:
        return {"strategy": f["strategy"], "symbol": f["symbol"], "exchange": f["exchange"],
                "action": f["action"].upper(), "quantity": f["quantity"],
                "pricetype": f["pricetype"], "product": f["product"], "price": f["price"],
                "trigger_price": f["trigger_price"],
                "disclosed_quantity": f["disclosed_quantity"]}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    owner: RestServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.owner.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner.track(self.connection, add=False)

    def do_POST(self) -> None:
        self.server.owner.serve(self)

    def do_GET(self) -> None:
        self.server.owner.serve(self, get=True)

    def do_PUT(self) -> None:
        self.server.owner.refuse(self, 405, "Method Not Allowed")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulator http: {}", format % args)

    def send_json(self, status: int, payload: dict[str, Any] | bytes,
                  headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else wire.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class RestServer:
    """The HTTP transport in front of ``RestApi``: faults, rate limits, lost replies."""

    def __init__(self, api: RestApi, faults: FaultInjector, settings: SimulatorSettings) -> None:
        self.api = api
        self._faults = faults
        self._settings = settings
        self._limiter = MovingWindowLimiter(settings.rate_window_s)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._calls: Counter[str] = Counter()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("REST server not started")
        return int(self._httpd.server_address[1])

    def start(self, host: str, port: int) -> int:
        httpd = _HttpServer((host, port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="sim-rest", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def call_count(self, endpoint: str) -> int:
        with self._lock:
            return self._calls[endpoint]

    def call_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    # -- one request -----------------------------------------------------------------------------
    def refuse(self, handler: _Handler, status: int, message: str) -> None:
        self._drain_body(handler)
        handler.send_json(status, error_body(message))

    def serve(self, handler: _Handler, *, get: bool = False) -> None:
        path, _, query = handler.path.partition("?")
        body = self._drain_body(handler)
        if body is None:
            handler.send_json(411, error_body("Content-Length required"))
            handler.close_connection = True
            return
        endpoint = path[len(_API_PREFIX):].strip("/") if path.startswith(_API_PREFIX) else ""
        if get != (endpoint in wire.GET_ENDPOINTS) and (get or endpoint in wire.ENDPOINTS):
            handler.send_json(405, error_body("Method Not Allowed"))
            return
        if endpoint not in wire.ENDPOINTS:
            handler.send_json(404, error_body(f"Not found: {path}"))
            return
        with self._lock:
            self._calls[endpoint] += 1
        if self._faults.session_expired(self.api.now()):
            handler.send_json(403, error_body("Invalid openalgo apikey"))
            return
        delay, fault = self._faults.take_rest_faults(endpoint)
        if delay > 0 and self._stopping.wait(delay):
            handler.close_connection = True
            return
        if fault is not None and fault.kind != "lose_reply":
            self._answer_fault(handler, fault)
            return
        client_ip = handler.client_address[0]
        limit = self._limit_for(endpoint)
        if limit and not self._limiter.allow((client_ip, endpoint), limit):
            self._answer_rate_limited(handler, self._settings.retry_after_s,
                                      f"Rate limit exceeded: {limit} per "
                                      f"{self._settings.rate_window_s:g} second")
            return
        status, payload = self.api.handle(endpoint, body, query if get else None)
        if fault is not None:  # lose_reply: processed, never answered
            logger.info("simulator: {} processed ({}), reply withheld", endpoint, status)
            self._hold(handler)
            return
        handler.send_json(status, payload)

    def _limit_for(self, endpoint: str) -> int:
        """The endpoint's limit: the setting, or (0) the broker personality's default."""
        s = self._settings
        if not s.rate_limits_enabled:
            return 0
        defaults = self.api.rate_limits
        if endpoint in ORDER_ENDPOINTS:
            return s.order_rate_per_s or defaults.order
        if endpoint == "placesmartorder":
            return s.smart_order_rate_per_s or defaults.smart_order
        return s.default_rate_per_s or defaults.default

    def _answer_fault(self, handler: _Handler, fault: RestFault) -> None:
        if fault.kind == "rate_limit":
            self._answer_rate_limited(handler, fault.retry_after, "Rate limit exceeded")
        elif fault.kind == "http_error":
            handler.send_json(fault.status, error_body(f"Simulated HTTP {fault.status} error"))
        else:
            with self._lock:
                variant = sum(self._calls.values()) % len(_MALFORMED_BODIES)
            handler.send_json(200, _MALFORMED_BODIES[variant])

    @staticmethod
    def _answer_rate_limited(handler: _Handler, retry_after: float, message: str) -> None:
        handler.send_json(429, {"status": "error", "message": message,
                                "retry_after": retry_after},
                          headers={"Retry-After": str(max(0, math.ceil(retry_after)))})

    def _hold(self, handler: _Handler) -> None:
        """Keep the connection open, unanswered, until the client leaves (or hold/stop)."""
        conn = handler.connection
        deadline = time.monotonic() + self._settings.lost_reply_hold_s
        while not self._stopping.is_set() and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable and conn.recv(1, socket.MSG_PEEK) == b"":
                    break
            except (OSError, ValueError):
                break
        handler.close_connection = True
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @staticmethod
    def _drain_body(handler: _Handler) -> bytes | None:
        length = handler.headers.get("Content-Length")
        if length is None:
            return None if handler.headers.get("Transfer-Encoding") else b""
        try:
            size = int(length)
        except ValueError:
            return None
        return handler.rfile.read(size) if size > 0 else b""
