"""The simulator's master contract, and the OpenAlgo endpoints that read it.

Owns what a real OpenAlgo server answers from its broker's master contract (``SymToken``):
one row per known symbol (NIFTY on NSE_INDEX and every declared or published option), carrying
the simulator's instrument facts (lot size, tick size, freeze quantity). The reply bodies follow
OpenAlgo's services field for field (docs/openalgo-protocol.md, "Instruments from the broker"):

- ``symbol`` (services/symbol_service.py), ``search`` (search_service.py) and the
  ``instruments`` download (instruments_service.py, a GET): contract rows;
- ``expiry`` (expiry_service.py): ``DD-MMM-YY`` dates of today and later, ascending;
- ``optionsymbol`` (option_symbol_service.py): ATM from the listed strikes, ITMn/OTMn offsets;
- ``optionchain`` (option_chain_service.py): labelled strikes around ATM with quotes per leg;
- ``multiquotes`` (quotes_service.py): one result per requested pair, errors inline;
- ``holdings`` (holdings_service.py): an F&O-only account holds no delivery stock: empty, with
  the statistics block.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import date
from typing import Any

from engine.broker import OrderNotFound, Quote, RejectedError
from engine.market.instruments import (
    MONTHS,
    InstrumentSpec,
    parse_option_symbol,
    trading_date,
)
from engine.sim.matching import SimulatedBroker

#: Where OpenAlgo quotes an underlying's options (option_symbol_service.get_option_exchange).
OPTION_EXCHANGES = {"NSE_INDEX": "NFO", "NSE": "NFO", "NFO": "NFO", "BSE_INDEX": "BFO",
                    "BSE": "BFO", "BFO": "BFO"}
_INDEX_QUOTE_EXCHANGE = {"NFO": "NSE_INDEX", "BFO": "BSE_INDEX"}
_OFFSET = re.compile(r"^(ATM|ITM([1-9]|[1-4][0-9]|50)|OTM([1-9]|[1-4][0-9]|50))$")
_EXPIRY_IN_UNDERLYING = re.compile(r"^([A-Z]+)(\d{2}[A-Z]{3}\d{2})(?:FUT)?$")


def underlying_quote_exchange(exchange: str) -> str:
    """Where an underlying named with ``exchange`` is quoted: an option exchange's index."""
    return _INDEX_QUOTE_EXCHANGE.get(exchange, exchange)


def expiry_db(day: date) -> str:
    """The master contract's expiry text: ``09-SEP-25``."""
    return f"{day.day:02d}-{MONTHS[day.month - 1]}-{day.year % 100:02d}"


def _expiry_from_text(text: str) -> date:
    """``09SEP25`` (a request's expiry_date) → a date; ``RejectedError`` otherwise."""
    t = text.strip().upper()
    if len(t) == 7 and t[:2].isdigit() and t[2:5] in MONTHS and t[5:].isdigit():
        try:
            return date(2000 + int(t[5:]), MONTHS.index(t[2:5]) + 1, int(t[:2]))
        except ValueError:
            pass
    raise RejectedError(f"Invalid expiry date format: {text}. Use DDMMMYY (e.g. 28OCT25)")


@dataclass(frozen=True, slots=True)
class ContractRow:
    symbol: str
    exchange: str
    name: str
    expiry: date | None
    strike: float
    instrumenttype: str
    lotsize: int
    tick_size: float

    @property
    def token(self) -> str:  # stable per symbol, like a broker's instrument token
        return str(zlib.crc32(f"{self.exchange}:{self.symbol}".encode()) % 10_000_000)

    def json(self, freeze_qty: int | None = None) -> dict[str, Any]:
        """The row as OpenAlgo sends it; ``freeze_qty`` where the endpoint adds it."""
        row = {"symbol": self.symbol, "brsymbol": self.symbol, "name": self.name,
               "exchange": self.exchange, "brexchange": self.exchange, "token": self.token,
               "expiry": expiry_db(self.expiry) if self.expiry else "",
               "strike": self.strike, "lotsize": self.lotsize,
               "instrumenttype": self.instrumenttype, "tick_size": self.tick_size}
        if freeze_qty is not None:
            row["freeze_qty"] = freeze_qty
        return row


class MasterContract:
    """The contract rows of everything the simulated broker knows, and the replies built on
    them."""

    def __init__(self, broker: SimulatedBroker, spec: InstrumentSpec) -> None:
        self._broker = broker
        self._spec = spec

    def rows(self) -> list[ContractRow]:
        out = []
        for symbol, exchange in self._broker.known_symbols():
            try:
                opt = parse_option_symbol(symbol)
            except ValueError:
                kind = "INDEX" if exchange.endswith("_INDEX") else "EQ"
                out.append(ContractRow(symbol, exchange, symbol, None, 0.0, kind, 1,
                                       self._spec.tick_size))
                continue
            out.append(ContractRow(symbol, exchange, opt.root, opt.expiry, float(opt.strike),
                                   opt.kind, self._spec.lot_size, self._spec.tick_size))
        return out

    def freeze_qty(self, row: ContractRow) -> int:
        # OpenAlgo answers 1 for a symbol without a configured freeze quantity
        return self._spec.freeze_quantity if row.expiry is not None else 1

    def _today(self) -> date:
        return trading_date(self._broker.clock.time())

    # -- symbol, search, expiry --------------------------------------------------------------
    def symbol(self, symbol: str, exchange: str) -> dict[str, Any]:
        for i, row in enumerate(self.rows(), start=1):
            if row.symbol == symbol and row.exchange == exchange:
                return {"data": {"id": i, **row.json(self.freeze_qty(row))}}
        raise OrderNotFound(f"Symbol {symbol} not found in exchange {exchange}")

    def search(self, query: str, exchange: str | None) -> dict[str, Any]:
        terms = query.upper().split()
        if not terms:
            raise RejectedError("Query parameter is required and cannot be empty")
        found = []
        for row in self.rows():
            if exchange and row.exchange != exchange:
                continue
            text = f"{row.symbol} {row.name} {row.token}"
            if all(t in text or _same_number(t, row.strike) for t in terms):
                found.append(row.json(self.freeze_qty(row)))
        found = found[:500]
        if not found:
            return {"message": "No matching symbols found", "data": []}
        return {"message": f"Found {len(found)} matching symbols", "data": found}

    def expiry(self, symbol: str, exchange: str, instrumenttype: str) -> dict[str, Any]:
        if instrumenttype.lower() not in ("futures", "options"):
            raise RejectedError('Instrumenttype must be either "futures" or "options"')
        symbol, kinds = symbol.strip().upper(), (
            ("CE", "PE") if instrumenttype.lower() == "options" else ("FUT",))
        today = self._today()
        dates = sorted({r.expiry for r in self.rows()
                        if r.expiry is not None and r.name == symbol and r.exchange == exchange
                        and r.instrumenttype in kinds and r.expiry >= today})
        text = [expiry_db(d) for d in dates]
        if not text:
            return {"message": f"No expiry dates found for {symbol} {instrumenttype.lower()} "
                               f"in {exchange}", "data": []}
        return {"message": f"Found {len(text)} expiry dates for {symbol} "
                           f"{instrumenttype.lower()} in {exchange}", "data": text}

    def instruments(self, exchange: str | None) -> dict[str, Any]:
        """The contract download (instruments_service.py): every row, or one exchange's."""
        rows = [r.json() for r in self.rows() if not exchange or r.exchange == exchange]
        if not rows:
            return {"message": "No instruments found", "data": []}
        return {"message": f"Found {len(rows)} instruments", "data": rows}

    # -- options ------------------------------------------------------------------------------
    def _resolve(self, underlying: str, exchange: str,
                 expiry_date: str | None) -> tuple[str, date, str, str, float]:
        """(base, expiry, option exchange, quote exchange, underlying ltp) for a request."""
        base, embedded = underlying.strip().upper(), None
        m = _EXPIRY_IN_UNDERLYING.match(base)
        if m:
            base, embedded = m[1], m[2]
        text = expiry_date or embedded
        if not text:
            raise RejectedError("Expiry date required. Provide via expiry_date parameter or "
                                "embed in underlying (e.g., NIFTY28OCT25FUT).")
        expiry = _expiry_from_text(text)
        quote_exchange = underlying_quote_exchange(exchange)
        option_exchange = OPTION_EXCHANGES.get(quote_exchange, "NFO")
        if not self._broker.is_known(base, quote_exchange):
            raise RejectedError(f"Failed to fetch LTP for {base}. Symbol {base} not found on "
                                f"{quote_exchange}")
        ltp = self._broker.quotes(symbol=base, exchange=quote_exchange).ltp
        return base, expiry, option_exchange, quote_exchange, ltp

    def _strikes(self, base: str, expiry: date, kind: str, exchange: str) -> list[float]:
        return sorted({r.strike for r in self.rows() if r.name == base and r.expiry == expiry
                       and r.instrumenttype == kind and r.exchange == exchange})

    def option_symbol(self, underlying: str, exchange: str, expiry_date: str | None,
                      strike_int: int | None, offset: str, option_type: str) -> dict[str, Any]:
        offset, kind = offset.upper(), option_type.upper()
        base, expiry, opt_exchange, _qx, ltp = self._resolve(underlying, exchange, expiry_date)
        if strike_int is None:
            strikes = self._strikes(base, expiry, kind, opt_exchange)
            if not strikes:
                raise OrderNotFound(f"No strikes found for {base} expiring "
                                    f"{expiry_date or underlying}. Please check expiry date "
                                    f"or update master contract.")
            atm = min(strikes, key=lambda s: abs(s - ltp))
            index = strikes.index(atm) + _offset_steps(offset, kind)
            if not 0 <= index < len(strikes):
                raise RejectedError(f"Offset {offset} is out of range for available strikes. "
                                    f"Please use a smaller offset.")
            strike = strikes[index]
        else:
            strike = round(ltp / strike_int) * strike_int + _offset_steps(offset, kind) * strike_int
        symbol = _symbol(base, expiry, strike, kind)
        row = next((r for r in self.rows() if r.symbol == symbol and r.exchange == opt_exchange),
                   None)
        if row is None:
            raise OrderNotFound(f"Option symbol {symbol} not found in {opt_exchange}. Symbol "
                                f"may not exist or master contract needs update.")
        return {"symbol": row.symbol, "exchange": row.exchange, "lotsize": row.lotsize,
                "tick_size": row.tick_size, "freeze_qty": self.freeze_qty(row),
                "underlying_ltp": ltp}

    def option_chain(self, underlying: str, exchange: str, expiry_date: str,
                     strike_count: int | None, now: float) -> dict[str, Any]:
        base, expiry, opt_exchange, quote_exchange, ltp = self._resolve(underlying, exchange,
                                                                        expiry_date)
        strikes = self._strikes(base, expiry, "CE", opt_exchange)
        if not strikes:
            raise OrderNotFound(f"No strikes found for {base} expiring {expiry_date}. Please "
                                f"check expiry date or update master contract.")
        atm = min(strikes, key=lambda s: abs(s - ltp))
        i = strikes.index(atm)
        chosen = strikes if strike_count is None else \
            strikes[max(0, i - strike_count):i + strike_count + 1]
        rows = {r.symbol: r for r in self.rows() if r.exchange == opt_exchange}
        chain = []
        for strike in chosen:
            n = strikes.index(strike) - i
            labels = ("ATM", "ATM") if n == 0 else \
                ((f"OTM{n}", f"ITM{n}") if n > 0 else (f"ITM{-n}", f"OTM{-n}"))
            entry: dict[str, Any] = {"strike": strike}
            for leg, kind, label in (("ce", "CE", labels[0]), ("pe", "PE", labels[1])):
                row = rows.get(_symbol(base, expiry, strike, kind))
                entry[leg] = None if row is None else {
                    "symbol": row.symbol, "label": label,
                    **_leg_quote(self._broker.quotes(symbol=row.symbol, exchange=opt_exchange)),
                    "lotsize": row.lotsize, "tick_size": row.tick_size}
            chain.append(entry)
        prev_close = self._broker.quotes(symbol=base, exchange=quote_exchange).prev_close
        return {"underlying": base, "underlying_symbol": base,
                "underlying_exchange": quote_exchange, "underlying_ltp": ltp,
                "underlying_prev_close": prev_close, "expiry_date": expiry_date.upper(),
                "expiry_ts": None, "server_ts": int(now), "atm_strike": atm,
                "quotes_included": True, "greeks_included": False, "forward_price": None,
                "chain": chain}

    # -- quotes and holdings -------------------------------------------------------------------
    def multiquotes(self, pairs: list[dict[str, str]]) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        for pair in pairs:
            symbol, exchange = pair["symbol"], pair["exchange"]
            if not self._broker.is_known(symbol, exchange):
                results.append({"symbol": symbol, "exchange": exchange,
                                "error": f"Symbol '{symbol}' not found for exchange "
                                         f"'{exchange}'. Please verify the symbol name and "
                                         f"ensure master contracts are downloaded."})
                continue
            q = self._broker.quotes(symbol=symbol, exchange=exchange)
            results.append({"symbol": symbol, "exchange": exchange, "data": {
                "ask": q.ask, "bid": q.bid, "high": q.high, "low": q.low, "ltp": q.ltp,
                "open": q.open, "prev_close": q.prev_close, "volume": q.volume, "oi": q.oi}})
        if all("error" in r for r in results):
            raise RejectedError(results[0]["error"])
        return {"results": results}

    @staticmethod
    def holdings() -> dict[str, Any]:
        stats = {"totalholdingvalue": 0.0, "totalinvvalue": 0.0, "totalprofitandloss": 0.0,
                 "totalpnlpercentage": 0.0}
        return {"data": {"holdings": [], "statistics": stats}}


def _symbol(base: str, expiry: date, strike: float, kind: str) -> str:
    shown = int(strike) if strike == int(strike) else strike
    return f"{base}{expiry.day:02d}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}{shown}{kind}"


def _offset_steps(offset: str, kind: str) -> int:
    """Strikes from ATM: ITM is lower for a call and higher for a put, OTM the reverse."""
    if not _OFFSET.match(offset):
        raise RejectedError("Offset must be ATM, ITM1-ITM50, or OTM1-OTM50")
    if offset == "ATM":
        return 0
    n = int(offset[3:])
    lower = (offset.startswith("ITM")) == (kind == "CE")
    return -n if lower else n


def _same_number(term: str, value: float) -> bool:
    try:
        return float(term) == value
    except ValueError:
        return False


def _leg_quote(q: Quote) -> dict[str, Any]:
    return {"ltp": q.ltp, "bid": q.bid, "ask": q.ask, "bid_qty": 0, "ask_qty": 0,
            "open": q.open, "high": q.high, "low": q.low, "prev_close": q.prev_close,
            "volume": q.volume, "oi": q.oi}

