"""BaselineV1 against a fake StrategyContext: bars, swings, order events and fills are driven by
hand; the test reads the intents the strategy emitted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from engine.market.instruments import InstrumentSpec
from engine.messages import (
    Action,
    Bar,
    BarUpdate,
    Fill,
    OrderEvent,
    OrderPurpose,
    OrderStatus,
    PendingFill,
    PriceType,
    Severity,
    Swing,
    SwingBroken,
    SwingKind,
    TimerFired,
)
from engine.runtime.clock import ist_epoch
from strategies.base import OrderView
from strategies.baseline_v1 import EVAL_TIMER, BaselineSettings, BaselineV1

CE = "NIFTY30JAN2524000CE"
CE2 = "NIFTY30JAN2524100CE"
CE_ODD = "NIFTY30JAN2524050CE"
PE = "NIFTY30JAN2524000PE"
SWING_AT = ist_epoch(2025, 1, 30, 9, 20)
EVAL_AT = ist_epoch(2025, 1, 30, 9, 22, 0.5)


class FakeContext:
    """Records what the strategy emits; ids are ``o1``, ``o2``, ... in emission order."""

    strategy = "baseline_v1"
    r_unit = "position"  # [risk] r_unit's default

    def __init__(self, now: float = EVAL_AT) -> None:
        self.t = now
        self.trading = True
        self.instrument = InstrumentSpec()
        self.placed: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.replaces: list[tuple[str, str, dict[str, Any]]] = []
        self.timers: list[tuple[float, str]] = []
        self.periodic: list[tuple[float, str, float | None]] = []
        self.alerts: list[tuple[str, str, Severity]] = []
        self.trades: list[dict[str, Any]] = []
        self.exits: list[str] = []
        self.risks: dict[str, float] = {}
        self._seq = 0

    def now(self) -> float:
        return self.t

    @property
    def can_trade(self) -> bool:
        return self.trading

    def _id(self) -> str:
        self._seq += 1
        return f"o{self._seq}"

    def place(self, **fields: Any) -> str:
        cid = self._id()
        self.placed.append({"client_id": cid, **fields})
        return cid

    def cancel(self, client_id: str, reason: str = "") -> None:
        self.cancels.append(client_id)

    def replace(self, client_id: str, *, reason: str = "", **changes: Any) -> str:
        new = self._id()
        self.replaces.append((client_id, new, changes))
        return new

    def orders(self, *, working_only: bool = True) -> Mapping[str, OrderView]:
        return {}

    def positions(self) -> Mapping[str, int]:
        return {}

    def schedule_at(self, when: float, name: str, payload: Any = None) -> None:
        self.timers.append((when, name))

    def schedule_every(self, interval: float, name: str, *, first: float | None = None,
                       payload: Any = None) -> None:
        self.periodic.append((interval, name, first))

    def alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        self.alerts.append((kind, message, severity))

    def record_trade(self, **fields: Any) -> None:
        self.trades.append(fields)

    def exit_all(self, reason: str) -> None:
        self.exits.append(reason)

    def set_risk(self, symbol: str, points: float) -> None:
        self.risks[symbol] = points

    # -- what the test looks at ------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        return [p for p in self.placed if p["purpose"] is OrderPurpose.ENTRY]

    def covers(self) -> list[dict[str, Any]]:
        return [p for p in self.placed if p["purpose"] is not OrderPurpose.ENTRY]


def make(**overrides: Any) -> tuple[BaselineV1, FakeContext]:
    ctx = FakeContext()
    strat = BaselineV1(ctx, BaselineSettings(**overrides))
    strat.on_start()
    return strat, ctx


def swing_low(strat: BaselineV1, symbol: str, price: float, *, hh: float,
              vwap: float | None = None, start: float = SWING_AT) -> None:
    """The swing bar (low = price), the Swing, then one bar after it whose high is ``hh``."""
    vwap = round(price / 1.05, 2) if vwap is None else vwap
    # the swing bar's high (part of the stop since issue 17) stays under any ``hh`` tested
    strat.on_bar(Bar(symbol, start, price + 0.5, price + 0.5, price, price + 0.5, 100, 10,
                     vwap))
    strat.on_swing(Swing(symbol, SwingKind.LOW, price, start, 1, vwap))
    close = min(hh, price + 1)
    strat.on_bar(Bar(symbol, start + 60, close, hh, min(close, price + 0.5), close, 100, 10,
                     vwap))


def evaluate(strat: BaselineV1, ctx: FakeContext, at: float | None = None, *,
             quote: bool = True) -> None:
    """An evaluation at ``at``; with ``quote``, every symbol first ticks at its last price (the
    rules tested here are not about stale prices)."""
    if at is not None:
        ctx.t = at
    if quote:
        minute = ctx.t - ctx.t % 60
        for symbol, last in sorted(strat._last.items()):
            strat.on_bar_update(BarUpdate(symbol, minute, last, last, last, ctx.t))
    strat.on_timer(TimerFired(EVAL_TIMER, ctx.t))


def event(strat: BaselineV1, cid: str, status: OrderStatus, filled: int = 0,
          reason: str = "") -> None:
    strat.on_order_event(OrderEvent(cid, status, EVAL_AT, "baseline_v1", "acct",
                                    filled_quantity=filled, reason=reason))


def fill(strat: BaselineV1, order: dict[str, Any], qty: int, price: float, cumulative: int,
         ts: float = EVAL_AT) -> None:
    strat.on_fill(Fill(order["client_id"], f"b-{order['client_id']}", "baseline_v1", "acct",
                       order["symbol"], "NFO", order["action"], qty, price, cumulative, ts,
                       order["purpose"]))


def live_bar(strat: BaselineV1, symbol: str, start: float, high: float, low: float,
             close: float) -> None:
    strat.on_bar(Bar(symbol, start, close, high, low, close, 100, 10, 100.0))


# -- lifecycle -----------------------------------------------------------------------------------


def test_start_schedules_the_evaluation_half_a_second_past_the_second() -> None:
    _, ctx = make()
    assert ctx.periodic == [(1.0, EVAL_TIMER, ist_epoch(2025, 1, 30, 9, 22, 1.5))]
    ctx2 = FakeContext(ist_epoch(2025, 1, 30, 9, 22, 1.7))
    BaselineV1(ctx2, BaselineSettings(eval_interval_s=5.0, eval_offset_s=2.0)).on_start()
    assert ctx2.periodic == [(5.0, EVAL_TIMER, ist_epoch(2025, 1, 30, 9, 22, 2.0))]


def test_inconsistent_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="price_max"):
        BaselineV1(FakeContext(), BaselineSettings(price_min=300, price_max=100))
    with pytest.raises(ValueError, match="entry_end"):
        BaselineV1(FakeContext(), BaselineSettings(entry_start="15:15", entry_end="09:15"))
    with pytest.raises(ValueError, match="HH:MM"):
        BaselineV1(FakeContext(), BaselineSettings(entry_end="3pm"))


# -- the static filter ---------------------------------------------------------------------------


@pytest.mark.parametrize(("price", "hh", "traded"), [
    (100.0, 105.0, True), (99.95, 105.0, False), (300.0, 309.0, True), (300.05, 309.0, False),
])
def test_price_range_is_inclusive(price: float, hh: float, traded: bool) -> None:
    strat, ctx = make()
    swing_low(strat, CE, price, hh=hh)
    evaluate(strat, ctx)
    assert len(ctx.entries()) == (1 if traded else 0)


@pytest.mark.parametrize(("vwap", "traded"), [(200.0, True), (200.01, False)])
def test_vwap_premium_of_four_percent_is_enough(vwap: float, traded: bool) -> None:
    strat, ctx = make()
    swing_low(strat, CE, 208.0, vwap=vwap, hh=217.0)  # premium (208 - 200) / 200 = 4%
    evaluate(strat, ctx)
    assert len(ctx.entries()) == (1 if traded else 0)


# -- the dynamic filter and sizing -----------------------------------------------------------


@pytest.mark.parametrize(("hh", "traded"), [
    (203.0, True),     # stop 204: 4 points = 2% of 200
    (202.95, False),   # 1.975%
    (219.0, True),     # stop 220: 20 points = 10%
    (219.05, False),   # 10.025%
])
def test_stop_distance_between_two_and_ten_percent(hh: float, traded: bool) -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=hh)
    evaluate(strat, ctx)
    assert len(ctx.entries()) == (1 if traded else 0)


def test_dynamic_filter_follows_the_bar_in_progress() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=202.0)  # stop 203: 1.5%, too close
    evaluate(strat, ctx)
    assert ctx.entries() == []
    strat.on_bar_update(BarUpdate(CE, SWING_AT + 120, 207.0, 201.0, 205.0, EVAL_AT))
    evaluate(strat, ctx, EVAL_AT + 1)
    [entry] = ctx.entries()
    assert entry["quantity"] == 650  # sl 8 points: floor(100 / 8) = 12 -> capped at 10 lots


def test_the_last_price_is_looked_at_every_evaluation_while_the_day_is_unchanged() -> None:
    """The ranking of the candidates is kept until the strategy's day changes; whether the
    symbol's last price is above the swing is not part of it: a tick that changes nothing of
    the day still decides the next evaluation."""
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)  # qualifies: sl 10 points
    strat.on_bar_update(BarUpdate(CE, SWING_AT + 120, 200.0, 199.0, 200.0, EVAL_AT))
    evaluate(strat, ctx, quote=False)
    assert ctx.entries() == []  # at the swing: not a candidate now
    version = strat.state_version
    strat.on_bar_update(BarUpdate(CE, SWING_AT + 120, 201.0, 199.0, 201.0, EVAL_AT + 0.5))
    assert strat.state_version == version  # no new high: the day did not change
    evaluate(strat, ctx, EVAL_AT + 1, quote=False)
    [entry] = ctx.entries()
    assert (entry["symbol"], entry["trigger_price"]) == (CE, 199.95)


@pytest.mark.parametrize(("hh", "qty"), [
    (209.0, 650),   # sl 10: 6500 / (10 x 65) = 10 lots exactly
    (211.0, 520),   # sl 12: 8.33 -> 8 lots
    (205.0, 650),   # sl 6: 16.7 -> capped at 10 lots
])
def test_sizing_floors_and_caps(hh: float, qty: int) -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=hh)
    evaluate(strat, ctx)
    assert [e["quantity"] for e in ctx.entries()] == [qty]


@pytest.mark.parametrize(("risk", "qty"), [(650.0, 65), (649.0, None)])
def test_sizing_skips_below_one_lot(risk: float, qty: int | None) -> None:
    strat, ctx = make(risk_per_trade=risk)
    swing_low(strat, CE, 200.0, hh=209.0)  # sl 10 points x 65 = 650 per lot
    evaluate(strat, ctx)
    assert [e["quantity"] for e in ctx.entries()] == ([qty] if qty else [])


def test_entry_order_is_a_stop_limit_sell_under_the_swing() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    assert entry["action"] is Action.SELL and entry["pricetype"] is PriceType.SL
    assert entry["trigger_price"] == 199.95 and entry["price"] == 196.95
    assert entry["symbol"] == CE and entry["exchange"] == "NFO"


# -- the best strike -------------------------------------------------------------------------------


def test_best_strike_is_the_closest_to_ten_points() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=211.0)   # sl 12
    swing_low(strat, CE2, 150.0, hh=158.0)  # sl 9: closer to 10
    evaluate(strat, ctx)
    assert [e["symbol"] for e in ctx.entries()] == [CE2]


def test_on_equal_distance_a_round_strike_wins() -> None:
    strat, ctx = make()
    swing_low(strat, CE_ODD, 250.0, hh=259.0)  # sl 10, strike 24050
    swing_low(strat, CE2, 150.0, hh=159.0)     # sl 10, strike 24100
    evaluate(strat, ctx)
    assert [e["symbol"] for e in ctx.entries()] == [CE2]


def test_then_the_highest_price_wins() -> None:
    strat, ctx = make()
    swing_low(strat, CE2, 150.0, hh=159.0)  # sl 10, round strike, price 150
    swing_low(strat, CE, 180.0, hh=189.0)   # sl 10, round strike, price 180
    evaluate(strat, ctx)
    assert [e["symbol"] for e in ctx.entries()] == [CE]


def test_one_working_entry_per_option_type() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    swing_low(strat, PE, 180.0, hh=189.0)
    evaluate(strat, ctx)
    assert sorted(e["symbol"] for e in ctx.entries()) == [CE, PE]
    swing_low(strat, CE2, 150.0, hh=161.0, start=SWING_AT + 120)  # a worse CE
    evaluate(strat, ctx, EVAL_AT + 120)
    evaluate(strat, ctx, EVAL_AT + 121)
    assert len(ctx.entries()) == 2 and ctx.replaces == []


def test_limits_count_positions_and_working_entries() -> None:
    strat, ctx = make(max_open=2, max_per_type=1)
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    fill(strat, entry, 650, 199.95, 650)
    event(strat, entry["client_id"], OrderStatus.COMPLETE, 650)
    swing_low(strat, CE2, 150.0, hh=159.0, start=SWING_AT + 120)
    evaluate(strat, ctx, EVAL_AT + 180)
    assert len(ctx.entries()) == 1  # CE already has a position: max 1 per type
    swing_low(strat, PE, 180.0, hh=189.0, start=SWING_AT + 120)
    evaluate(strat, ctx, EVAL_AT + 181)
    assert [e["symbol"] for e in ctx.entries()] == [CE, PE]


# -- switching ------------------------------------------------------------------------------------


def test_a_better_strike_replaces_the_entry_only_at_a_bar_close() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=211.0)   # sl 12
    swing_low(strat, CE2, 150.0, hh=151.0)  # sl 2 = 1.3%: does not qualify yet
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    assert entry["symbol"] == CE
    strat.on_bar_update(BarUpdate(CE2, SWING_AT + 120, 159.0, 151.0, 158.0, EVAL_AT + 1))
    evaluate(strat, ctx, EVAL_AT + 1)  # CE2 is now best (sl 10) but no bar closed since
    assert ctx.replaces == []
    live_bar(strat, CE2, SWING_AT + 120, 159.0, 151.0, 158.0)
    evaluate(strat, ctx, EVAL_AT + 62)
    [(old, new, changes)] = ctx.replaces
    assert old == entry["client_id"]
    assert changes == {"symbol": CE2, "quantity": 650, "price": 146.95, "trigger_price": 149.95}
    # the switch completes when the broker confirms the cancel
    event(strat, old, OrderStatus.CANCELLED)
    event(strat, new, OrderStatus.TRIGGER_PENDING)
    evaluate(strat, ctx, EVAL_AT + 63)
    assert len(ctx.entries()) == 1 and len(ctx.replaces) == 1
    assert strat.status()["working_entries"] == {"CE": CE2}


def test_a_refused_switch_keeps_the_old_entry() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=211.0)
    swing_low(strat, CE2, 150.0, hh=151.0)
    evaluate(strat, ctx)
    live_bar(strat, CE2, SWING_AT + 120, 159.0, 151.0, 158.0)
    evaluate(strat, ctx, EVAL_AT + 62)
    [(_, new, _)] = ctx.replaces
    event(strat, new, OrderStatus.REJECTED, reason="replacement not placed: not cancelled")
    assert strat.status()["working_entries"] == {"CE": CE}
    assert not [a for a in ctx.alerts if a[0] == "entry_rejected"]


@pytest.mark.parametrize(("second_low", "replaced"), [(200.5, False), (201.0, False),
                                                     (201.1, True)])
def test_same_symbol_is_re_placed_only_when_prices_move_more_than_a_rupee(
        second_low: float, replaced: bool) -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=211.0)  # sl 12
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    # a newer, unbroken low on the same symbol, sl 10 from the bars after it: it is now best
    strat.on_bar(Bar(CE, SWING_AT + 180, 203, 204, second_low, 203, 100, 10, 190.0))
    strat.on_swing(Swing(CE, SwingKind.LOW, second_low, SWING_AT + 180, 3, 190.0))
    live_bar(strat, CE, SWING_AT + 240, second_low + 9, second_low + 1, second_low + 2)
    evaluate(strat, ctx, EVAL_AT + 300)
    assert [old for old, _, _ in ctx.replaces] == ([entry["client_id"]] if replaced else [])


def test_an_entry_whose_swing_is_breaking_is_not_switched() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=211.0)   # sl 12
    swing_low(strat, CE2, 150.0, hh=151.0)  # does not qualify yet
    evaluate(strat, ctx)
    strat.on_bar_update(BarUpdate(CE2, SWING_AT + 120, 159.0, 151.0, 158.0, EVAL_AT + 1))
    # the CE swing is traded through in the new minute, just before the last minute's bars
    # close: its entry is triggering and must be left alone
    strat.on_swing_broken(SwingBroken(CE, SwingKind.LOW, 200.0, SWING_AT, EVAL_AT + 58, "tick"))
    live_bar(strat, CE2, SWING_AT + 120, 159.0, 151.0, 158.0)
    evaluate(strat, ctx, EVAL_AT + 62)
    assert ctx.replaces == [] and ctx.cancels == []


# -- broken swings ------------------------------------------------------------------------------


def test_a_broken_swing_is_never_traded() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    strat.on_swing_broken(SwingBroken(CE, SwingKind.LOW, 200.0, SWING_AT, EVAL_AT - 1, "tick"))
    for k in range(5):  # price comes back above, bars close, evaluations run
        live_bar(strat, CE, SWING_AT + 180 + 60 * k, 215.0, 201.0, 210.0)
        evaluate(strat, ctx, EVAL_AT + 60 * k + 1)
    assert ctx.entries() == []


def test_after_a_break_no_order_is_placed_again() -> None:
    """The live system placed three orders in 41 s after one break."""
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    strat.on_swing_broken(SwingBroken(CE, SwingKind.LOW, 200.0, SWING_AT, EVAL_AT + 10, "tick"))
    evaluate(strat, ctx, EVAL_AT + 11)
    assert ctx.cancels == [] and ctx.replaces == []  # left to fill on the break
    live_bar(strat, CE, SWING_AT + 120, 209.0, 199.98, 203.0)  # the break's bar, no fill
    evaluate(strat, ctx, EVAL_AT + 62)
    assert ctx.cancels == [entry["client_id"]]
    event(strat, entry["client_id"], OrderStatus.CANCELLED)
    for k in range(1, 6):  # the price returns above the swing: still nothing
        live_bar(strat, CE, SWING_AT + 120 + 60 * k, 212.0, 203.0, 210.0)
        evaluate(strat, ctx, EVAL_AT + 62 + 10 * k)
    assert len(ctx.entries()) == 1 and ctx.replaces == []


def test_a_completed_bar_below_the_swing_cancels_the_unfilled_entry() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    strat.on_swing_broken(SwingBroken(CE, SwingKind.LOW, 200.0, SWING_AT, EVAL_AT + 58, "bar"))
    evaluate(strat, ctx, EVAL_AT + 59)
    assert ctx.cancels == [entry["client_id"]]


# -- protective stops ------------------------------------------------------------------------------


def test_partial_fills_are_covered_as_they_come() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)  # stop at selection 210
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    fill(strat, entry, 260, 199.95, 260)
    [stop] = ctx.covers()
    assert stop["action"] is Action.BUY and stop["pricetype"] is PriceType.SL
    assert stop["purpose"] is OrderPurpose.STOP
    assert (stop["quantity"], stop["trigger_price"], stop["price"]) == (260, 210.0, 213.0)
    strat.on_bar_update(BarUpdate(CE, SWING_AT + 120, 211.02, 199.0, 205.0, EVAL_AT + 1))
    fill(strat, entry, 390, 199.9, 650)
    _, second = ctx.covers()
    assert (second["quantity"], second["trigger_price"], second["price"]) == (390, 212.05,
                                                                              215.05)
    event(strat, entry["client_id"], OrderStatus.COMPLETE, 650)
    evaluate(strat, ctx, EVAL_AT + 2)
    assert len(ctx.covers()) == 2  # fully covered: nothing more


def test_an_entry_filled_with_its_price_pending_is_protected_at_once_and_counted_once() -> None:
    """A PendingFill (the broker filled it, the tradebook has no price yet) places the stop for
    the quantity now, at the stop of the selection (never from a fill price); the priced fill
    that follows adds no second stop, and only then is the entry's value known."""
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)  # stop at selection 210
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    strat.on_fill_pending(PendingFill(entry["client_id"], f"b-{entry['client_id']}",
                                      "baseline_v1", "acct", CE, "NFO", Action.SELL, 650, 650,
                                      EVAL_AT))
    [stop] = ctx.covers()
    assert (stop["quantity"], stop["trigger_price"], stop["price"]) == (650, 210.0, 213.0)
    pos = strat.d.positions[CE]
    assert (pos.open_qty, pos.sold_qty, pos.sold_value, pos.realized) == (650, 0, 0.0, 0.0)
    written = strat.snapshot()  # as the host hands it to the store, which encodes it later
    as_written = json.loads(json.dumps(written))
    fill(strat, entry, 650, 199.95, 650)
    assert json.loads(json.dumps(written)) == as_written  # a snapshot given out never changes
    assert len(ctx.covers()) == 1
    assert (pos.open_qty, pos.sold_qty, pos.avg_entry) == (650, 650, 199.95)
    strat.restore(strat.snapshot())  # the pending book survives a snapshot round trip
    assert strat.d.positions[CE].open_qty == 650


def test_a_rejected_stop_is_retried_then_the_position_is_bought_back() -> None:
    strat, ctx = make(stop_retries=1)
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    fill(strat, entry, 650, 199.95, 650)
    event(strat, ctx.covers()[-1]["client_id"], OrderStatus.REJECTED, reason="RMS")
    assert [c["pricetype"] for c in ctx.covers()] == [PriceType.SL, PriceType.SL]
    event(strat, ctx.covers()[-1]["client_id"], OrderStatus.REJECTED, reason="RMS")
    last = ctx.covers()[-1]
    assert (last["pricetype"], last["purpose"], last["quantity"]) == (
        PriceType.MARKET, OrderPurpose.EXIT, 650)
    assert any(kind == "stop_failed" and sev is Severity.CRITICAL
               for kind, _, sev in ctx.alerts)


def test_stop_fill_closes_the_trade_and_records_it() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    fill(strat, entry, 650, 200.0, 650, ts=EVAL_AT + 5)
    [stop] = ctx.covers()
    fill(strat, stop, 650, 210.0, 650, ts=EVAL_AT + 65)
    event(strat, stop["client_id"], OrderStatus.COMPLETE, 650)
    [trade] = ctx.trades
    assert trade["symbol"] == CE and trade["action"] is Action.SELL and trade["quantity"] == 650
    assert (trade["entry_price"], trade["exit_price"]) == (200.0, 210.0)
    assert trade["pnl"] == -6500.0 and trade["r_multiple"] == -1.0
    assert trade["exit_reason"] == "stop" and trade["exit_ts"] == EVAL_AT + 65
    assert strat.status()["realized_pnl"] == -6500.0
    swing_low(strat, CE, 205.0, hh=214.0, start=SWING_AT + 300)  # no re-entry into CE today
    evaluate(strat, ctx, EVAL_AT + 400)
    assert len(ctx.entries()) == 1


@pytest.mark.parametrize(("r_unit", "open_r", "day_r"), [
    ("position", -0.5, -0.5 - 1.0), ("fixed", -0.2, -0.2 - 0.4)])
def test_status_r_is_in_the_unit_of_the_risk_latch(r_unit: str, open_r: float,
                                                   day_r: float) -> None:
    """A 10-lot short from 200 with its stop at 204 risks 650 × 4 = ₹2,600 (the lot cap keeps
    it under R = ₹6,500). Two points against are −0.5 of its own risk, −0.2 of the fixed R:
    the status says the R the risk manager's latch measures ([risk] r_unit). A second short
    stopped out for −₹2,600 adds −1 R own risk (−0.4 fixed)."""
    strat, ctx = make()
    ctx.r_unit = r_unit
    swing_low(strat, CE, 200.0, hh=203.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    assert (entry["quantity"], ctx.risks[CE]) == (650, 4.0)
    fill(strat, entry, 650, 200.0, 650, ts=EVAL_AT + 5)
    strat.on_bar_update(BarUpdate(CE, EVAL_AT - EVAL_AT % 60, 202.0, 202.0, 202.0,
                                  EVAL_AT + 6))
    assert strat.status()["cumulative_r"] == open_r
    swing_low(strat, PE, 200.0, hh=203.0)
    evaluate(strat, ctx, EVAL_AT + 10)
    [pe] = [e for e in ctx.entries() if e["symbol"] == PE]
    fill(strat, pe, 650, 200.0, 650, ts=EVAL_AT + 11)
    [stop] = [c for c in ctx.covers() if c["symbol"] == PE]
    fill(strat, stop, 650, 204.0, 650, ts=EVAL_AT + 12)
    assert ctx.trades[-1]["risk"] == 2600.0
    assert strat.status()["cumulative_r"] == pytest.approx(day_r)


# -- day limits ---------------------------------------------------------------------------------


def open_short(strat: BaselineV1, ctx: FakeContext, price: float = 200.0) -> dict[str, Any]:
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    [entry] = ctx.entries()
    fill(strat, entry, 650, price, 650)
    event(strat, entry["client_id"], OrderStatus.COMPLETE, 650)
    return entry


def test_an_exit_stops_the_day_and_leaves_the_position_to_the_coordinator() -> None:
    """Limits (the +-5 R latch, 15:15, max loss, ...) are the risk manager's; the strategy
    hears ``on_exit`` and from then on places nothing: no entry, no stop, no exit of its own."""
    strat, ctx = make()
    open_short(strat, ctx)
    swing_low(strat, PE, 180.0, hh=189.0)
    evaluate(strat, ctx, EVAL_AT + 1)
    [stop] = ctx.covers()
    strat.on_exit("daily_r")
    assert strat.status()["state"] == "STOPPED: daily_r"
    placed = len(ctx.placed)
    # the coordinator cancels the entry and the stop: the strategy does not re-place either
    event(strat, ctx.entries()[-1]["client_id"], OrderStatus.CANCELLED)
    event(strat, stop["client_id"], OrderStatus.CANCELLED)
    evaluate(strat, ctx, EVAL_AT + 2)
    swing_low(strat, CE2, 150.0, hh=159.0, start=SWING_AT + 240)
    evaluate(strat, ctx, EVAL_AT + 300)
    assert len(ctx.placed) == placed and ctx.replaces == []
    # its market exit fills: the trade is recorded with the exit's reason
    fill(strat, {"client_id": "baseline_v1-250130-x0001", "symbol": CE, "action": Action.BUY,
                 "purpose": OrderPurpose.EXIT}, 650, 190.0, 650)
    [trade] = ctx.trades
    assert trade["exit_reason"] == "daily_r" and trade["pnl"] == 6500.0
    assert trade["r_multiple"] == 1.0
    assert strat.snapshot()["stopped"] == "daily_r"


def test_the_eod_exit_ends_the_day_for_good() -> None:
    strat, ctx = make()
    open_short(strat, ctx)
    strat.on_exit("eod")
    strat.on_command("unhalt", {})
    assert strat.status()["state"] == "STOPPED: eod" and strat.status()["eod_done"]


def test_unhalt_lets_a_stopped_day_trade_again() -> None:
    strat, ctx = make()
    strat.on_exit("operator")
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    assert ctx.entries() == []
    strat.on_command("unhalt", {})
    evaluate(strat, ctx, EVAL_AT + 1)
    assert len(ctx.entries()) == 1


def test_flatten_asks_the_exit_coordinator() -> None:
    strat, ctx = make()
    open_short(strat, ctx)
    strat.on_command("flatten", {})
    assert ctx.exits == ["flatten"] and ctx.replaces == [] and ctx.cancels == []


def test_protect_re_places_a_missing_stop_at_once() -> None:
    strat, ctx = make()
    open_short(strat, ctx)
    [stop] = ctx.covers()
    event(strat, stop["client_id"], OrderStatus.CANCELLED)  # someone cancelled it
    assert len(ctx.covers()) == 2  # re-placed right away
    strat.on_command("protect", {"symbol": CE})
    assert len(ctx.covers()) == 2  # covered already: nothing more


def test_no_entries_from_1515() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx, ist_epoch(2025, 1, 30, 15, 15, 0.5))
    assert ctx.entries() == []


@pytest.mark.parametrize(("hh_mm_ss", "placed"), [
    ((9, 14, 59.5), False), ((9, 15, 0.0), True), ((15, 14, 59.5), True), ((15, 15, 0.0), False),
])
def test_entry_window(hh_mm_ss: tuple[int, int, float], placed: bool) -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0, start=ist_epoch(2025, 1, 30, 9, 10))
    evaluate(strat, ctx, ist_epoch(2025, 1, 30, *hh_mm_ss))
    assert len(ctx.entries()) == (1 if placed else 0)


def test_a_stop_that_fills_during_the_exit_closes_the_trade_as_a_stop() -> None:
    """The exit coordinator's cancel came too late: the stop filled. Nothing is bought on top."""
    strat, ctx = make()
    open_short(strat, ctx)
    [stop] = ctx.covers()
    strat.on_exit("flatten")
    event(strat, stop["client_id"], OrderStatus.COMPLETE, 650)
    evaluate(strat, ctx, EVAL_AT + 1)
    fill(strat, stop, 650, 210.0, 650)
    evaluate(strat, ctx, EVAL_AT + 2)
    assert [c["client_id"] for c in ctx.covers()] == [stop["client_id"]]
    assert len(ctx.trades) == 1 and ctx.trades[0]["exit_reason"] == "stop"


def test_kill_cancels_entries_but_keeps_stops() -> None:
    strat, ctx = make()
    open_short(strat, ctx)
    swing_low(strat, PE, 180.0, hh=189.0)
    evaluate(strat, ctx, EVAL_AT + 1)
    pe_entry = ctx.entries()[-1]
    strat.on_command("kill", {})
    assert ctx.cancels == [pe_entry["client_id"]] and ctx.replaces == []
    event(strat, pe_entry["client_id"], OrderStatus.CANCELLED)
    swing_low(strat, CE2, 150.0, hh=159.0, start=SWING_AT + 120)
    evaluate(strat, ctx, EVAL_AT + 200)
    assert len(ctx.entries()) == 2
    assert strat.status()["state"] == "KILLED"


# -- churn guard ----------------------------------------------------------------------------------


def churn_cycle(strat: BaselineV1, ctx: FakeContext, at: float) -> None:
    """Kill (the working entry is cancelled) and resume 10 s later: a re-place follows."""
    ctx.t = at
    strat.on_command("kill", {})
    for cid in ctx.cancels[-1:]:
        event(strat, cid, OrderStatus.CANCELLED)
    strat.on_command("resume", {})
    evaluate(strat, ctx, at + 10)


def test_two_churn_cycles_on_a_symbol_block_it_for_the_day() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    churn_cycle(strat, ctx, EVAL_AT + 20)
    assert [e["symbol"] for e in ctx.entries()] == [CE, CE]  # first cycle: placed again
    churn_cycle(strat, ctx, EVAL_AT + 60)
    assert len(ctx.entries()) == 2  # second cycle within 5 minutes: blocked
    assert strat.status()["blocked"] == [CE]
    evaluate(strat, ctx, EVAL_AT + 600)
    assert len(ctx.entries()) == 2


def test_re_placing_after_the_churn_window_is_not_churn() -> None:
    strat, ctx = make(churn_window_s=5.0)
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    for k in range(3):
        churn_cycle(strat, ctx, EVAL_AT + 20 + 30 * k)
    assert len(ctx.entries()) == 4 and strat.status()["churn_cycles"] == 0


def test_enough_churn_cycles_pause_the_strategy() -> None:
    strat, ctx = make(churn_symbol_cycles=10, churn_total_cycles=3)
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    for k in range(3):
        churn_cycle(strat, ctx, EVAL_AT + 20 + 15 * k)
    assert len(ctx.entries()) == 3  # cycles 1 and 2 re-placed, the third paused
    assert strat.status()["state"] == "PAUSED (churn)"
    assert any(kind == "churn" and sev is Severity.CRITICAL for kind, _, sev in ctx.alerts)


# -- gate, restore --------------------------------------------------------------------------------


def test_nothing_new_while_the_context_cannot_trade() -> None:
    strat, ctx = make()
    ctx.trading = False
    swing_low(strat, CE, 200.0, hh=209.0)
    evaluate(strat, ctx)
    assert ctx.entries() == []
    ctx.trading = True
    evaluate(strat, ctx, EVAL_AT + 1)
    assert len(ctx.entries()) == 1


def test_restore_from_snapshot_continues_the_day() -> None:
    strat, ctx = make()
    open_short(strat, ctx, price=200.0)
    [stop] = ctx.covers()
    strat.on_command("flatten", {})
    strat.on_exit("flatten")
    saved = json.loads(json.dumps(strat.snapshot()))  # as the store keeps it

    ctx2 = FakeContext(EVAL_AT + 5)
    again = BaselineV1(ctx2, BaselineSettings())
    again.restore(saved)
    again.on_start()
    assert again.snapshot() == saved
    assert again.status()["state"] == "STOPPED: flatten"
    # the coordinator's market exit (its own client id) closes the restored position
    event(again, stop["client_id"], OrderStatus.CANCELLED)
    assert ctx2.placed == []
    fill(again, {"client_id": "baseline_v1-250130-x0001", "symbol": CE, "action": Action.BUY,
                 "purpose": OrderPurpose.EXIT}, 650, 195.0, 650)
    [trade] = ctx2.trades
    assert trade["pnl"] == 3250.0 and trade["exit_reason"] == "flatten"
    # realized R survives; the stopped day stays stopped
    swing_low(again, PE, 180.0, hh=189.0, start=SWING_AT + 120)
    evaluate(again, ctx2, EVAL_AT + 300)
    assert ctx2.entries() == [] and again.status()["realized_pnl"] == 3250.0


def test_a_snapshot_of_another_version_is_refused() -> None:
    strat, _ = make()
    with pytest.raises(ValueError, match="version"):
        strat.restore({**strat.snapshot(), "version": 99})


def test_a_new_day_starts_fresh_and_an_old_day_is_ignored() -> None:
    strat, ctx = make()
    open_short(strat, ctx)
    strat.on_bar(Bar(CE, SWING_AT - 86_400, 1, 2, 1, 2, 10, 1, 1.5))  # yesterday: stale
    assert strat.status()["positions"] == {CE: -650}
    next_day = SWING_AT + 86_400
    swing_low(strat, CE, 200.0, hh=209.0, start=next_day)
    assert any(kind == "overnight" for kind, _, _ in ctx.alerts)
    assert strat.status()["positions"] == {} and strat.snapshot()["day"] == "2025-01-31"
    evaluate(strat, ctx, next_day + 120.5)
    assert [e["symbol"] for e in ctx.entries()] == [CE, CE]  # a new day: CE may trade again


def test_the_same_swing_announced_twice_is_one_candidate() -> None:
    strat, ctx = make()
    swing_low(strat, CE, 200.0, hh=209.0)
    swing = Swing(CE, SwingKind.LOW, 200.0, SWING_AT, 1, round(200 / 1.05, 2))
    strat.on_swing(swing)
    strat.on_swing(replace(swing, updated=False))
    evaluate(strat, ctx)
    assert len(ctx.entries()) == 1 and strat.status()["candidates"] == 1
