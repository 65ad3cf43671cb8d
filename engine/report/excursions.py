"""How far each closed trade went against and for the trader: MAE and MFE.

Owns ``excursion``: the maximum adverse excursion (MAE, how far price went against the position
while it was open; zero or negative) and the maximum favourable excursion (MFE, zero or
positive), per unit in price points and in rupees and R for the trade's quantity. They are read
from the symbol's stored 1-minute bars that overlap the trade, so they are minute-bar figures:
a minute's high or low may come from before the entry or after the exit inside that minute. The
entry and exit prices themselves always count. R is the trade's own: its initial risk is
``pnl / r_multiple`` rupees; a trade with no R (or no P&L to derive it from) has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.messages import Action, Bar
from engine.store.database import StoredTrade


@dataclass(frozen=True, slots=True)
class Excursion:
    mae_points: float  # <= 0
    mfe_points: float  # >= 0
    mae_rupees: float
    mfe_rupees: float
    mae_r: float | None
    mfe_r: float | None
    bars: int  # how many minute bars the figures come from (0: entry and exit prices only)


def excursion(trade: StoredTrade, bars: Sequence[Bar]) -> Excursion:
    """MAE and MFE of ``trade`` over ``bars`` (the symbol's bars of the day, any order)."""
    inside = [b for b in bars if b.start + 60 > trade.entry_ts and b.start <= trade.exit_ts]
    high = max([trade.entry_price, trade.exit_price, *(b.high for b in inside)])
    low = min([trade.entry_price, trade.exit_price, *(b.low for b in inside)])
    if trade.action is Action.BUY:
        mae, mfe = low - trade.entry_price, high - trade.entry_price
    else:
        mae, mfe = trade.entry_price - high, trade.entry_price - low
    risk = trade.pnl / trade.r_multiple if trade.r_multiple and trade.pnl else None
    risk = abs(risk) if risk else None
    q = trade.quantity
    return Excursion(round(mae, 2), round(mfe, 2), round(mae * q, 2), round(mfe * q, 2),
                     None if risk is None else round(mae * q / risk, 2),
                     None if risk is None else round(mfe * q / risk, 2), len(inside))
