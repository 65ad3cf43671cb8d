"""Indian F&O option charges: what each executed order costs beyond its premium.

Owns ``ChargeSettings`` (section ``[charges]``: brokerage and the dated statutory rates),
``order_charges`` (one executed order: brokerage, STT, exchange transaction charge, SEBI fee,
stamp duty, GST) and ``trade_charges`` (the charges of closed trades, each order's brokerage
counted once). Pure: no clock and no I/O. The formula, its rounding and the public source of
every default rate are in docs/research.md.

A dated rate is a list of ``"YYYY-MM-DD=RATE"`` entries: the rate in force on a day is the one
with the latest date on or before it (the earliest entry also covers any earlier day).

>>> c = order_charges(ChargeSettings(), side="BUY", quantity=75, price=120.0,
...                   day=date(2025, 9, 3))
>>> c.total
27.6
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Protocol

from engine.settings import setting

_PAISE = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ChargeSettings:
    """Section ``[charges]``: brokerage and the statutory rates of NSE index options."""

    enabled: bool = setting(True, "subtract charges to show net P&L beside gross (false: net "
                            "= gross)")
    brokerage_per_order: float = setting(20.0, "flat brokerage per executed order, rupees",
                                         min=0.0, max=10_000.0)
    stt_sell_pct: tuple[str, ...] = setting(
        ("2016-06-01=0.05", "2023-04-01=0.0625", "2024-10-01=0.1"),
        "securities transaction tax on the sell-side premium, % (dated: DATE=PCT, in force "
        "from DATE)")
    exchange_pct: tuple[str, ...] = setting(
        ("2024-10-01=0.03503",),
        "NSE transaction charge on premium turnover, both sides, % (dated)")
    sebi_per_crore: tuple[str, ...] = setting(
        ("2020-06-01=10",), "SEBI turnover fee, rupees per crore of premium turnover (dated)")
    stamp_buy_pct: tuple[str, ...] = setting(
        ("2020-07-01=0.003",), "stamp duty on the buy-side premium, % (dated)")
    gst_pct: tuple[str, ...] = setting(
        ("2017-07-01=18",), "GST on brokerage + exchange charge + SEBI fee, % (dated)")

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for key in DATED_KEYS:
            try:
                parse_dated(getattr(self, key))
            except ValueError as exc:
                found.append((key, str(exc)))
        return found


DATED_KEYS = ("stt_sell_pct", "exchange_pct", "sebi_per_crore", "stamp_buy_pct", "gst_pct")


@dataclass(frozen=True, slots=True)
class OrderCharges:
    """The charges of one executed order, each rounded to the paisa."""

    brokerage: float
    stt: float
    exchange: float
    sebi: float
    stamp: float
    gst: float

    @property
    def total(self) -> float:
        return round(self.brokerage + self.stt + self.exchange + self.sebi + self.stamp
                     + self.gst, 2)


@lru_cache(maxsize=256)
def parse_dated(entries: tuple[str, ...]) -> tuple[tuple[date, Decimal], ...]:
    """``("YYYY-MM-DD=RATE", ...)`` as (date, rate) pairs sorted by date; ValueError if bad."""
    if not entries:
        raise ValueError("needs at least one DATE=RATE entry")
    pairs: list[tuple[date, Decimal]] = []
    for entry in entries:
        when, sep, rate = entry.partition("=")
        try:
            if not sep:
                raise ValueError
            value = Decimal(rate.strip())
            if not value.is_finite() or value < 0:
                raise ValueError
            pairs.append((date.fromisoformat(when.strip()), value))
        except (ValueError, ArithmeticError):
            raise ValueError(f"expected DATE=RATE (YYYY-MM-DD=non-negative number), got "
                             f"{entry!r}") from None
    return tuple(sorted(pairs))


def rate_on(entries: tuple[str, ...], day: date) -> Decimal:
    """The rate of a dated setting in force on ``day``."""
    pairs = parse_dated(entries)
    current = pairs[0][1]
    for start, value in pairs:
        if start <= day:
            current = value
    return current


def _paise(amount: Decimal) -> Decimal:
    return amount.quantize(_PAISE, rounding=ROUND_HALF_UP)


def order_charges(settings: ChargeSettings, *, side: str, quantity: int, price: float,
                  day: date, brokerage: bool = True) -> OrderCharges:
    """The charges of one executed ``side`` ("BUY"/"SELL") order of ``quantity`` at ``price``
    on ``day``; ``brokerage`` False when this order's brokerage is already counted."""
    if not settings.enabled:
        return OrderCharges(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    turnover = Decimal(str(price)) * quantity
    hundred = Decimal(100)
    fee = _paise(Decimal(str(settings.brokerage_per_order))) if brokerage else Decimal(0)
    stt = _paise(turnover * rate_on(settings.stt_sell_pct, day) / hundred) \
        if side == "SELL" else Decimal(0)
    exchange = _paise(turnover * rate_on(settings.exchange_pct, day) / hundred)
    sebi = _paise(turnover * rate_on(settings.sebi_per_crore, day) / Decimal(10_000_000))
    stamp = _paise(turnover * rate_on(settings.stamp_buy_pct, day) / hundred) \
        if side == "BUY" else Decimal(0)
    gst = _paise((fee + exchange + sebi) * rate_on(settings.gst_pct, day) / hundred)
    return OrderCharges(float(fee), float(stt), float(exchange), float(sebi), float(stamp),
                        float(gst))


class ChargedTrade(Protocol):
    """What ``trade_charges`` needs of a closed trade (``StoredTrade`` has it); ``action`` is
    the entry side, an ``Action`` or its value."""

    @property
    def trading_date(self) -> date: ...
    @property
    def action(self) -> object: ...
    @property
    def quantity(self) -> int: ...
    @property
    def entry_price(self) -> float: ...
    @property
    def exit_price(self) -> float: ...
    @property
    def entry_client_id(self) -> str | None: ...
    @property
    def exit_client_id(self) -> str | None: ...


def _side(action: object) -> str:
    return str(getattr(action, "value", action))


def trade_charges(trades: Sequence[ChargedTrade], settings: ChargeSettings) -> list[float]:
    """The charges of each trade (entry order + exit order), in the given order. An order
    shared by several trades (a partial exit) pays its brokerage once, with the first of them."""
    seen: set[str] = set()
    out: list[float] = []
    for t in trades:
        entry_side = _side(t.action)
        exit_side = "BUY" if entry_side == "SELL" else "SELL"
        total = 0.0
        for side, price, client_id in ((entry_side, t.entry_price, t.entry_client_id),
                                       (exit_side, t.exit_price, t.exit_client_id)):
            first = client_id is None or client_id not in seen
            if client_id is not None:
                seen.add(client_id)
            total += order_charges(settings, side=side, quantity=t.quantity, price=price,
                                   day=t.trading_date, brokerage=first).total
        out.append(round(total, 2))
    return out


def total_charges(trades: Iterable[ChargedTrade], settings: ChargeSettings) -> float:
    """The charges of all ``trades`` together."""
    return round(sum(trade_charges(list(trades), settings)), 2)
