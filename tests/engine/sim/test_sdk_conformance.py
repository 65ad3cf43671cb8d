"""Acceptance: the official ``openalgo`` SDK, unchanged, works against the simulator (REST and
its WebSocket feed client) and gets what it expects from a real OpenAlgo server.

Every public method of the SDK client (``openalgo.api`` and its mixins, found by introspection)
is either exercised here, through ``@exercises`` on the test that calls it, or listed in
``EXCLUDED`` with the reason. A test's declared methods must really be called through the
recording client during that test and answer OpenAlgo's success shape (a ``"status":
"success"`` body, a DataFrame, or a feed call that did not fail), except the methods in
``ERROR_BY_DESIGN``, which must answer the named OpenAlgo error.
"""

from __future__ import annotations

import inspect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any, TypeVar

import pandas as pd
import pytest
import requests
from openalgo import FeedAPI, api

from engine.market import black76
from engine.market.instruments import InstrumentSpec
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.sim.server import SimulatorServer

from .conftest import API_KEY, PE, SYM, T0, SimFactory, tick, wait_for

LOT = 65


def sdk_methods() -> set[str]:
    """The public methods of the SDK client class and of every SDK mixin it is made of."""
    return {name for cls in api.__mro__ if cls.__module__.split(".")[0] == "openalgo"
            for name, value in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(value)}


FEED_METHODS = {name for name, value in vars(FeedAPI).items()
                if not name.startswith("_") and inspect.isfunction(value)}
#: Methods not exercised here, each with the reason. None today: every method answers.
EXCLUDED: dict[str, str] = {}
#: Exercised methods whose honest answer is an OpenAlgo error: method → (HTTP code, message).
ERROR_BY_DESIGN: dict[str, tuple[int, str]] = {
    # restx_api/telegram_bot.py /notify: 409 while the bot is stopped; the simulator runs none
    "telegram": (409, "Telegram bot is stopped. Start the bot to send notifications."),
}
EXERCISED: dict[str, str] = {}  # method → the test that exercises it
_CALLS: dict[str, list[Any]] = defaultdict(list)  # this test's calls: method → results

F = TypeVar("F", bound=Callable[..., Any])


def exercises(*methods: str) -> Callable[[F], F]:
    """Declare the SDK methods a test exercises (checked after it runs)."""
    def mark(test: F) -> F:
        for method in methods:
            assert method not in EXERCISED, f"{method} declared twice"
            EXERCISED[method] = test.__name__
        test.sdk_methods = methods  # type: ignore[attr-defined]
        return test
    return mark


class RecordingApi(api):
    """The SDK client, recording each public method called and what it returned."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name.startswith("_") or not callable(value) or name not in SDK_METHODS:
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            _CALLS[name].append(result)
            return result
        return recorded


SDK_METHODS = sdk_methods()


def _answered(method: str, result: Any) -> bool:
    if method in ERROR_BY_DESIGN:
        code, message = ERROR_BY_DESIGN[method]
        return isinstance(result, dict) and result.get("status") == "error" \
            and result.get("code") == code and message in result.get("message", "")
    if method in FEED_METHODS:
        return result is not False and not (isinstance(result, dict)
                                             and result.get("status") == "error")
    return isinstance(result, pd.DataFrame) or (isinstance(result, dict)
                                                and result.get("status") == "success")


@pytest.fixture(autouse=True)
def _check_declared_methods(request: pytest.FixtureRequest) -> Iterator[None]:
    _CALLS.clear()
    yield
    for method in getattr(request.function, "sdk_methods", ()):
        assert _CALLS[method], f"{method} declared but not called"
        assert any(_answered(method, r) for r in _CALLS[method]), \
            f"{method} never answered as expected: {_CALLS[method]!r}"


def test_every_sdk_method_is_exercised_or_excluded() -> None:
    assert len(SDK_METHODS) >= 48, sorted(SDK_METHODS)  # the introspection found the client
    missing = SDK_METHODS - set(EXERCISED) - set(EXCLUDED)
    assert not missing, f"SDK methods neither exercised nor excluded: {sorted(missing)}"
    assert not set(EXERCISED) & set(EXCLUDED)
    assert set(EXERCISED) | set(EXCLUDED) <= SDK_METHODS, "a declared name is not an SDK method"
    assert set(ERROR_BY_DESIGN) <= set(EXERCISED)


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
    return RecordingApi(api_key=API_KEY, host=market.rest_url, ws_url=market.ws_url)


def success(result: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(result, dict) and result.get("status") == "success", result
    return result


@exercises("placeorder", "orderstatus", "modifyorder", "cancelorder", "orderbook", "tradebook",
           "positionbook", "openposition", "placesmartorder", "cancelallorder", "closeposition")
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


@exercises("funds", "quotes", "depth", "analyzerstatus", "analyzertoggle")
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
    assert success(client.analyzertoggle(mode=True))["data"]["mode"] == "analyze"
    assert success(client.analyzertoggle(mode=False))["data"]["mode"] == "live"


@exercises("history")
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


@exercises("connect", "disconnect", "subscribe_ltp", "subscribe_quote", "subscribe_depth",
           "get_ltp", "get_quotes", "get_depth")
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


@exercises("unsubscribe_ltp", "unsubscribe_quote", "unsubscribe_depth")
def test_sdk_feed_client_unsubscribes(market: SimulatorServer, feed_client: api) -> None:
    feed_client.subscribe_ltp([{"exchange": "NFO", "symbol": SYM}])
    feed_client.subscribe_quote([{"exchange": "NFO", "symbol": PE}])
    feed_client.subscribe_depth([{"exchange": "NFO", "symbol": SYM}])
    wait_for(lambda: market.subscriptions() == [{(SYM, "NFO", 1), (PE, "NFO", 2),
                                                 (SYM, "NFO", 3)}])
    assert feed_client.unsubscribe_ltp([{"exchange": "NFO", "symbol": SYM}])
    assert feed_client.unsubscribe_quote([{"exchange": "NFO", "symbol": PE}])
    assert feed_client.unsubscribe_depth([{"exchange": "NFO", "symbol": SYM}])
    wait_for(lambda: market.subscriptions() == [set()])


# -- instruments from the broker: the master-contract endpoints (engine/sim/contracts.py) --------

CE_UP = "NIFTY30JAN2524050CE"  # a strike above the index
LATER = "NIFTY06FEB2524000CE"  # a later expiry


@pytest.fixture
def chain_client(market: SimulatorServer) -> api:
    market.publish(tick(24010.0, T0 + 170, symbol="NIFTY", exchange="NSE_INDEX"))
    market.publish(tick(80.0, T0 + 170, symbol=CE_UP))
    market.declare_symbols([(LATER, "NFO"), ("NIFTY30JAN2524050PE", "NFO")])
    return RecordingApi(api_key=API_KEY, host=market.rest_url)


@exercises("holdings")
def test_holdings_answer_with_openalgo_shape(client: api) -> None:
    data = success(client.holdings())["data"]
    assert data == {"holdings": [], "statistics": {
        "totalholdingvalue": 0.0, "totalinvvalue": 0.0, "totalprofitandloss": 0.0,
        "totalpnlpercentage": 0.0}}


@exercises("expiry")
def test_expiry_lists_the_master_contract_dates(chain_client: api) -> None:
    reply = success(chain_client.expiry(symbol="NIFTY", exchange="NFO",
                                        instrumenttype="options"))
    assert reply["data"] == ["30-JAN-25", "06-FEB-25"]
    assert success(chain_client.expiry(symbol="NIFTY", exchange="NFO",
                                       instrumenttype="futures"))["data"] == []
    bad = chain_client.expiry(symbol="NIFTY", exchange="NSE", instrumenttype="options")
    assert bad["status"] == "error" and bad["code"] == 400


@exercises("symbol", "search")
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


@exercises("optionsymbol")
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


@exercises("optionchain")
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


@exercises("multiquotes")
def test_multiquotes_one_result_per_pair(chain_client: api) -> None:
    results = success(chain_client.multiquotes(symbols=[
        {"symbol": SYM, "exchange": "NFO"}, {"symbol": "NIFTY", "exchange": "NSE_INDEX"},
        {"symbol": "NOPE", "exchange": "NFO"}]))["results"]
    assert [r["symbol"] for r in results] == [SYM, "NIFTY", "NOPE"]
    assert results[0]["data"]["ltp"] == 105.0 and results[1]["data"]["ltp"] == 24010.0
    assert "error" in results[2] and "data" not in results[2]


@exercises("intervals", "interval")
def test_intervals_through_the_sdk(client: api) -> None:
    data = success(client.intervals())["data"]
    assert set(data) == {"seconds", "minutes", "hours", "days", "weeks", "months"}
    assert "1m" in data["minutes"] and client.interval() == client.intervals()


# -- order groups: every child a real order of the matching engine (engine/sim/groups.py) --------


def _book(client: api) -> dict[str, dict[str, Any]]:
    return {o["orderid"]: o for o in success(client.orderbook())["data"]["orders"]}


@exercises("basketorder")
def test_basketorder_places_buys_first_each_a_real_order(client: api) -> None:
    reply = success(client.basketorder(strategy="sdk", orders=[
        {"symbol": PE, "exchange": "NFO", "action": "SELL", "quantity": LOT,
         "pricetype": "MARKET", "product": "MIS"},
        {"symbol": SYM, "exchange": "NFO", "action": "BUY", "quantity": LOT,
         "pricetype": "MARKET", "product": "MIS"},
        {"symbol": SYM, "exchange": "NFO", "action": "BUY", "quantity": 10,
         "pricetype": "MARKET", "product": "MIS"}]))
    first, bad, second = reply["results"]
    assert (first["symbol"], bad["symbol"], second["symbol"]) == (SYM, SYM, PE)  # BUYs first
    assert first == {"symbol": SYM, "exchange": "NFO", "product": "MIS", "status": "success",
                     "orderid": first["orderid"]}
    assert bad["status"] == "error" and "lot size" in bad["message"]
    book = _book(client)
    assert [book[r["orderid"]]["order_status"] for r in (first, second)] == ["complete"] * 2
    assert book[second["orderid"]]["action"] == "SELL"
    invalid = client.basketorder(strategy="sdk", orders=[{"symbol": SYM, "exchange": "NFO",
                                                          "action": "HOLD", "quantity": 65}])
    assert invalid["status"] == "error" and invalid["code"] == 400


@exercises("splitorder")
def test_splitorder_parts_respect_the_freeze_quantity(client: api) -> None:
    reply = success(client.splitorder(strategy="sdk", symbol=SYM, action="BUY", exchange="NFO",
                                      quantity=5 * LOT, splitsize=2 * LOT))
    assert (reply["total_quantity"], reply["split_size"]) == (5 * LOT, 2 * LOT)
    assert [(r["order_num"], r["quantity"], r["status"]) for r in reply["results"]] == \
        [(1, 130, "success"), (2, 130, "success"), (3, 65, "success")]
    book = _book(client)
    assert [book[r["orderid"]]["quantity"] for r in reply["results"]] == [130, 130, 65]
    # a part above the freeze quantity (1800) is refused by the broker, the rest placed
    over = success(client.splitorder(strategy="sdk", symbol=SYM, action="BUY", exchange="NFO",
                                     quantity=28 * LOT + LOT, splitsize=28 * LOT))
    refused, placed = over["results"]
    assert refused["status"] == "error" and "freeze quantity" in refused["message"]
    assert placed["status"] == "success" and placed["orderid"] in _book(client)
    too_many = client.splitorder(strategy="sdk", symbol=SYM, action="BUY", exchange="NFO",
                                 quantity=101 * LOT, splitsize=LOT)
    assert too_many["code"] == 400 and "maximum limit of 100" in too_many["message"]


@exercises("optionsorder")
def test_optionsorder_resolves_the_offset_and_places(chain_client: api) -> None:
    reply = success(chain_client.optionsorder(
        strategy="sdk", underlying="NIFTY", exchange="NSE_INDEX", expiry_date="30JAN25",
        offset="OTM1", option_type="CE", action="BUY", quantity=LOT))
    assert {k: reply[k] for k in ("symbol", "exchange", "underlying", "underlying_ltp",
                                  "offset", "option_type")} == {
        "symbol": CE_UP, "exchange": "NFO", "underlying": "NIFTY", "underlying_ltp": 24010.0,
        "offset": "OTM1", "option_type": "CE"}
    row = _book(chain_client)[reply["orderid"]]
    assert (row["symbol"], row["order_status"], row["average_price"]) == (CE_UP, "complete", 80.0)
    split = success(chain_client.optionsorder(
        strategy="sdk", underlying="NIFTY", exchange="NSE_INDEX", expiry_date="30JAN25",
        offset="ATM", option_type="PE", action="SELL", quantity=3 * LOT, splitsize=2 * LOT))
    assert split["symbol"] == PE and split["total_quantity"] == 3 * LOT
    assert [r["quantity"] for r in split["results"]] == [130, 65]
    bad = chain_client.optionsorder(strategy="sdk", underlying="NIFTY", exchange="NSE_INDEX",
                                    expiry_date="30JAN25", offset="MIDDLE", option_type="CE",
                                    action="BUY", quantity=LOT)
    assert bad["status"] == "error" and "Offset must be" in bad["message"]


@exercises("optionsmultiorder")
def test_optionsmultiorder_buys_first_and_reports_by_leg(chain_client: api) -> None:
    reply = success(chain_client.optionsmultiorder(
        strategy="sdk", underlying="NIFTY", exchange="NSE_INDEX", expiry_date="30JAN25",
        legs=[{"offset": "ATM", "option_type": "CE", "action": "SELL", "quantity": LOT},
              {"offset": "OTM1", "option_type": "CE", "action": "BUY", "quantity": LOT},
              {"offset": "OTM9", "option_type": "CE", "action": "BUY", "quantity": LOT}]))
    assert reply["underlying"] == "NIFTY" and reply["underlying_ltp"] == 24010.0
    sell, buy, far = reply["results"]
    assert (sell["leg"], sell["symbol"], sell["action"], sell["status"], sell["mode"]) == \
        (1, SYM, "SELL", "success", "live")
    assert (buy["leg"], buy["symbol"], buy["status"]) == (2, CE_UP, "success")
    assert far["status"] == "error" and "out of range" in far["message"]
    orders = success(chain_client.orderbook())["data"]["orders"]
    assert [o["orderid"] for o in orders] == [buy["orderid"], sell["orderid"]]  # BUY first


# -- computed from the simulator's prices (engine/sim/analytics.py) ----------------------------


@exercises("syntheticfuture")
def test_syntheticfuture_is_strike_plus_call_minus_put(chain_client: api) -> None:
    reply = success(chain_client.syntheticfuture(underlying="NIFTY", exchange="NSE_INDEX",
                                                 expiry_date="30JAN25"))
    assert reply == {"status": "success", "underlying": "NIFTY", "underlying_ltp": 24010.0,
                     "expiry": "30JAN25", "atm_strike": 24000.0,
                     "synthetic_future_price": 24000.0 + 105.0 - 45.0}


@exercises("optiongreeks")
def test_optiongreeks_black76_on_the_synthetic_forward(chain_client: api,
                                                       clock: VirtualClock) -> None:
    reply = success(chain_client.optiongreeks(symbol=SYM, exchange="NFO", interest_rate=6.5))
    assert {k: reply[k] for k in ("symbol", "exchange", "underlying", "strike", "option_type",
                                  "expiry_date", "spot_price", "option_price",
                                  "interest_rate")} == {
        "symbol": SYM, "exchange": "NFO", "underlying": "NIFTY", "strike": 24000.0,
        "option_type": "CE", "expiry_date": "30-Jan-2025", "spot_price": 24060.0,
        "option_price": 105.0, "interest_rate": 6.5}
    expiry = ist_epoch(2025, 1, 30, 15, 30)  # NFO's expiry-day cut-off
    assert reply["days_to_expiry"] == pytest.approx((expiry - clock.time()) / 86400, abs=1e-4)
    years = reply["days_to_expiry"] / 365
    sigma = reply["implied_volatility"] / 100
    # the reported volatility prices the option back to its LTP
    assert black76.price("c", 24060.0, 24000.0, years, 0.065, sigma) == pytest.approx(105.0,
                                                                                      abs=0.5)
    g = reply["greeks"]
    assert set(g) == {"delta", "gamma", "theta", "vega", "rho"}
    assert 0.5 < g["delta"] < 1 and g["gamma"] > 0 and g["theta"] < 0 and g["vega"] > 0
    # a forward 200 above the strike makes the 105 call worth less than its intrinsic value
    deep = success(chain_client.optiongreeks(symbol=SYM, exchange="NFO", forward_price=24200))
    assert deep["spot_price"] == 24200.0 and deep["greeks"]["delta"] == 1.0
    assert (deep["implied_volatility"], deep["intrinsic_value"]) == (0, 200.0)
    assert "theoretical" in deep["note"]
    bad = chain_client.optiongreeks(symbol="NIFTY", exchange="NFO")
    assert bad["status"] == "error" and bad["code"] == 400


@exercises("margin")
def test_margin_estimate_in_openalgos_shape(chain_client: api) -> None:
    bought = success(chain_client.margin(positions=[
        {"symbol": SYM, "exchange": "NFO", "action": "BUY", "quantity": LOT,
         "product": "MIS", "pricetype": "MARKET"}]))["data"]
    assert bought == {"total_margin_required": 105.0 * LOT, "span_margin": 0.0,
                      "exposure_margin": 0.0}  # the premium (LTP 105) and nothing else
    sold = success(chain_client.margin(positions=[
        {"symbol": PE, "exchange": "NFO", "action": "SELL", "quantity": LOT,
         "product": "NRML", "pricetype": "LIMIT", "price": 45}]))["data"]
    notional = 24010.0 * LOT  # index spot × quantity
    assert sold == {"total_margin_required": round(0.12 * notional, 2),
                    "span_margin": round(0.10 * notional, 2),
                    "exposure_margin": round(0.02 * notional, 2)}
    unknown = chain_client.margin(positions=[{"symbol": "NOPE", "exchange": "NFO",
                                              "action": "BUY", "quantity": 1, "product": "MIS",
                                              "pricetype": "MARKET"}])
    assert unknown["code"] == 400 and "No valid positions" in unknown["message"]
    bad = chain_client.margin(positions=[{"symbol": SYM, "exchange": "NFO", "action": "BUY",
                                          "quantity": "lots", "product": "MIS",
                                          "pricetype": "MARKET"}])
    assert bad["code"] == 400 and "Position 1: Invalid quantity format" in bad["message"]


# -- the master contract as a download, over GET ------------------------------------------------


@exercises("instruments")
def test_instruments_download_over_get(chain_client: api, market: SimulatorServer) -> None:
    df = chain_client.instruments(exchange="NFO")
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["symbol", "brsymbol", "name", "exchange", "brexchange",
                                "token", "expiry", "strike", "lotsize", "instrumenttype",
                                "tick_size"]
    assert {SYM, PE, CE_UP, LATER} <= set(df["symbol"]) and set(df["exchange"]) == {"NFO"}
    everything = chain_client.instruments()  # the SDK asks exchange by exchange
    assert set(everything["exchange"]) == {"NFO", "NSE_INDEX"}
    url = f"{market.rest_url}/api/v1/instruments"
    assert requests.get(url, params={"apikey": "wrong"}, timeout=5).status_code == 403
    bad = requests.get(url, params={"apikey": API_KEY, "exchange": "XX"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["message"] == {
        "exchange": [bad.json()["message"]["exchange"][0]]}
    assert requests.post(url, json={"apikey": API_KEY}, timeout=5).status_code == 405
    assert requests.get(f"{market.rest_url}/api/v1/funds", params={"apikey": API_KEY},
                        timeout=5).status_code == 405


# -- the market calendar (engine/market/calendar.py) --------------------------------------------


@exercises("holidays", "timings")
def test_holidays_and_timings_from_the_calendar(sim_factory: SimFactory) -> None:
    spec = InstrumentSpec(holidays=frozenset({date(2025, 2, 26), date(2025, 3, 14),
                                              date(2026, 1, 26)}))
    sim = sim_factory(instrument=spec)
    client = RecordingApi(api_key=API_KEY, host=sim.rest_url)
    reply = success(client.holidays())  # the simulator clock's year
    assert (reply["year"], reply["timezone"]) == (2025, "Asia/Kolkata")
    assert reply["data"][0] == {"date": "2025-02-26", "description": "Trading holiday",
                                "holiday_type": "TRADING_HOLIDAY",
                                "closed_exchanges": ["NSE", "NFO"], "open_exchanges": []}
    assert [h["date"] for h in reply["data"]] == ["2025-02-26", "2025-03-14"]
    assert [h["date"] for h in success(client.holidays(year=2026))["data"]] == ["2026-01-26"]
    assert client.holidays(year=2019)["code"] == 400
    day = success(client.timings(date="2025-01-30"))["data"]
    assert day == [{"exchange": x, "start_time": int((T0 - 5 * 60) * 1000),
                    "end_time": int((T0 + (6 * 60 + 10) * 60) * 1000)} for x in ("NSE", "NFO")]
    assert success(client.timings(date="2025-02-26"))["data"] == []  # holiday
    assert success(client.timings(date="2025-02-01"))["data"] == []  # Saturday
    bad = client.timings(date="30-01-2025")
    assert bad["code"] == 400 and "YYYY-MM-DD" in bad["message"]


# -- telegram: the simulator runs no bot -------------------------------------------------------


@exercises("telegram")
def test_telegram_answers_as_openalgo_with_its_bot_stopped(client: api,
                                                           market: SimulatorServer) -> None:
    reply = client.telegram(username="trader", message="filled")
    assert reply["code"] == 409 and "Telegram bot is stopped" in reply["message"]
    wrong = api(api_key="not-the-key", host=market.rest_url)
    assert wrong.telegram(username="trader", message="x")["code"] == 401
