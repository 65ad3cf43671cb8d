"""The simulator's WebSocket protocol over real loopback sockets (websocket-client)."""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import replace

import pytest
import websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.runtime.clock import VirtualClock
from engine.sim.matching import MarketSnapshot, MatchingSettings, depth_ladder
from engine.sim.server import SimulatorServer, serve_forever
from engine.sim.wire import FrameBuilder

from .conftest import (
    API_KEY,
    BASE_SETTINGS,
    PE,
    SYM,
    T0,
    SimFactory,
    assert_silent,
    recv_json,
    recv_until,
    subscribe,
    tick,
    wait_for,
    ws_connect,
)

LOT = 65


def recv_close(ws: websocket.WebSocket, timeout: float = 5.0) -> tuple[int, str]:
    """Skip messages until a close frame; return its code and reason."""
    ws.settimeout(timeout)
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", frame.data[:2])[0]
            return code, frame.data[2:].decode()


def market(ws: websocket.WebSocket, symbol: str = SYM, timeout: float = 5.0) -> dict:
    return recv_until(ws, lambda m: m.get("type") == "market_data" and m["symbol"] == symbol,
                      timeout)


# -- authentication ------------------------------------------------------------------------------


def test_authentication_success(sim: SimulatorServer) -> None:
    ws = ws_connect(sim, auth=False)
    ws.send(json.dumps({"action": "authenticate", "api_key": API_KEY}))
    assert recv_json(ws) == {"type": "auth", "status": "success",
                             "message": "Authentication successful", "broker": "simulator",
                             "user_id": "simulator",
                             "supported_features": {"ltp": True, "quote": True, "depth": True}}
    ws.close()


def test_wrong_key_is_an_error_frame_and_the_socket_stays_open(sim: SimulatorServer) -> None:
    ws = ws_connect(sim, auth=False)
    ws.send(json.dumps({"action": "authenticate", "api_key": "nope"}))
    assert recv_json(ws) == {"status": "error", "code": "AUTHENTICATION_ERROR",
                             "message": "Invalid API key"}
    ws.send(json.dumps({"action": "auth", "apikey": API_KEY}))
    assert recv_json(ws)["status"] == "success"
    assert sim.stats()["ws_auth_failures"] == 1
    ws.close()


def test_unauthenticated_client_is_closed_4401(sim_factory: SimFactory) -> None:
    sim = sim_factory(auth_grace_s=0.3)
    ws = ws_connect(sim, auth=False)
    assert recv_close(ws) == (4401, "auth timeout")
    ws.shutdown()  # close() is a no-op once the client has answered the close frame
    wait_for(lambda: sim.connected_clients() == 0)


def test_authenticated_client_outlives_the_grace_period(sim_factory: SimFactory) -> None:
    sim = sim_factory(auth_grace_s=0.2)
    ws = ws_connect(sim)
    assert_silent(ws, 0.5)
    ws.send(json.dumps({"action": "ping"}))
    assert recv_json(ws)["type"] == "pong"
    ws.close()


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe", "unsubscribe_all",
                                    "subscribe_orders"])
def test_actions_need_authentication(sim: SimulatorServer, action: str) -> None:
    ws = ws_connect(sim, auth=False)
    ws.send(json.dumps({"action": action, "symbols": [{"symbol": SYM, "exchange": "NFO"}]}))
    assert recv_json(ws) == {"status": "error", "code": "NOT_AUTHENTICATED",
                             "message": "You must authenticate first"}
    ws.close()


@pytest.mark.parametrize(("message", "code"), [
    ("not json", "INVALID_JSON"),
    ("[1, 2]", "INVALID_JSON"),
    ('{"action": "teleport"}', "INVALID_ACTION"),
    ('{"action": "subscribe", "symbols": [], "mode": 2}', "INVALID_PARAMETERS"),
    ('{"action": "subscribe", "symbols": [{"symbol": "X", "exchange": "NFO"}], "mode": 9}',
     "INVALID_MODE"),
    ('{"action": "subscribe", "symbols": [{"symbol": "X", "exchange": "NFO"}], "mode": "Full"}',
     "INVALID_MODE"),
    ('{"action": "unsubscribe"}', "INVALID_PARAMETERS"),
])
def test_error_frames_have_no_type(sim: SimulatorServer, message: str, code: str) -> None:
    ws = ws_connect(sim)
    ws.send(message)
    reply = recv_json(ws)
    assert reply["status"] == "error" and reply["code"] == code and "type" not in reply
    assert reply["message"]
    ws.close()


# -- subscriptions and frames ---------------------------------------------------------------------


def test_subscribe_reports_each_symbol_and_partial(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    reply = subscribe(ws, [(SYM, "NFO"), ("NIFTY99JAN2511111CE", "NFO")], 2)
    assert reply["status"] == "partial"
    assert reply["message"] == "Subscription processing complete"
    good, bad = reply["subscriptions"]
    assert (good["symbol"], good["status"], good["mode"]) == (SYM, "success", "Quote")
    assert bad["status"] == "error" and "not found" in bad["message"]
    assert subscribe(ws, [("NIFTY", "NSE_INDEX")], "LTP")["status"] == "success"
    assert sim.subscriptions() == [{(SYM, "NFO", 2), ("NIFTY", "NSE_INDEX", 1)}]
    ws.close()


@pytest.mark.parametrize(("mode", "expected"), [(1, 1), (2, 2), (3, 3), ("LTP", 1),
                                                 ("quote", 2), ("Depth", 3), ("2", 2)])
def test_modes_as_numbers_or_names(sim: SimulatorServer, mode: object, expected: int) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], mode)
    sim.publish(tick(101.0, T0 + 1))
    assert market(ws)["mode"] == expected
    ws.close()


def test_frames_carry_the_spec_fields_per_mode(sim: SimulatorServer) -> None:
    sim.publish(tick(50.0, symbol=PE, volume=500, bid=49.95, ask=50.05, oi=1200))
    sim.publish(tick(24000.0, symbol="NIFTY", exchange="NSE_INDEX"))
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 1)
    subscribe(ws, [(PE, "NFO")], 2)
    subscribe(ws, [("NIFTY", "NSE_INDEX")], 3)
    sim.publish(tick(101.5, T0 + 1.25, volume=1065))
    sim.publish(tick(51.0, T0 + 2, symbol=PE, volume=630, bid=50.95, ask=51.05, oi=1300))
    sim.publish(tick(24010.0, T0 + 3, symbol="NIFTY", exchange="NSE_INDEX"))
    ltp = market(ws, SYM)
    assert ltp == {"type": "market_data", "symbol": SYM, "exchange": "NFO", "mode": 1,
                   "data": {"ltp": 101.5, "ltt": int((T0 + 1.25) * 1000)}, "broker": "simulator"}
    quote = market(ws, PE)["data"]
    assert quote == {"ltp": 51.0, "ltt": int((T0 + 2) * 1000), "volume": 630, "open": 50.0,
                     "high": 51.0, "low": 50.0, "close": 50.0, "last_trade_quantity": 130,
                     "average_price": 51.0, "total_buy_quantity": 650 * 15,
                     "total_sell_quantity": 650 * 15}
    depth = market(ws, "NIFTY")
    assert depth["mode"] == 3 and depth["exchange"] == "NSE_INDEX"
    data = depth["data"]
    assert set(data) == {"ltp", "ltt", "volume", "open", "high", "low", "close",
                         "last_trade_quantity", "average_price", "total_buy_quantity",
                         "total_sell_quantity", "oi", "depth"}
    assert [lv["price"] for lv in data["depth"]["buy"]] == [24009.95, 24009.9, 24009.85,
                                                             24009.8, 24009.75]
    assert data["depth"]["sell"][0] == {"price": 24010.05, "quantity": 650, "orders": 1}
    ws.close()


def test_frames_arrive_in_publish_order(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 1)
    prices = [100.0 + i * 0.05 for i in range(500)]
    for i, price in enumerate(prices):
        sim.publish(tick(round(price, 2), T0 + i * 0.01))
    got = [market(ws)["data"]["ltp"] for _ in prices]
    assert got == [round(p, 2) for p in prices]
    ws.close()


def test_single_symbol_form_as_the_sdk_sends_it(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    ws.send(json.dumps({"action": "subscribe", "symbol": SYM, "exchange": "NFO", "mode": 1,
                        "depth": 5}))
    assert recv_json(ws)["subscriptions"][0]["status"] == "success"
    ws.send(json.dumps({"action": "unsubscribe", "symbol": SYM, "exchange": "NFO", "mode": 1}))
    reply = recv_json(ws)
    assert reply["type"] == "unsubscribe" and reply["status"] == "success"
    assert reply["successful"][0]["symbol"] == SYM
    sim.publish(tick(101.0, T0 + 1))
    assert_silent(ws)
    ws.close()


def test_unsubscribe_is_per_symbol_and_mode(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 1)
    subscribe(ws, [(SYM, "NFO")], 2)
    ws.send(json.dumps({"action": "unsubscribe",
                        "symbols": [{"symbol": SYM, "exchange": "NFO", "mode": 1}]}))
    assert recv_json(ws)["status"] == "success"
    sim.publish(tick(101.0, T0 + 1))
    assert market(ws)["mode"] == 2
    assert_silent(ws)
    ws.send(json.dumps({"action": "unsubscribe_all"}))
    reply = recv_json(ws)
    assert reply["type"] == "unsubscribe" and [s["symbol"] for s in reply["successful"]] == [SYM]
    sim.publish(tick(102.0, T0 + 2))
    assert_silent(ws)
    assert sim.subscriptions() == [set()]
    ws.close()


def test_ping_pong_uses_the_engine_clock(sim: SimulatorServer, clock: VirtualClock) -> None:
    ws = ws_connect(sim)
    ws.send(json.dumps({"action": "ping", "timestamp": 123}))
    assert recv_json(ws) == {"type": "pong", "status": "success",
                             "server_timestamp": int(T0 * 1000), "client_timestamp": 123}
    ws.close()


def test_order_updates_after_subscribe_orders(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    sim.broker.place_order(strategy="s1", symbol=SYM, exchange="NFO", action="BUY", quantity=LOT)
    assert_silent(ws)
    ws.send(json.dumps({"action": "subscribe_orders"}))
    assert recv_json(ws)["type"] == "subscribe_orders"
    oid = sim.broker.place_order(strategy="s1", symbol=SYM, exchange="NFO", action="SELL",
                                 quantity=LOT, pricetype="LIMIT", price=99.0)
    opened, completed = recv_json(ws), recv_json(ws)
    assert (opened["orderid"], opened["order_status"], opened["pending_quantity"]) == \
        (oid, "open", LOT)
    assert completed == {"type": "order_update", "orderid": oid, "symbol": SYM,
                         "exchange": "NFO", "action": "SELL", "quantity": LOT, "price": 99.0,
                         "trigger_price": 0.0, "pricetype": "LIMIT", "product": "MIS",
                         "order_status": "complete", "filled_quantity": LOT,
                         "pending_quantity": 0, "average_price": 100.0, "rejection_reason": "",
                         "strategy": "s1", "timestamp": "30-Jan-2025 09:20:00", "mode": "live"}
    ws.close()


def test_connected_clients_counts_open_sockets(sim: SimulatorServer) -> None:
    a = ws_connect(sim, auth=False)
    b = ws_connect(sim)
    wait_for(lambda: sim.connected_clients() == 2)
    a.close()
    wait_for(lambda: sim.connected_clients() == 1)
    b.close()
    wait_for(lambda: sim.connected_clients() == 0)


def test_play_publishes_as_the_virtual_clock_advances(sim: SimulatorServer,
                                                      clock: VirtualClock) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 1)
    playback = sim.play([tick(101.0, T0 + 1), tick(102.0, T0 + 2)], clock)
    assert_silent(ws, 0.2)
    clock.advance_to(T0 + 1.5)
    assert market(ws)["data"]["ltp"] == 101.0
    assert_silent(ws, 0.2)
    clock.advance_to(T0 + 2)
    assert market(ws)["data"]["ltp"] == 102.0
    assert playback.join(timeout=5) and playback.published == 2
    ws.close()


def test_known_symbols_come_from_settings_and_the_tick_source(clock: VirtualClock) -> None:
    settings = replace(BASE_SETTINGS, symbols=("NFO:" + PE,))
    source = [tick(101.0, T0 + 1), tick(102.0, T0 + 2)]
    sim = SimulatorServer(settings, api_key=API_KEY, clock=clock, tick_source=source,
                          matching=MatchingSettings(broker="ideal"))
    with sim:
        ws = ws_connect(sim)
        reply = subscribe(ws, [(SYM, "NFO"), (PE, "NFO"), ("NIFTY", "NSE_INDEX")], 1)
        assert reply["status"] == "success"  # before any tick was played
        clock.advance_to(T0 + 2)
        assert [market(ws)["data"]["ltp"] for _ in source] == [101.0, 102.0]
        assert sim.playback is not None and sim.playback.join(5)
        ws.close()
    with pytest.raises(ValueError, match="EXCHANGE:SYMBOL"):
        SimulatorServer(replace(BASE_SETTINGS, symbols=("NIFTY",)), api_key=API_KEY,
                        clock=clock)


def test_slow_client_is_disconnected_past_its_backlog(sim_factory: SimFactory) -> None:
    sim = sim_factory(max_client_backlog=10_000)
    sim.publish(tick(100.0))
    ws = ws_connect(sim)
    assert subscribe(ws, [(SYM, "NFO")], 3)["status"] == "success"  # never read again
    for i in range(60_000):
        sim.publish(tick(100.0 + (i % 20) * 0.05, T0))
        if i % 5000 == 0 and sim.connected_clients() == 0:
            break
    wait_for(lambda: sim.connected_clients() == 0, timeout=10)
    ws.close()


# -- faults -----------------------------------------------------------------------------------


def test_fault_drop_connections_abruptly(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    wait_for(lambda: sim.connected_clients() == 1)
    assert sim.faults.drop_connections() == 1
    ws.settimeout(5)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv_data_frame(control_frame=True)
    wait_for(lambda: sim.connected_clients() == 0)


def test_fault_drop_connections_with_a_close_frame(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    assert sim.faults.drop_connections(abrupt=False) == 1
    assert recv_close(ws) == (1001, "going away")
    ws.shutdown()
    wait_for(lambda: sim.connected_clients() == 0)


def test_fault_freeze_feed_keeps_the_socket(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 1)
    sim.faults.freeze_feed(True)
    sim.publish(tick(101.0, T0 + 1))
    ws.send(json.dumps({"action": "ping"}))
    assert recv_json(ws)["type"] == "pong"
    assert_silent(ws)
    assert sim.broker.quotes(symbol=SYM, exchange="NFO").ltp == 101.0  # the market moved
    sim.faults.freeze_feed(False)
    sim.publish(tick(102.0, T0 + 2))
    assert market(ws)["data"]["ltp"] == 102.0
    ws.close()


def test_fault_zero_prices(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 2)
    sim.faults.zero_prices(2)
    for i, price in enumerate((101.0, 102.0, 103.0), start=1):
        sim.publish(tick(price, T0 + i))
    assert [market(ws)["data"]["ltp"] for _ in range(3)] == [0.0, 0.0, 103.0]
    assert sim.broker.quotes(symbol=SYM, exchange="NFO").high == 103.0
    ws.close()


def test_fault_malformed_frames(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    subscribe(ws, [(SYM, "NFO")], 1)
    sim.faults.malformed_frames(2)
    for i in range(3):
        sim.publish(tick(101.0 + i, T0 + i))
    ws.settimeout(5)
    texts = [ws.recv() for _ in range(3)]
    for text in texts[:2]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    assert json.loads(texts[2])["data"]["ltp"] == 103.0
    ws.close()


def test_fault_error_frames(sim: SimulatorServer) -> None:
    ws = ws_connect(sim)
    assert sim.faults.error_frames(3, code="BROKER_ERROR") == 3
    for _ in range(3):
        frame = recv_json(ws)
        assert frame["status"] == "error" and frame["code"] == "BROKER_ERROR"
        assert "type" not in frame
    ws.close()


# -- serve_forever -------------------------------------------------------------------------------


def test_serve_forever_plays_a_session_until_stopped() -> None:
    stop = threading.Event()
    clients: list[websocket.WebSocket] = []

    def on_started(sim: SimulatorServer) -> None:  # runs before the first tick is played
        ws = ws_connect(sim)
        assert subscribe(ws, [(SYM, "NFO")], 1)["status"] == "success"
        clients.append(ws)

    session = [tick(100.0 + i, T0 + i * 0.2) for i in range(10)]  # 2 s of market time
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(serve_forever(
        BASE_SETTINGS, API_KEY, iter(session), speed=20.0, symbols=[(SYM, "NFO")],
        stop_event=stop, on_started=on_started)))
    runner.start()
    wait_for(lambda: bool(clients) or not runner.is_alive())
    ws = clients[0]
    frames = [market(ws) for _ in session]
    assert [f["data"]["ltp"] for f in frames] == [t.ltp for t in session]
    assert frames[-1]["data"]["ltt"] == int(session[-1].ts * 1000)
    stop.set()
    runner.join(timeout=10)
    assert result == [10]
    ws.close()


# -- frame encoding --------------------------------------------------------------------------------

_PRICES = st.integers(min_value=0, max_value=600_000).map(lambda n: round(n * 0.05, 2))


@settings(max_examples=300, deadline=None)
@given(ltp=_PRICES, bid=_PRICES, ask=_PRICES)
def test_depth_frames_match_the_broker_ladder(ltp: float, bid: float, ask: float) -> None:
    snap = MarketSnapshot(SYM, "NFO", ltp, T0, 10, ltp, ltp, ltp, ltp, 0, ltp, bid, ask, 7)
    frames = FrameBuilder(snap, ltp, T0, 0.05, 650, "simulator")
    bids, asks = depth_ladder(ltp, bid, ask, 0.05, 650)
    depth = json.loads(frames.frame(3))["data"]["depth"]
    assert [(lv["price"], lv["quantity"]) for lv in depth["buy"]] == bids
    assert [(lv["price"], lv["quantity"]) for lv in depth["sell"]] == asks
    quote = json.loads(frames.frame(2))["data"]
    assert quote["total_buy_quantity"] == sum(q for _, q in bids)
    assert quote["total_sell_quantity"] == sum(q for _, q in asks)
