"""Fuzzing the REST client with hostile HTTP replies from a loopback server.

Every ``OpenAlgoClient`` call is answered with a generated reply: the endpoint's real success body
mutated (fields dropped, values swapped for junk: wrong types, numbers as odd strings, NaN,
infinities, integers beyond 64 bits and beyond the float range, odd unicode, nested junk), the
body truncated, an HTML error page, an empty or non-UTF-8 body, an error object echoing the API
key; any status code; odd content types; a Content-Length that lies (the connection closes
early) or none at all. Properties: each call returns a well-typed result (right types, finite
floats, 64-bit integers) or raises a typed ``engine.broker.BrokerError`` subclass, never
KeyError, TypeError, ValueError or a JSON error; the API key is in no error text, no
``last_request`` and no log line; every unreadable 2xx reply is counted (``malformed``) and
logged at most once per interval.
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from loguru import logger

from engine.broker import (
    BrokerError,
    CancelAllResult,
    Depth,
    Funds,
    HistoryBar,
    MalformedResponse,
    OrderRow,
    OutcomeUnknown,
    PositionRow,
    Quote,
    TradeRow,
)
from engine.openalgo.rest import AnalyzerStatus, OpenAlgoClient, RestSettings
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import add_sink
from tests.fuzz.support import (
    API_KEY,
    EDGE_FLOATS,
    HUGE_INTS,
    dumps,
    fuzz_settings,
    json_value,
    raw_not_json,
    truncations,
)

SYM = "NIFTY30JAN2524000CE"
INT64 = 2**63
ORDER = {"action": "BUY", "symbol": SYM, "exchange": "NFO", "orderid": "250130000012345",
         "product": "MIS", "quantity": 65, "price": 100.5, "pricetype": "LIMIT",
         "order_status": "open", "trigger_price": 0, "timestamp": "30-Jan-2025 09:20:00",
         "average_price": 0, "filled_quantity": 0}
TRADE = {"action": "SELL", "symbol": SYM, "exchange": "NFO", "orderid": "2", "product": "MIS",
         "quantity": "65", "average_price": "101.25", "timestamp": "09:21:00",
         "trade_value": 6581.25}
POSITION = {"symbol": SYM, "exchange": "NFO", "product": "MIS", "quantity": -65,
            "average_price": "101.25", "ltp": 99.0, "pnl": "146.25"}
QUOTE = {"open": 1, "high": 2, "low": 0.5, "ltp": 1.5, "ask": 1.55, "bid": 1.45,
         "prev_close": 1, "volume": 100, "oi": 10}


@dataclass(frozen=True)
class Call:
    """One client method, the success body OpenAlgo gives for it, and the result type."""

    invoke: Callable[[OpenAlgoClient], Any]
    body: dict[str, Any]
    returns: Any


CALLS: dict[str, Call] = {
    "place_order": Call(lambda c: c.place_order(
        strategy="fz", symbol=SYM, exchange="NFO", action="BUY", quantity=65),
        {"status": "success", "orderid": "250130000012345"}, str),
    "place_smart_order": Call(lambda c: c.place_smart_order(
        strategy="fz", symbol=SYM, exchange="NFO", action="BUY", quantity=65, position_size=65),
        {"status": "success", "orderid": 250130000012346}, str | None),
    "modify_order": Call(lambda c: c.modify_order(
        strategy="fz", orderid="1", symbol=SYM, exchange="NFO", action="BUY", quantity=65,
        pricetype="LIMIT", product="MIS", price=101.0, trigger_price=0.0),
        {"status": "success", "orderid": "1"}, str),
    "cancel_order": Call(lambda c: c.cancel_order(strategy="fz", orderid="1"),
                         {"status": "success", "orderid": "1"}, str),
    "cancel_all_orders": Call(lambda c: c.cancel_all_orders(strategy="fz"),
                              {"status": "success", "canceled_orders": ["1", 2],
                               "failed_cancellations": [{"orderid": "3"}], "message": "done"},
                              CancelAllResult),
    "close_position": Call(lambda c: c.close_position(strategy="fz"),
                           {"status": "success", "message": "All positions closed"}, str),
    "order_status": Call(lambda c: c.order_status(strategy="fz", orderid="1"),
                         {"status": "success", "data": ORDER}, OrderRow),
    "open_position": Call(lambda c: c.open_position(strategy="fz", symbol=SYM,
                                                    exchange="NFO", product="MIS"),
                          {"status": "success", "quantity": "65"}, int),
    "orderbook": Call(lambda c: c.orderbook(),
                      {"status": "success", "data": {"orders": [ORDER], "statistics": {}}},
                      list[OrderRow]),
    "tradebook": Call(lambda c: c.tradebook(), {"status": "success", "data": [TRADE]},
                      list[TradeRow]),
    "positionbook": Call(lambda c: c.positionbook(), {"status": "success", "data": [POSITION]},
                         list[PositionRow]),
    "funds": Call(lambda c: c.funds(),
                  {"status": "success", "data": {"availablecash": "1000.00",
                                                 "collateral": "0.00", "m2mrealized": "-5.5",
                                                 "m2munrealized": 3, "utiliseddebits": "0"}},
                  Funds),
    "quotes": Call(lambda c: c.quotes(symbol=SYM, exchange="NFO"),
                   {"status": "success", "data": QUOTE}, Quote),
    "depth": Call(lambda c: c.depth(symbol=SYM, exchange="NFO"),
                  {"status": "success", "data": {
                      "ltp": 1.5, "volume": 100, "oi": 10,
                      "bids": [{"price": 1.45, "quantity": 65}, {"price": 1.4, "quantity": 130}],
                      "asks": [{"price": 1.55, "quantity": 65}]}}, Depth),
    "history": Call(lambda c: c.history(symbol=SYM, exchange="NFO", interval="1m",
                                        start_date="2025-01-30", end_date="2025-01-30"),
                    {"status": "success", "data": [{"timestamp": 1738208700, "open": 1,
                                                    "high": 2, "low": 0.5, "close": 1.5,
                                                    "volume": 100, "oi": 0}]},
                    list[HistoryBar]),
    "ping": Call(lambda c: c.ping(),
                 {"status": "success", "data": {"message": "pong", "broker": "zerodha"}}, str),
    "analyzer_status": Call(lambda c: c.analyzer_status(),
                            {"status": "success", "data": {"mode": "live",
                                                           "analyze_mode": False}},
                            AnalyzerStatus),
    "analyzer_toggle": Call(lambda c: c.analyzer_toggle(analyze=True),
                            {"status": "success", "data": {"mode": "analyze",
                                                           "analyze_mode": "true"}},
                            AnalyzerStatus),
}


# -- replies -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str | None = "application/json"
    framing: str = "exact"  # exact | short (Content-Length lies, then close) | none


NUMBER_TEXTS = ["12.5", " 65 ", "1e400", "-1e400", "NaN", "nan", "inf", "-0", "", "0x10",
                "1_000", "65.0", "65.5", "1" + "0" * 30, "1" + "0" * 5000, "٣"]
junk = st.one_of(json_value, st.sampled_from(NUMBER_TEXTS), st.sampled_from(HUGE_INTS),
                 st.sampled_from(EDGE_FLOATS), st.sampled_from([API_KEY, f"key {API_KEY}"]))


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with one field (at any depth) deleted, replaced by junk, or left alone."""
    if isinstance(value, dict) and value and depth < 4 and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        copy = dict(value)
        how = draw(st.sampled_from(["delete", "replace", "descend", "descend"]))
        if how == "delete":
            del copy[key]
        else:
            copy[key] = draw(junk) if how == "replace" else draw(mutated(value[key], depth + 1))
        return copy
    if isinstance(value, list) and value and depth < 4 and draw(st.integers(0, 3)):
        index = draw(st.integers(0, len(value) - 1))
        copy = list(value)
        copy[index] = draw(mutated(value[index], depth + 1))
        return copy
    return draw(junk) if draw(st.booleans()) else value


STATUSES = [200, 201, 204, 301, 400, 401, 403, 404, 405, 409, 418, 422, 429, 500,
            502, 503, 504, 599]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/html",
                 "text/plain; charset=bogus", "application/json; charset=utf-16",
                 "application/octet-stream", "", None]
HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def bodies(template: dict[str, Any]) -> st.SearchStrategy[bytes]:
    text = dumps(template)
    return st.one_of(
        mutated(template).map(lambda v: dumps(v).encode("utf-8", "surrogatepass")),
        mutated(template).flatmap(mutated).map(  # two mutations
            lambda v: dumps(v).encode("utf-8", "surrogatepass")),
        truncations(text).map(str.encode),
        raw_not_json,
        st.just(HTML),
        st.fixed_dictionaries({"status": st.sampled_from(["error", "ERROR", "failed"])},
                              optional={"message": junk, "error": junk, "retry_after": junk}
                              ).map(lambda v: dumps(v).encode("utf-8", "surrogatepass")),
        st.just(text.replace('"success"', f'"success", "message": "{API_KEY}"').encode()),
    )


@st.composite
def replies(draw: st.DrawFn, template: dict[str, Any]) -> Reply:
    status = draw(st.just(200) | st.sampled_from(STATUSES))  # half of them 200
    return Reply(status, draw(bodies(template)),
                 draw(st.sampled_from(CONTENT_TYPES)),
                 draw(st.sampled_from(["exact", "exact", "exact", "short", "none"])))


# -- the loopback server ---------------------------------------------------------------------------
class ReplyServer:
    """Answers every POST with ``reply`` (set by the test) and closes the connection."""

    def __init__(self) -> None:
        owner = self
        self.reply = Reply(200, b"{}")
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.requests += 1
                reply = owner.reply
                self.close_connection = True
                self.send_response(reply.status)
                if reply.content_type is not None:
                    self.send_header("Content-Type", reply.content_type)
                if reply.framing != "none":
                    extra = 10 if reply.framing == "short" else 0
                    self.send_header("Content-Length", str(len(reply.body) + extra))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@dataclass
class Rig:
    server: ReplyServer
    client: OpenAlgoClient
    clock: VirtualClock
    log: io.StringIO


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    server = ReplyServer()
    clock = VirtualClock(1_700_000_000.0)
    settings = RestSettings(host=server.url, timeout_s=5.0, retries=2, retry_delay_s=0.0,
                            max_retry_after_s=0.0)
    client = OpenAlgoClient(settings, api_key=API_KEY, clock=clock, account="fuzz",
                            sleep=lambda seconds: None)
    log = io.StringIO()
    sink = add_sink(log, level="DEBUG")
    try:
        yield Rig(server, client, clock, log)
    finally:
        logger.remove(sink)
        client.close()
        server.close()


# -- checks --------------------------------------------------------------------------------------
def assert_well_typed(value: Any, expected: Any) -> None:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, type(str | None)):
        options = typing.get_args(expected)
        if value is None:
            assert type(None) in options
            return
        expected = next(o for o in options if o is not type(None))
        origin = typing.get_origin(expected)
    if origin in (list, tuple):
        assert type(value) is origin
        item = typing.get_args(expected)[0]
        for element in value:
            assert_well_typed(element, item)
    elif dataclasses.is_dataclass(expected):
        assert type(value) is expected
        hints = typing.get_type_hints(expected)
        for field in dataclasses.fields(expected):
            assert_well_typed(getattr(value, field.name), hints[field.name])
    elif expected is float:
        assert type(value) is float and math.isfinite(value)
    elif expected is int:
        assert type(value) is int and -INT64 <= value < INT64
    else:
        assert type(value) is expected


def check_call(rig: Rig, name: str, reply: Reply) -> Any:
    """Make the call against ``reply``; the result or the typed error, both checked."""
    call = CALLS[name]
    rig.server.reply = reply
    malformed = sum(rig.client.malformed.values())
    try:
        result = call.invoke(rig.client)
    except BrokerError as error:  # anything else fails the test
        for text in (str(error), repr(error), error.message):
            assert API_KEY not in text
        grew = sum(rig.client.malformed.values()) - malformed
        if isinstance(error, MalformedResponse):
            assert grew == 1
        else:  # an unreadable reply to an order-creating call is an OutcomeUnknown
            assert grew == 0 or (grew == 1 and isinstance(error, OutcomeUnknown))
        outcome: Any = error
    else:
        assert_well_typed(result, call.returns)
        assert sum(rig.client.malformed.values()) == malformed
        outcome = result
    last = rig.client.last_request
    assert last is not None and API_KEY not in last.outcome
    return outcome


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Reply]:
    name = draw(st.sampled_from(sorted(CALLS)))
    return name, draw(replies(CALLS[name].body))


# -- tests ---------------------------------------------------------------------------------------
def test_every_unmutated_success_body_parses(rig: Rig) -> None:
    """The templates are what OpenAlgo sends: the fuzzing starts from replies that work."""
    for name, call in CALLS.items():
        result = check_call(rig, name, Reply(200, dumps(call.body).encode()))
        assert not isinstance(result, BrokerError), (name, result)


@fuzz_settings(250)
@given(calls())
# crashes found by this fuzzing before the fixes: an integer beyond the float range
# (OverflowError), JSON nested beyond the parser's limit (RecursionError)
@example(("quotes", Reply(200, b'{"status":"success","data":{"ltp":1' + b"0" * 400 + b"}}")))
@example(("funds", Reply(429, b'{"status":"error","retry_after":1' + b"0" * 400 + b"}")))
@example(("ping", Reply(200, b"[" * 100_000)))
@example(("orderbook", Reply(502, b"[" * 100_000)))
def test_every_call_returns_a_typed_result_or_raises_a_broker_error(
        rig: Rig, call: tuple[str, Reply]) -> None:
    name, reply = call
    event(type(check_call(rig, name, reply)).__name__)
    assert API_KEY not in rig.log.getvalue()


def test_unreadable_replies_are_counted_and_logged_once_per_interval(rig: Rig) -> None:
    clock = VirtualClock(1_700_000_000.0)
    client = OpenAlgoClient(RestSettings(host=rig.server.url, retries=1), api_key=API_KEY,
                            clock=clock, account="fuzz-throttle")
    rig.server.reply = Reply(200, HTML, "text/html")
    try:
        for _ in range(30):
            with pytest.raises(MalformedResponse):
                client.funds()
        assert client.malformed == {"funds": 30}
        marker = "openalgo[fuzz-throttle] funds: unreadable reply"
        assert rig.log.getvalue().count(marker) == 1
        clock.advance_to(clock.time() + 61.0)
        rig.server.reply = Reply(200, b'{"status": "success", "data": []}')
        with pytest.raises(MalformedResponse):
            client.funds()
        assert client.malformed == {"funds": 31}
        assert rig.log.getvalue().count(marker) == 2
        assert f"{marker} (29 more since the last report)" in rig.log.getvalue()
    finally:
        client.close()


def test_replies_nested_around_the_parsers_recursion_limit(rig: Rig) -> None:
    """Nesting just inside the limit parses; the error text then quotes the whole reply."""
    limit = sys.getrecursionlimit()
    outcomes: set[str] = set()
    for depth in range(limit - 150, limit + 10):
        nested = b"[" * depth + b"]" * depth
        for status in (200, 400):
            body = b'{"status": "%s", "data": %s}' % (b"success" if status == 200 else b"error",
                                                      nested)
            outcomes.add(type(check_call(rig, "funds", Reply(status, body))).__name__)
    assert outcomes == {"MalformedResponse", "RejectedError"}
