"""Indian F&O option charges against a worked example computed by hand (docs/research.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from engine.messages import Action
from engine.store.database import StoredTrade
from engine.trading.charges import ChargeSettings, order_charges, rate_on, trade_charges
from engine.trading.trades import summarize, trade_table

DAY = date(2025, 9, 3)
RATES = ChargeSettings()


def test_a_buy_of_a_nifty_option_by_hand() -> None:
    # 75 × ₹120.00 = ₹9,000 premium. Brokerage 20; no STT on a buy; exchange 9,000 × 0.03503 %
    # = 3.1527 → 3.15; SEBI 9,000 × 10 / 1e7 = 0.009 → 0.01; stamp 9,000 × 0.003 % = 0.27;
    # GST 18 % × (20 + 3.15 + 0.01) = 4.1688 → 4.17. Total 27.60.
    c = order_charges(RATES, side="BUY", quantity=75, price=120.0, day=DAY)
    assert (c.brokerage, c.stt, c.exchange, c.sebi, c.stamp, c.gst) == (
        20.0, 0.0, 3.15, 0.01, 0.27, 4.17)
    assert c.total == 27.60


def test_a_sell_of_a_nifty_option_by_hand() -> None:
    # 75 × ₹150.00 = ₹11,250. Brokerage 20; STT 11,250 × 0.1 % = 11.25; exchange 11,250 ×
    # 0.03503 % = 3.940875 → 3.94; SEBI 0.01125 → 0.01; no stamp on a sell; GST 18 % × (20 +
    # 3.94 + 0.01) = 4.311 → 4.31. Total 39.51.
    c = order_charges(RATES, side="SELL", quantity=75, price=150.0, day=DAY)
    assert (c.brokerage, c.stt, c.exchange, c.sebi, c.stamp, c.gst) == (
        20.0, 11.25, 3.94, 0.01, 0.0, 4.31)
    assert c.total == 39.51


def trade(action: Action, entry: float, exit_: float, *, entry_id: str | None = "e1",
          exit_id: str | None = "x1", day: date = DAY) -> StoredTrade:
    sign = 1 if action is Action.BUY else -1
    return StoredTrade(strategy="s", account="a", symbol="NIFTY09SEP2524000CE", trading_date=day,
                       action=action, quantity=75, entry_ts=1.0, entry_price=entry, exit_ts=2.0,
                       exit_price=exit_, pnl=sign * (exit_ - entry) * 75, r_multiple=1.0,
                       entry_client_id=entry_id, exit_client_id=exit_id)


def test_a_round_trip_costs_its_buy_and_its_sell_and_net_stands_beside_gross() -> None:
    t = trade(Action.BUY, 120.0, 150.0)
    assert trade_charges([t], RATES) == [67.11]  # 27.60 + 39.51
    s = summarize([t], charges=RATES)
    assert (s.pnl, s.charges, s.net_pnl) == (2250.0, 67.11, 2182.89)
    table = trade_table([t], charges=RATES)
    assert "+2250.00" in table and "67.11" in table and "+2182.89" in table
    assert "net ₹2,182.89" in table.splitlines()[-1]
    # a short sale pays the same: the sell is still the sell, the buy the buy
    assert trade_charges([trade(Action.SELL, 150.0, 120.0)], RATES) == [67.11]


def test_an_order_shared_by_two_trades_pays_its_brokerage_once() -> None:
    first, second = trade(Action.SELL, 150.0, 120.0, exit_id="x1"), trade(
        Action.SELL, 150.0, 120.0, exit_id="x2")  # one entry order, two partial exits
    costs = trade_charges([first, second], RATES)
    assert round(costs[0] - costs[1], 2) == 23.60  # the entry's ₹20 brokerage and its 18 % GST


def test_rates_are_dated() -> None:
    assert str(rate_on(RATES.stt_sell_pct, date(2024, 9, 30))) == "0.0625"
    assert str(rate_on(RATES.stt_sell_pct, date(2024, 10, 1))) == "0.1"
    assert str(rate_on(RATES.stt_sell_pct, date(2010, 1, 1))) == "0.05"  # earliest covers before
    before = order_charges(RATES, side="SELL", quantity=75, price=150.0, day=date(2024, 9, 2))
    assert before.stt == 7.03  # 11,250 × 0.0625 % = 7.03125


def test_disabled_charges_are_zero_and_bad_dated_rates_are_config_errors() -> None:
    assert trade_charges([trade(Action.BUY, 1.0, 2.0)], replace(RATES, enabled=False)) == [0.0]
    bad = replace(RATES, stt_sell_pct=("2024-10-01:0.1",))
    assert bad.problems() and "DATE=RATE" in bad.problems()[0][1]
    from engine.app.sections import load_config
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match=r"charges\.gst_pct"):
        load_config(None, env={}, overrides={"charges.gst_pct": "18"})
