"""The simulated broker's matching, books and P&L (in-process, virtual clock)."""

from __future__ import annotations

import math
import threading

import pytest

from engine.broker import Broker, HistoryBar, OrderNotFound, OrderRow, RejectedError
from engine.market.instruments import InstrumentSpec
from engine.messages import Tick
from engine.runtime.clock import VirtualClock, ist_epoch
from engine.sim.matching import MatchingSettings, SimulatedBroker

from .conftest import PE, SYM, T0, tick

LOT = 65


def make_broker(clock: VirtualClock, **settings: object) -> SimulatedBroker:
    settings = {"broker": "ideal", **settings}
    broker = SimulatedBroker(clock, InstrumentSpec(), MatchingSettings(**settings))  # type: ignore[arg-type]
    broker.declare_symbol(SYM, "NFO")
    broker.declare_symbol(PE, "NFO")
    return broker


@pytest.fixture
def broker(clock: VirtualClock) -> SimulatedBroker:
    b = make_broker(clock)
    b.on_tick(tick(100.0, volume=1000, bid=99.9, ask=100.1))
    return b


def place(b: SimulatedBroker, action: str = "BUY", qty: int = LOT, pricetype: str = "MARKET",
          price: float = 0.0, trigger: float = 0.0, symbol: str = SYM) -> str:
    return b.place_order(strategy="s1", symbol=symbol, exchange="NFO", action=action,
                         quantity=qty, pricetype=pricetype, price=price, trigger_price=trigger)


def status(b: SimulatedBroker, oid: str) -> OrderRow:
    return b.order_status(strategy="s1", orderid=oid)


def at(clock: VirtualClock, b: SimulatedBroker, seconds: float, ltp: float, **kw: object) -> None:
    clock.advance_to(T0 + seconds)
    b.on_tick(tick(ltp, T0 + seconds, **kw))  # type: ignore[arg-type]


def test_implements_the_broker_protocol(broker: SimulatedBroker) -> None:
    assert isinstance(broker, Broker)
    assert broker.ping() == "simulator"


def test_order_ids_use_the_clock_date_and_a_counter(broker: SimulatedBroker) -> None:
    first, second = place(broker), place(broker, "SELL")
    assert first == "250130000000001" and second == "250130000000002"


# -- MARKET ----------------------------------------------------------------------------------


def test_market_buys_at_the_ask_and_sells_at_the_bid(broker: SimulatedBroker) -> None:
    buy, sell = place(broker, "BUY"), place(broker, "SELL")
    assert status(broker, buy).status == "complete"
    assert status(broker, buy).average_price == 100.1
    assert status(broker, sell).average_price == 99.9
    assert status(broker, sell).filled_quantity == LOT


def test_market_fills_at_ltp_without_bid_and_ask(clock: VirtualClock) -> None:
    b = make_broker(clock)
    b.on_tick(tick(87.5))
    assert status(b, place(b)).average_price == 87.5


def test_market_order_without_any_price_is_rejected(clock: VirtualClock) -> None:
    b = make_broker(clock)
    with pytest.raises(RejectedError, match="No market price"):
        place(b)
    assert b.orderbook() == []


# -- LIMIT -----------------------------------------------------------------------------------


def test_marketable_limit_fills_at_ltp_at_placement(broker: SimulatedBroker) -> None:
    buy = place(broker, "BUY", pricetype="LIMIT", price=105.0)
    sell = place(broker, "SELL", pricetype="LIMIT", price=95.0)
    assert (status(broker, buy).status, status(broker, buy).average_price) == ("complete", 100.0)
    assert status(broker, sell).average_price == 100.0


def test_resting_limit_fills_at_its_limit_once_ltp_crosses(clock: VirtualClock,
                                                          broker: SimulatedBroker) -> None:
    oid = place(broker, "BUY", pricetype="LIMIT", price=95.0)
    assert status(broker, oid).status == "open"
    at(clock, broker, 1, 96.0)
    assert status(broker, oid).status == "open"
    at(clock, broker, 2, 93.0)
    row = status(broker, oid)
    assert (row.status, row.average_price, row.filled_quantity) == ("complete", 95.0, LOT)


# -- SL / SL-M ---------------------------------------------------------------------------------


def test_sl_triggers_and_fills_at_ltp_within_its_limit(clock: VirtualClock,
                                                       broker: SimulatedBroker) -> None:
    oid = place(broker, "BUY", pricetype="SL", price=106.0, trigger=105.0)
    assert status(broker, oid).status == "trigger pending"
    at(clock, broker, 1, 104.95)
    assert status(broker, oid).status == "trigger pending"
    at(clock, broker, 2, 105.5)
    row = status(broker, oid)
    assert (row.status, row.average_price) == ("complete", 105.5)


def test_sl_gapping_through_its_limit_rests_open_at_the_limit(clock: VirtualClock,
                                                             broker: SimulatedBroker) -> None:
    oid = place(broker, "SELL", pricetype="SL", price=94.0, trigger=95.0)
    at(clock, broker, 1, 90.0)  # gaps through trigger AND limit
    row = status(broker, oid)
    assert (row.status, row.filled_quantity) == ("open", 0)
    at(clock, broker, 2, 93.5)  # still below the SELL limit: no fill
    assert status(broker, oid).filled_quantity == 0
    at(clock, broker, 3, 94.5)  # comes back above the limit: fills AT the limit
    row = status(broker, oid)
    assert (row.status, row.average_price) == ("complete", 94.0)


def test_sl_that_never_comes_back_stays_open(clock: VirtualClock,
                                             broker: SimulatedBroker) -> None:
    oid = place(broker, "BUY", pricetype="SL", price=101.0, trigger=100.5)
    for i, ltp in enumerate((103.0, 104.0, 102.0), start=1):
        at(clock, broker, i, ltp)
    assert (status(broker, oid).status, status(broker, oid).filled_quantity) == ("open", 0)


def test_slm_fills_at_ltp_on_trigger(clock: VirtualClock, broker: SimulatedBroker) -> None:
    oid = place(broker, "SELL", pricetype="SL-M", trigger=98.0)
    at(clock, broker, 1, 98.5)
    assert status(broker, oid).status == "trigger pending"
    at(clock, broker, 2, 97.2, bid=97.0, ask=97.4)
    row = status(broker, oid)
    assert (row.status, row.average_price, row.price) == ("complete", 97.2, 0.0)


def test_sl_waits_for_a_tick_even_if_already_through_its_trigger(
        clock: VirtualClock, broker: SimulatedBroker) -> None:
    oid = place(broker, "SELL", pricetype="SL-M", trigger=101.0)  # LTP 100 is already below
    assert status(broker, oid).status == "trigger pending"
    at(clock, broker, 1, 100.0)
    assert status(broker, oid).status == "complete"


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [1, 64, 100, 66])
def test_quantity_must_be_a_lot_multiple(broker: SimulatedBroker, qty: int) -> None:
    with pytest.raises(RejectedError, match="multiple of the lot size 65"):
        place(broker, qty=qty)


def test_freeze_quantity_is_enforced(broker: SimulatedBroker) -> None:
    with pytest.raises(RejectedError, match="freeze quantity 1800"):
        place(broker, qty=28 * LOT)  # 1820
    assert status(broker, place(broker, qty=27 * LOT)).filled_quantity == 1755


def test_freeze_quantity_can_be_disabled(clock: VirtualClock) -> None:
    b = make_broker(clock, enforce_freeze_quantity=False)
    b.on_tick(tick(100.0))
    assert status(b, place(b, qty=40 * LOT)).filled_quantity == 40 * LOT


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pricetype": "LIMIT", "price": 0.0}, "needs a price"),
    ({"pricetype": "LIMIT", "price": 100.03}, "tick size"),
    ({"pricetype": "SL", "price": 100.0, "trigger": 0.0}, "needs a trigger_price"),
    ({"pricetype": "SL-M", "trigger": 100.02}, "tick size"),
    ({"pricetype": "SL", "price": 99.0, "trigger": 100.0}, "below its trigger"),
    ({"action": "SELL", "pricetype": "SL", "price": 101.0, "trigger": 100.0}, "above its trigger"),
    ({"pricetype": "STOP"}, "Invalid pricetype"),
    ({"action": "HOLD"}, "Invalid action"),
    ({"symbol": "NIFTY30JAN2599999CE"}, "not found"),
])
def test_invalid_orders_are_rejected_with_a_reason(broker: SimulatedBroker, kwargs: dict,
                                                   message: str) -> None:
    with pytest.raises(RejectedError, match=message):
        place(broker, **kwargs)
    assert broker.orderbook() == []


def test_index_cannot_be_traded(broker: SimulatedBroker) -> None:
    broker.on_tick(tick(24000.0, symbol="NIFTY", exchange="NSE_INDEX"))
    with pytest.raises(RejectedError, match="index"):
        broker.place_order(strategy="s1", symbol="NIFTY", exchange="NSE_INDEX", action="BUY",
                           quantity=LOT)


# -- options: partial fills, latency, rejections ---------------------------------------------------


def test_partial_fills_in_chunks_per_tick(clock: VirtualClock) -> None:
    b = make_broker(clock, partial_fill_lots=2)
    b.on_tick(tick(100.0, bid=99.9, ask=100.1))
    oid = place(b, qty=5 * LOT)
    row = status(b, oid)
    assert (row.status, row.filled_quantity, row.average_price) == ("open", 2 * LOT, 100.1)
    at(clock, b, 1, 101.0, bid=100.9, ask=101.1)
    assert status(b, oid).filled_quantity == 4 * LOT
    at(clock, b, 2, 102.0, bid=101.9, ask=102.1)
    row = status(b, oid)
    assert (row.status, row.filled_quantity) == ("complete", 5 * LOT)
    assert row.average_price == round((2 * 100.1 + 2 * 101.1 + 102.1) / 5, 2)
    assert [t.quantity for t in b.tradebook()] == [2 * LOT, 2 * LOT, LOT]
    assert b.open_position(strategy="s1", symbol=SYM, exchange="NFO", product="MIS") == 5 * LOT


def test_partially_filled_order_can_be_cancelled(clock: VirtualClock) -> None:
    b = make_broker(clock, partial_fill_lots=1)
    b.on_tick(tick(100.0))
    oid = place(b, qty=3 * LOT)
    b.cancel_order(strategy="s1", orderid=oid)
    row = status(b, oid)
    assert (row.status, row.filled_quantity) == ("cancelled", LOT)


def test_latency_delays_activation_in_clock_time(clock: VirtualClock) -> None:
    b = make_broker(clock, latency_s=2.0)
    b.on_tick(tick(100.0, bid=99.9, ask=100.1))
    oid = place(b)
    at(clock, b, 1, 101.0, bid=100.9, ask=101.1)
    assert (status(b, oid).status, status(b, oid).filled_quantity) == ("open", 0)
    clock.advance_to(T0 + 2)  # the activation timer fires at the due time, no tick needed
    row = status(b, oid)
    assert (row.status, row.average_price) == ("complete", 101.1)


def test_order_cancelled_during_latency_never_fills(clock: VirtualClock) -> None:
    b = make_broker(clock, latency_s=1.0)
    b.on_tick(tick(100.0))
    oid = place(b)
    b.cancel_order(strategy="s1", orderid=oid)
    at(clock, b, 2, 100.0)
    assert (status(b, oid).status, b.tradebook()) == ("cancelled", [])


def test_rejection_rate_is_seeded_and_reproducible(clock: VirtualClock) -> None:
    def statuses(seed: int) -> list[str]:
        b = make_broker(clock, rejection_rate=0.5, seed=seed)
        b.on_tick(tick(100.0))
        return [status(b, place(b)).status for _ in range(30)]

    first = statuses(11)
    assert first == statuses(11)
    assert first != statuses(12)
    assert 5 < first.count("rejected") < 25
    assert set(first) == {"rejected", "complete"}


def test_forced_rejection_gets_an_id_and_a_reason(broker: SimulatedBroker) -> None:
    broker.force_rejections(1, "Margin shortfall")
    rejected, accepted = place(broker), place(broker)
    row = status(broker, rejected)
    assert (row.status, row.rejection_reason) == ("rejected", "Margin shortfall")
    assert row.filled_quantity == 0
    assert status(broker, accepted).status == "complete"


# -- cancel / modify -----------------------------------------------------------------------------


def test_cancel_rules(broker: SimulatedBroker) -> None:
    resting = place(broker, pricetype="LIMIT", price=90.0)
    assert broker.cancel_order(strategy="s1", orderid=resting) == resting
    assert status(broker, resting).status == "cancelled"
    with pytest.raises(RejectedError, match="already cancelled"):
        broker.cancel_order(strategy="s1", orderid=resting)
    done = place(broker)
    with pytest.raises(RejectedError, match="already complete"):
        broker.cancel_order(strategy="s1", orderid=done)
    with pytest.raises(OrderNotFound, match="Order 42 not found"):
        broker.cancel_order(strategy="s1", orderid="42")
    with pytest.raises(OrderNotFound):
        broker.order_status(strategy="s1", orderid="42")


def modify(b: SimulatedBroker, oid: str, **kw: object) -> str:
    args: dict = {"strategy": "s1", "orderid": oid, "symbol": SYM, "exchange": "NFO",
                  "action": "BUY", "quantity": LOT, "pricetype": "LIMIT", "product": "MIS",
                  "price": 90.0, "trigger_price": 0.0}
    args.update(kw)
    return b.modify_order(**args)


def test_modify_rules(broker: SimulatedBroker) -> None:
    oid = place(broker, pricetype="LIMIT", price=90.0)
    modify(broker, oid, price=91.0, quantity=2 * LOT)
    row = status(broker, oid)
    assert (row.price, row.quantity, row.status) == (91.0, 2 * LOT, "open")
    modify(broker, oid, price=101.0, quantity=2 * LOT)  # now marketable: fills at LTP
    row = status(broker, oid)
    assert (row.status, row.average_price) == ("complete", 100.0)
    with pytest.raises(RejectedError, match="cannot be modified"):
        modify(broker, oid)
    other = place(broker, pricetype="LIMIT", price=90.0)
    with pytest.raises(RejectedError, match="cannot be modified"):
        modify(broker, other, symbol=PE)
    with pytest.raises(RejectedError, match="lot size"):
        modify(broker, other, quantity=70)
    with pytest.raises(OrderNotFound):
        modify(broker, "999")


def test_modify_sl_trigger_keeps_it_pending(clock: VirtualClock, broker: SimulatedBroker) -> None:
    oid = place(broker, "SELL", pricetype="SL", price=94.0, trigger=95.0)
    modify(broker, oid, action="SELL", pricetype="SL", price=96.0, trigger_price=97.0)
    assert status(broker, oid).status == "trigger pending"
    at(clock, broker, 1, 96.5)
    assert (status(broker, oid).status, status(broker, oid).average_price) == ("complete", 96.5)


def test_cancel_all_cancels_open_and_pending_orders(broker: SimulatedBroker) -> None:
    a = place(broker, pricetype="LIMIT", price=90.0)
    c = place(broker, "SELL", pricetype="SL-M", trigger=95.0)
    done = place(broker)
    result = broker.cancel_all_orders(strategy="s1")
    assert set(result.cancelled) == {a, c} and result.failed == ()
    assert status(broker, done).status == "complete"
    assert {status(broker, a).status, status(broker, c).status} == {"cancelled"}


# -- positions, P&L, funds -------------------------------------------------------------------------


def test_long_round_trip_realizes_pnl_and_keeps_the_closed_position(
        clock: VirtualClock, broker: SimulatedBroker) -> None:
    place(broker, qty=2 * LOT)  # 130 @ 100.10
    at(clock, broker, 1, 110.0, bid=109.9, ask=110.1)
    pos = broker.positionbook()[0]
    assert (pos.quantity, pos.average_price, pos.ltp) == (2 * LOT, 100.1, 110.0)
    assert pos.pnl == pytest.approx(2 * LOT * (110.0 - 100.1))
    place(broker, "SELL", qty=LOT)  # 65 @ 109.90
    funds = broker.funds()
    assert funds.m2mrealized == pytest.approx(LOT * (109.9 - 100.1))
    assert funds.m2munrealized == pytest.approx(LOT * (110.0 - 100.1))
    assert funds.utiliseddebits == pytest.approx(LOT * 100.1)
    assert funds.availablecash == pytest.approx(1_000_000 + LOT * (109.9 - 100.1) - LOT * 100.1)
    assert broker.close_position(strategy="s1") == "All Open Positions SquaredOff"
    pos = broker.positionbook()[0]
    assert (pos.quantity, pos.average_price) == (0, 0.0)
    assert pos.pnl == pytest.approx(2 * LOT * 109.9 - 2 * LOT * 100.1)
    assert broker.funds().m2munrealized == 0.0


def test_short_position_and_flip_through_zero(clock: VirtualClock,
                                             broker: SimulatedBroker) -> None:
    place(broker, "SELL", qty=LOT)  # short 65 @ 99.90
    at(clock, broker, 1, 90.0, bid=89.9, ask=90.1)
    assert broker.positionbook()[0].pnl == pytest.approx(LOT * (99.9 - 90.0))
    place(broker, "BUY", qty=3 * LOT)  # covers 65 @ 90.10, then long 130 @ 90.10
    pos = broker.positionbook()[0]
    assert (pos.quantity, pos.average_price) == (2 * LOT, 90.1)
    assert broker.funds().m2mrealized == pytest.approx(LOT * (99.9 - 90.1))


def test_close_position_splits_by_freeze_quantity(clock: VirtualClock) -> None:
    b = make_broker(clock)
    b.on_tick(tick(100.0))
    for _ in range(2):
        place(b, qty=27 * LOT)
    b.close_position(strategy="s1")
    sells = [o for o in b.orderbook() if o.action == "SELL"]
    assert [o.quantity for o in sells] == [27 * LOT, 27 * LOT]
    assert b.positionbook()[0].quantity == 0


def test_positions_are_per_product(broker: SimulatedBroker) -> None:
    broker.place_order(strategy="s1", symbol=SYM, exchange="NFO", action="BUY", quantity=LOT,
                       product="NRML")
    place(broker, "SELL")
    assert broker.open_position(strategy="x", symbol=SYM, exchange="NFO", product="NRML") == LOT
    assert broker.open_position(strategy="x", symbol=SYM, exchange="NFO", product="MIS") == -LOT


def test_smart_order_moves_to_the_target_position(broker: SimulatedBroker) -> None:
    def smart(target: int, action: str = "BUY", qty: int = LOT) -> str | None:
        return broker.place_smart_order(strategy="s1", symbol=SYM, exchange="NFO",
                                        action=action, quantity=qty, position_size=target)

    def position() -> int:
        return broker.open_position(strategy="s1", symbol=SYM, exchange="NFO", product="MIS")

    assert smart(2 * LOT) is not None and position() == 2 * LOT
    assert smart(2 * LOT) is None
    smart(-LOT)
    assert position() == -LOT
    assert status(broker, broker.orderbook()[-1].orderid).quantity == 3 * LOT
    smart(0)
    assert position() == 0
    smart(0, "SELL", LOT)  # OpenAlgo: target 0 and flat places the requested order
    assert position() == -LOT


# -- market data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf])
def test_invalid_prices_never_move_prices_or_trigger(clock: VirtualClock,
                                                     broker: SimulatedBroker, bad: float) -> None:
    stop = place(broker, "SELL", pricetype="SL-M", trigger=95.0)
    limit = place(broker, "BUY", pricetype="LIMIT", price=95.0)
    at(clock, broker, 1, bad, bid=1.0, ask=2.0, volume=99999)
    quote = broker.quotes(symbol=SYM, exchange="NFO")
    assert (quote.ltp, quote.bid, quote.ask, quote.volume, quote.low) == (100.0, 99.9, 100.1,
                                                                          1000, 100.0)
    assert status(broker, stop).status == "trigger pending"
    assert status(broker, limit).status == "open"


def test_quotes_track_the_session(clock: VirtualClock, broker: SimulatedBroker) -> None:
    at(clock, broker, 1, 104.0, volume=1200, oi=5000)
    at(clock, broker, 2, 97.0, volume=1300)
    q = broker.quotes(symbol=SYM, exchange="NFO")
    assert (q.open, q.high, q.low, q.ltp, q.prev_close, q.volume, q.oi) == (
        100.0, 104.0, 97.0, 97.0, 100.0, 1300, 5000)
    with pytest.raises(RejectedError, match="not found"):
        broker.quotes(symbol="NOPE", exchange="NFO")


def test_depth_has_five_levels_around_bid_and_ask(broker: SimulatedBroker) -> None:
    d = broker.depth(symbol=SYM, exchange="NFO")
    assert [lv.price for lv in d.bids] == [99.9, 99.85, 99.8, 99.75, 99.7]
    assert [lv.price for lv in d.asks] == [100.1, 100.15, 100.2, 100.25, 100.3]
    assert [lv.quantity for lv in d.bids] == [650 * k for k in range(1, 6)]
    assert d.ltp == 100.0 and d.volume == 1000


def test_depth_without_any_price_is_empty(clock: VirtualClock) -> None:
    d = make_broker(clock).depth(symbol=SYM, exchange="NFO")
    assert {(lv.price, lv.quantity) for lv in d.bids + d.asks} == {(0.0, 0)}


def test_history_rebases_on_a_feed_restart(clock: VirtualClock,
                                           broker: SimulatedBroker) -> None:
    # a cumulative volume far below the day's high mark is a feed restart: re-base, never
    # negative, and the volume after it counts again
    for sec, ltp, vol in [(10, 101.0, 1065), (20, 101.5, 1130), (30, 102.0, 40), (40, 102.5, 105)]:
        at(clock, broker, sec, ltp, volume=vol)
    (bar,) = broker.history(symbol=SYM, exchange="NFO", interval="1m", start_date="2025-01-30",
                            end_date="2025-01-30")
    assert bar.volume == 130 + 65


def test_history_builds_minute_bars_from_ticks(clock: VirtualClock,
                                               broker: SimulatedBroker) -> None:
    # T0 = 09:20:00 with cumulative volume 1000 (the base)
    for sec, ltp, vol in [(10, 101.0, 1065), (50, 99.0, 1130), (65, 102.0, 1300),
                          (70, 103.0, 1200),  # an earlier report arriving late: nothing traded
                          (130, 98.0, 1265),  # still below the high mark: nothing traded
                          (400, 97.0, 1400)]:
        at(clock, broker, sec, ltp, volume=vol)
    bars = broker.history(symbol=SYM, exchange="NFO", interval="1m", start_date="2025-01-30",
                          end_date="2025-01-30")
    assert [b.timestamp for b in bars] == [T0, T0 + 60, T0 + 120, T0 + 360]
    assert bars[0] == HistoryBar(T0, 100.0, 101.0, 99.0, 99.0, 130, 0)
    assert (bars[1].open, bars[1].high, bars[1].close, bars[1].volume) == (102.0, 103.0, 103.0, 170)
    assert all(b.volume >= 0 for b in bars)
    five = broker.history(symbol=SYM, exchange="NFO", interval="5m", start_date="2025-01-30",
                          end_date="2025-01-30")
    assert [b.timestamp for b in five] == [T0, T0 + 300]
    assert (five[0].high, five[0].low, five[0].volume) == (103.0, 98.0, 130 + 170)
    day = broker.history(symbol=SYM, exchange="NFO", interval="D", start_date="2025-01-30",
                         end_date="2025-01-30")
    assert len(day) == 1 and day[0].timestamp == ist_epoch(2025, 1, 30)
    assert broker.history(symbol=SYM, exchange="NFO", interval="1m", start_date="2025-01-31",
                          end_date="2025-01-31") == []


def test_minute_bars_follow_late_ticks_other_symbols_and_a_seeded_minute(
        broker: SimulatedBroker) -> None:
    def minutes(symbol: str) -> list[tuple[float, float, float, float, float, int]]:
        return [(b.timestamp, b.open, b.high, b.low, b.close, b.volume) for b in broker.history(
            symbol=symbol, exchange="NFO", interval="1m", start_date="2025-01-30",
            end_date="2025-01-30")]

    late = Tick(SYM, "NFO", 97.0, T0 + 131, exchange_ts=T0 + 70, volume=1130)  # minute 1, late
    broker.apply_ticks([tick(100.0, T0 + 10, volume=1000), tick(50.0, T0 + 20, symbol=PE),
                        tick(101.0, T0 + 130, volume=1065), late,
                        tick(102.0, T0 + 140, volume=1300), tick(51.0, T0 + 141, symbol=PE)])
    assert minutes(SYM) == [(T0, 100.0, 100.0, 100.0, 100.0, 0),
                            (T0 + 60, 97.0, 97.0, 97.0, 97.0, 65),
                            (T0 + 120, 101.0, 102.0, 101.0, 102.0, 65 + 170)]
    assert minutes(PE) == [(T0, 50.0, 50.0, 50.0, 50.0, 0), (T0 + 120, 51.0, 51.0, 51.0, 51.0, 0)]
    # a seeded minute replaces the one in progress: the next tick adds to the seeded bar
    broker.seed_history(SYM, "NFO", [HistoryBar(T0 + 120, 90.0, 95.0, 89.0, 94.0, 650)])
    broker.apply_ticks([tick(96.0, T0 + 150, volume=1365)])
    assert minutes(SYM)[-1] == (T0 + 120, 90.0, 96.0, 89.0, 96.0, 650 + 65)


def test_history_can_be_preseeded_and_rejects_bad_input(broker: SimulatedBroker) -> None:
    day_before = ist_epoch(2025, 1, 29, 15, 29)
    broker.seed_history(PE, "NFO", [HistoryBar(day_before, 50.0, 52.0, 49.0, 51.0, 650)])
    bars = broker.history(symbol=PE, exchange="NFO", interval="1m", start_date="2025-01-29",
                          end_date="2025-01-30")
    assert bars == [HistoryBar(day_before, 50.0, 52.0, 49.0, 51.0, 650)]
    assert broker.quotes(symbol=PE, exchange="NFO").prev_close == 51.0
    with pytest.raises(RejectedError, match="Invalid interval"):
        broker.history(symbol=SYM, exchange="NFO", interval="7m", start_date="2025-01-30",
                       end_date="2025-01-30")
    with pytest.raises(RejectedError, match="YYYY-MM-DD"):
        broker.history(symbol=SYM, exchange="NFO", interval="1m", start_date="30-01-2025",
                       end_date="2025-01-30")


def test_a_new_day_rolls_the_session(clock: VirtualClock, broker: SimulatedBroker) -> None:
    next_day = ist_epoch(2025, 1, 31, 9, 15)
    clock.advance_to(next_day)
    broker.on_tick(tick(90.0, next_day, volume=65))
    q = broker.quotes(symbol=SYM, exchange="NFO")
    assert (q.prev_close, q.open, q.high, q.low, q.volume) == (100.0, 90.0, 90.0, 90.0, 65)


def test_one_batch_across_midnight_rolls_the_session_once(broker: SimulatedBroker) -> None:
    # apply_ticks keeps the day of the ticks it has seen: a batch that crosses midnight IST
    # (both symbols, back and forth) still rolls each symbol's session on its first tick of a day
    midnight = ist_epoch(2025, 1, 31)
    broker.apply_ticks([tick(101.0, midnight - 1.0, volume=1065),
                        tick(50.0, midnight - 0.5, symbol=PE, volume=10),
                        tick(90.0, midnight, volume=65),
                        tick(91.0, midnight + 1.0, volume=130),
                        tick(49.0, midnight + 2.0, symbol=PE, volume=20)])
    q = broker.quotes(symbol=SYM, exchange="NFO")
    assert (q.prev_close, q.open, q.high, q.low, q.ltp, q.volume) == (101.0, 90.0, 91.0, 90.0,
                                                                       91.0, 130)
    p = broker.quotes(symbol=PE, exchange="NFO")
    assert (p.prev_close, p.open, p.high, p.low, p.volume) == (50.0, 49.0, 49.0, 49.0, 20)


def test_the_orderbook_keeps_finished_rows_and_rebuilds_working_ones(
        clock: VirtualClock, broker: SimulatedBroker) -> None:
    filled = place(broker)
    cancelled = place(broker, "BUY", pricetype="LIMIT", price=90.0)
    broker.cancel_order(strategy="s1", orderid=cancelled)
    stop = place(broker, "SELL", pricetype="SL", price=94.0, trigger=95.0)
    first = {r.orderid: r for r in broker.raw_orderbook()}
    at(clock, broker, 1, 94.5)  # the stop triggers and fills at the LTP
    again = {r.orderid: r for r in broker.raw_orderbook()}
    assert again[filled] is first[filled] and again[cancelled] is first[cancelled]
    assert (first[stop].status, again[stop].status) == ("trigger pending", "complete")
    assert again[stop].average_price == 94.5
    # every kept row is what the order shows now
    assert broker.raw_orderbook() == [broker._new_row(o) for o in broker._orders.values()]


# -- listeners and threads -----------------------------------------------------------------------


def test_listener_sees_every_state_change_in_order(clock: VirtualClock,
                                                  broker: SimulatedBroker) -> None:
    seen: list[tuple[str, str, int]] = []
    broker.add_order_listener(lambda r: seen.append((r.orderid, r.status, r.filled_quantity)))
    oid = place(broker, "SELL", pricetype="SL", price=94.0, trigger=95.0)
    at(clock, broker, 1, 90.0)
    at(clock, broker, 2, 94.0)
    assert seen == [(oid, "trigger pending", 0), (oid, "open", 0), (oid, "complete", LOT)]


def test_a_failing_listener_does_not_break_matching(broker: SimulatedBroker) -> None:
    def boom(row: OrderRow) -> None:
        raise RuntimeError("listener bug")

    broker.add_order_listener(boom)
    assert status(broker, place(broker)).status == "complete"


def test_concurrent_orders_and_ticks_stay_consistent(clock: VirtualClock,
                                                     broker: SimulatedBroker) -> None:
    errors: list[BaseException] = []

    def trader(action: str) -> None:
        try:
            for _ in range(50):
                place(broker, action)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def feed() -> None:
        for i in range(500):
            broker.on_tick(tick(100.0 + (i % 7) * 0.05, T0, bid=99.9, ask=100.1))

    threads = [threading.Thread(target=trader, args=(a,)) for a in ("BUY", "SELL", "BUY")]
    threads.append(threading.Thread(target=feed))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(broker.orderbook()) == 150
    assert len({o.orderid for o in broker.orderbook()}) == 150
    assert broker.open_position(strategy="s1", symbol=SYM, exchange="NFO",
                                product="MIS") == 50 * LOT


def test_a_resting_order_shows_open_once_its_placement_lands(clock: VirtualClock) -> None:
    """Zerodha shows ``open pending`` while a placement travels; once the order is active and
    rests unfilled its raw row says ``open``, however often the book was read before (the
    row a read builds is reused only while nothing it shows has changed)."""
    b = make_broker(clock, broker="zerodha", latency_s=1.0)
    b.on_tick(tick(100.0, bid=99.9, ask=100.1))
    oid = place(b, pricetype="LIMIT", price=90.0)
    assert b.raw_orderbook()[0].status == "open pending"
    clock.advance_to(T0 + 2)  # the placement lands; the limit rests below the market
    (row,) = b.raw_orderbook()
    assert (row.orderid, row.status, row.filled_quantity) == (oid, "open", 0)
