"""The simulator's REST API over real loopback HTTP (requests): validation, auth, errors,
rate limits and every fault."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from engine.sim.ratelimit import MovingWindowLimiter
from engine.sim.server import SimulatorServer

from .conftest import API_KEY, PE, SYM, SimFactory, tick, wait_for

LOT = 65


def call(sim: SimulatorServer, endpoint: str, timeout: float = 5.0,
         **fields: Any) -> requests.Response:
    body = {"apikey": API_KEY, **fields}
    return requests.post(f"{sim.rest_url}/api/v1/{endpoint}", json=body, timeout=timeout)


def order(**overrides: Any) -> dict[str, Any]:
    fields = {"strategy": "s1", "symbol": SYM, "exchange": "NFO", "action": "BUY",
              "quantity": LOT, "pricetype": "MARKET", "product": "MIS"}
    fields.update(overrides)
    return fields


def ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success"
    return body


def error(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "error"
    return body["message"]


# -- protocol --------------------------------------------------------------------------------------


def test_ping_names_the_simulator(sim: SimulatorServer) -> None:
    assert ok(call(sim, "ping"))["data"] == {"message": "pong", "broker": "simulator"}


def test_trailing_slash_is_optional(sim: SimulatorServer) -> None:
    resp = requests.post(f"{sim.rest_url}/api/v1/funds/", json={"apikey": API_KEY}, timeout=5)
    assert ok(resp)["data"]["availablecash"] == "1000000.00"


def test_bad_api_key_is_403(sim: SimulatorServer) -> None:
    resp = requests.post(f"{sim.rest_url}/api/v1/placeorder",
                         json={"apikey": "wrong", **order()}, timeout=5)
    assert error(resp, 403) == "Invalid openalgo apikey"
    assert ok(call(sim, "orderbook"))["data"]["orders"] == []


def test_validation_comes_before_authentication(sim: SimulatorServer) -> None:
    resp = requests.post(f"{sim.rest_url}/api/v1/funds", json={"apikey": "wrong", "x": 1},
                         timeout=5)
    assert "Unknown field" in error(resp, 400)


def test_unknown_field_is_400(sim: SimulatorServer) -> None:
    message = error(call(sim, "placeorder", **order(), target="5"), 400)
    assert message == "{'target': ['Unknown field.']}"


def test_missing_required_field_is_400(sim: SimulatorServer) -> None:
    fields = order()
    del fields["symbol"]
    assert "'symbol': ['Missing data for required field.']" in error(
        call(sim, "placeorder", **fields), 400)
    assert "Missing data" in error(
        requests.post(f"{sim.rest_url}/api/v1/funds", json={}, timeout=5), 400)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"quantity": "abc"}, "Not a valid number."),
    ({"quantity": "65.5"}, "Fractional quantity"),
    ({"quantity": 0}, "Quantity must be a positive number."),
    ({"price": "-1"}, "Price must be a non-negative number."),
    ({"price": "nan"}, "Special numeric values"),
    ({"action": "HOLD"}, "Must be one of: BUY, SELL, buy, sell."),
    ({"exchange": "XYZ"}, "Must be one of"),
    ({"product": "BO"}, "Must be one of"),
    ({"strategy": 5}, "Not a valid string."),
    ({"disclosed_quantity": "1.5"}, "Not a valid integer."),
    ({"quantity": True}, "Not a valid number."),
])
def test_invalid_values_are_400(sim: SimulatorServer, overrides: dict, message: str) -> None:
    assert message in error(call(sim, "placeorder", **order(**overrides)), 400)


def test_numeric_strings_and_lowercase_action_are_accepted(sim: SimulatorServer) -> None:
    oid = ok(call(sim, "placeorder", **order(quantity="130", action="buy", pricetype="LIMIT",
                                             price="99.50", trigger_price="0",
                                             disclosed_quantity="0")))["orderid"]
    data = ok(call(sim, "orderstatus", strategy="s1", orderid=oid))["data"]
    assert (data["quantity"], data["price"], data["action"]) == (130, 99.5, "BUY")


def test_invalid_json_and_non_object_bodies_are_400(sim: SimulatorServer) -> None:
    resp = requests.post(f"{sim.rest_url}/api/v1/funds", data=b"{not json",
                         headers={"Content-Type": "application/json"}, timeout=5)
    assert error(resp, 400) == "Invalid JSON body"
    resp = requests.post(f"{sim.rest_url}/api/v1/funds", json=[1, 2], timeout=5)
    assert "Invalid input type" in error(resp, 400)


def test_unknown_endpoint_is_404_and_get_is_405(sim: SimulatorServer) -> None:
    assert "Not found" in error(call(sim, "teleport"), 404)
    assert requests.get(f"{sim.rest_url}/api/v1/funds", timeout=5).status_code == 405


def test_unknown_order_is_404(sim: SimulatorServer) -> None:
    assert error(call(sim, "orderstatus", strategy="s1", orderid="123"), 404) == \
        "Order 123 not found"
    assert error(call(sim, "cancelorder", strategy="s1", orderid="123"), 404) == \
        "Order 123 not found"


def test_broker_rejections_are_400_with_the_reason(sim: SimulatorServer) -> None:
    assert "multiple of the lot size 65" in error(call(sim, "placeorder", **order(quantity=70)),
                                                  400)
    assert "freeze quantity" in error(call(sim, "placeorder", **order(quantity=1820)), 400)
    assert "not found on NFO" in error(call(sim, "quotes", symbol="NOPE", exchange="NFO"), 400)


def test_keep_alive_session_serves_many_calls(sim: SimulatorServer) -> None:
    with requests.Session() as session:
        for _ in range(20):
            resp = session.post(f"{sim.rest_url}/api/v1/ping", json={"apikey": API_KEY},
                                timeout=5)
            assert resp.status_code == 200
    assert sim.rest_calls("ping") == 20


# -- every endpoint round-trips -------------------------------------------------------------------


def test_order_lifecycle_endpoints(sim: SimulatorServer) -> None:
    filled = ok(call(sim, "placeorder", **order()))["orderid"]
    resting = ok(call(sim, "placeorder", **order(pricetype="LIMIT", price=90)))["orderid"]
    ok(call(sim, "modifyorder", strategy="s1", symbol=SYM, exchange="NFO", orderid=resting,
            action="BUY", product="MIS", pricetype="LIMIT", price="91", quantity="130",
            disclosed_quantity="0", trigger_price="0"))
    status = ok(call(sim, "orderstatus", strategy="s1", orderid=resting))["data"]
    assert (status["order_status"], status["price"], status["quantity"]) == ("open", 91.0, 130)
    assert set(status) >= {"action", "average_price", "exchange", "order_status", "orderid",
                           "price", "pricetype", "product", "quantity", "symbol", "timestamp",
                           "trigger_price"}
    assert ok(call(sim, "cancelorder", strategy="s1", orderid=resting))["orderid"] == resting
    assert "already cancelled" in error(call(sim, "cancelorder", strategy="s1",
                                             orderid=resting), 400)
    book = ok(call(sim, "orderbook"))["data"]
    assert [o["orderid"] for o in book["orders"]] == [filled, resting]
    assert book["statistics"] == {"total_buy_orders": 2, "total_sell_orders": 0,
                                  "total_completed_orders": 1, "total_open_orders": 0,
                                  "total_rejected_orders": 0}
    trades = ok(call(sim, "tradebook"))["data"]
    assert trades == [{"action": "BUY", "symbol": SYM, "exchange": "NFO", "orderid": filled,
                       "product": "MIS", "quantity": LOT, "average_price": 100.05,
                       "timestamp": "30-Jan-2025 09:20:00", "trade_value": 6503.25}]
    assert ok(call(sim, "openposition", strategy="s1", symbol=SYM, exchange="NFO",
                   product="MIS"))["quantity"] == LOT
    smart = ok(call(sim, "placesmartorder", **order(position_size=LOT)))
    assert smart["message"] == "Positions Already Matched. No Action needed."
    assert "orderid" in ok(call(sim, "placesmartorder", **order(position_size=0)))
    ok(call(sim, "placeorder", **order(pricetype="LIMIT", price=90)))
    cancelled = ok(call(sim, "cancelallorder", strategy="s1"))
    assert len(cancelled["canceled_orders"]) == 1 and cancelled["failed_cancellations"] == []
    ok(call(sim, "placeorder", **order()))
    assert ok(call(sim, "closeposition", strategy="s1"))["message"] == \
        "All Open Positions SquaredOff"
    positions = ok(call(sim, "positionbook"))["data"]
    assert positions[0]["quantity"] == 0 and positions[0]["symbol"] == SYM


def test_market_data_endpoints(sim: SimulatorServer) -> None:
    quote = ok(call(sim, "quotes", symbol=SYM, exchange="NFO"))["data"]
    assert quote == {"open": 100.0, "high": 100.0, "low": 100.0, "ltp": 100.0, "ask": 100.05,
                     "bid": 99.95, "prev_close": 100.0, "volume": 1000, "oi": 0}
    depth = ok(call(sim, "depth", symbol=SYM, exchange="NFO"))["data"]
    assert len(depth["bids"]) == len(depth["asks"]) == 5
    assert depth["bids"][0] == {"price": 99.95, "quantity": 650}
    assert depth["asks"][4]["price"] == 100.25
    history = ok(call(sim, "history", symbol=SYM, exchange="NFO", interval="1m",
                      start_date="2025-01-30", end_date="2025-01-30", source="api"))["data"]
    assert history == [{"timestamp": 1738209000, "open": 100.0, "high": 100.0, "low": 100.0,
                        "close": 100.0, "volume": 0, "oi": 0}]
    assert "Not a valid date" in error(call(sim, "history", symbol=SYM, exchange="NFO",
                                            interval="1m", start_date="2025/01/30",
                                            end_date="2025-01-30"), 400)
    assert "Invalid interval" in error(call(sim, "history", symbol=SYM, exchange="NFO",
                                            interval="2m", start_date="2025-01-30",
                                            end_date="2025-01-30"), 400)
    assert "1m" in ok(call(sim, "intervals"))["data"]["minutes"]


def test_funds_are_two_decimal_strings(sim: SimulatorServer) -> None:
    ok(call(sim, "placeorder", **order()))
    funds = ok(call(sim, "funds"))["data"]
    assert funds == {"availablecash": "993496.75", "collateral": "0.00",
                     "m2mrealized": "0.00", "m2munrealized": "-3.25",
                     "utiliseddebits": "6503.25"}


def test_analyzer_toggle_switches_the_reply_format(sim: SimulatorServer) -> None:
    assert ok(call(sim, "analyzer"))["data"]["analyze_mode"] is False
    toggled = ok(call(sim, "analyzer/toggle", mode=True))
    assert toggled["data"]["mode"] == "analyze" and toggled["mode"] == "analyze"
    oid = ok(call(sim, "placeorder", **order(pricetype="LIMIT", price=90)))["orderid"]
    data = ok(call(sim, "orderstatus", strategy="s1", orderid=oid))["data"]
    assert data["price_type"] == "LIMIT" and "pricetype" not in data
    assert (data["filled_quantity"], data["pending_quantity"]) == (0, LOT)
    assert sim.analyze_mode
    ok(call(sim, "analyzer/toggle", mode="false"))
    assert "mode" not in ok(call(sim, "funds"))


def test_string_numbers_option(sim_factory: SimFactory) -> None:
    sim = sim_factory(string_numbers=True)
    sim.publish(tick(100.0, bid=99.95, ask=100.05))
    ok(call(sim, "placeorder", **order()))
    row = ok(call(sim, "orderbook"))["data"]["orders"][0]
    assert (row["quantity"], row["average_price"]) == ("65", "100.05")
    assert ok(call(sim, "positionbook"))["data"][0]["quantity"] == "65"


# -- rate limits ------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(sim_factory: SimFactory) -> None:
    sim = sim_factory(rate_limits_enabled=True, order_rate_per_s=3, default_rate_per_s=5,
                      rate_window_s=0.5, retry_after_s=7)
    sim.publish(tick(100.0))
    codes = [call(sim, "placeorder", **order()).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    resp = call(sim, "placeorder", **order())
    assert resp.json()["retry_after"] == 7 and resp.headers["Retry-After"] == "7"
    assert error(resp, 429).startswith("Rate limit exceeded")
    assert call(sim, "cancelorder", strategy="s1", orderid="1").status_code == 404  # own window
    assert [call(sim, "ping").status_code for _ in range(6)] == [200] * 5 + [429]
    time.sleep(0.55)  # the moving window has passed
    assert call(sim, "placeorder", **order()).status_code == 200
    placed = ok(call(sim, "orderbook"))["data"]["orders"]
    assert len(placed) == 4


def test_limiter_window_moves_with_each_request() -> None:
    now = [0.0]
    limiter = MovingWindowLimiter(1.0, monotonic=lambda: now[0])

    def allow_at(t: float, key: str = "k") -> bool:
        now[0] = t
        return limiter.allow(key, 2)

    assert [allow_at(0.0), allow_at(0.9), allow_at(0.95)] == [True, True, False]
    assert allow_at(0.95, "other")  # keys are independent
    # at 1.1 the 0.0 hit has left the window but 0.9 has not: one slot (a fixed window
    # starting at 1.0 would allow two); the refused request at 0.95 never counted
    assert [allow_at(1.1), allow_at(1.1)] == [True, False]
    assert allow_at(1.95)


def test_rate_limits_can_be_disabled(sim: SimulatorServer) -> None:
    assert all(call(sim, "ping").status_code == 200 for _ in range(60))


# -- faults -----------------------------------------------------------------------------------


def test_fault_http_error_for_chosen_endpoints(sim: SimulatorServer) -> None:
    sim.faults.http_error(status=503, count=2, endpoints=["funds"])
    assert ok(call(sim, "ping"))
    assert error(call(sim, "funds"), 503) == "Simulated HTTP 503 error"
    assert call(sim, "funds").status_code == 503
    assert ok(call(sim, "funds"))


def test_fault_rest_faults_accumulate(sim: SimulatorServer) -> None:
    sim.faults.http_error(500, count=1, endpoints=["funds"])
    sim.faults.http_error(503, count=1, endpoints=["orderbook", "funds"])
    sim.faults.malformed(count=1, endpoints=["tradebook"])
    assert call(sim, "orderbook").status_code == 503
    assert [call(sim, "funds").status_code for _ in range(2)] == [500, 200]
    broken = call(sim, "tradebook")
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    assert ok(call(sim, "tradebook"))


def test_fault_http_error_on_placeorder_places_nothing(sim: SimulatorServer) -> None:
    sim.faults.http_error(500, count=1)
    assert call(sim, "placeorder", **order()).status_code == 500
    assert ok(call(sim, "orderbook"))["data"]["orders"] == []


def test_fault_stall_delays_the_answer(sim: SimulatorServer) -> None:
    sim.faults.stall(0.4, count=1, endpoints="quotes")
    start = time.monotonic()
    assert ok(call(sim, "quotes", symbol=SYM, exchange="NFO"))
    assert time.monotonic() - start >= 0.4
    sim.faults.stall(2.0, count=1)
    with pytest.raises(requests.Timeout):
        call(sim, "ping", timeout=0.3)
    start = time.monotonic()
    assert ok(call(sim, "ping"))
    assert time.monotonic() - start < 1.0


def test_fault_lose_reply_processes_the_order_but_never_answers(sim: SimulatorServer) -> None:
    sim.faults.lose_reply(count=1)
    start = time.monotonic()
    with pytest.raises(requests.Timeout):
        call(sim, "placeorder", timeout=0.5, **order())
    assert time.monotonic() - start < 3
    orders = ok(call(sim, "orderbook"))["data"]["orders"]
    assert len(orders) == 1 and orders[0]["order_status"] == "complete"
    assert ok(call(sim, "placeorder", **order()))["orderid"]  # the next one answers


def test_fault_lose_reply_closes_after_the_hold(sim_factory: SimFactory) -> None:
    sim = sim_factory(lost_reply_hold_s=0.3)
    sim.publish(tick(100.0))
    sim.faults.lose_reply(count=1, endpoints=None)
    with pytest.raises(requests.ConnectionError):
        call(sim, "orderbook", timeout=5)


def test_fault_rate_limit(sim: SimulatorServer) -> None:
    sim.faults.rate_limit(count=2, retry_after=1.5)
    for _ in range(2):
        resp = call(sim, "placeorder", **order())
        assert resp.status_code == 429 and resp.json()["retry_after"] == 1.5
    assert ok(call(sim, "placeorder", **order()))
    assert len(ok(call(sim, "orderbook"))["data"]["orders"]) == 1


def test_fault_malformed_bodies(sim: SimulatorServer) -> None:
    sim.faults.malformed(count=2, endpoints=["orderbook", "funds"])
    for endpoint in ("orderbook", "funds"):
        resp = call(sim, endpoint)
        assert resp.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.text)
    assert ok(call(sim, "funds"))


def test_fault_reject_orders(sim: SimulatorServer) -> None:
    sim.faults.reject_orders(1, reason="RMS: margin exceeded")
    first = ok(call(sim, "placeorder", **order()))["orderid"]
    second = ok(call(sim, "placeorder", **order()))["orderid"]
    statuses = {o["orderid"]: o["order_status"]
                for o in ok(call(sim, "orderbook"))["data"]["orders"]}
    assert statuses == {first: "rejected", second: "complete"}
    assert sim.broker.order_status(strategy="s1", orderid=first).rejection_reason == \
        "RMS: margin exceeded"


def test_fault_clear_disarms_everything(sim: SimulatorServer) -> None:
    sim.faults.http_error(500, count=5)
    sim.faults.rate_limit(count=5)
    sim.faults.reject_orders(5)
    sim.faults.clear()
    oid = ok(call(sim, "placeorder", **order()))["orderid"]
    assert ok(call(sim, "orderstatus", strategy="s1", orderid=oid))["data"]["order_status"] == \
        "complete"


def test_stop_releases_held_connections(sim_factory: SimFactory) -> None:
    sim = sim_factory(lost_reply_hold_s=60)
    sim.publish(tick(100.0, symbol=PE))
    sim.faults.lose_reply(count=1, endpoints=["ping"])
    outcome: list[BaseException] = []

    def waiting_client() -> None:
        try:
            call(sim, "ping", timeout=30)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiting_client)
    thread.start()
    wait_for(lambda: sim.rest_calls("ping") == 1)
    start = time.monotonic()
    sim.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and outcome
    assert time.monotonic() - start < 5


def test_the_api_key_never_appears_in_logs_or_reprs(sim: SimulatorServer) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    try:
        call(sim, "placeorder", **order())
        call(sim, "placeorder", **order(quantity=7))
        requests.post(f"{sim.rest_url}/api/v1/funds", json={"apikey": "wrong-key"}, timeout=5)
        sim.faults.http_error(500, count=1)
        call(sim, "funds")
    finally:
        logger.remove(sink)
    assert lines  # the requests were logged
    text = "\n".join(lines) + repr(sim) + repr(sim.faults) + repr(sim.broker)
    assert API_KEY not in text and "wrong-key" not in text
