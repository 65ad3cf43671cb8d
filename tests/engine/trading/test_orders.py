"""The order state machine and bookkeeping (engine/trading/orders.py): the transition table,
broker status
mapping and reports, intent validation, freeze splits, fills applied once, split parents,
matching an unknown placement, and recovery from stored rows."""

from __future__ import annotations

import io
import itertools
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loguru import logger

from engine.broker import OrderRow, PositionRow, TradeRow
from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    BrokerOrderUpdate,
    Fill,
    OrderEvent,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    PriceType,
    Product,
)
from engine.runtime.clock import ist_epoch
from engine.sim.matching import fmt_timestamp
from engine.store.database import StoredOrder
from engine.trading.orders import (
    AT_BROKER,
    TRANSITIONS,
    BadBrokerReport,
    InvalidIntent,
    OrderBook,
    TrackedOrder,
    TransitionRefused,
    broker_timestamp,
    check_transition,
    derive_parent_status,
    engine_status,
    max_child_quantity,
    split_quantity,
    uncovered_reason,
    update_from_frame,
    update_from_row,
    updates_from_rows,
    validate_intent,
)

S = OrderStatus
T0 = ist_epoch(2025, 1, 30, 9, 20)
CE = "NIFTY30JAN2524000CE"
SPEC = InstrumentSpec()
ACCOUNT = "acct"


def intent(client_id: str = "s-250130-00001", *, quantity: int = 65,
           pricetype: PriceType = PriceType.LIMIT, price: float = 100.0,
           trigger_price: float = 0.0, action: Action = Action.BUY,
           purpose: OrderPurpose = OrderPurpose.ENTRY, **kw: object) -> OrderIntent:
    return OrderIntent(client_id=client_id, strategy="s", account=ACCOUNT, symbol=CE,
                       exchange="NFO", action=action, quantity=quantity, pricetype=pricetype,
                       price=price, trigger_price=trigger_price, purpose=purpose,
                       created_ts=T0, **kw)  # type: ignore[arg-type]


def report(orderid: str, status: str, filled: int = 0, average: float = 0.0, *,
           quantity: int = 65, ts: float = T0 + 1, source: str = "stream") -> BrokerOrderUpdate:
    return BrokerOrderUpdate(orderid=orderid, symbol=CE, exchange="NFO", action="BUY",
                             quantity=quantity, status=status, filled_quantity=filled,
                             average_price=average, ts=ts, source=source)


def row(orderid: str, *, quantity: int = 65, price: float = 100.0, pricetype: str = "LIMIT",
        action: str = "BUY", placed: float = T0 + 1, status: str = "open",
        strategy: str = "", trigger_price: float = 0.0, symbol: str = CE) -> OrderRow:
    return OrderRow(orderid=orderid, symbol=symbol, exchange="NFO", action=action,
                    quantity=quantity, price=price, trigger_price=trigger_price,
                    pricetype=pricetype, product="MIS", status=status,
                    timestamp=fmt_timestamp(placed), strategy=strategy)


def placed_book(i: OrderIntent | None = None, orderid: str = "B1") -> tuple[OrderBook,
                                                                              TrackedOrder]:
    book = OrderBook(ACCOUNT, SPEC)
    [order] = book.plan(i or intent())
    book.add([order])
    book.placed(order, orderid, T0)
    return book, order


def fills(msgs: list[OrderEvent | Fill]) -> list[Fill]:
    return [m for m in msgs if isinstance(m, Fill)]


def events(msgs: list[OrderEvent | Fill]) -> list[OrderEvent]:
    return [m for m in msgs if isinstance(m, OrderEvent)]


# ---------------------------------------------------------------------------------------------
# The transition table
# ---------------------------------------------------------------------------------------------

LEGAL = sorted((a, b) for a, targets in TRANSITIONS.items() for b in targets)
ILLEGAL = sorted((a, b) for a, b in itertools.product(OrderStatus, OrderStatus)
                 if a is not b and b not in TRANSITIONS[a])


def test_the_table_names_every_state_and_terminal_states_are_final() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    for status in OrderStatus:
        assert (TRANSITIONS[status] == frozenset()) == status.is_terminal


def test_the_documented_path_and_the_legal_surprise_are_in_the_table() -> None:
    for a, b in [(S.SUBMITTING, S.OPEN), (S.SUBMITTING, S.TRIGGER_PENDING),
                 (S.OPEN, S.PARTIALLY_FILLED), (S.TRIGGER_PENDING, S.PARTIALLY_FILLED),
                 (S.PARTIALLY_FILLED, S.COMPLETE), (S.CANCEL_PENDING, S.COMPLETE),
                 (S.OPEN, S.CANCEL_PENDING), (S.CANCEL_PENDING, S.CANCELLED),
                 (S.SUBMITTING, S.UNKNOWN), (S.UNKNOWN, S.SUBMITTING), (S.UNKNOWN, S.OPEN)]:
        check_transition(a, b)


@pytest.mark.parametrize(("old", "new"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
def test_every_legal_transition_applies_and_emits_an_event(old: OrderStatus,
                                                           new: OrderStatus) -> None:
    book = OrderBook(ACCOUNT, SPEC)
    [order] = book.plan(intent())
    book.add([order])
    order.status = old
    msgs = book.transition(order, new, T0 + 5, "why")
    assert order.status is new
    [event] = events(msgs)
    assert (event.client_id, event.status, event.ts, event.reason) == (order.client_id, new,
                                                                       T0 + 5, "why")


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_every_illegal_transition_is_refused_logged_and_not_applied(old: OrderStatus,
                                                                   new: OrderStatus) -> None:
    with pytest.raises(TransitionRefused):
        check_transition(old, new)
    book = OrderBook(ACCOUNT, SPEC)
    [order] = book.plan(intent())
    book.add([order])
    order.status = old
    buf = io.StringIO()
    sink = logger.add(buf, level="WARNING")
    try:
        assert book.transition(order, new, T0, "surprise") == []
    finally:
        logger.remove(sink)
    assert order.status is old
    assert "refused" in buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Broker statuses and reports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("open", S.OPEN), ("trigger pending", S.TRIGGER_PENDING), ("complete", S.COMPLETE),
    ("rejected", S.REJECTED), ("cancelled", S.CANCELLED), ("expired", S.EXPIRED),
    ("Canceled", S.CANCELLED), (" OPEN ", S.OPEN)])
def test_openalgo_statuses_map_to_engine_states(text: str, expected: OrderStatus) -> None:
    assert engine_status(text, 0, 65) is expected


def test_open_with_part_filled_is_partially_filled_and_unknown_statuses_raise() -> None:
    assert engine_status("open", 65, 130) is S.PARTIALLY_FILLED
    assert engine_status("open", 130, 130) is S.OPEN
    assert engine_status("cancelled", 65, 130) is S.CANCELLED
    with pytest.raises(BadBrokerReport, match="validation pending"):
        engine_status("validation pending", 0, 65)


def test_order_update_frames_parse_numbers_given_as_strings() -> None:
    frame = {"type": "order_update", "orderid": 250130000000001, "symbol": CE,
             "exchange": "NFO", "action": "buy", "quantity": "130", "price": "100.5",
             "trigger_price": 0, "pricetype": "limit", "product": "MIS",
             "order_status": "Open", "filled_quantity": "65", "pending_quantity": "65",
             "average_price": "100.25", "rejection_reason": "", "mode": "live"}
    update = update_from_frame(frame, T0)
    assert update == BrokerOrderUpdate(
        orderid="250130000000001", symbol=CE, exchange="NFO", action="BUY", quantity=130,
        status="open", filled_quantity=65, average_price=100.25, ts=T0, price=100.5,
        trigger_price=0.0, pricetype="LIMIT", rejection_reason="", source="stream")


@pytest.mark.parametrize("broken", [
    {"orderid": None}, {"quantity": "lots"}, {"average_price": "nan"}, {"order_status": 7},
    {"order_status": "exploded"}])
def test_unreadable_order_update_frames_raise_a_typed_error(broken: dict[str, object]) -> None:
    frame: dict[str, object] = {"orderid": "1", "symbol": CE, "exchange": "NFO",
                                "action": "BUY", "quantity": 65, "order_status": "open"}
    with pytest.raises(BadBrokerReport):
        update_from_frame(frame | broken, T0)


def test_rows_become_reports_with_their_source() -> None:
    r = replace(row("B9", status="complete"), filled_quantity=65, average_price=99.5,
                rejection_reason="")
    update = update_from_row(r, T0 + 3, "poll")
    assert (update.orderid, update.status, update.filled_quantity, update.average_price,
            update.ts, update.source, update.pricetype) == ("B9", "complete", 65, 99.5, T0 + 3,
                                                            "poll", "LIMIT")


def test_broker_timestamps_are_ist_wall_time() -> None:
    assert broker_timestamp("30-Jan-2025 09:20:00") == T0
    assert broker_timestamp("2025-01-30 09:20:00") == T0
    assert broker_timestamp(fmt_timestamp(T0 + 61)) == T0 + 61
    assert broker_timestamp("") is None
    assert broker_timestamp("yesterday") is None


# ---------------------------------------------------------------------------------------------
# Intents
# ---------------------------------------------------------------------------------------------


def test_a_valid_intent_is_normalised() -> None:
    raw = replace(intent(), action="SELL", pricetype="LIMIT", product="NRML",  # type: ignore
                  purpose="exit", price=100)  # type: ignore[arg-type]
    good = validate_intent(raw, account=ACCOUNT, instrument=SPEC)
    assert (good.action, good.pricetype, good.product, good.purpose) == (
        Action.SELL, PriceType.LIMIT, Product.NRML, OrderPurpose.EXIT)
    assert isinstance(good.price, float)


@pytest.mark.parametrize(("changes", "problem"), [
    ({"quantity": 100}, "not a multiple of the lot size 65"),
    ({"quantity": 0}, "positive whole number"),
    ({"quantity": -65}, "positive whole number"),
    ({"quantity": 65.0}, "positive whole number"),
    ({"price": 100.03}, "not on the tick size"),
    ({"price": float("nan")}, "finite non-negative"),
    ({"price": "100"}, "finite non-negative"),
    ({"trigger_price": -1.0}, "finite non-negative"),
    ({"price": 0.0}, "needs a price above 0"),
    ({"pricetype": PriceType.SL_M, "trigger_price": 0.0}, "needs a trigger price"),
    ({"pricetype": PriceType.SL, "price": 99.0, "trigger_price": 100.0}, "below its trigger"),
    ({"pricetype": PriceType.SL, "action": Action.SELL, "price": 101.0,
      "trigger_price": 100.0}, "above its trigger"),
    ({"purpose": "hedge"}, "unknown purpose 'hedge'"),
    ({"action": "HOLD"}, "unknown action"),
    ({"pricetype": "STOP"}, "unknown pricetype"),
    ({"product": "XYZ"}, "unknown product"),
    ({"account": "other"}, "not this order manager's"),
    ({"client_id": " "}, "client_id is empty"),
    ({"strategy": ""}, "strategy is empty"),
])
def test_invalid_intents_are_refused_with_the_reason(changes: dict[str, object],
                                                     problem: str) -> None:
    with pytest.raises(InvalidIntent, match=problem):
        validate_intent(replace(intent(), **changes), account=ACCOUNT,  # type: ignore[arg-type]
                        instrument=SPEC)


def test_every_problem_is_listed_at_once() -> None:
    bad = replace(intent(), quantity=100, price=100.01)
    with pytest.raises(InvalidIntent) as exc:
        validate_intent(bad, account=ACCOUNT, instrument=SPEC)
    assert "lot size" in str(exc.value) and "tick" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Freeze quantity
# ---------------------------------------------------------------------------------------------


def test_split_sizes() -> None:
    assert max_child_quantity(SPEC) == 1755
    assert split_quantity(1755, SPEC) == [1755]
    assert split_quantity(1800, replace(SPEC, lot_size=75)) == [1800]
    assert split_quantity(1820, SPEC) == [1755, 65]
    assert split_quantity(3900, SPEC) == [1755, 1755, 390]


@given(lots=st.integers(min_value=1, max_value=400),
       lot=st.sampled_from([25, 50, 65, 75]), freeze=st.sampled_from([900, 1800, 1801]))
def test_split_parts_are_whole_lots_within_the_freeze_and_add_up(lots: int, lot: int,
                                                                 freeze: int) -> None:
    spec = replace(SPEC, lot_size=lot, freeze_quantity=freeze)
    parts = split_quantity(lots * lot, spec)
    assert sum(parts) == lots * lot
    assert all(0 < p <= freeze and p % lot == 0 for p in parts)


def test_a_large_intent_becomes_a_parent_and_numbered_children() -> None:
    book = OrderBook(ACCOUNT, SPEC)
    planned = book.plan(intent("P", quantity=3900))
    parent, *children = planned
    assert parent.is_parent and parent.children == ("P.1", "P.2", "P.3")
    assert [(c.client_id, c.intent.quantity, c.intent.parent_id, c.split_parent)
            for c in children] == [("P.1", 1755, "P", "P"), ("P.2", 1755, "P", "P"),
                                   ("P.3", 390, "P", "P")]
    book.add(planned)
    assert book.legs(parent) == children
    with pytest.raises(InvalidIntent, match="duplicate"):
        book.plan(intent("P"))
    with pytest.raises(InvalidIntent, match="duplicate"):
        book.plan(intent("P.2"))


def test_a_parent_reports_in_its_own_name_and_derives_its_state() -> None:
    book = OrderBook(ACCOUNT, SPEC)
    planned = book.plan(intent("P", quantity=1820))
    book.add(planned)
    parent, c1, c2 = planned
    msgs = book.placed(c1, "B1", T0)
    assert [(e.client_id, e.status) for e in events(msgs)] == [("P.1", S.OPEN), ("P", S.OPEN)]
    book.placed(c2, "B2", T0)
    msgs = book.apply_report(report("B1", "complete", 1755, 100.0, quantity=1755))
    assert msgs is not None
    [fill] = fills(msgs)
    assert (fill.client_id, fill.broker_order_id, fill.quantity,
            fill.cumulative_quantity) == ("P", "B1", 1755, 1755)
    assert [(e.client_id, e.status, e.filled_quantity) for e in events(msgs)] == [
        ("P.1", S.COMPLETE, 1755), ("P", S.PARTIALLY_FILLED, 1755)]
    msgs = book.apply_report(report("B2", "complete", 65, 101.0))
    assert msgs is not None
    assert events(msgs)[-1].client_id == "P" and parent.status is S.COMPLETE
    assert parent.filled == 1820
    assert parent.average_price == pytest.approx((1755 * 100 + 65 * 101) / 1820, abs=1e-4)


@pytest.mark.parametrize(("statuses", "filled", "expected"), [
    ([S.SUBMITTING, S.SUBMITTING], [0, 0], S.SUBMITTING),
    ([S.UNKNOWN, S.SUBMITTING], [0, 0], S.UNKNOWN),
    ([S.TRIGGER_PENDING, S.SUBMITTING], [0, 0], S.TRIGGER_PENDING),
    ([S.OPEN, S.TRIGGER_PENDING], [0, 0], S.OPEN),
    ([S.COMPLETE, S.OPEN], [65, 0], S.PARTIALLY_FILLED),
    ([S.CANCEL_PENDING, S.COMPLETE], [0, 65], S.CANCEL_PENDING),
    ([S.COMPLETE, S.COMPLETE], [65, 65], S.COMPLETE),
    ([S.COMPLETE, S.CANCELLED], [65, 0], S.CANCELLED),
    ([S.REJECTED, S.EXPIRED], [0, 0], S.EXPIRED),
    ([S.REJECTED, S.REJECTED], [0, 0], S.REJECTED),
])
def test_parent_state_derivation(statuses: list[OrderStatus], filled: list[int],
                                 expected: OrderStatus) -> None:
    kids = [TrackedOrder(intent(f"P.{n}"), status=s, filled=f)
            for n, (s, f) in enumerate(zip(statuses, filled, strict=True), start=1)]
    assert derive_parent_status(kids, 130) is expected


# ---------------------------------------------------------------------------------------------
# Reports and fills
# ---------------------------------------------------------------------------------------------


def test_placed_orders_start_open_or_trigger_pending() -> None:
    _, limit = placed_book()
    assert limit.status is S.OPEN and limit.broker_order_id == "B1"
    _, stop = placed_book(intent(pricetype=PriceType.SL_M, price=0.0, trigger_price=90.0))
    assert stop.status is S.TRIGGER_PENDING


def test_partial_fills_emit_the_new_quantity_once() -> None:
    book, order = placed_book(intent(quantity=195))
    first = book.apply_report(report("B1", "open", 65, 100.0, quantity=195))
    assert first is not None
    [f1] = fills(first)
    assert (f1.quantity, f1.cumulative_quantity, f1.price, f1.key) == (65, 65, 100.0,
                                                                      ("B1", 65))
    assert [e.status for e in events(first)] == [S.PARTIALLY_FILLED]
    again = book.apply_report(report("B1", "open", 65, 100.0, quantity=195, source="poll"))
    assert again == []
    second = book.apply_report(report("B1", "open", 130, 100.5, quantity=195))
    assert second is not None
    [f2] = fills(second)
    assert (f2.quantity, f2.cumulative_quantity, f2.price) == (65, 130, 101.0)
    [ev] = events(second)
    assert (ev.status, ev.filled_quantity) == (S.PARTIALLY_FILLED, 130)
    done = book.apply_report(report("B1", "complete", 195, 101.0, quantity=195))
    assert done is not None
    assert [f.quantity for f in fills(done)] == [65]
    assert order.status is S.COMPLETE and order.filled == 195


def test_stale_and_repeated_reports_change_nothing() -> None:
    book, order = placed_book()
    assert fills(book.apply_report(report("B1", "complete", 65, 100.0)) or [])
    assert book.apply_report(report("B1", "open", 0)) == []  # older than what we know
    assert book.apply_report(report("B1", "complete", 65, 100.0, source="poll")) == []
    assert order.status is S.COMPLETE and order.filled == 65
    assert book.apply_report(report("NOT-OURS", "complete", 65)) is None


def test_complete_without_a_filled_quantity_waits_for_the_tradebook() -> None:
    book, order = placed_book()
    assert book.apply_report(report("B1", "complete", 0, 100.0)) == []
    assert order.status is S.OPEN and order.filled == 0 and "B1" in book.claims
    trade = TradeRow("B1", CE, "NFO", "BUY", 65, 101.35, "MIS")
    msgs = book.apply_trades([trade], T0 + 1)
    assert [(f.quantity, f.price) for f in fills(msgs)] == [(65, 101.35)]
    assert order.status is S.COMPLETE and not book.claims


def test_a_fill_without_a_price_in_an_in_between_state_is_priced_and_keeps_the_state() -> None:
    book, order = placed_book()
    assert book.apply_report(report("B1", "modify pending", 65, 0.0)) == []
    msgs = book.apply_trades([TradeRow("B1", CE, "NFO", "BUY", 65, 99.5, "MIS")], T0 + 1)
    assert [(f.quantity, f.price) for f in fills(msgs)] == [(65, 99.5)]
    assert order.status is S.OPEN and order.filled == 65


def test_a_complete_the_tradebook_does_not_show_is_no_fill() -> None:
    book, order = placed_book()
    assert book.apply_report(report("B1", "complete", 0, 0.0)) == []
    assert book.apply_trades([], T0 + 1) == []
    assert order.status is S.OPEN and order.filled == 0
    assert book.apply_report(report("B1", "cancel pending", 0)) == []


def test_reports_of_more_than_the_quantity_or_unknown_status_are_ignored() -> None:
    book, order = placed_book()
    assert book.apply_report(report("B1", "complete", 130, 100.0)) == []
    assert book.apply_report(report("B1", "amo req received", 0)) == []
    assert order.status is S.OPEN and order.filled == 0


def test_a_fill_key_already_applied_is_not_emitted_again() -> None:
    book, order = placed_book()
    book.fill_keys.add(("B1", 65))
    msgs = book.apply_report(report("B1", "complete", 65, 100.0))
    assert msgs is not None
    assert fills(msgs) == [] and order.filled == 65 and order.status is S.COMPLETE


def test_while_a_cancel_is_pending_working_reports_keep_it_pending() -> None:
    book, order = placed_book(intent(quantity=130))
    book.begin_cancel(order, T0, "cancel")
    assert book.apply_report(report("B1", "open", 0, quantity=130)) == []
    assert order.status is S.CANCEL_PENDING
    msgs = book.apply_report(report("B1", "open", 65, 100.0, quantity=130))
    assert msgs is not None
    assert [f.quantity for f in fills(msgs)] == [65]
    assert [(e.status, e.filled_quantity) for e in events(msgs)] == [(S.CANCEL_PENDING, 65)]
    # refused or unconfirmed: back to the broker's working state
    book.cancel_failed(order, T0 + 2, "cancel refused")
    assert order.status is S.PARTIALLY_FILLED


def test_cancel_pending_then_complete_is_a_legal_surprise() -> None:
    book, order = placed_book()
    book.begin_cancel(order, T0, "cancel")
    msgs = book.apply_report(report("B1", "complete", 65, 100.0))
    assert msgs is not None
    assert len(fills(msgs)) == 1 and order.status is S.COMPLETE


def test_a_finished_order_ignores_contradicting_reports() -> None:
    book, order = placed_book()
    book.apply_report(report("B1", "cancelled", 0))
    assert book.apply_report(report("B1", "complete", 65, 100.0)) == []
    assert order.status is S.CANCELLED and order.filled == 0


# ---------------------------------------------------------------------------------------------
# Unknown placement outcomes
# ---------------------------------------------------------------------------------------------


def unknown_order(i: OrderIntent | None = None) -> tuple[OrderBook, TrackedOrder]:
    book = OrderBook(ACCOUNT, SPEC)
    [order] = book.plan(i or intent())
    book.add([order])
    order.first_attempt_ts = T0 + 10
    book.transition(order, S.UNKNOWN, T0 + 20, "timeout")
    return book, order


def test_an_unknown_order_matches_its_row_only() -> None:
    book, order = unknown_order()
    rows = [row("OLD", placed=T0 + 5),  # before the attempt
            row("QTY", quantity=130, placed=T0 + 11),
            row("PRICE", price=100.05, placed=T0 + 11),
            row("SIDE", action="SELL", placed=T0 + 11),
            row("SYM", symbol="NIFTY30JAN2524000PE", placed=T0 + 11),
            row("TAG", strategy="other", placed=T0 + 11),
            row("TYPE", pricetype="MARKET", placed=T0 + 11),
            row("HIT", placed=T0 + 11, strategy="s")]
    assert book.match_unknown(order, rows, skew_s=2.0) == rows[-1]
    assert book.match_unknown(order, rows[:-1], skew_s=2.0) is None


def test_a_whole_second_stamp_just_before_the_attempt_still_matches() -> None:
    book, order = unknown_order()
    order.first_attempt_ts = T0 + 10.7
    hit = row("HIT", placed=T0 + 10)
    assert book.match_unknown(order, [hit], skew_s=2.0) == hit
    assert book.match_unknown(order, [hit], skew_s=0.0) is None


def test_rows_already_ours_are_never_adopted() -> None:
    book, _ = placed_book(orderid="MINE")
    [other] = book.plan(intent("s-2"))
    book.add([other])
    other.first_attempt_ts = T0
    assert book.match_unknown(other, [row("MINE", placed=T0 + 1)], skew_s=2.0) is None


def test_market_orders_match_whatever_price_the_broker_shows() -> None:
    book, order = unknown_order(intent(pricetype=PriceType.MARKET, price=0.0))
    hit = row("HIT", pricetype="MARKET", price=101.35, placed=T0 + 11)
    assert book.match_unknown(order, [hit], skew_s=0.0) == hit


def test_adopting_binds_the_row_and_applies_its_state() -> None:
    book, order = unknown_order()
    hit = replace(row("HIT", placed=T0 + 11, status="complete"), filled_quantity=65,
                  average_price=100.0)
    msgs = book.adopt(order, hit, T0 + 30)
    assert order.broker_order_id == "HIT" and order.status is S.COMPLETE
    assert [f.quantity for f in fills(msgs)] == [65]
    assert book.by_broker_id("HIT") is order


# ---------------------------------------------------------------------------------------------
# Recovery
# ---------------------------------------------------------------------------------------------


def stored(client_id: str, status: OrderStatus, *, quantity: int = 65,
           broker_order_id: str | None = None, filled: int = 0,
           parent_id: str | None = None) -> StoredOrder:
    return StoredOrder(client_id=client_id, strategy="s", account=ACCOUNT, symbol=CE,
                       exchange="NFO", action=Action.BUY, quantity=quantity,
                       pricetype=PriceType.LIMIT, product=Product.MIS, price=100.0,
                       trigger_price=0.0, purpose=OrderPurpose.ENTRY, parent_id=parent_id,
                       broker_order_id=broker_order_id, status=status, filled_quantity=filled,
                       average_price=100.0 if filled else 0.0, created_ts=T0,
                       updated_ts=T0, trading_date=date(2025, 1, 30), reason="")


def test_restore_rebuilds_working_orders_and_split_families() -> None:
    book = OrderBook(ACCOUNT, SPEC)
    rows = [stored("done", S.COMPLETE, broker_order_id="B0", filled=65),
            stored("open", S.OPEN, broker_order_id="B1"),
            stored("stop", S.TRIGGER_PENDING, broker_order_id="B2", parent_id="open"),
            stored("P", S.PARTIALLY_FILLED, quantity=1820, filled=1755),
            stored("P.1", S.COMPLETE, quantity=1755, broker_order_id="B3", filled=1755,
                   parent_id="P"),
            stored("P.2", S.OPEN, broker_order_id="B4", parent_id="P")]
    restored = book.restore(rows, {("B0", 65), ("B3", 1755), ("B1", 65)})
    assert [o.client_id for o in restored] == ["P", "P.1", "P.2", "open", "stop"]
    assert book.get("done") is None
    opened = book.get("open")
    assert opened is not None and opened.filled == 65  # the fill key is ahead of the row
    stop = book.get("stop")
    assert stop is not None and stop.split_parent is None  # a strategy's parent link only
    parent = book.get("P")
    assert parent is not None and parent.is_parent and parent.children == ("P.1", "P.2")
    assert book.top(book.get("P.2")) is parent  # type: ignore[arg-type]
    # broker ids of finished orders are still ours
    [other] = book.plan(intent("new"))
    book.add([other])
    other.first_attempt_ts = T0
    assert book.match_unknown(other, [row("B0", placed=T0 + 1)], skew_s=1) is None
    # reports keep applying once
    assert book.apply_report(report("B1", "open", 65, 100.0)) == []


def test_missing_children_of_an_interrupted_split_are_planned() -> None:
    book = OrderBook(ACCOUNT, SPEC)
    rows = [stored("P", S.SUBMITTING, quantity=3900),
            stored("P.1", S.OPEN, quantity=1755, broker_order_id="B1", parent_id="P")]
    book.restore(rows, set())
    parent = book.get("P")
    assert parent is not None
    new = book.missing_children(parent)
    assert [(c.client_id, c.intent.quantity) for c in new] == [("P.2", 1755), ("P.3", 390)]
    assert parent.children == ("P.1", "P.2", "P.3")
    book.add(new)
    assert book.missing_children(parent) == []


def test_a_split_parent_with_no_stored_children_is_still_a_parent() -> None:
    book = OrderBook(ACCOUNT, SPEC)
    book.restore([stored("P", S.SUBMITTING, quantity=1820)], set())
    parent = book.get("P")
    assert parent is not None and parent.is_parent and parent.children == ()
    assert book.working_legs() == []  # never sent as one oversized order
    assert [c.intent.quantity for c in book.missing_children(parent)] == [1755, 65]


def test_a_poll_is_about_the_working_legs_only() -> None:
    """The book keeps its working broker-level orders aside (the poll asks every second, the
    day has many finished orders): oldest first, split parents never, finished ones gone."""
    book, done = placed_book(intent("A"), "B1")
    planned = book.plan(intent("P", quantity=3900))
    book.add(planned)
    parent, first, second, third = planned
    book.placed(first, "B2", T0)
    [waiting] = book.plan(intent("W"))
    book.add([waiting])
    assert book.working_legs() == [done, first, second, third, waiting]
    assert book.working_ids() == {"B1", "B2"} and book.needs_poll()
    book.apply_report(report("B1", "complete", 65, 100.0))
    assert book.working_legs() == [first, second, third, waiting]
    # only the rows of working orders become reports
    rows = [row("B1", status="complete"), row("B9"), row("B2", quantity=1755)]
    assert [r.orderid for r, _ in updates_from_rows(rows, T0, "poll",
                                                    book.working_ids())] == ["B2"]
    book.transition(first, S.CANCELLED, T0 + 2, "test")
    assert book.working_ids() == set() and not book.needs_poll()  # nothing sent is working
    book.transition(waiting, S.UNKNOWN, T0 + 2, "outcome unknown")
    assert book.needs_poll()  # an unknown outcome is looked for in the orderbook
    for order in (second, third, waiting):
        book.transition(order, S.REJECTED, T0 + 3, "test")
    assert book.working_legs() == [] and not book.needs_poll()
    assert parent.status is S.CANCELLED


def test_at_broker_states() -> None:
    assert frozenset({S.OPEN, S.TRIGGER_PENDING, S.PARTIALLY_FILLED}) == AT_BROKER


@pytest.mark.parametrize(("action", "held", "shown"), [
    (Action.BUY, {CE: -65}, True),  # a stop for the short the broker holds
    (Action.BUY, {CE: -130}, True),  # more than it covers: still closes only a short
    (Action.BUY, {CE: 0}, False),  # flat (a lost state, a hand close): it would go long
    (Action.BUY, {}, False),
    (Action.BUY, {CE: 65}, False),  # a long: it would add to it
    (Action.BUY, {CE: -30, "OTHER": -65}, False),  # less than it covers; other symbols ignored
    (Action.SELL, {CE: 65}, True),  # an exit of a long
    (Action.SELL, {CE: -65}, False),
])
def test_a_protective_order_closes_only_what_the_broker_shows(
        action: Action, held: dict[str, int], shown: bool) -> None:
    rows = [PositionRow(sym, "NFO", "NRML", qty, 100.0) for sym, qty in held.items()]
    stop = intent(action=action, purpose=OrderPurpose.STOP)
    reason = uncovered_reason(stop, rows)
    assert (reason is None) is shown
    if reason is not None:
        assert CE in reason and "65" in reason
