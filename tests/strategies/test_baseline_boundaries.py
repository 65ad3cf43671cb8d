"""baseline_v1 rules at their boundaries, through the real actors in a replay: handcrafted
sessions (tests/strategies/sessions.py) go through the bar builders, the swing detector, the
strategy host and the order manager to the in-process simulated broker, on the virtual clock,
with a real SQLite store. The tests look only at what the pipeline produced: the swings and
orders in the store, the broker's order and position books, and the recorded trades.

Every session uses the ``swing_low`` shape: the swing low trades on bar 4 (09:19 for a path
starting 09:15) and is confirmed when bar 6 closes, so the first evaluation that can place its
entry runs at 09:22:02.5 (minute end + 2 s grace + 0.5 s evaluation offset). What the bars
after the shape do is up to each test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from actors.order_manager import OrderSettings
from engine.app.replay import ReplayDriver
from engine.app.sections import load_config
from engine.app.tree import Engine, EngineParts
from engine.broker import OrderRow
from engine.market.bars import BarSettings
from engine.messages import (
    Action,
    Alert,
    Crash,
    Fill,
    OrderPurpose,
    PositionQuery,
    PriceType,
    StatusRequest,
    Swing,
    SwingBroken,
    SwingKind,
)
from engine.runtime.clock import ist_epoch
from engine.sim.matching import SimulatedBroker
from engine.store.database import Database, StoredOrder, StoredTrade
from engine.trading.risk import RiskSettings
from strategies.baseline_v1 import BaselineSettings
from tests.strategies.sessions import (
    SHAPE_BARS,
    SWING_BAR,
    Minute,
    SymbolPath,
    flat,
    on_tick,
    path,
    swing_low,
    write_session,
)

DAY = date(2025, 1, 30)
CE = "NIFTY30JAN2524000CE"
CE_ODD = "NIFTY30JAN2524050CE"
CE2 = "NIFTY30JAN2524100CE"
CE3 = "NIFTY30JAN2524200CE"
PE = "NIFTY30JAN2524000PE"
R = 6500.0
#: the handcrafted sessions trade volume only where the VWAP needs it (sessions.py): their
#: other minutes are quote refreshes, which would be gaps; the rules tested here are not
#: about bars, so those minutes stay flat bars unless a test says otherwise
QUOTE_MINUTES_ARE_BARS = BarSettings(no_trade_minutes="bar")


def at(hour: int, minute: int, second: float = 0.0) -> float:
    return ist_epoch(2025, 1, 30, hour, minute, second)


T0 = at(9, 15)
#: the first evaluation after the ``swing_low`` shape starting at T0 is confirmed
FIRST_EVAL = T0 + 60 * SHAPE_BARS + 2.5


# -- running a session -----------------------------------------------------------------------


@dataclass
class Outcome:
    """What one replay left behind: the store's records and the simulated broker's books."""

    orders: list[StoredOrder]
    fills: list[Fill]
    trades: list[StoredTrade]
    swings: dict[str, list[Swing]]
    breaks: dict[str, list[SwingBroken]]
    state: dict[str, Any]
    broker_orders: dict[str, OrderRow]
    broker_positions: dict[str, int]
    alerts: list[Alert]

    def entries(self, symbol: str | None = None) -> list[StoredOrder]:
        return [o for o in self.orders if o.purpose is OrderPurpose.ENTRY
                and (symbol is None or o.symbol == symbol)]

    def covers(self, symbol: str | None = None) -> list[StoredOrder]:
        return [o for o in self.orders if o.purpose is not OrderPurpose.ENTRY
                and (symbol is None or o.symbol == symbol)]

    def lows(self, symbol: str) -> list[Swing]:
        return [s for s in self.swings[symbol] if s.kind is SwingKind.LOW]

    def at_broker(self, order: StoredOrder) -> OrderRow:
        assert order.broker_order_id is not None, f"{order.client_id} never reached the broker"
        return self.broker_orders[order.broker_order_id]

    def position(self, symbol: str) -> int:
        return self.broker_positions.get(symbol, 0)


def replay(tmp_path: Path, paths: Sequence[SymbolPath], *, risk: RiskSettings | None = None,
           bars: BarSettings = QUOTE_MINUTES_ARE_BARS,
           session_meta: dict[str, object] | None = None,
           on_step: Callable[[Engine, float], None] | None = None, restarts: int = 0,
           **strategy: Any) -> Outcome:
    """Write ``paths`` as a session (``session_meta``: more meta keys), replay it with
    baseline_v1 trading (``strategy``: settings overrides; ``risk``: the ``[risk]`` section;
    ``on_step``: called after each step, e.g. to crash an actor, which makes ``restarts``
    restarts) and collect the outcome."""
    session = write_session(tmp_path / "session.sqlite", paths, meta=session_meta)
    db_path = tmp_path / "engine.db"
    brokers: list[SimulatedBroker] = []

    def trade_baseline(parts: EngineParts) -> None:
        parts.strategies = ("baseline_v1",)
        parts.open_gate_at_start = True
        assert isinstance(parts.broker, SimulatedBroker)
        brokers.append(parts.broker)

    cfg = load_config(None).replace(orders=OrderSettings(), bars=bars,
                                    baseline_v1=BaselineSettings(**strategy),
                                    risk=risk or RiskSettings())
    summary = ReplayDriver(cfg, session, db_path=db_path, progress=False,
                           parts_hook=trade_baseline, on_step=on_step).run()
    assert summary.stuck_steps == 0 and summary.restarts == restarts
    [broker] = brokers
    with Database(db_path) as db:
        orders = sorted(db.orders(trading_date=DAY), key=lambda o: (o.created_ts, o.client_id))
        fills = db.fills(trading_date=DAY)
        trades = db.trades(strategy="baseline_v1", trading_date=DAY)
        swings = {sp.symbol: db.swings(sp.symbol, DAY) for sp in paths}
        breaks = {sp.symbol: db.swing_breaks(sp.symbol, DAY) for sp in paths}
        stored = db.strategy_state("strategy.baseline_v1")
        alerts = db.alerts()
    assert stored is not None
    return Outcome(orders, fills, trades, swings, breaks, stored.state["strategy"],
                   broker_rows(broker),
                   {row.symbol: row.quantity for row in broker.positionbook()}, alerts)


def broker_rows(broker: SimulatedBroker) -> dict[str, OrderRow]:
    """The broker's orderbook with each order's filled quantity and average price taken from
    its tradebook: the default personality (zerodha) leaves both out of the orderbook rows."""
    done: dict[str, tuple[int, float]] = {}
    for trade in broker.tradebook():
        quantity, value = done.get(trade.orderid, (0, 0.0))
        done[trade.orderid] = (quantity + trade.quantity, value + trade.quantity
                               * trade.average_price)
    rows = {}
    for row in broker.orderbook():
        quantity, value = done.get(row.orderid, (0, 0.0))
        rows[row.orderid] = dataclasses.replace(
            row, filled_quantity=quantity,
            average_price=round(value / quantity, 2) if quantity else 0.0)
    return rows


def shape(symbol: str, price: float, hh: float, *tail: Minute, vwap: float | None = None,
          start: float = T0) -> SymbolPath:
    """``symbol``: the swing-low shape at ``price`` (highest high after it ``hh``), then
    ``tail``."""
    return SymbolPath(symbol, start, (*swing_low(price, hh, vwap), *tail))


def through(swing: float, hover: float, low: float, close: float) -> Minute:
    """From ``hover`` down through the swing: the swing price at second 10, one tick under it
    (the entry trigger) at second 12, then ``low`` and ``close``."""
    return path((0, hover), (10, swing), (12, swing - 0.05), (30, low), (58, close))


def designed_low(out: Outcome, symbol: str, price: float, vwap: float | None = None,
                 start: float = T0) -> Swing:
    """The session made the swing it was designed to: the first Low of ``symbol``."""
    lows = out.lows(symbol)
    assert lows, f"no swing low on {symbol}: the session does not make its swing"
    low = lows[0]
    assert (low.price, low.bar_start) == (price, start + 60 * SWING_BAR)
    if vwap is not None:
        assert low.vwap == vwap
    return low


# -- the static filter ---------------------------------------------------------------------------


@pytest.mark.parametrize(("price", "hh", "traded"), [
    (100.0, 104.0, True),     # stop 105: 5 points, 5%
    (99.95, 103.95, False),
    (300.0, 309.0, True),     # stop 310: 10 points, 3.3%
    (300.05, 309.05, False),
])
def test_swing_price_range_is_inclusive(tmp_path: Path, price: float, hh: float,
                                        traded: bool) -> None:
    out = replay(tmp_path, [shape(CE, price, hh, flat(hh - 3), flat(hh - 3))])
    designed_low(out, CE, price)
    if traded:
        [entry] = out.entries()
        assert (entry.symbol, entry.trigger_price, entry.created_ts) == (
            CE, round(price - 0.05, 2), FIRST_EVAL)
        assert out.at_broker(entry).status == "trigger pending"
    else:
        assert out.orders == [] and out.broker_orders == {}


@pytest.mark.parametrize(("vwap", "traded"), [(200.0, True), (200.05, False)])
def test_vwap_premium_of_exactly_four_percent_is_enough(tmp_path: Path, vwap: float,
                                                        traded: bool) -> None:
    """Swing 208 over a VWAP of 200.00 is a 4% premium; over 200.05 it is 3.97%."""
    out = replay(tmp_path, [shape(CE, 208.0, 217.0, flat(212.0), flat(212.0), vwap=vwap)])
    designed_low(out, CE, 208.0, vwap=vwap)
    assert [(o.symbol, o.trigger_price) for o in out.entries()] == (
        [(CE, 207.95)] if traded else [])


# -- the dynamic filter and sizing -----------------------------------------------------------


@pytest.mark.parametrize(("hh", "quantity"), [
    (203.0, 650),     # stop 204: 4 points = 2% of 200 (25 lots, capped at 10)
    (202.95, None),   # 3.95 points = 1.975%
    (219.0, 325),     # stop 220: 20 points = 10% (5 lots)
    (219.05, None),   # 20.05 points = 10.025%
])
def test_stop_distance_between_two_and_ten_percent(tmp_path: Path, hh: float,
                                                   quantity: int | None) -> None:
    out = replay(tmp_path, [shape(CE, 200.0, hh, flat(201.5), flat(201.5))])
    designed_low(out, CE, 200.0)
    assert [o.quantity for o in out.entries()] == ([quantity] if quantity else [])


def test_session_facts_size_in_the_days_lots(tmp_path: Path) -> None:
    """A session whose instrument facts say lot size 75 (NIFTY in 2025) trades 75-lots, though
    [instrument] says 65: stop 220 under a swing at 200 risks 20 points a unit, so R 6500 buys
    floor(6500 / (20 × 75)) = 4 lots = 300 (with 65: 5 lots = 325)."""
    facts = {"lot_size": 75, "tick_size": 0.05, "freeze_quantity": 1800,
             "expiries": ["2025-01-30"], "source": "broker"}
    out = replay(tmp_path, [shape(CE, 200.0, 219.0, flat(201.5), flat(201.5))],
                 session_meta={"instrument": facts})
    designed_low(out, CE, 200.0)
    [entry] = out.entries()
    assert entry.quantity == 300 and entry.quantity % 75 == 0
    assert out.at_broker(entry).status == "trigger pending"  # the broker's lot check passed
    with Database(tmp_path / "engine.db") as db:
        stored = db.instrument_facts(DAY, "replay", "NIFTY")
    assert stored is not None and (stored.lot_size, stored.source) == (75, "session")


@pytest.mark.parametrize(("hh", "risk", "quantity"), [
    (209.0, R, 650),      # sl 10: 6500 / (10 x 65) = 10 lots exactly
    (211.0, R, 520),      # sl 12: 8.33 lots, floored to 8
    (205.0, R, 650),      # sl 6: 16.7 lots, capped at 10
    (209.0, 650.0, 65),   # sl 10 with R 650: one lot
    (209.0, 649.0, 0),    # below one lot: skipped
])
def test_sizing_reaches_the_broker(tmp_path: Path, hh: float, risk: float,
                                   quantity: int) -> None:
    """The entry is sized, fills on the break, and the broker holds exactly that short."""
    out = replay(tmp_path, [shape(CE, 200.0, hh, flat(203.0),
                                  through(200.0, 203.0, 199.0, 199.5), flat(199.5))],
                 risk_per_trade=risk)
    designed_low(out, CE, 200.0)
    if not quantity:
        assert out.orders == [] and out.position(CE) == 0
        return
    [entry] = out.entries()
    assert (entry.action, entry.pricetype, entry.quantity, entry.trigger_price, entry.price) == (
        Action.SELL, PriceType.SL, quantity, 199.95, 196.95)
    row = out.at_broker(entry)
    assert (row.status, row.filled_quantity, row.average_price) == ("complete", quantity, 199.95)
    assert out.position(CE) == -quantity
    [stop] = out.covers()
    assert (stop.action, stop.quantity, stop.trigger_price, stop.price) == (
        Action.BUY, quantity, hh + 1, hh + 4)
    assert out.at_broker(stop).status == "trigger pending"


# -- the best strike -------------------------------------------------------------------------------


@pytest.mark.parametrize(("swings", "best"), [
    # (symbol, swing, highest high after it): stop distance = hh + 1 - swing
    ([(CE, 200.0, 211.0), (CE2, 150.0, 158.0)], CE2),        # 12 vs 9: closer to 10
    ([(CE, 200.0, 207.0), (CE2, 150.0, 160.0)], CE2),        # 8 vs 11: 11 is closer
    ([(CE_ODD, 250.0, 259.0), (CE2, 150.0, 159.0)], CE2),    # both 10: the round strike
    ([(CE2, 150.0, 159.0), (CE, 180.0, 189.0)], CE),         # both 10 and round: higher price
    ([(CE, 200.0, 211.0), (CE_ODD, 250.0, 259.0), (CE2, 150.0, 159.0),
      (CE3, 180.0, 189.0)], CE3),                            # all three rules at once
], ids=["closer_below", "closer_above", "round_strike", "higher_price", "all_rules"])
def test_best_strike_tie_breaks(tmp_path: Path, swings: list[tuple[str, float, float]],
                                best: str) -> None:
    paths = [shape(sym, price, hh, flat(hh - 3), flat(hh - 3)) for sym, price, hh in swings]
    out = replay(tmp_path, paths)
    for sym, price, _ in swings:
        designed_low(out, sym, price)
    [entry] = out.entries()
    assert (entry.symbol, entry.created_ts) == (best, FIRST_EVAL)


# -- one working entry per option type, switching at bar closes ---------------------------------


def test_one_working_entry_per_option_type(tmp_path: Path) -> None:
    """Two qualifying CE swings and a PE one: one CE entry and one PE entry. The second CE gets
    its entry only once the first one has filled (a position, no longer a working entry)."""
    out = replay(tmp_path, [
        shape(CE, 200.0, 209.0, flat(203.0), flat(203.0),
              through(200.0, 203.0, 199.0, 199.5), flat(199.5), flat(199.5)),   # sl 10
        shape(CE2, 180.0, 191.0, *[flat(185.0)] * 5),                           # sl 12
        shape(PE, 150.0, 159.0, *[flat(155.0)] * 5),                            # sl 10
    ])
    for sym, price in ((CE, 200.0), (CE2, 180.0), (PE, 150.0)):
        designed_low(out, sym, price)
    first, pe, second = out.entries()
    assert (first.symbol, pe.symbol) == (CE, PE)
    assert first.created_ts == pe.created_ts == FIRST_EVAL
    [entry_fill] = [f for f in out.fills if f.client_id == first.client_id]
    assert entry_fill.ts == T0 + 60 * (SHAPE_BARS + 2) + 12
    assert second.symbol == CE2 and second.created_ts > entry_fill.ts
    assert out.at_broker(second).status == out.at_broker(pe).status == "trigger pending"
    assert out.position(CE) == -650


def test_a_better_strike_is_switched_to_only_at_the_bar_close(tmp_path: Path) -> None:
    """CE2's swing qualifies only when its bar in progress makes a new high (09:22:20): it is
    then the better strike (10 points against 12), but the working CE entry is replaced only
    after that bar has closed."""
    minute = T0 + 60 * SHAPE_BARS  # 09:22
    out = replay(tmp_path, [
        shape(CE, 200.0, 211.0, flat(205.0), flat(205.0), flat(205.0)),           # sl 12
        shape(CE2, 150.0, 151.0, path((0, 152.0), (20, 159.0), (40, 155.0)),     # sl 2, then 10
              flat(155.0), flat(155.0)),
    ])
    designed_low(out, CE, 200.0)
    designed_low(out, CE2, 150.0)
    old, new = out.entries()
    assert (old.symbol, old.created_ts) == (CE, FIRST_EVAL)
    assert out.at_broker(old).status == "cancelled"
    assert old.updated_ts >= minute + 60
    assert new.symbol == CE2 and (new.quantity, new.trigger_price, new.price) == (
        650, 149.95, 146.95)
    # the first evaluation after the 09:22 bars closed (09:23:02 + 0.5 s), not at 09:22:20
    assert minute + 60 <= new.created_ts <= minute + 60 + 3.5
    assert out.at_broker(new).status == "trigger pending"


# -- broken swings -------------------------------------------------------------------------------


@pytest.mark.parametrize("fills", [True, False])
def test_no_new_entry_after_the_swing_broke(tmp_path: Path, fills: bool) -> None:
    """The price trades through the swing (the entry fills) or touches it (a break, no fill),
    then comes back above it for minutes: no further entry order on the symbol."""
    broke = (through(200.0, 204.0, 199.0, 201.0) if fills
             else path((0, 204.0), (20, 200.0), (58, 203.0)))
    out = replay(tmp_path, [shape(CE, 200.0, 209.0, flat(204.0), broke, *[flat(203.0)] * 4)])
    low = designed_low(out, CE, 200.0)
    assert len(out.lows(CE)) == 1
    broke_at = T0 + 60 * (SHAPE_BARS + 1) + (10 if fills else 20)  # 09:23:10 / 09:23:20
    assert [(b.bar_start, b.by, b.broken_ts) for b in out.breaks[CE]
            if b.kind is SwingKind.LOW] == [(low.bar_start, "tick", broke_at)]
    [entry] = out.entries()
    assert entry.created_ts == FIRST_EVAL
    row = out.at_broker(entry)
    if fills:
        assert (row.status, row.average_price) == ("complete", 199.95)
        assert out.position(CE) == -650
        [stop] = out.covers()
        assert out.at_broker(stop).status == "trigger pending"
    else:
        assert (row.status, row.filled_quantity) == ("cancelled", 0)
        # cancelled at the close of the bar the break happened in (09:23)
        assert T0 + 60 * (SHAPE_BARS + 2) <= entry.updated_ts <= T0 + 60 * (SHAPE_BARS + 2) + 3.5
        assert out.position(CE) == 0 and out.covers() == []


# -- day limits ----------------------------------------------------------------------------------


MOVE = T0 + 60 * (SHAPE_BARS + 2)  # 09:24, the minute after the CE entry filled


def latch_session(move: Minute) -> list[SymbolPath]:
    """A CE short of 650 from 199.95 (filled 09:23:12, stop 210), then ``move`` at 09:24 and
    its last price for three more minutes; a PE entry working since 09:22; a CE2 swing
    confirmed at 09:26 that qualifies (first evaluation 09:26:02.5)."""
    return [
        shape(CE, 200.0, 209.0, flat(203.0), through(200.0, 203.0, 199.0, 199.0), move,
              *[flat(move.anchors[-1][1])] * 3),
        shape(PE, 150.0, 159.0, *[flat(155.0)] * 6),
        shape(CE2, 150.0, 159.0, flat(156.0), flat(156.0), start=T0 + 4 * 60),
    ]


@pytest.mark.parametrize(("move", "reached", "r"), [
    # the price falls to 149.95 at 09:24:50: 50 points x 650 = 32,500 = +5 R unrealized
    (path((0, 199.0), (50, 149.95)), MOVE + 50, 5.0),
    # to 150.00: 49.95 points = +4.995 R
    (path((0, 199.0), (50, 150.0)), None, 4.995),
    # the price gaps over the stop (trigger 210, limit 213) to 249.95 at 09:24:22: the stop
    # triggers and cannot fill; 50 points against = -5 R unrealized
    (path((0, 199.0), (20, 199.0), (22, 249.95)), MOVE + 22, -5.0),
    # to 249.90: -4.995 R
    (path((0, 199.0), (20, 199.0), (22, 249.9)), None, -4.995),
], ids=["plus_5R", "plus_4.995R", "minus_5R", "minus_4.995R"])
def test_the_daily_r_latch_at_plus_or_minus_five_r(tmp_path: Path, move: Minute,
                                                   reached: float | None, r: float) -> None:
    """At +5R or -5R (unrealized at the last price) every working entry is cancelled, the short
    is bought back and the day is over; just inside the limit, nothing happens."""
    out = replay(tmp_path, latch_session(move))
    designed_low(out, CE, 200.0)
    designed_low(out, PE, 150.0)
    designed_low(out, CE2, 150.0, start=T0 + 4 * 60)
    ce_entry, pe_entry, *rest = out.entries()
    assert (ce_entry.symbol, pe_entry.symbol) == (CE, PE)
    assert out.at_broker(ce_entry).average_price == 199.95
    last = move.anchors[-1][1]
    if reached is None:
        # inside the limit: the short stays, the PE entry works, CE2 gets its entry
        assert out.position(CE) == -650 and out.trades == []
        assert [o for o in out.orders if o.purpose is OrderPurpose.EXIT] == []
        assert out.at_broker(pe_entry).status == "trigger pending"
        [ce2_entry] = rest
        assert (ce2_entry.symbol, ce2_entry.created_ts) == (CE2, T0 + 60 * 11 + 2.5)
        return
    assert rest == []  # no entry after the latch (CE2 would have qualified at 09:26:02.5)
    assert out.at_broker(pe_entry).status == "cancelled"  # the working entry is withdrawn
    # everything is flat at the broker and every order is finished
    assert out.broker_positions == {CE: 0}
    assert {row.status for row in out.broker_orders.values()} <= {"complete", "cancelled"}
    # the close starts when the limit is reached (at most one backstop check later) and
    # only BUYs closing the short go out from then on
    [exit_order, *_] = [o for o in out.orders if o.purpose is OrderPurpose.EXIT]
    assert reached <= exit_order.created_ts <= reached + 5.0
    later = [o for o in out.orders if o.created_ts >= exit_order.created_ts]
    assert all(o.action is Action.BUY and o.symbol == CE for o in later)
    [trade] = out.trades
    assert (trade.symbol, trade.quantity, trade.entry_price, trade.exit_price) == (
        CE, 650, 199.95, last)
    assert trade.exit_reason != "stop"
    assert sum(t.r_multiple for t in out.trades) == r


def test_the_1515_exit_flattens_the_open_short(tmp_path: Path) -> None:
    """A short opened at 15:13 is bought back at 15:15 and recorded as an eod exit; a PE swing
    confirmed at 15:14 (first evaluation 15:15:02.5) gets no entry."""
    start = at(15, 5)
    out = replay(tmp_path, [
        shape(CE, 200.0, 209.0, flat(204.0), through(200.0, 204.0, 199.0, 201.0),
              *[flat(201.0)] * 6, start=start),
        shape(PE, 150.0, 159.0, *[flat(155.0)] * 5, start=at(15, 8)),
    ])
    designed_low(out, CE, 200.0, start=start)
    designed_low(out, PE, 150.0, start=at(15, 8))
    eod = at(15, 15)
    [entry] = out.entries()
    assert entry.symbol == CE and entry.created_ts < eod
    assert out.at_broker(entry).status == "complete"
    assert out.position(CE) == 0 and out.entries(PE) == []
    [stop] = [o for o in out.covers() if o.purpose is OrderPurpose.STOP]
    assert out.at_broker(stop).status == "cancelled" and stop.updated_ts >= eod
    exits = [o for o in out.covers() if o.purpose is OrderPurpose.EXIT]
    assert exits and all(eod <= o.created_ts < eod + 60 for o in exits)
    assert sum(out.at_broker(o).filled_quantity for o in exits) == 650
    [trade] = out.trades
    assert (trade.symbol, trade.quantity, trade.entry_price, trade.exit_price, trade.pnl,
            trade.exit_reason) == (CE, 650, 199.95, 201.0, -682.5, "eod")
    assert eod <= trade.exit_ts < eod + 60
    # the exit coordinator cancelled the stop to close with its market order: no failed cover
    # (issue 20: the strategy raised a false critical cover_failed here)
    assert [a.kind for a in out.alerts if a.kind == "cover_failed"] == []


# -- churn guard ---------------------------------------------------------------------------------


def churn_session() -> list[SymbolPath]:
    """Two CE swings whose best-strike order flips every minute, so the entry is switched back
    and forth at every bar close (a cancel on a symbol, then a re-place on it 60 s later):

    - 09:22:02.5 CE (stop distance 12) beats CE2 (7): CE entry;
    - 09:22 CE2's high -> 9: switched to CE2 at 09:23:02.5;
    - 09:23 CE2's high -> 13: back to CE (12) at 09:24:02.5, a churn cycle on CE;
    - 09:24 CE's high -> 14: back to CE2 (13) at 09:25:02.5, a churn cycle on CE2;
    - 09:25 CE2's high -> 15: CE (14) again at 09:26:02.5, the second cycle on CE.

    A PE swing confirmed at 09:27 could be entered at 09:28:02.5."""
    def spike(base: float, high: float) -> Minute:
        return path((0, base), (20, high), (40, base))

    return [
        shape(CE, 200.0, 211.0, flat(205.0), flat(205.0), spike(205.0, 213.0),
              *[flat(205.0)] * 5),
        shape(CE2, 190.0, 196.0, spike(193.0, 198.0), spike(193.0, 202.0), flat(193.0),
              spike(193.0, 204.0), *[flat(193.0)] * 4),
        shape(PE, 150.0, 159.0, flat(155.0), flat(155.0), start=T0 + 6 * 60),
    ]


@pytest.mark.parametrize(("settings", "paused"), [
    ({"churn_window_s": 90.0}, False),                           # 2 cycles on CE: CE blocked
    ({"churn_window_s": 90.0, "churn_symbol_cycles": 10,
      "churn_total_cycles": 3}, True),                            # 3 cycles in all: paused
], ids=["symbol_blocked", "paused"])
def test_the_churn_guard_blocks_the_symbol_or_pauses(tmp_path: Path, settings: dict[str, Any],
                                                     paused: bool) -> None:
    out = replay(tmp_path, churn_session(), **settings)
    designed_low(out, CE, 200.0)
    designed_low(out, CE2, 190.0)
    designed_low(out, PE, 150.0, start=T0 + 6 * 60)
    ce_entries = [o for o in out.entries() if o.symbol in (CE, CE2)]
    assert [o.symbol for o in ce_entries] == [CE, CE2, CE, CE2]
    assert [o.created_ts for o in ce_entries] == [FIRST_EVAL + 60 * k for k in range(4)]
    assert [out.at_broker(o).status for o in ce_entries] == [
        "cancelled", "cancelled", "cancelled", "trigger pending"]
    if paused:
        assert out.entries(PE) == []  # new entries paused for the day
        assert out.state["churn_paused"] is True and out.state["blocked"] == []
    else:
        [pe_entry] = out.entries(PE)  # only CE is blocked: other symbols still trade
        assert pe_entry.created_ts == T0 + 60 * (6 + SHAPE_BARS) + 2.5
        assert out.state["blocked"] == [CE] and out.state["churn_paused"] is False
    assert out.state["churn_total"] == 3


# -- production's rules (issue 17) -----------------------------------------------------------


def wide_swing_bar(price: float, bar_high: float, *tail: Minute) -> SymbolPath:
    """A swing Low whose own bar has the highest high: b0..b3 make a High at b0 (as in
    ``swing_low``), b4 rallies a little, and b5 dips to ``price``, then rallies to
    ``bar_high`` and closes near it: its second low-watch count creates the Low on b5 itself
    (the lowest low since the High), confirmed by the swing bar's own close. ``tail``: the
    minutes after it (their highs below ``bar_high``)."""
    top = bar_high + 3.0
    vwap = on_tick(price / 1.05)
    return SymbolPath(CE, T0, (
        path((0, top - 5), (10, vwap), (40, top), (58, top - 2), volume=[(10, 10_000)]),
        path((0, top - 2), (20, top - 1), (40, top - 5), (58, top - 4)),
        path((0, top - 4), (20, top - 3), (40, top - 8), (58, top - 7)),
        path((0, top - 7), (20, top - 6), (40, top - 10), (58, top - 9)),
        path((0, top - 9), (30, top - 5), (58, top - 6.5)),                 # b4
        path((0, top - 6.5), (20, price), (45, bar_high), (58, bar_high - 2)),  # b5: the swing
        *tail,
    ))


def test_the_stop_includes_the_swing_bars_high(tmp_path: Path) -> None:
    """Production's stop is the highest high from the swing bar on, the swing bar included.
    Here the swing bar (09:20, low 200) rallied to 215; later bars stay at or below 203. Stop
    216 (16 points, 8%): 6 lots = 390, and the protective stop after the fill triggers at 216.
    (Without the swing bar: stop 204, 4 points, 10 lots, stop trigger 204.)"""
    out = replay(tmp_path, [wide_swing_bar(200.0, 215.0, flat(203.0), flat(203.0),
                                           through(200.0, 203.0, 199.0, 199.5), flat(199.5))])
    [low] = out.lows(CE)
    assert (low.price, low.bar_start) == (200.0, T0 + 5 * 60)
    [entry] = out.entries()
    assert (entry.quantity, entry.trigger_price) == (390, 199.95)
    assert out.at_broker(entry).status == "complete"
    [stop] = out.covers()
    assert (stop.quantity, stop.trigger_price, stop.price) == (390, 216.0, 219.0)


def test_an_entry_that_stops_qualifying_is_cancelled_on_the_tick(tmp_path: Path) -> None:
    """The issue's case: a swing low at 200 with its stop at 206 is sized at 650 (09:22:02.5).
    At 09:22:10 the bar in progress spikes to 225: a stop distance of 26 points (13%), over the
    10% limit. The entry is cancelled on that tick, so when the price falls through the swing
    in the same minute (199.95 at 09:22:32) nothing fills. (At the bar close it would have been
    too late: a short of 650 with its stop at 226, 2.61 R at risk.)"""
    spike = path((0, 203.0), (10, 225.0), (20, 210.0), (30, 200.5), (32, 199.95), (40, 199.0),
                 (58, 199.5))
    out = replay(tmp_path, [shape(CE, 200.0, 205.0, spike, flat(199.5), flat(199.5))])
    designed_low(out, CE, 200.0)
    [entry] = out.entries()
    assert (entry.quantity, entry.created_ts) == (650, FIRST_EVAL)
    row = out.at_broker(entry)
    assert (row.status, row.filled_quantity) == ("cancelled", 0)
    assert entry.updated_ts < T0 + 60 * SHAPE_BARS + 32  # before the price reached the trigger
    assert out.position(CE) == 0 and out.covers() == [] and out.trades == []


def test_an_entry_waits_for_a_fresh_price(tmp_path: Path) -> None:
    """Entries open at 09:23. The CE swing (200) qualifies from 09:22:02.5, but the symbol's
    feed is silent from 09:22:50 to 09:23:40: at 09:23 its last price (203) is 10 seconds old,
    so no entry goes in on it. The next tick, at 09:23:40, gaps to 199, below the swing: the
    symbol is no candidate any more and nothing is sold. (On the stale price the entry went in
    at 09:23:00.5 and filled on the gap, as NIFTY09SEP2524000CE did at 12:20:40 in the bundled
    day.)"""
    before = path((0, 203.0), window=(0.0, 50.0))
    gap = path((40, 199.0), (58, 199.5), window=(40.0, 60.0))
    out = replay(tmp_path, [shape(CE, 200.0, 209.0, before, gap, flat(199.5))],
                 entry_start="09:23")
    designed_low(out, CE, 200.0)
    assert out.entries() == [] and out.position(CE) == 0


@pytest.mark.parametrize("r_unit", ["position", "fixed"])
def test_r_is_measured_against_each_positions_own_risk(tmp_path: Path, r_unit: str) -> None:
    """A short of 650 from 199.95 with a 4-point stop (204) risks 650 x 4 = ₹2,600, well under
    R = ₹6,500 (the 10-lot cap). At 09:24:22 the price gaps over the stop to 220 (the stop
    triggers and cannot fill at its limit 207): ₹13,032.50 against, -5.01 R of the position's
    own risk, so production's latch closes everything. In the fixed unit it is -2.01 R and
    the short stays open."""
    move = path((0, 199.0), (20, 199.0), (22, 220.0))
    out = replay(tmp_path, [shape(CE, 200.0, 203.0, flat(202.0),
                                  through(200.0, 202.0, 199.0, 199.0), move, *[flat(220.0)] * 3)],
                 risk=RiskSettings(r_unit=r_unit))
    designed_low(out, CE, 200.0)
    [entry] = out.entries()
    assert (entry.quantity, out.at_broker(entry).average_price) == (650, 199.95)
    [stop] = [o for o in out.covers() if o.purpose is OrderPurpose.STOP]
    assert stop.trigger_price == 204.0
    if r_unit == "fixed":
        assert out.position(CE) == -650 and out.trades == []
        return
    exits = [o for o in out.orders if o.purpose is OrderPurpose.EXIT]
    assert exits and MOVE + 22 <= exits[0].created_ts <= MOVE + 27
    assert out.broker_positions == {CE: 0}
    [trade] = out.trades
    assert (trade.exit_price, trade.pnl, trade.exit_reason) == (220.0, -13032.5, "daily_r")
    assert trade.r_multiple == round(-13032.5 / 2600, 4)


class MonitorCrash:
    """``on_step``: at the first step from ``at`` on, note the CE position's R and the day's R,
    crash the position monitor (the execution group restarts it, and the risk manager and the
    reconciler after it, from SQLite; the strategy keeps running and declares nothing again);
    at the first later step after the restart where it has a fresh price for CE again, note
    them once more. (On the one-thread replay the crash is handled when the step's messages
    run, so nothing is waited for here.)"""

    def __init__(self, at: float) -> None:
        self.at = at
        self.before: tuple[float, float, float] | None = None
        self.after: tuple[float, float, float] | None = None

    def __call__(self, engine: Engine, step: float) -> None:
        if self.before is None and step >= self.at:
            self.before = self.seen(engine)
            engine.tell("positions", Crash("test: the position monitor alone, mid-position"))
        elif self.before is not None and self.after is None and engine.restart_count() >= 1:
            marks = engine.ask("positions", PositionQuery(strategy="baseline_v1"), timeout=10)
            if any(m.symbol == CE and m.fresh for m in marks):
                self.after = self.seen(engine)

    @staticmethod
    def seen(engine: Engine) -> tuple[float, float, float]:
        """(the CE short's last price, its R, the day's R as the risk manager has it)."""
        [mark] = engine.ask("positions", PositionQuery(strategy="baseline_v1"), timeout=10)
        status = engine.ask("risk", StatusRequest(), timeout=10)
        return mark.ltp, round(mark.r_multiple, 4), status["strategies"]["baseline_v1"]["r"]


def test_a_restarted_position_monitor_keeps_each_positions_own_risk(tmp_path: Path) -> None:
    """The session of the own-risk latch test above. At 09:24:05 the short of 650 from 199.95
    (stop 204: ₹2,600 at risk) stands at 199 (+0.24 R of its own risk); the position monitor
    crashes and is restarted alone. It comes back with the declared stop distance from the
    store: the same R and the same day R at the same price (not +617.50 / ₹6,500 = +0.10 in
    the fixed unit), and the gap to 220 at 09:24:22 latches the day at −5.01 R exactly as
    without the crash (the fixed unit would have said −2.01 and kept the short open)."""
    move = path((0, 199.0), (20, 199.0), (22, 220.0))
    session = [shape(CE, 200.0, 203.0, flat(202.0), through(200.0, 202.0, 199.0, 199.0), move,
                     *[flat(220.0)] * 3)]
    (tmp_path / "clean").mkdir()
    (tmp_path / "hurt").mkdir()
    clean = replay(tmp_path / "clean", session)
    crash = MonitorCrash(MOVE + 5)
    hurt = replay(tmp_path / "hurt", session, on_step=crash, restarts=3)
    assert crash.before is not None and crash.after is not None
    assert crash.before == (199.0, 0.2375, 0.2375)
    assert crash.after == crash.before
    with Database(tmp_path / "hurt" / "engine.db") as db:
        assert [r.name for r in db.restarts()] == ["positions", "risk", "reconciler"]
    # the latch decision: the same exit, at the same moment, for the same reason
    for out in (clean, hurt):
        [trade] = out.trades
        assert (trade.pnl, trade.r_multiple, trade.exit_reason) == (-13032.5, -5.0125, "daily_r")
        assert out.broker_positions == {CE: 0}
    assert [(o.created_ts, o.quantity) for o in hurt.orders if o.purpose is OrderPurpose.EXIT] \
        == [(o.created_ts, o.quantity) for o in clean.orders if o.purpose is OrderPurpose.EXIT]
