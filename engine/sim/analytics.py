"""What OpenAlgo computes from prices: the synthetic future, option Greeks, a margin estimate.

Owns the simulator's ``syntheticfuture``, ``optiongreeks`` and ``margin`` replies, with the
fields of OpenAlgo's services (synthetic_future_service.py, option_greeks_service.py,
margin_service.py with broker/zerodha/mapping/margin_data.py), from the simulated broker's
prices and the simulator clock:

- synthetic future = ATM strike + ATM call LTP − ATM put LTP (the ATM legs by ``optionsymbol``);
- Greeks: Black-76 (engine/market/black76.py) on the synthetic future as the forward (the spot
  when it cannot be had), implied volatility from the option's LTP, time to the expiry day's
  cut-off (15:30 IST for NFO/BFO), interest 0 % unless given;
- margin: a documented flat estimate, not SPAN (``MarginEstimate``; docs/openalgo-protocol.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from engine.broker import BrokerError, RejectedError
from engine.market import black76
from engine.market.instruments import INDEX_EXCHANGE, INDEX_SYMBOL, MONTHS, parse_option_symbol
from engine.runtime.clock import IST
from engine.sim.contracts import MasterContract, underlying_quote_exchange
from engine.sim.matching import SimulatedBroker

_OPTION = re.compile(r"([A-Z]+)(\d{2})([A-Z]{3})(\d{2})([\d.]+)(CE|PE)")
#: The expiry-day cut-off (IST) per exchange (option_greeks_service.EXCHANGE_EXPIRY_TIMES).
_EXPIRY_TIMES = {"MCX": time(23, 30), "CDS": time(12, 30)}
_DEFAULT_EXPIRY_TIME = time(15, 30)
_MIN_YEARS = 0.0001  # as OpenAlgo: closer to expiry than about an hour counts as an hour


@dataclass(frozen=True, slots=True)
class MarginEstimate:
    """The simulator's margin rule: no broker to ask, so a flat, documented estimate.

    A bought option needs its premium (price, else LTP, × quantity); nothing else is blocked.
    A sold option blocks ``span_rate`` + ``exposure_rate`` of the notional (index spot, or
    the strike while the index has no price, × quantity) as SPAN and exposure margin; any
    other instrument the same rates of its own notional (price, else LTP, × quantity). No
    hedge or spread benefit.
    """

    span_rate: float = 0.10
    exposure_rate: float = 0.02


class Analytics:
    """The computed endpoints over one simulated broker and its master contract."""

    def __init__(self, broker: SimulatedBroker, contract: MasterContract,
                 margin: MarginEstimate | None = None) -> None:
        self._broker = broker
        self._contract = contract
        self._margin = margin or MarginEstimate()

    def _ltp(self, symbol: str, exchange: str) -> float:
        return self._broker.quotes(symbol=symbol, exchange=exchange).ltp

    # -- syntheticfuture -----------------------------------------------------------------------
    def synthetic_future(self, underlying: str, exchange: str,
                         expiry_date: str) -> dict[str, Any]:
        call = self._contract.option_symbol(underlying, exchange, expiry_date, None, "ATM", "CE")
        put = self._contract.option_symbol(underlying, exchange, expiry_date, None, "ATM", "PE")
        strike = float(parse_option_symbol(call["symbol"]).strike)
        legs = []
        for leg, name in ((call, "Call"), (put, "Put")):
            ltp = self._ltp(leg["symbol"], leg["exchange"])
            if ltp <= 0:  # never traded: no price to build on
                raise BrokerError(f"Could not fetch LTP for {name} option: {leg['symbol']}",
                                  status=500)
            legs.append(ltp)
        return {"underlying": underlying, "underlying_ltp": call["underlying_ltp"],
                "expiry": expiry_date, "atm_strike": strike,
                "synthetic_future_price": round(strike + legs[0] - legs[1], 2)}

    # -- optiongreeks --------------------------------------------------------------------------
    def option_greeks(self, f: dict[str, Any], now: float) -> dict[str, Any]:
        symbol, exchange = f["symbol"], f["exchange"]
        base, expiry_day, strike, kind = _parse(symbol)
        expiry = datetime.combine(expiry_day, _expiry_time(exchange, f.get("expiry_time")), IST)
        forward = f.get("forward_price") or self._forward(f, base, exchange, expiry_day)
        option_price = self._ltp(symbol, exchange)
        if option_price <= 0:
            raise BrokerError("Option LTP not available", status=404)
        days = (expiry.timestamp() - now) / 86400.0
        if days <= 0:
            raise RejectedError(f"Option has expired on {expiry:%d-%b-%Y}")
        years = max(days / 365.0, _MIN_YEARS)
        days = years * 365.0
        rate = f.get("interest_rate") or 0.0
        intrinsic = max(forward - strike, 0.0) if kind == "CE" else max(strike - forward, 0.0)
        head = {"symbol": symbol, "exchange": exchange, "underlying": base,
                "strike": round(strike, 2), "option_type": kind,
                "expiry_date": f"{expiry:%d-%b-%Y}", "days_to_expiry": round(days, 4),
                "spot_price": round(forward, 2), "option_price": round(option_price, 2)}
        time_value = option_price - intrinsic
        flag = "c" if kind == "CE" else "p"
        note = ""
        if time_value <= 0 or (intrinsic > 0 and time_value < 0.01):
            note = "Deep ITM option with no time value - theoretical Greeks returned"
        else:
            try:
                sigma = black76.implied_volatility(option_price, forward, strike, years,
                                                   rate / 100.0, flag)
            except ValueError as exc:
                if "intrinsic" not in str(exc):
                    raise BrokerError(f"Failed to calculate Implied Volatility: {exc}",
                                      status=500) from None
                note = "IV calculation not possible - theoretical deep ITM Greeks returned"
        if note:  # OpenAlgo's deep-ITM answer: no volatility, delta ±1
            return {**head, "intrinsic_value": round(intrinsic, 2),
                    "time_value": round(max(time_value, 0.0), 2),
                    "interest_rate": round(rate, 2), "implied_volatility": 0,
                    "greeks": {"delta": 1.0 if kind == "CE" else -1.0, "gamma": 0, "theta": 0,
                               "vega": 0, "rho": 0}, "note": note}
        g = black76.greeks(flag, forward, strike, years, rate / 100.0, sigma)
        return {**head, "interest_rate": round(rate, 2),
                "implied_volatility": round(sigma * 100.0, 2),
                "greeks": {"delta": round(g.delta, 4), "gamma": round(g.gamma, 6),
                           "theta": round(g.theta, 4), "vega": round(g.vega, 4),
                           "rho": round(g.rho, 6)}}

    def _forward(self, f: dict[str, Any], base: str, exchange: str, expiry_day: date) -> float:
        """The synthetic future of the option's expiry, else the underlying's LTP."""
        underlying = f.get("underlying_symbol") or base
        quote_exchange = f.get("underlying_exchange") or underlying_quote_exchange(exchange)
        if underlying == base:
            code = f"{expiry_day.day:02d}{MONTHS[expiry_day.month - 1]}{expiry_day.year % 100:02d}"
            try:
                return float(self.synthetic_future(base, quote_exchange, code)
                             ["synthetic_future_price"])
            except BrokerError:
                pass  # OpenAlgo falls back to the spot
        try:
            spot = self._ltp(underlying, quote_exchange)
        except BrokerError as exc:
            raise type(exc)(f"Failed to fetch underlying price: {exc.message}",
                            status=exc.status) from None
        if spot <= 0:
            raise BrokerError("Underlying LTP not available", status=404)
        return spot

    # -- margin --------------------------------------------------------------------------------
    def margin(self, positions: list[dict[str, Any]]) -> dict[str, Any]:
        rule = self._margin
        checked = [_margin_numbers(p, i) for i, p in enumerate(positions, start=1)]
        total = span = exposure = 0.0
        priced = 0
        for p, qty, limit in checked:
            symbol, exchange = p["symbol"], p["exchange"]
            if not self._broker.is_known(symbol, exchange):
                continue  # as Zerodha's transform: a symbol without a token is left out
            priced += 1
            price = limit if limit > 0 else self._ltp(symbol, exchange)
            try:
                strike = float(parse_option_symbol(symbol).strike)
            except ValueError:
                strike = None
            if strike is not None and p["action"].upper() == "BUY":
                total += price * qty
                continue
            notional = (price if strike is None else self._spot() or strike) * qty
            span += rule.span_rate * notional
            exposure += rule.exposure_rate * notional
            total += (rule.span_rate + rule.exposure_rate) * notional
        if not priced:
            raise RejectedError("No valid positions to calculate margin. Check if symbols are "
                                "valid.")
        return {"data": {"total_margin_required": round(total, 2),
                         "span_margin": round(span, 2), "exposure_margin": round(exposure, 2)}}

    def _spot(self) -> float:
        return self._ltp(INDEX_SYMBOL, INDEX_EXCHANGE)


def _parse(symbol: str) -> tuple[str, date, float, str]:
    """(underlying, expiry day, strike, CE|PE) as option_greeks_service.parse_option_symbol."""
    m = _OPTION.match(symbol.upper())
    try:
        if not m or m[3] not in MONTHS:
            raise ValueError(f"Invalid option symbol format: {symbol}")
        return m[1], date(2000 + int(m[4]), MONTHS.index(m[3]) + 1, int(m[2])), \
            float(m[5]), m[6]
    except ValueError as exc:
        raise RejectedError(f"Failed to parse option symbol {symbol}: {exc}") from None


def _expiry_time(exchange: str, custom: str | None) -> time:
    if not custom:
        return _EXPIRY_TIMES.get(exchange, _DEFAULT_EXPIRY_TIME)
    parts = custom.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise RejectedError(f"Invalid expiry_time format: {custom}. Use HH:MM format (e.g., "
                            f"'15:30', '19:00')")
    hour, minute = int(parts[0]), int(parts[1])
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise RejectedError(f"Invalid expiry_time values: {custom}. Hour must be 0-23, minute "
                            f"must be 0-59")
    return time(hour, minute)


def _margin_numbers(p: dict[str, Any], i: int) -> tuple[dict[str, Any], int, float]:
    """A position with its quantity and price, checked as margin_service.validate_position."""
    try:
        qty = int(p["quantity"])
    except ValueError:
        raise RejectedError(f"Position {i}: Invalid quantity format") from None
    if qty <= 0:
        raise RejectedError(f"Position {i}: Quantity must be a positive number")
    try:
        price = float(p["price"])
    except ValueError:
        price = math.nan
    if not math.isfinite(price):
        raise RejectedError(f"Position {i}: Invalid price format")
    if price < 0:
        raise RejectedError(f"Position {i}: Price cannot be negative")
    return p, qty, price
