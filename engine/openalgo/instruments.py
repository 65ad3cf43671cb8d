"""The instrument provider: the day's contract facts read from OpenAlgo's master contract.

Owns the reading and parsing of ``/expiry`` (the listed expiry dates, holiday moves included),
``/optionsymbol`` (the ATM option of the nearest expiry: lot size, tick size, freeze quantity and
the underlying's price) and ``/optionchain`` (the option symbols the broker lists around ATM).
Each reply is parsed into the engine's own types; a fact that cannot be read stays unknown
(None), and ``resolve_spec`` then keeps the config value for it. A freeze quantity of 1 or below
one lot is OpenAlgo's "no entry configured" default (``database/qty_freeze_db.py``), not a fact.

Example::

    provider = InstrumentProvider(client)
    facts = provider.facts(date(2025, 9, 4))        # InstrumentFacts(lot_size=75, ...)
    listed = provider.listed_options(facts.expiries[0], strike_count=22)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from loguru import logger

from engine.broker import BrokerError
from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    MONTHS,
    OPTION_EXCHANGE,
    InstrumentFacts,
)
from engine.openalgo.rest import OpenAlgoClient
from engine.openalgo.wire import Fields, WireError


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """``/optionsymbol``'s answer: one listed option and the facts of its contract."""

    symbol: str
    exchange: str
    lot_size: int
    tick_size: float
    freeze_quantity: int
    underlying_ltp: float


def expiry_text(day: date) -> str:
    """OpenAlgo's request form of an expiry date: ``09SEP25``."""
    return f"{day.day:02d}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def parse_expiry(text: str) -> date:
    """An expiry as the master contract lists it: ``09-SEP-25`` (or ``09-SEP-2025``)."""
    parts = text.strip().upper().split("-")
    if len(parts) == 3 and parts[1] in MONTHS and parts[0].isdigit() and parts[2].isdigit():
        year = int(parts[2]) + (2000 if len(parts[2]) == 2 else 0)
        try:
            return date(year, MONTHS.index(parts[1]) + 1, int(parts[0]))
        except ValueError:
            pass
    raise WireError(f"expiry: not a DD-MMM-YY date: {text!r}")


def _expiries(body: Fields) -> tuple[date, ...]:
    return tuple(sorted({parse_expiry(str(v)) for v in body.values("data", [])}))


def _option_quote(body: Fields) -> OptionQuote:
    return OptionQuote(symbol=body.text("symbol"), exchange=body.text("exchange"),
                       lot_size=body.whole("lotsize"), tick_size=body.number("tick_size"),
                       freeze_quantity=body.whole("freeze_qty", 0),
                       underlying_ltp=body.number("underlying_ltp"))


def _chain_symbols(body: Fields) -> frozenset[str]:
    listed: set[str] = set()
    for row in body.objects("chain"):
        for leg in ("ce", "pe"):
            if row.has(leg):
                listed.add(row.obj(leg).text("symbol"))
    return frozenset(listed)


class InstrumentProvider:
    """Reads instrument facts for one underlying through an ``OpenAlgoClient``."""

    def __init__(self, client: OpenAlgoClient, *, underlying: str = INDEX_SYMBOL,
                 index_exchange: str = INDEX_EXCHANGE,
                 option_exchange: str = OPTION_EXCHANGE) -> None:
        self._client = client
        self.underlying = underlying
        self._index_exchange = index_exchange
        self._option_exchange = option_exchange
        self.spot: float | None = None  # the underlying's price seen by the last ``facts``

    def expiries(self) -> tuple[date, ...]:
        """The listed option expiries (today's and later), ascending."""
        return self._client.request("expiry", {"symbol": self.underlying,
                                               "exchange": self._option_exchange,
                                               "instrumenttype": "options"}, _expiries)

    def atm_option(self, expiry: date) -> OptionQuote:
        return self._client.request("optionsymbol", {
            "underlying": self.underlying, "exchange": self._index_exchange,
            "expiry_date": expiry_text(expiry), "offset": "ATM", "option_type": "CE"},
            _option_quote)

    def listed_options(self, expiry: date, strike_count: int) -> frozenset[str]:
        """The option symbols the broker lists within ``strike_count`` strikes of ATM."""
        return self._client.request("optionchain", {
            "underlying": self.underlying, "exchange": self._index_exchange,
            "expiry_date": expiry_text(expiry), "strike_count": strike_count},
            _chain_symbols)

    def facts(self, day: date) -> InstrumentFacts:
        """The facts of ``day``'s nearest expiry. Raises ``BrokerError`` when the expiry list
        cannot be read (the caller falls back); a later failure leaves only those facts
        unknown."""
        expiries = tuple(d for d in self.expiries() if d >= day)
        if not expiries:
            raise BrokerError(f"OpenAlgo lists no {self.underlying} option expiry on or after "
                              f"{day}", endpoint="expiry")
        try:
            atm = self.atm_option(expiries[0])
        except BrokerError as exc:
            logger.warning("instruments: {} facts of {} not readable ({}); lot size, tick "
                           "size and freeze quantity come from [instrument]", self.underlying,
                           expiries[0], exc)
            return InstrumentFacts(expiries=expiries)
        self.spot = atm.underlying_ltp if atm.underlying_ltp > 0 else None
        freeze: int | None = atm.freeze_quantity
        if freeze is not None and freeze < max(2, atm.lot_size):
            logger.info("instruments: OpenAlgo has no freeze quantity for {} ({}); "
                        "[instrument] freeze_quantity applies", self.underlying, freeze)
            freeze = None
        return InstrumentFacts(lot_size=atm.lot_size if atm.lot_size > 0 else None,
                               tick_size=atm.tick_size if atm.tick_size > 0 else None,
                               freeze_quantity=freeze, expiries=expiries)
