"""NIFTY instruments: option symbol format, tick rounding, expiries and the trading session.

Owns the facts about what is traded (openalgo-protocol.md, "Instruments"): the symbol format
``NIFTY<DDMMMYY><strike><CE|PE>``, the 0.05 tick, the session hours in IST, and the weekly expiry
rule. Lot size, tick size, freeze quantity and the expiry dates come from the broker when it can
be asked (``InstrumentFacts``, read by ``engine.openalgo.instruments`` or from a session file);
``[instrument]`` gives the overrides and the offline fallback, and ``resolve_spec`` merges the two
into the ``InstrumentSpec`` the engine trades with (configuration.md, "Instrument facts").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta

from engine.market.calendar import MarketCalendar
from engine.runtime.clock import IST
from engine.settings import setting

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_OPTION_RE = re.compile(r"^(?P<root>[A-Z]+?)(?P<dd>\d{2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})"
                        r"(?P<strike>\d+)(?P<kind>CE|PE)$")

INDEX_SYMBOL = "NIFTY"
INDEX_EXCHANGE = "NSE_INDEX"
OPTION_EXCHANGE = "NFO"


def is_index(exchange: str) -> bool:
    """An index (``NSE_INDEX``, ``BSE_INDEX``): quoted, never traded, so its feed carries no
    traded volume."""
    return exchange.endswith("_INDEX")


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """Contract facts that change over the years; loaded from ``[instrument]`` in config."""

    lot_size: int = 65
    tick_size: float = 0.05
    freeze_quantity: int = 1800
    strike_step: int = 50
    expiry_weekday: int = 1  # Monday=0 ... NIFTY weekly expiry on Tuesday
    session_open: time = time(9, 15)
    session_close: time = time(15, 30)
    holidays: frozenset[date] = field(default_factory=frozenset)
    # the broker's listed expiry dates, ascending; empty: derive them from the weekday rule
    expiries: tuple[date, ...] = ()
    # (date, open, close): special sessions (Muhurat, a budget-day Saturday)
    special_sessions: frozenset[tuple[date, time, time]] = field(default_factory=frozenset)

    @property
    def calendar(self) -> MarketCalendar:
        """The trading days and session hours these facts give (engine/market/calendar.py)."""
        return MarketCalendar(holidays=self.holidays, session_open=self.session_open,
                              session_close=self.session_close,
                              special_sessions=self.special_sessions)


#: ``[instrument]`` keys that the broker's facts replace unless listed in ``override``.
BROKER_FACTS = ("lot_size", "tick_size", "freeze_quantity", "expiry_weekday", "holidays")


@dataclass(frozen=True, slots=True)
class InstrumentSettings:
    """Contract facts and session hours (section ``[instrument]``), read into ``spec()``."""

    lot_size: int = setting(65, "NIFTY lot size (changes over the years)", min=1, max=10_000)
    tick_size: float = setting(0.05, "price tick in rupees", min=0.01, max=1.0)
    freeze_quantity: int = setting(1800, "largest order quantity the exchange accepts",
                                   min=1, max=1_000_000)
    strike_step: int = setting(50, "distance between listed strikes", min=1, max=1000)
    expiry_weekday: int = setting(1, "weekday of the weekly expiry (Monday=0)", min=0, max=4)
    session_open: str = setting("09:15", "market open, IST (HH:MM)")
    session_close: str = setting("15:30", "market close, IST (HH:MM)")
    holidays: tuple[str, ...] = setting((), "exchange holidays, YYYY-MM-DD")
    override: tuple[str, ...] = setting((), "keys of this section whose value here wins over "
                                        "the broker's facts (lot_size, tick_size, "
                                        "freeze_quantity, expiry_weekday, holidays); the "
                                        "others are used only when the broker cannot be asked")

    def spec(self) -> InstrumentSpec:
        return InstrumentSpec(
            lot_size=self.lot_size, tick_size=self.tick_size,
            freeze_quantity=self.freeze_quantity, strike_step=self.strike_step,
            expiry_weekday=self.expiry_weekday, session_open=parse_hhmm(self.session_open),
            session_close=parse_hhmm(self.session_close),
            holidays=frozenset(date.fromisoformat(d) for d in self.holidays))

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """Checks beyond one field's type and range, as (key or keys, problem) for the config
        loader."""
        found: list[tuple[str | tuple[str, ...], str]] = []
        for key in ("session_open", "session_close"):
            try:
                parse_hhmm(getattr(self, key))
            except ValueError:
                found.append((key, f"expected HH:MM, got {getattr(self, key)!r}"))
        for day in self.holidays:
            try:
                date.fromisoformat(day)
            except ValueError:
                found.append(("holidays", f"expected YYYY-MM-DD, got {day!r}"))
        for key in self.override:
            if key not in BROKER_FACTS:
                found.append(("override", f"{key!r} is not a broker fact; expected one of "
                                          f"{', '.join(BROKER_FACTS)}"))
        if not found and parse_hhmm(self.session_open) >= parse_hhmm(self.session_close):
            found.append((("session_close", "session_open"), "must be after session_open"))
        return found


def parse_hhmm(text: str) -> time:
    """An IST wall-clock time ``HH:MM`` (no UTC offset)."""
    parsed = time.fromisoformat(text)
    if parsed.tzinfo is not None:  # session times are IST wall-clock times, no offsets
        raise ValueError(f"a time with a UTC offset: {text!r}")
    return parsed


@dataclass(frozen=True, slots=True)
class OptionSymbol:
    root: str
    expiry: date
    strike: int
    kind: str  # "CE" | "PE"

    def __str__(self) -> str:
        return option_symbol(self.root, self.expiry, self.strike, self.kind)


def option_symbol(root: str, expiry: date, strike: int, kind: str) -> str:
    """``NIFTY`` + ``30JAN25`` + ``24000`` + ``CE``."""
    if kind not in ("CE", "PE"):
        raise ValueError(f"option type must be CE or PE, got {kind!r}")
    return f"{root}{expiry.day:02d}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}{strike}{kind}"


def parse_option_symbol(symbol: str) -> OptionSymbol:
    m = _OPTION_RE.match(symbol)
    if not m or m["mon"] not in MONTHS:
        raise ValueError(f"not an option symbol: {symbol!r}")
    expiry = date(2000 + int(m["yy"]), MONTHS.index(m["mon"]) + 1, int(m["dd"]))
    return OptionSymbol(m["root"], expiry, int(m["strike"]), m["kind"])


def round_to_tick(price: float, tick: float = 0.05) -> float:
    """Nearest multiple of the tick, as a clean float (2 decimals)."""
    if not math.isfinite(price):
        raise ValueError(f"price is not finite: {price}")
    return round(round(price / tick) * tick, 2)


def floor_to_tick(price: float, tick: float = 0.05) -> float:
    return round(math.floor(price / tick + 1e-9) * tick, 2)


def ceil_to_tick(price: float, tick: float = 0.05) -> float:
    return round(math.ceil(price / tick - 1e-9) * tick, 2)


def atm_strike(spot: float, rounding: int = 100) -> int:
    """Spot rounded to the nearest ``rounding`` (halves round up)."""
    return int(math.floor(spot / rounding + 0.5) * rounding)


def is_trading_day(day: date, spec: InstrumentSpec) -> bool:
    return spec.calendar.is_trading_day(day)


def next_expiry(day: date, spec: InstrumentSpec) -> date:
    """The nearest expiry on or after ``day``: the first of the broker's listed expiries when
    known, else the weekly weekday rule, a holiday moving it to the trading day before."""
    listed = [d for d in spec.expiries if d >= day]
    if listed:
        return listed[0]
    candidate = day + timedelta(days=(spec.expiry_weekday - day.weekday()) % 7)
    while True:
        expiry = candidate
        while not is_trading_day(expiry, spec):
            expiry -= timedelta(days=1)
        if expiry >= day:
            return expiry
        candidate += timedelta(days=7)


def session_bounds(day: date, spec: InstrumentSpec) -> tuple[float, float]:
    """Epoch seconds of the session's open and close on ``day`` (IST)."""
    return spec.calendar.session_bounds(day)


def minute_start(ts: float) -> float:
    """Start of the IST minute containing ``ts`` (IST is a whole-minute offset from UTC)."""
    return math.floor(ts / 60.0) * 60.0


_DAY_SPAN: tuple[float, float, date] = (0.0, 0.0, date.min)  # the last day asked: [start, end)


def trading_date(ts: float) -> date:
    """The IST calendar date of ``ts``. Called per tick: the last day's span is kept, so most
    calls compare two floats."""
    global _DAY_SPAN
    start, end, day = _DAY_SPAN
    if start <= ts < end:
        return day
    local = datetime.fromtimestamp(ts, IST)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day = local.date()
    begin = midnight.timestamp()
    _DAY_SPAN = (begin, begin + 86400.0, day)
    return day


def universe_symbols(atm: int, expiry: date, spec: InstrumentSpec, width: int = 20,
                     root: str = INDEX_SYMBOL) -> list[str]:
    """ATM ± width strikes, CE and PE for each: 2 × (2·width + 1) symbols, strike order."""
    out: list[str] = []
    for k in range(-width, width + 1):
        strike = atm + k * spec.strike_step
        out.append(option_symbol(root, expiry, strike, "CE"))
        out.append(option_symbol(root, expiry, strike, "PE"))
    return out


@dataclass(frozen=True, slots=True)
class InstrumentFacts:
    """What the broker says about the day's option contracts; None or empty: not known.

    ``source`` names where they came from: ``broker`` (read from OpenAlgo at start), ``stored``
    (today's facts from the engine database, when OpenAlgo could not be asked), ``session``
    (a session file's record of its day) or ``synth`` (a generated day).
    """

    lot_size: int | None = None
    tick_size: float | None = None
    freeze_quantity: int | None = None
    expiries: tuple[date, ...] = ()
    source: str = "broker"

    def to_meta(self) -> dict[str, object]:
        """The facts as a session file's ``instrument`` meta value (JSON-ready)."""
        return {"lot_size": self.lot_size, "tick_size": self.tick_size,
                "freeze_quantity": self.freeze_quantity,
                "expiries": [d.isoformat() for d in self.expiries], "source": self.source}

    @classmethod
    def from_meta(cls, raw: str | Mapping[str, object] | None,
                  source: str = "session") -> InstrumentFacts | None:
        """Facts from a session file's ``instrument`` meta (JSON text or a mapping); None when
        absent. Raises ``ValueError`` for a value that is present but not a fact."""
        if raw is None:
            return None
        data = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(data, Mapping):
            raise ValueError(f"instrument facts: expected an object, got {data!r}")

        def positive(key: str, kind: type) -> object:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"instrument facts: {key} must be a positive number, "
                                 f"got {value!r}")
            if kind is int and value != int(value):
                raise ValueError(f"instrument facts: {key} must be whole, got {value!r}")
            return kind(value)

        expiries = data.get("expiries") or []
        if not isinstance(expiries, list):
            raise ValueError(f"instrument facts: expiries must be a list, got {expiries!r}")
        return cls(lot_size=positive("lot_size", int),  # type: ignore[arg-type]
                   tick_size=positive("tick_size", float),  # type: ignore[arg-type]
                   freeze_quantity=positive("freeze_quantity", int),  # type: ignore[arg-type]
                   expiries=tuple(sorted(date.fromisoformat(str(d)) for d in expiries)),
                   source=source)


def resolve_spec(base: InstrumentSpec, facts: InstrumentFacts | None,
                 overrides: tuple[str, ...] | frozenset[str] = ()) -> InstrumentSpec:
    """The spec to trade with: ``base`` (from ``[instrument]``) with each broker fact put in,
    except the keys in ``overrides``. A fact the broker did not give keeps the config value.
    Listed expiries replace the weekday rule and the holidays (a holiday-moved expiry is in the
    broker's list) unless ``expiry_weekday`` or ``holidays`` is overridden."""
    if facts is None:
        return base
    changes: dict[str, object] = {}
    for key in ("lot_size", "tick_size", "freeze_quantity"):
        value = getattr(facts, key)
        if value is not None and key not in overrides:
            changes[key] = value
    if facts.expiries and not {"expiry_weekday", "holidays"} & set(overrides):
        changes["expiries"] = facts.expiries
    return replace(base, **changes)  # type: ignore[arg-type]
