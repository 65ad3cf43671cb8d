"""OpenAlgoClient against the real simulator over loopback (and, for replies the simulator never
gives — numbers as strings, HTML error pages — a canned HTTP server on loopback)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from loguru import logger

from engine.broker import (
    AuthError,
    Broker,
    BrokerError,
    BrokerUnavailable,
    MalformedResponse,
    OrderNotFound,
    OutcomeUnknown,
    RateLimited,
    RejectedError,
)
from engine.messages import Tick
from engine.openalgo.rest import OpenAlgoClient, RestSettings
from engine.runtime.clock import VirtualClock, WallClock, to_ist
from engine.sim.matching import MatchingSettings
from engine.sim.server import SimulatorServer, SimulatorSettings
from tests.engine.openalgo.conftest import API_KEY, SYMBOLS

SYM = SYMBOLS[2]  # NIFTY30JAN2524000CE


class SleepRecorder:
    """The client's injectable pause: records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


def make_client(url: str, sleeps: Callable[[float], None], *, key: str = API_KEY,
                account: str = "acct-main", **overrides: Any) -> OpenAlgoClient:
    settings = RestSettings(**{"host": url, "timeout_s": 1.0, "retry_delay_s": 0.01,
                               **overrides})
    return OpenAlgoClient(settings, api_key=key, clock=VirtualClock(1_700_000_000.0),
                          account=account, sleep=sleeps)


@pytest.fixture
def client(sim: SimulatorServer, sleeps: SleepRecorder) -> Iterator[OpenAlgoClient]:
    c = make_client(sim.rest_url, sleeps)
    yield c
    c.close()


def assert_secret_free(*texts: object) -> None:
    for text in texts:
        assert API_KEY not in str(text)
        assert API_KEY not in repr(text)


# ---------------------------------------------------------------------------------------------
# Against the simulator
# ---------------------------------------------------------------------------------------------


def test_client_satisfies_the_broker_protocol(client: OpenAlgoClient) -> None:
    assert isinstance(client, Broker)
    assert_secret_free(client, client.__dict__)


def test_every_endpoint_round_trips(client: OpenAlgoClient, sim: SimulatorServer,
                                    publish: Callable[..., Any],
                                    wall_clock: WallClock) -> None:
    publish(SYM, 100.0)
    assert client.ping() == "simulator"

    oid = client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                             quantity=65)
    assert client.last_order_id == oid
    row = client.order_status(strategy="t1", orderid=oid)
    assert (row.orderid, row.status, row.action, row.quantity) == (oid, "complete", "BUY", 65)
    assert row.average_price == pytest.approx(100.05)  # MARKET BUY fills at the ask
    assert row.pricetype == "MARKET" and row.strategy == "t1"
    assert [o.orderid for o in client.orderbook()] == [o.orderid for o in sim.broker.orderbook()]
    trades = client.tradebook()
    assert [(t.orderid, t.quantity, t.action) for t in trades] == [(oid, 65, "BUY")]
    assert trades[0].average_price == pytest.approx(100.05)
    positions = client.positionbook()
    assert [(p.symbol, p.quantity) for p in positions] == [(SYM, 65)]
    assert client.open_position(strategy="t1", symbol=SYM, exchange="NFO", product="MIS") == 65
    funds = client.funds()
    assert funds == sim.broker.funds()

    quote = client.quotes(symbol=SYM, exchange="NFO")
    assert (quote.ltp, quote.bid, quote.ask) == (100.0, 99.95, 100.05)
    depth = client.depth(symbol=SYM, exchange="NFO")
    assert depth.ltp == 100.0 and len(depth.bids) == 5 and len(depth.asks) == 5
    assert depth.bids[0].price == 99.95 and depth.asks[0].price == 100.05
    day = to_ist(wall_clock.time()).strftime("%Y-%m-%d")
    bars = client.history(symbol=SYM, exchange="NFO", interval="1m", start_date=day,
                          end_date=day)
    assert bars and bars[-1].close == 100.0

    resting = client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                                 quantity=65, pricetype="LIMIT", price=90.0)
    assert client.order_status(strategy="t1", orderid=resting).status == "open"
    assert client.modify_order(strategy="t1", orderid=resting, symbol=SYM, exchange="NFO",
                               action="BUY", quantity=130, pricetype="LIMIT", product="MIS",
                               price=91.0, trigger_price=0.0) == resting
    modified = client.order_status(strategy="t1", orderid=resting)
    assert (modified.price, modified.quantity) == (91.0, 130)
    assert client.cancel_order(strategy="t1", orderid=resting) == resting
    assert client.order_status(strategy="t1", orderid=resting).status == "cancelled"

    stop = client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="SELL",
                              quantity=65, pricetype="SL-M", trigger_price=80.0)
    assert client.order_status(strategy="t1", orderid=stop).status == "trigger pending"
    result = client.cancel_all_orders(strategy="t1")
    assert result.cancelled == (stop,) and result.failed == ()

    assert client.place_smart_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                                    quantity=65, position_size=65) is None
    smart = client.place_smart_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                                     quantity=65, position_size=130)
    assert smart is not None
    assert client.open_position(strategy="t1", symbol=SYM, exchange="NFO", product="MIS") == 130
    assert isinstance(client.close_position(strategy="t1"), str)
    assert client.open_position(strategy="t1", symbol=SYM, exchange="NFO", product="MIS") == 0
    flat = client.positionbook()
    assert [(p.symbol, p.quantity) for p in flat] == [(SYM, 0)]  # closed stays with qty 0

    status = client.analyzer_status()
    toggled = client.analyzer_toggle(analyze=not status.analyze_mode)
    assert toggled.analyze_mode is not status.analyze_mode
    assert toggled.mode == ("analyze" if toggled.analyze_mode else "live")
    last = client.last_request
    assert last is not None and last.endpoint == "analyzer/toggle" and last.status == 200
    assert last.outcome == "ok" and last.ts == 1_700_000_000.0  # stamped by the client's clock


def test_timeouts_are_retried_then_broker_unavailable(sim: SimulatorServer,
                                                      sleeps: SleepRecorder) -> None:
    client = make_client(sim.rest_url, sleeps, timeout_s=0.2, retry_delay_s=0.05)
    sim.faults.stall(0.6, count=3, endpoints=["funds"])
    with pytest.raises(BrokerUnavailable) as err:
        client.funds()
    assert sleeps.waits == [0.05, 0.05]  # 3 attempts, 2 pauses
    assert sim.rest_calls("funds") == 3
    assert err.value.status is None and err.value.endpoint == "funds"
    assert "acct-main" in str(err.value)
    assert client.last_request is not None and client.last_request.status is None
    assert_secret_free(err.value)


def test_a_stall_shorter_than_the_retries_recovers(sim: SimulatorServer,
                                                   sleeps: SleepRecorder) -> None:
    client = make_client(sim.rest_url, sleeps, timeout_s=0.2)
    sim.faults.stall(0.6, count=1, endpoints=["funds"])
    assert client.funds().availablecash > 0
    assert len(sleeps.waits) == 1


def test_429_waits_for_retry_after_then_succeeds(client: OpenAlgoClient, sim: SimulatorServer,
                                                 sleeps: SleepRecorder) -> None:
    sim.faults.rate_limit(count=1, retry_after=0.7, endpoints=["funds"])
    assert client.funds().availablecash > 0
    assert sleeps.waits == [0.7]


def test_429_wait_is_capped_and_runs_out_as_rate_limited(sim: SimulatorServer,
                                                         sleeps: SleepRecorder) -> None:
    client = make_client(sim.rest_url, sleeps, max_retry_after_s=0.25)
    sim.faults.rate_limit(count=3, retry_after=60.0, endpoints=["orderbook"])
    with pytest.raises(RateLimited) as err:
        client.orderbook()
    assert sleeps.waits == [0.25, 0.25]
    assert err.value.retry_after == 60.0 and err.value.status == 429
    assert_secret_free(err.value)


def test_403_is_auth_error_naming_the_account_never_the_key(sim: SimulatorServer,
                                                             sleeps: SleepRecorder) -> None:
    wrong_key = "wrong-key-0123456789abcdef"
    client = make_client(sim.rest_url, sleeps, key=wrong_key, account="acct-backup")
    with pytest.raises(AuthError) as err:
        client.funds()
    assert err.value.status == 403 and sleeps.waits == []  # never retried
    assert "acct-backup" in str(err.value) and err.value.account == "acct-backup"
    assert wrong_key not in str(err.value) and wrong_key not in repr(err.value)
    assert wrong_key not in repr(client) and wrong_key not in str(client.last_request)


def test_malformed_body_is_malformed_response(client: OpenAlgoClient, sim: SimulatorServer,
                                              sleeps: SleepRecorder) -> None:
    sim.faults.malformed(count=1, endpoints=["positionbook"])
    with pytest.raises(MalformedResponse) as err:
        client.positionbook()
    assert err.value.endpoint == "positionbook" and sleeps.waits == []
    assert client.positionbook() == []  # the next call is fine


def test_malformed_placeorder_reply_is_outcome_unknown(client: OpenAlgoClient,
                                                       sim: SimulatorServer,
                                                       publish: Callable[..., Any]) -> None:
    publish(SYM, 100.0)
    sim.faults.malformed(count=1, endpoints=["placeorder"])
    with pytest.raises(OutcomeUnknown):
        client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                           quantity=65)


def test_500_is_retried_and_recovers(client: OpenAlgoClient, sim: SimulatorServer,
                                     sleeps: SleepRecorder) -> None:
    sim.faults.http_error(500, count=2, endpoints=["orderbook"])
    assert client.orderbook() == []
    assert sleeps.waits == [0.01, 0.01]


def test_persistent_500_ends_as_broker_unavailable(client: OpenAlgoClient,
                                                   sim: SimulatorServer,
                                                   sleeps: SleepRecorder) -> None:
    sim.faults.http_error(503, count=5, endpoints=["tradebook"])
    with pytest.raises(BrokerUnavailable) as err:
        client.tradebook()
    assert err.value.status == 503 and len(sleeps.waits) == 2


def test_lost_placeorder_reply_is_outcome_unknown_and_never_resent(
        sim: SimulatorServer, sleeps: SleepRecorder, publish: Callable[..., Any]) -> None:
    client = make_client(sim.rest_url, sleeps, timeout_s=0.3)
    publish(SYM, 100.0)
    sim.faults.lose_reply(count=1, endpoints=["placeorder"])
    with pytest.raises(OutcomeUnknown) as err:
        client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                           quantity=65)
    assert err.value.endpoint == "placeorder" and sleeps.waits == []
    assert sim.rest_calls("placeorder") == 1
    orders = sim.broker.orderbook()
    assert len(orders) == 1  # the order exists, exactly once: the client did not re-send
    assert (orders[0].symbol, orders[0].quantity) == (SYM, 65)
    assert_secret_free(err.value)


def test_a_lost_reply_is_retried_for_reads_but_not_for_closeposition(
        sim: SimulatorServer, sleeps: SleepRecorder) -> None:
    client = make_client(sim.rest_url, sleeps, timeout_s=0.3)
    sim.faults.lose_reply(count=1, endpoints=["orderbook"])
    assert client.orderbook() == []  # a read is safe to repeat
    assert sim.rest_calls("orderbook") == 2 and len(sleeps.waits) == 1
    sim.faults.lose_reply(count=1, endpoints=["closeposition"])
    with pytest.raises(OutcomeUnknown):
        client.close_position(strategy="t1")  # a second copy could reverse a position
    assert sim.rest_calls("closeposition") == 1 and len(sleeps.waits) == 1


def test_placeorder_5xx_is_outcome_unknown_without_resending(client: OpenAlgoClient,
                                                             sim: SimulatorServer,
                                                             sleeps: SleepRecorder,
                                                             publish: Callable[..., Any]) -> None:
    publish(SYM, 100.0)
    sim.faults.http_error(500, count=1, endpoints=["placeorder"])
    with pytest.raises(OutcomeUnknown) as err:
        client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                           quantity=65)
    assert err.value.status == 500 and sleeps.waits == []
    assert sim.rest_calls("placeorder") == 1
    oid = client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                             quantity=65)
    assert [o.orderid for o in sim.broker.orderbook()] == [oid]


def test_placeorder_429_is_safe_to_retry(client: OpenAlgoClient, sim: SimulatorServer,
                                         sleeps: SleepRecorder,
                                         publish: Callable[..., Any]) -> None:
    publish(SYM, 100.0)
    sim.faults.rate_limit(count=1, retry_after=0.1, endpoints=["placeorder"])
    oid = client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                             quantity=65)
    assert sleeps.waits == [0.1]
    assert [o.orderid for o in sim.broker.orderbook()] == [oid]


def test_400_is_rejected_with_the_server_message_and_not_retried(
        client: OpenAlgoClient, sim: SimulatorServer, sleeps: SleepRecorder,
        publish: Callable[..., Any]) -> None:
    publish(SYM, 100.0)
    with pytest.raises(RejectedError) as err:
        client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                           quantity=10)  # not a lot multiple
    assert err.value.status == 400 and err.value.message
    sim.faults.http_error(400, count=3, endpoints=["funds"])
    with pytest.raises(RejectedError):
        client.funds()
    assert sleeps.waits == [] and sim.rest_calls("funds") == 1  # asked once, never again
    assert sim.broker.orderbook() == []


def test_unknown_order_is_order_not_found(client: OpenAlgoClient, sleeps: SleepRecorder) -> None:
    with pytest.raises(OrderNotFound) as err:
        client.order_status(strategy="t1", orderid="999999999")
    assert err.value.status == 404 and sleeps.waits == []


def test_a_real_retry_delay_is_really_waited(sim: SimulatorServer) -> None:
    client = OpenAlgoClient(RestSettings(host=sim.rest_url, timeout_s=1.0, retry_delay_s=0.2),
                            api_key=API_KEY, clock=VirtualClock(0.0))
    sim.faults.http_error(500, count=1, endpoints=["funds"])
    started = time.monotonic()
    assert client.funds().availablecash > 0
    assert time.monotonic() - started >= 0.2


def test_connection_refused_is_retried_even_for_placeorder(sleeps: SleepRecorder) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = make_client(f"http://127.0.0.1:{port}", sleeps)
    with pytest.raises(BrokerUnavailable) as err:
        client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="BUY",
                           quantity=65)
    assert not isinstance(err.value, OutcomeUnknown)  # it surely never arrived
    assert len(sleeps.waits) == 2 and "cannot connect" in err.value.message


def test_the_api_key_never_reaches_logs_errors_or_reprs(sim: SimulatorServer,
                                                        sleeps: SleepRecorder,
                                                        publish: Callable[..., Any]) -> None:
    raw = io.StringIO()
    sink = logger.add(raw, level="DEBUG", format="{message} | {extra}")  # no redaction here
    try:
        client = make_client(sim.rest_url, sleeps, timeout_s=0.2)
        publish(SYM, 100.0)
        errors: list[BrokerError] = []
        sim.faults.http_error(500, count=3, endpoints=["funds"])
        sim.faults.malformed(count=1, endpoints=["orderbook"])
        sim.faults.lose_reply(count=1, endpoints=["placeorder"])
        for call in (client.funds, client.orderbook,
                     lambda: client.place_order(strategy="t", symbol=SYM, exchange="NFO",
                                                action="BUY", quantity=65),
                     lambda: client.place_order(strategy="t", symbol=SYM, exchange="NFO",
                                                action="BUY", quantity=1),
                     lambda: client.order_status(strategy="t", orderid="1"),
                     lambda: make_client(sim.rest_url, sleeps, key="x" + API_KEY).funds()):
            with pytest.raises(BrokerError) as err:
                call()
            errors.append(err.value)
        assert {type(e) for e in errors} == {BrokerUnavailable, MalformedResponse,
                                              OutcomeUnknown, RejectedError, OrderNotFound,
                                              AuthError}
        client.ping()
    finally:
        logger.remove(sink)
    log = raw.getvalue()
    assert "funds" in log and "placeorder" in log  # requests were logged...
    assert API_KEY not in log  # ...without the key
    assert_secret_free(client, client.last_request, *errors)
    for e in errors:  # no chained transport exception (it would hold the request body)
        assert e.__cause__ is None
        assert e.__context__ is None or e.__suppress_context__


# ---------------------------------------------------------------------------------------------
# Against a canned HTTP server: replies the simulator does not produce
# ---------------------------------------------------------------------------------------------


class CannedServer:
    """A loopback HTTP server answering each endpoint from a queue of (status, body) replies
    and recording every request body."""

    def __init__(self) -> None:
        self.replies: dict[str, list[tuple[int, bytes]]] = {}
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint = self.path.removeprefix("/api/v1/")
                length = int(self.headers.get("Content-Length", "0"))
                outer.requests.append((endpoint, json.loads(self.rfile.read(length)),
                                       dict(self.headers)))
                queue = outer.replies.get(endpoint) or [(404, b"no reply configured")]
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def reply(self, endpoint: str, body: object, status: int = 200) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.replies.setdefault(endpoint, []).append((status, raw))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def canned() -> Iterator[CannedServer]:
    server = CannedServer()
    yield server
    server.stop()


def test_numbers_as_strings_are_parsed(canned: CannedServer, sleeps: SleepRecorder) -> None:
    client = make_client(canned.url, sleeps)
    canned.reply("positionbook", {"status": "success", "data": [
        {"symbol": SYM, "exchange": "NFO", "product": "MIS", "quantity": "-65",
         "average_price": "123.45", "ltp": "120.00", "pnl": "224.25"}]})
    canned.reply("funds", {"status": "success", "data": {
        "availablecash": "100000.50", "collateral": "0.00", "m2mrealized": "-12.5",
        "m2munrealized": "3", "utiliseddebits": "5000"}})
    canned.reply("orderstatus", {"status": "success", "data": {
        "action": "SELL", "average_price": "101.10", "exchange": "NFO",
        "order_status": "Trigger Pending", "orderid": 250130000012345, "price": "100",
        "price_type": "SL", "product": "MIS", "quantity": "130", "symbol": SYM,
        "timestamp": "30-Jan-2025 09:20:00", "trigger_price": "100.5",
        "filled_quantity": "65", "pending_quantity": "65"}})
    canned.reply("quotes", {"status": "success", "data": {
        "open": "1", "high": "2", "low": "0.5", "ltp": "1.5", "ask": "1.55", "bid": "1.45",
        "prev_close": "1.2", "volume": "123456", "oi": "789"}})
    canned.reply("history", {"status": "success", "data": [
        {"timestamp": "1738208700", "open": "1", "high": "2", "low": "0.5", "close": "1.5",
         "volume": "650", "oi": 0}]})

    (position,) = client.positionbook()
    assert (position.quantity, position.average_price, position.pnl) == (-65, 123.45, 224.25)
    funds = client.funds()
    assert (funds.availablecash, funds.m2mrealized, funds.utiliseddebits) == \
        (100000.5, -12.5, 5000.0)
    row = client.order_status(strategy="t1", orderid="250130000012345")
    assert row.orderid == "250130000012345" and row.pricetype == "SL"  # from price_type
    assert row.status == "trigger pending"  # normalised to lowercase
    assert (row.quantity, row.filled_quantity, row.trigger_price) == (130, 65, 100.5)
    quote = client.quotes(symbol=SYM, exchange="NFO")
    assert (quote.ltp, quote.bid, quote.volume, quote.oi) == (1.5, 1.45, 123456, 789)
    (bar,) = client.history(symbol=SYM, exchange="NFO", interval="1m",
                            start_date="2025-01-30", end_date="2025-01-30")
    assert (bar.timestamp, bar.close, bar.volume) == (1738208700.0, 1.5, 650)


def test_numbers_as_strings_from_the_simulator(wall_clock: WallClock,
                                               sleeps: SleepRecorder) -> None:
    settings = SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False,
                                 string_numbers=True)
    with SimulatorServer(settings, api_key=API_KEY, clock=wall_clock,
                         matching=MatchingSettings(broker="ideal")) as sim:
        sim.publish(Tick(SYM, "NFO", 100.0, wall_clock.time(), None, 1000, 99.95, 100.05))
        client = make_client(sim.rest_url, sleeps)
        oid = client.place_order(strategy="t1", symbol=SYM, exchange="NFO", action="SELL",
                                 quantity=130)
        (order,) = client.orderbook()
        assert (order.orderid, order.quantity, order.average_price) == (oid, 130, 99.95)
        (trade,) = client.tradebook()
        assert (trade.quantity, trade.average_price) == (130, 99.95)
        (position,) = client.positionbook()
        assert (position.quantity, position.average_price) == (-130, 99.95)
        assert client.order_status(strategy="t1", orderid=oid).filled_quantity == 130


@pytest.mark.parametrize("bad", ["", "n/a", "12,5", None, "NaN", True])
def test_an_unparsable_number_is_malformed_never_zero(canned: CannedServer,
                                                      sleeps: SleepRecorder, bad: object) -> None:
    client = make_client(canned.url, sleeps)
    canned.reply("positionbook", {"status": "success", "data": [
        {"symbol": SYM, "exchange": "NFO", "product": "MIS", "quantity": bad,
         "average_price": "1"}]})
    with pytest.raises(MalformedResponse, match="quantity"):
        client.positionbook()


def test_unreadable_success_replies(canned: CannedServer, sleeps: SleepRecorder) -> None:
    client = make_client(canned.url, sleeps)
    canned.reply("funds", b"<html>oops</html>")
    canned.reply("orderbook", {"status": "success", "data": {"orders": "none"}})
    canned.reply("placeorder", {"status": "success"})  # accepted, but which order?
    with pytest.raises(MalformedResponse):
        client.funds()
    with pytest.raises(MalformedResponse, match="orders"):
        client.orderbook()
    with pytest.raises(OutcomeUnknown, match="orderid"):
        client.place_order(strategy="t", symbol=SYM, exchange="NFO", action="BUY", quantity=65)
    assert sleeps.waits == []


def test_an_html_502_from_a_proxy_is_retried(canned: CannedServer,
                                             sleeps: SleepRecorder) -> None:
    client = make_client(canned.url, sleeps)
    canned.reply("tradebook", b"<html><h1>502 Bad Gateway</h1></html>", status=502)
    canned.reply("tradebook", {"status": "success", "data": []})
    assert client.tradebook() == []
    assert len(sleeps.waits) == 1


def test_requests_carry_the_key_in_the_body_and_only_accepted_fields(
        canned: CannedServer, sleeps: SleepRecorder) -> None:
    client = make_client(canned.url, sleeps)
    canned.reply("placeorder", {"status": "success", "orderid": "1"})
    canned.reply("modifyorder", {"status": "success", "orderid": "1"})
    canned.reply("placesmartorder", {"status": "success",
                                     "message": "Positions Already Matched. No Action needed."})
    canned.reply("cancelallorder", {"status": "success", "canceled_orders": ["1", 2],
                                    "failed_cancellations": [{"orderid": "3", "message": "x"}],
                                    "message": "done"})
    client.place_order(strategy="s", symbol=SYM, exchange="NFO", action="BUY", quantity=65)
    client.modify_order(strategy="s", orderid="1", symbol=SYM, exchange="NFO", action="BUY",
                        quantity=65, pricetype="LIMIT", product="MIS", price=1.0,
                        trigger_price=0.0)
    assert client.place_smart_order(strategy="s", symbol=SYM, exchange="NFO", action="BUY",
                                    quantity=65, position_size=65) is None
    result = client.cancel_all_orders(strategy="s")
    assert (result.cancelled, result.failed, result.message) == (("1", "2"), ("3",), "done")
    sent = {endpoint: body for endpoint, body, _ in canned.requests}
    assert set(sent["placeorder"]) == {"apikey", "strategy", "exchange", "symbol", "action",
                                       "quantity", "pricetype", "product", "price",
                                       "trigger_price", "disclosed_quantity"}
    assert set(sent["modifyorder"]) == {"apikey", "strategy", "exchange", "symbol", "orderid",
                                        "action", "product", "pricetype", "price", "quantity",
                                        "disclosed_quantity", "trigger_price"}
    assert set(sent["placesmartorder"]) == set(sent["placeorder"]) | {"position_size"}
    assert set(sent["cancelallorder"]) == {"apikey", "strategy"}
    assert all(body["apikey"] == API_KEY for body in sent.values())
    assert all(API_KEY not in json.dumps(headers) for _, _, headers in canned.requests)
