"""Acceptance: the official ``openalgo`` SDK, unchanged, works against the simulator (REST and
its WebSocket feed client) and gets what it expects from a real OpenAlgo server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from openalgo import api

from engine.runtime.clock import VirtualClock
from engine.sim.server import SimulatorServer

from .conftest import API_KEY, PE, SYM, T0, SimFactory, tick, wait_for

LOT = 65


@pytest.fixture
def market(sim_factory: SimFactory, clock: VirtualClock) -> SimulatorServer:
    sim = sim_factory()
    for i in range(6):  # three minutes of ticks, two per minute
        clock.advance_to(T0 + 30 * i)
        sim.publish(tick(100.0 + i, T0 + 30 * i, volume=1000 + LOT * i, bid=99.95 + i,
                         ask=100.05 + i))
        sim.publish(tick(50.0 - i, T0 + 30 * i, symbol=PE, volume=500 + LOT * i))
    return sim


@pytest.fixture
def client(market: SimulatorServer) -> api:
    return api(api_key=API_KEY, host=market.rest_url, ws_url=market.ws_url)


def success(result: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(result, dict) and result.get("status") == "success", result
    return result


def test_orders_through_the_sdk(client: api) -> None:
    placed = success(client.placeorder(strategy="sdk", symbol=SYM, action="BUY", exchange="NFO",
                                       price_type="MARKET", product="MIS", quantity=LOT))
    oid = placed["orderid"]
    assert oid.isdigit() and len(oid) == 15
    status = success(client.orderstatus(order_id=oid, strategy="sdk"))["data"]
    assert status["order_status"] == "complete" and status["orderid"] == oid
    assert status["average_price"] == 105.05 and status["quantity"] == LOT
    assert {"action", "exchange", "price", "pricetype", "product", "symbol", "timestamp",
            "trigger_price"} <= set(status)

    resting = success(client.placeorder(strategy="sdk", symbol=SYM, action="BUY",
                                        exchange="NFO", price_type="LIMIT", product="MIS",
                                        quantity=LOT, price=90))["orderid"]
    success(client.modifyorder(order_id=resting, strategy="sdk", symbol=SYM, action="BUY",
                               exchange="NFO", price_type="LIMIT", product="MIS",
                               quantity=2 * LOT, price=91))
    assert success(client.cancelorder(order_id=resting, strategy="sdk"))["orderid"] == resting

    book = success(client.orderbook())["data"]
    assert [o["order_status"] for o in book["orders"]] == ["complete", "cancelled"]
    assert book["orders"][1]["quantity"] == 2 * LOT and book["orders"][1]["price"] == 91.0
    assert book["statistics"]["total_buy_orders"] == 2

    trades = success(client.tradebook())["data"]
    assert len(trades) == 1 and trades[0]["orderid"] == oid
    assert trades[0]["trade_value"] == pytest.approx(LOT * 105.05)

    positions = success(client.positionbook())["data"]
    assert positions == [{"symbol": SYM, "exchange": "NFO", "product": "MIS", "quantity": LOT,
                          "average_price": 105.05, "ltp": 105.0, "pnl": -3.25}]
    assert success(client.openposition(strategy="sdk", symbol=SYM, exchange="NFO",
                                       product="MIS"))["quantity"] == LOT

    matched = success(client.placesmartorder(strategy="sdk", symbol=SYM, action="BUY",
                                             exchange="NFO", quantity=LOT, position_size=LOT))
    assert "orderid" not in matched
    success(client.placeorder(strategy="sdk", symbol=PE, action="SELL", exchange="NFO",
                              price_type="SL-M", product="MIS", quantity=LOT, trigger_price=40))
    assert len(success(client.cancelallorder(strategy="sdk"))["canceled_orders"]) == 1
    success(client.closeposition(strategy="sdk"))
    assert success(client.openposition(strategy="sdk", symbol=SYM, exchange="NFO",
                                       product="MIS"))["quantity"] == 0


def test_account_and_market_data_through_the_sdk(client: api) -> None:
    funds = success(client.funds())["data"]
    assert float(funds["availablecash"]) == 1_000_000.0
    assert set(funds) == {"availablecash", "collateral", "m2mrealized", "m2munrealized",
                          "utiliseddebits"}
    quote = success(client.quotes(symbol=SYM, exchange="NFO"))["data"]
    assert (quote["ltp"], quote["bid"], quote["ask"], quote["open"], quote["high"]) == \
        (105.0, 104.95, 105.05, 100.0, 105.0)
    depth = success(client.depth(symbol=SYM, exchange="NFO"))["data"]
    assert len(depth["bids"]) == 5 and depth["asks"][0]["price"] == 105.05
    assert success(client.analyzerstatus())["data"]["mode"] == "live"


def test_history_through_the_sdk_is_a_dataframe(client: api) -> None:
    df = client.history(symbol=SYM, exchange="NFO", interval="1m", start_date="2025-01-30",
                        end_date="2025-01-30")
    assert isinstance(df, pd.DataFrame), df
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "oi"]
    assert len(df) == 3
    assert str(df.index.tz) == "Asia/Kolkata"
    assert df.index[0] == pd.Timestamp("2025-01-30 09:20", tz="Asia/Kolkata")
    assert list(df["close"]) == [101.0, 103.0, 105.0]
    assert list(df["volume"]) == [LOT, 2 * LOT, 2 * LOT]


def test_sdk_sees_errors_as_errors(market: SimulatorServer) -> None:
    wrong = api(api_key="not-the-key", host=market.rest_url, ws_url=market.ws_url)
    result = wrong.funds()
    assert result["status"] == "error" and result["code"] == 403
    client = api(api_key=API_KEY, host=market.rest_url)
    bad = client.placeorder(strategy="sdk", symbol=SYM, action="BUY", exchange="NFO",
                            quantity=10)
    assert bad["status"] == "error" and "lot size" in bad["message"]


@pytest.fixture
def feed_client(client: api) -> Iterator[api]:
    assert client.connect() is True
    yield client
    client.disconnect()


def test_sdk_feed_client_receives_every_mode(market: SimulatorServer, feed_client: api) -> None:
    got: dict[str, list[dict[str, Any]]] = {"ltp": [], "quote": [], "depth": []}
    arrived = threading.Event()

    def collect(kind: str) -> Any:
        def callback(data: dict[str, Any]) -> None:
            got[kind].append(data)
            if all(got.values()):
                arrived.set()
        return callback

    assert feed_client.subscribe_ltp([{"exchange": "NFO", "symbol": SYM}],
                                     on_data_received=collect("ltp"))
    assert feed_client.subscribe_quote([{"exchange": "NFO", "symbol": PE}],
                                       on_data_received=collect("quote"))
    assert feed_client.subscribe_depth([{"exchange": "NSE_INDEX", "symbol": "NIFTY"}],
                                       on_data_received=collect("depth"))
    wait_for(lambda: len(market.subscriptions()[0]) == 3)
    market.publish(tick(106.0, T0 + 200, volume=2000))
    market.publish(tick(44.0, T0 + 200, symbol=PE, volume=900))
    market.publish(tick(24050.0, T0 + 200, symbol="NIFTY", exchange="NSE_INDEX"))
    assert arrived.wait(5), got
    ltp = got["ltp"][0]
    assert (ltp["symbol"], ltp["mode"], ltp["data"]["ltp"]) == (SYM, 1, 106.0)
    assert ltp["data"]["ltt"] == int((T0 + 200) * 1000)
    quote = got["quote"][0]["data"]
    assert (quote["ltp"], quote["volume"], quote["open"], quote["low"]) == (44.0, 900, 50.0, 44.0)
    depth = got["depth"][0]["data"]
    assert depth["ltp"] == 24050.0 and len(depth["depth"]["buy"]) == 5
    assert feed_client.get_ltp()["ltp"]["NFO"][SYM]["ltp"] == 106.0
    assert feed_client.get_quotes()["quote"]["NFO"][PE]["ltp"] == 44.0
    book = feed_client.get_depth()["depth"]["NSE_INDEX"]["NIFTY"]
    assert book["sellBook"]["1"]["price"] == 24050.05


def test_sdk_feed_client_unsubscribes(market: SimulatorServer, feed_client: api) -> None:
    feed_client.subscribe_ltp([{"exchange": "NFO", "symbol": SYM}])
    wait_for(lambda: market.subscriptions() == [{(SYM, "NFO", 1)}])
    assert feed_client.unsubscribe_ltp([{"exchange": "NFO", "symbol": SYM}])
    wait_for(lambda: market.subscriptions() == [set()])


# -- instruments from the broker: the master-contract endpoints (engine/sim/contracts.py) --------

CE_UP = "NIFTY30JAN2524050CE"  # a strike above the index
LATER = "NIFTY06FEB2524000CE"  # a later expiry


@pytest.fixture
def chain_client(market: SimulatorServer) -> api:
    market.publish(tick(24010.0, T0 + 170, symbol="NIFTY", exchange="NSE_INDEX"))
    market.publish(tick(80.0, T0 + 170, symbol=CE_UP))
    market.declare_symbols([(LATER, "NFO"), ("NIFTY30JAN2524050PE", "NFO")])
    return api(api_key=API_KEY, host=market.rest_url)


def test_holdings_answer_with_openalgo_shape(client: api) -> None:
    data = success(client.holdings())["data"]
    assert data == {"holdings": [], "statistics": {
        "totalholdingvalue": 0.0, "totalinvvalue": 0.0, "totalprofitandloss": 0.0,
        "totalpnlpercentage": 0.0}}


def test_expiry_lists_the_master_contract_dates(chain_client: api) -> None:
    reply = success(chain_client.expiry(symbol="NIFTY", exchange="NFO",
                                        instrumenttype="options"))
    assert reply["data"] == ["30-JAN-25", "06-FEB-25"]
    assert success(chain_client.expiry(symbol="NIFTY", exchange="NFO",
                                       instrumenttype="futures"))["data"] == []
    bad = chain_client.expiry(symbol="NIFTY", exchange="NSE", instrumenttype="options")
    assert bad["status"] == "error" and bad["code"] == 400


def test_symbol_and_search_rows(chain_client: api) -> None:
    row = success(chain_client.symbol(symbol=SYM, exchange="NFO"))["data"]
    assert {k: row[k] for k in ("symbol", "name", "exchange", "expiry", "strike", "lotsize",
                                "instrumenttype", "tick_size", "freeze_qty")} == {
        "symbol": SYM, "name": "NIFTY", "exchange": "NFO", "expiry": "30-JAN-25",
        "strike": 24000.0, "lotsize": LOT, "instrumenttype": "CE", "tick_size": 0.05,
        "freeze_qty": 1800}
    assert set(row) == {"id", "symbol", "brsymbol", "name", "exchange", "brexchange", "token",
                        "expiry", "strike", "lotsize", "instrumenttype", "tick_size",
                        "freeze_qty"}
    missing = chain_client.symbol(symbol="NIFTY30JAN2599999CE", exchange="NFO")
    assert missing["status"] == "error" and missing["code"] == 404
    found = success(chain_client.search(query="NIFTY 24000", exchange="NFO"))["data"]
    assert sorted(r["symbol"] for r in found) == [LATER, SYM, PE]
    assert success(chain_client.search(query="BANKNIFTY"))["data"] == []


def test_optionsymbol_picks_atm_from_listed_strikes(chain_client: api) -> None:
    atm = success(chain_client.optionsymbol(underlying="NIFTY", exchange="NSE_INDEX",
                                            expiry_date="30JAN25", offset="ATM",
                                            option_type="CE"))
    assert atm == {"status": "success", "symbol": SYM, "exchange": "NFO", "lotsize": LOT,
                   "tick_size": 0.05, "freeze_qty": 1800, "underlying_ltp": 24010.0}
    otm = success(chain_client.optionsymbol(underlying="NIFTY", exchange="NSE_INDEX",
                                            expiry_date="30JAN25", offset="OTM1",
                                            option_type="CE"))
    assert otm["symbol"] == CE_UP
    with pytest.warns(DeprecationWarning):  # the SDK's own warning; the server still obeys
        itm_put = success(chain_client.optionsymbol(underlying="NIFTY", exchange="NSE_INDEX",
                                                    expiry_date="30JAN25", offset="ITM1",
                                                    option_type="PE", strike_int=50))
    assert itm_put["symbol"] == "NIFTY30JAN2524050PE"
    far = chain_client.optionsymbol(underlying="NIFTY", exchange="NSE_INDEX",
                                    expiry_date="30JAN25", offset="OTM5", option_type="CE")
    assert far["status"] == "error" and far["code"] == 400


def test_optionchain_labels_and_quotes(chain_client: api) -> None:
    reply = success(chain_client.optionchain(underlying="NIFTY", exchange="NSE_INDEX",
                                             expiry_date="30JAN25", strike_count=5))
    assert (reply["underlying"], reply["underlying_ltp"], reply["atm_strike"]) == \
        ("NIFTY", 24010.0, 24000.0)
    first, second = reply["chain"]
    assert first["strike"] == 24000.0 and first["ce"]["label"] == "ATM"
    assert first["ce"]["ltp"] == 105.0 and first["pe"]["ltp"] == 45.0
    assert (second["ce"]["symbol"], second["ce"]["label"], second["ce"]["lotsize"]) == \
        (CE_UP, "OTM1", LOT)
    assert second["pe"]["label"] == "ITM1" and second["ce"]["ltp"] == 80.0
    assert {"bid", "ask", "bid_qty", "ask_qty", "open", "high", "low", "prev_close", "volume",
            "oi", "tick_size"} <= set(first["pe"])


def test_multiquotes_one_result_per_pair(chain_client: api) -> None:
    results = success(chain_client.multiquotes(symbols=[
        {"symbol": SYM, "exchange": "NFO"}, {"symbol": "NIFTY", "exchange": "NSE_INDEX"},
        {"symbol": "NOPE", "exchange": "NFO"}]))["results"]
    assert [r["symbol"] for r in results] == [SYM, "NIFTY", "NOPE"]
    assert results[0]["data"]["ltp"] == 105.0 and results[1]["data"]["ltp"] == 24010.0
    assert "error" in results[2] and "data" not in results[2]


def test_intervals_through_the_sdk(client: api) -> None:
    data = success(client.intervals())["data"]
    assert set(data) == {"seconds", "minutes", "hours", "days", "weeks", "months"}
    assert "1m" in data["minutes"] and client.interval() == client.intervals()
