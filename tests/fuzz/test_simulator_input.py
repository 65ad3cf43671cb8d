"""Fuzzing the simulator with hostile client input: REST bodies and WebSocket frames.

REST: every endpoint (and some that do not exist) gets generated bodies: objects built from the
endpoint's own fields with values that are right, of the wrong type, numbers as odd strings,
NaN, infinities, integers beyond 64 bits and beyond the float range, odd unicode and lone
surrogates, dates at the ends of the calendar, unknown fields, a wrong API key; and texts that are
not JSON objects at all (truncated, nested beyond any parser, not UTF-8, empty). WebSocket:
authenticated and unauthenticated connections send generated frames (every action with junk
fields, junk text and binary frames) and then a ping.

Properties: every answer is an OpenAlgo JSON object (``status`` success or error, an error with
a message), never a 5xx and never a traceback; the WebSocket server answers each frame with
well-formed frames, never a ``SERVER_ERROR``, keeps the connection open and answers the ping;
and the simulator stays up: a good request afterwards works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from hypothesis import event, example, given
from hypothesis import strategies as st

from engine.messages import Tick
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.sim.wire import ENDPOINTS, SCHEMAS, Field
from tests.fuzz.support import (
    API_KEY,
    EDGE_FLOATS,
    HUGE_INTS,
    any_text,
    dumps,
    fuzz_settings,
    json_value,
    raw_not_json,
    truncations,
)

T0 = ist_epoch(2025, 1, 30, 9, 20)
SYM = "NIFTY30JAN2524000CE"
WS_CODES = {"AUTHENTICATION_ERROR", "NOT_AUTHENTICATED", "INVALID_MODE", "INVALID_PARAMETERS",
            "INVALID_ACTION", "INVALID_JSON"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    settings = SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                                 lost_reply_hold_s=1.0)
    server = SimulatorServer(settings, api_key=API_KEY, clock=VirtualClock(T0),
                             matching=MatchingSettings(broker="ideal")).start()
    server.publish(Tick(SYM, "NFO", 100.0, T0, T0, 1000, 99.95, 100.05, 10))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# -- REST ----------------------------------------------------------------------------------------
NUMBERS = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(HUGE_INTS), st.sampled_from(EDGE_FLOATS),
                    st.sampled_from(["65", " 65.0 ", "1e400", "NaN", "-inf", "1_000", "0x41",
                                     "65.5", "", "1" + "0" * 5000]))
DATES = st.sampled_from(["2025-01-30", "0001-01-01", "9999-12-31", "2025-02-30", "2025-1-3",
                         " 2025-01-30 ", "20250130", "2025-01-30T09:15", ""])


QUANTITIES = [65, 130, "65", 65.0, 1800, 1865, 0, -65, 65 * 10**30, 2**63]
PRICES = [100.0, 100.05, "100.05", 99.95, 0.05, 0, 1e308, 5e-324, 1e15, 100.01]
BY_NAME: dict[str, list[Any]] = {
    "symbol": [SYM, "NIFTY", "NIFTY30JAN2524000PE"], "exchange": ["NFO", "NSE_INDEX"],
    "strategy": ["fz", ""],
    "orderid": ["250130000000001", "1", ""], "interval": ["1m", "5m", "D", "1x"],
    "quantity": QUANTITIES, "position_size": [*QUANTITIES, -130],
    "disclosed_quantity": [0, 65, -1], "price": PRICES, "trigger_price": PRICES,
}

DEEP_ENDPOINTS = ["placeorder", "placesmartorder", "modifyorder", "cancelorder", "orderstatus",
                  "openposition", "quotes", "depth", "history", "splitorder", "optionsorder",
                  "syntheticfuture", "optiongreeks", "market/holidays", "market/timings"]


def right_kind(name: str, spec: Field) -> st.SearchStrategy[Any]:
    """Values of the field's kind (valid or not: NaN is a number, 9999-12-31 a date)."""
    if name in BY_NAME:  # three times in four the plausible values of this very field
        plausible = st.sampled_from(BY_NAME[name])
        return st.one_of(plausible, plausible, plausible, right_kind("", spec))
    if spec.choices is not None:
        right: st.SearchStrategy[Any] = st.sampled_from(spec.choices)
    elif spec.kind == "str":
        right = st.sampled_from([SYM, "NFO", "fz", "1", "1m", "D"]) | any_text
    elif spec.kind == "bool":
        right = st.booleans() | st.sampled_from(["true", "No", 1, 0, 2])
    elif spec.kind == "date":
        right = DATES
    else:
        right = NUMBERS
    return right


@st.composite
def rest_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A request body for ``endpoint``: its own fields (any mix of missing, of the right kind
    and junk, plus unknown ones), or anything at all."""
    schema = SCHEMAS.get(endpoint, {})
    how = draw(st.sampled_from(["fields", "fields", "raw", "truncated", "value"]))
    if how == "raw":
        return draw(raw_not_json)
    body: dict[str, Any] = {}
    for name, spec in schema.items():
        if name == "apikey" and draw(st.integers(0, 9)):
            body[name] = API_KEY
        elif draw(st.integers(0, 5)):
            body[name] = draw(st.one_of(right_kind(name, spec), json_value))
    body.update(draw(st.dictionaries(any_text, json_value, max_size=2)))
    text = dumps(body if how != "value" else draw(json_value))
    if how == "truncated":
        text = draw(truncations(text))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def rest_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    endpoint = draw(st.sampled_from([*sorted(ENDPOINTS), "nosuch", "", "ping/x"]))
    return endpoint, draw(rest_bodies(endpoint))


@st.composite
def broker_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A request that passes the schema more often than not, so its values reach the broker:
    every required field present and of the right kind (valid or not: NaN, 1e308, 9999-12-31),
    optional ones sometimes."""
    endpoint = draw(st.sampled_from(DEEP_ENDPOINTS))
    body: dict[str, Any] = {"apikey": API_KEY}
    for name, spec in SCHEMAS[endpoint].items():
        if name != "apikey" and (spec.required or draw(st.booleans())):
            body[name] = draw(right_kind(name, spec))
    return endpoint, dumps(body).encode("utf-8", "surrogatepass")


def post(http: requests.Session, sim: SimulatorServer, endpoint: str,
         body: bytes) -> requests.Response:
    return http.post(f"{sim.rest_url}/api/v1/{endpoint}", data=body, timeout=10,
                     headers={"Content-Type": "application/json"})


def assert_openalgo_answer(response: requests.Response) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    payload = response.json()
    assert isinstance(payload, dict)
    if response.status_code == 200:
        assert payload["status"] == "success"
    else:
        assert payload["status"] == "error"
        # instruments, market/holidays and market/timings send the field errors themselves
        # as the message, as OpenAlgo does (restx_api/instruments.py, market_*.py)
        assert isinstance(payload["message"], str) or (
            response.status_code == 400 and isinstance(payload["message"], dict)
            and response.url.rsplit("/api/v1/", 1)[1] in
            ("instruments", "market/holidays", "market/timings"))
    return payload


def assert_still_up(http: requests.Session, sim: SimulatorServer) -> None:
    ping = post(http, sim, "ping", json.dumps({"apikey": API_KEY}).encode())
    assert ping.status_code == 200 and ping.json()["data"]["message"] == "pong"


@fuzz_settings(250)
@given(rest_requests())
# crashes found by this fuzzing before the fixes: an integer beyond the float range
# (OverflowError in validation), a body nested beyond the parser's limit (RecursionError: no
# answer at all), a lone surrogate as the API key (UnicodeEncodeError)
@example(("placeorder", b'{"apikey": "%s", "price": 1%s}' % (API_KEY.encode(), b"0" * 400)))
@example(("ping", b"[" * 100_000))
@example(("ping", b'{"apikey": "\\ud800"}'))
def test_rest_answers_every_body_with_an_openalgo_reply(http: requests.Session,
                                                       sim: SimulatorServer,
                                                       request: tuple[str, bytes]) -> None:
    endpoint, body = request
    response = post(http, sim, endpoint, body)
    event(f"HTTP {response.status_code}")
    assert_openalgo_answer(response)
    assert_still_up(http, sim)


def _broker_body(**fields: Any) -> bytes:
    return json.dumps({"apikey": API_KEY, **fields}).encode()


@fuzz_settings(300)
@given(broker_requests())
# 500s found by this fuzzing before the fix (OverflowError in the simulated broker)
@example(("history", _broker_body(symbol=SYM, exchange="NFO", interval="1m",
                                  start_date="2025-01-30", end_date="9999-12-31")))
@example(("placeorder", _broker_body(strategy="fz", symbol=SYM, exchange="NFO", action="BUY",
                                     quantity=65, pricetype="LIMIT", price=1e308)))
def test_rest_values_that_reach_the_broker_get_an_answer_not_a_500(
        http: requests.Session, sim: SimulatorServer, request: tuple[str, bytes]) -> None:
    endpoint, body = request
    response = post(http, sim, endpoint, body)
    event(f"{endpoint}: HTTP {response.status_code}")
    assert_openalgo_answer(response)
    assert_still_up(http, sim)


# -- WebSocket -----------------------------------------------------------------------------------
ACTIONS = ["authenticate", "auth", "subscribe", "unsubscribe", "unsubscribe_all",
           "subscribe_orders", "unsubscribe_orders", "ping"]
ENTRY = st.fixed_dictionaries({}, optional={"symbol": st.just(SYM) | json_value,
                                            "exchange": st.just("NFO") | json_value,
                                            "mode": st.sampled_from([1, 2, 3, "Depth"])
                                            | json_value})
WS_FIELDS = {
    "api_key": st.just(API_KEY) | json_value,
    "apikey": st.just(API_KEY) | json_value,
    "symbols": st.lists(ENTRY, max_size=3) | json_value,
    "symbol": st.just(SYM) | json_value,
    "exchange": st.just("NFO") | json_value,
    "mode": st.sampled_from([1, 2, 3, "LTP", "quote", "9", 0, True]) | json_value,
    "depth": json_value,
    "request_id": json_value,
    "timestamp": json_value,
    "_pingId": json_value,
}


@st.composite
def ws_frames(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(payload, is_text): an action with junk fields, or junk; binary frames may be non-UTF-8."""
    how = draw(st.sampled_from(["action", "action", "action", "value", "raw"]))
    if how == "raw":
        return draw(raw_not_json), False
    if how == "value":
        return dumps(draw(json_value)).encode("utf-8", "surrogatepass"), False
    frame: dict[str, Any] = {"action": draw(st.sampled_from(ACTIONS) | json_value)}
    if draw(st.booleans()):
        frame["type"] = draw(st.sampled_from(ACTIONS) | json_value)
    for name, values in WS_FIELDS.items():
        if not draw(st.integers(0, 3)):
            frame[name] = draw(values)
    payload = dumps(frame).encode("utf-8", "surrogatepass")
    return payload, draw(st.booleans())


def receive_until_pong(ws: websocket.WebSocket) -> list[dict[str, Any]]:
    """Every frame up to the pong; each must be a well-formed OpenAlgo frame."""
    frames: list[dict[str, Any]] = []
    while True:
        opcode, data = ws.recv_data(control_frame=False)
        assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
        frame = json.loads(data)
        assert isinstance(frame, dict)
        if frame.get("status") == "error" and "type" not in frame:
            assert frame["code"] in WS_CODES, frame
            assert isinstance(frame["message"], str)
        if frame.get("type") == "pong" and frame.get("_pingId") == "fuzz-end":
            return frames
        frames.append(frame)


def connect(sim: SimulatorServer, *, authenticate: bool) -> websocket.WebSocket:
    ws = websocket.create_connection(sim.ws_url, timeout=10)
    if authenticate:
        ws.send(json.dumps({"action": "authenticate", "api_key": API_KEY}))
        assert json.loads(ws.recv())["status"] == "success"
    return ws


@fuzz_settings(100)
@given(frames=st.lists(ws_frames(), min_size=1, max_size=8), authenticate=st.booleans())
# crashes found by this fuzzing before the fixes: a body nested beyond the parser's limit
# (the connection was dropped), a lone surrogate as the API key and a list as a symbol to
# unsubscribe (SERVER_ERROR)
@example(frames=[(b"[" * 100_000, False)], authenticate=True)
@example(frames=[(b'{"action": "authenticate", "api_key": "\\ud800"}', True)],
         authenticate=False)
@example(frames=[(b'{"action": "unsubscribe", "symbols": [{"symbol": [1], "exchange": "NFO"}]}',
                  True)], authenticate=True)
def test_ws_answers_every_frame_and_keeps_the_connection(
        sim: SimulatorServer, frames: list[tuple[bytes, bool]], authenticate: bool) -> None:
    ws = connect(sim, authenticate=authenticate)
    try:
        for payload, text in frames:
            ws.send(payload, websocket.ABNF.OPCODE_TEXT if text else websocket.ABNF.OPCODE_BINARY)
        ws.send(json.dumps({"action": "ping", "_pingId": "fuzz-end"}))
        answers = receive_until_pong(ws)
        event(f"{len(answers)} answers to {len(frames)} frames")
    finally:
        ws.close()


def test_the_simulator_still_serves_a_client_after_the_fuzzing(
        http: requests.Session, sim: SimulatorServer) -> None:
    assert_still_up(http, sim)
    ws = connect(sim, authenticate=True)
    try:
        ws.send(json.dumps({"action": "subscribe", "symbols": [{"symbol": SYM,
                                                                "exchange": "NFO"}],
                            "mode": 1}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "subscribe" and reply["status"] == "success"
        sim.publish(Tick(SYM, "NFO", 101.0, T0, T0, 1065, 100.95, 101.05, 10))
        frame = json.loads(ws.recv())
        assert frame["type"] == "market_data" and frame["data"]["ltp"] == 101.0
    finally:
        ws.close()
