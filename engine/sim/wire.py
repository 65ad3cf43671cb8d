"""The simulator's side of the OpenAlgo wire format: request schemas and reply/frame bodies.

Requests are validated the way OpenAlgo's marshmallow schemas do (restx_api/schemas.py,
data_schemas.py, account_schema.py): unknown fields are refused, required fields must be present,
numbers may be JSON numbers or numeric strings, enumerations are checked; the error message is
the field → messages mapping rendered as text, as OpenAlgo returns it. Replies and WebSocket frames
are built here from the broker's typed results, with the field names of the spec.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from engine.broker import Depth, Funds, HistoryBar, OrderRow, PositionRow, Quote, TradeRow
from engine.sim.matching import DEPTH_LEVELS, MarketSnapshot, touch_prices
from engine.sim.personalities import MarketFacts, Personality

EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "NCDEX", "NCO", "NSE_INDEX",
             "BSE_INDEX", "MCX_INDEX", "CRYPTO")
_ACTIONS = ("BUY", "SELL", "buy", "sell")
_PRICE_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
_PRODUCTS = ("MIS", "NRML", "CNC")
_OPTION_TYPES = ("CE", "PE", "ce", "pe")
F_AND_O_EXCHANGES = ("NFO", "BFO", "MCX", "CDS", "NCO", "BCD", "NCDEX", "CRYPTO")
MODE_NAMES = {1: "LTP", 2: "Quote", 3: "Depth"}
_MODES_BY_NAME = {"LTP": 1, "QUOTE": 2, "DEPTH": 3}


class ValidationFailed(ValueError):
    """A request body failed its schema; ``str()`` is OpenAlgo's message text."""

    def __init__(self, errors: dict[str, Any]) -> None:
        self.errors = errors
        super().__init__(str(errors))


@dataclass(frozen=True, slots=True)
class Field:
    """One request field: kind is str | float | int | qty | bool | date | pairs (a non-empty
    list of ``{"symbol", "exchange"}`` objects) | list (of objects of the ``item`` schema, with
    ``min``/``max`` items and ``range_error`` otherwise)."""

    kind: str
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    range_error: str = ""
    nullable: bool = False
    item: Mapping[str, Field] | None = None


def _req(kind: str, **kw: Any) -> Field:
    return Field(kind, required=True, **kw)


_API_KEY = _req("str")
_POSITIVE_QTY = dict(min=0, min_inclusive=False, range_error="Quantity must be a positive number.")
_PRICE = dict(min=0, range_error="Price must be a non-negative number.")
_TRIGGER = dict(min=0, range_error="Trigger price must be a non-negative number.")
_DISCLOSED = dict(min=0, range_error="Disclosed quantity must be a non-negative integer.")

_ORDER_FIELDS: dict[str, Field] = {
    "apikey": _API_KEY,
    "strategy": _req("str"),
    "exchange": _req("str", choices=EXCHANGES),
    "symbol": _req("str"),
    "action": _req("str", choices=_ACTIONS),
    "quantity": _req("qty", **_POSITIVE_QTY),
    "pricetype": Field("str", default="MARKET", choices=_PRICE_TYPES),
    "product": Field("str", default="MIS", choices=_PRODUCTS),
    "price": Field("float", default=0.0, **_PRICE),
    "trigger_price": Field("float", default=0.0, **_TRIGGER),
    "disclosed_quantity": Field("int", default=0, **_DISCLOSED),
}

_BASKET_ITEM: dict[str, Field] = {k: v for k, v in _ORDER_FIELDS.items()
                                   if k not in ("apikey", "strategy")}
_OPTION_TARGET: dict[str, Field] = {
    "underlying": _req("str"), "exchange": _req("str", choices=EXCHANGES),
    "expiry_date": Field("str"), "strike_int": Field("int", nullable=True, min=1),
}
_OPTION_LEG: dict[str, Field] = {
    "offset": _req("str"), "option_type": _req("str", choices=_OPTION_TYPES),
    "action": _req("str", choices=_ACTIONS),
    "quantity": _req("int", min=1, range_error="Quantity must be a positive integer."),
    "splitsize": Field("int", default=0, nullable=True, min=0,
                       range_error="Split size must be a non-negative integer."),
    "pricetype": Field("str", default="MARKET", choices=_PRICE_TYPES),
    "product": Field("str", default="MIS", choices=("MIS", "NRML")),
    "price": Field("float", default=0.0, **_PRICE),
    "trigger_price": Field("float", default=0.0, **_TRIGGER),
    "disclosed_quantity": Field("int", default=0, **_DISCLOSED),
}
_MARGIN_POSITION: dict[str, Field] = {  # numbers as strings, checked by the service
    "symbol": _req("str"), "exchange": _req("str", choices=EXCHANGES),
    "action": _req("str", choices=_ACTIONS), "quantity": _req("str"),
    "product": _req("str", choices=_PRODUCTS), "pricetype": _req("str", choices=_PRICE_TYPES),
    "price": Field("str", default="0"), "trigger_price": Field("str", default="0"),
}

SCHEMAS: dict[str, dict[str, Field]] = {
    "ping": {"apikey": _API_KEY},
    "placeorder": {**_ORDER_FIELDS, "underlying_ltp": Field("float", nullable=True)},
    "placesmartorder": {
        **_ORDER_FIELDS,
        "quantity": _req("qty", min=0, range_error="Quantity must be a non-negative number."),
        "position_size": _req("qty"),
    },
    "modifyorder": {
        "apikey": _API_KEY,
        "strategy": _req("str"),
        "exchange": _req("str", choices=EXCHANGES),
        "symbol": _req("str"),
        "orderid": _req("str"),
        "action": _req("str", choices=_ACTIONS),
        "product": _req("str", choices=_PRODUCTS),
        "pricetype": _req("str", choices=_PRICE_TYPES),
        "price": _req("float", **_PRICE),
        "quantity": _req("qty", **_POSITIVE_QTY),
        "disclosed_quantity": _req("int", **_DISCLOSED),
        "trigger_price": _req("float", **_TRIGGER),
    },
    "cancelorder": {"apikey": _API_KEY, "strategy": _req("str"), "orderid": _req("str")},
    "cancelallorder": {"apikey": _API_KEY, "strategy": _req("str")},
    "closeposition": {"apikey": _API_KEY, "strategy": _req("str")},
    "orderstatus": {"apikey": _API_KEY, "strategy": _req("str"), "orderid": _req("str")},
    "openposition": {"apikey": _API_KEY, "strategy": _req("str"), "symbol": _req("str"),
                     "exchange": _req("str"), "product": _req("str", choices=_PRODUCTS)},
    "orderbook": {"apikey": _API_KEY},
    "tradebook": {"apikey": _API_KEY},
    "positionbook": {"apikey": _API_KEY},
    "funds": {"apikey": _API_KEY},
    "quotes": {"apikey": _API_KEY, "symbol": _req("str"),
               "exchange": _req("str", choices=EXCHANGES)},
    "depth": {"apikey": _API_KEY, "symbol": _req("str"),
              "exchange": _req("str", choices=EXCHANGES)},
    "history": {"apikey": _API_KEY, "symbol": _req("str"),
                "exchange": _req("str", choices=EXCHANGES), "interval": _req("str"),
                "start_date": _req("date"), "end_date": _req("date"),
                "source": Field("str", default="api", choices=("api", "db"))},
    "intervals": {"apikey": _API_KEY},
    # the master contract (engine/sim/contracts.py); restx_api/data_schemas.py, account_schema.py
    "holdings": {"apikey": _API_KEY},
    "multiquotes": {"apikey": _API_KEY, "symbols": _req("pairs")},
    "symbol": {"apikey": _API_KEY, "symbol": _req("str"),
               "exchange": _req("str", choices=EXCHANGES)},
    "search": {"apikey": _API_KEY, "query": _req("str"),
               "exchange": Field("str", choices=EXCHANGES)},
    "expiry": {"apikey": _API_KEY, "symbol": _req("str"),
               "exchange": _req("str", choices=F_AND_O_EXCHANGES),
               "instrumenttype": _req("str", choices=("futures", "options"))},
    "optionsymbol": {"apikey": _API_KEY, "strategy": Field("str", nullable=True),
                     "underlying": _req("str"), "exchange": _req("str", choices=EXCHANGES),
                     "expiry_date": Field("str"),
                     "strike_int": Field("int", nullable=True, min=1),
                     "offset": _req("str"), "option_type": _req("str", choices=_OPTION_TYPES)},
    "optionchain": {"apikey": _API_KEY, "underlying": _req("str"),
                    "exchange": _req("str", choices=EXCHANGES), "expiry_date": _req("str"),
                    "strike_count": Field("int", nullable=True, min=1, max=100),
                    "with_greeks": Field("bool", default=False),
                    "interest_rate": Field("float", nullable=True, min=0, max=100)},
    "analyzer": {"apikey": _API_KEY},
    "analyzer/toggle": {"apikey": _API_KEY, "mode": _req("bool")},
    # order groups (engine/sim/groups.py); restx_api/schemas.py
    "basketorder": {"apikey": _API_KEY, "strategy": _req("str"),
                    "orders": _req("list", item=_BASKET_ITEM)},
    "splitorder": {
        **_ORDER_FIELDS,
        "quantity": _req("qty", min=0, min_inclusive=False,
                         range_error="Total quantity must be a positive number."),
        "splitsize": _req("int", min=1, range_error="Split size must be a positive integer."),
    },
    "optionsorder": {"apikey": _API_KEY, "strategy": _req("str"), **_OPTION_TARGET,
                     **_OPTION_LEG},
    "optionsmultiorder": {"apikey": _API_KEY, "strategy": _req("str"), **_OPTION_TARGET,
                          "legs": _req("list", item={**_OPTION_LEG, "expiry_date": Field("str")},
                                       min=1, max=20,
                                       range_error="Legs must contain 1 to 20 items.")},
    # what OpenAlgo computes from prices (engine/sim/analytics.py)
    "syntheticfuture": {"apikey": _API_KEY, "underlying": _req("str"),
                        "exchange": _req("str", choices=EXCHANGES), "expiry_date": _req("str")},
    "optiongreeks": {"apikey": _API_KEY, "symbol": _req("str"),
                     "exchange": _req("str", choices=F_AND_O_EXCHANGES),
                     "interest_rate": Field("float", min=0, max=100),
                     "forward_price": Field("float", min=0),
                     "underlying_symbol": Field("str"), "underlying_exchange": Field("str"),
                     "expiry_time": Field("str")},
    "margin": {"apikey": _API_KEY,
               "positions": _req("list", item=_MARGIN_POSITION, min=1, max=50,
                                 range_error="Positions must contain 1 to 50 items.")},
    # the master contract as a download (GET, query parameters); restx_api/data_schemas.py
    "instruments": {"apikey": _API_KEY, "exchange": Field("str", choices=EXCHANGES),
                    "format": Field("str", choices=("json",))},
    # the market calendar (engine/market/calendar.py)
    "market/holidays": {"apikey": _API_KEY, "year": Field("int", min=2020, max=2050)},
    "market/timings": {"apikey": _API_KEY, "date": _req("str")},
    # restx_api/telegram_bot.py reads these with dict.get (no schema): others are ignored
    "telegram/notify": {"apikey": Field("str", default=""), "username": Field("str"),
                        "message": Field("str"), "priority": Field("int"),
                        "wait_for_delivery": Field("bool")},
}

ENDPOINTS = frozenset(SCHEMAS)
#: Endpoints OpenAlgo serves to GET with query parameters; every other one is POST with JSON.
GET_ENDPOINTS = frozenset({"instruments"})
#: Endpoints whose unknown request fields are dropped, not refused.
_LENIENT = frozenset({"telegram/notify"})

_INVALID = {
    "str": "Not a valid string.",
    "float": "Not a valid number.",
    "qty": "Not a valid number.",
    "int": "Not a valid integer.",
    "bool": "Not a valid boolean.",
    "date": "Not a valid date.",
    "pairs": "Not a valid list.",
}
_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off"})


def validate(endpoint: str, body: object) -> dict[str, Any]:
    """The request's fields, typed and with defaults filled in; ``ValidationFailed`` otherwise."""
    out, errors = _load(SCHEMAS[endpoint], body, lenient=endpoint in _LENIENT)
    if errors:
        raise ValidationFailed(errors)
    return out


def _load(schema: Mapping[str, Field], body: object,
          lenient: bool = False) -> tuple[dict[str, Any], dict[Any, Any]]:
    """One object against ``schema``: (fields, errors by field name)."""
    if not isinstance(body, dict):
        return {}, {"_schema": ["Invalid input type."]}
    errors: dict[Any, Any] = {}
    out: dict[str, Any] = {}
    if not lenient:
        for name in body:
            if name not in schema:
                errors[str(name)] = ["Unknown field."]
    for name, spec in schema.items():
        if name not in body:
            if spec.required:
                errors[name] = ["Missing data for required field."]
            elif spec.default is not None:
                out[name] = spec.default
            continue
        value = body[name]
        if value is None:
            if not spec.nullable:
                errors[name] = ["Field may not be null."]
            else:
                out[name] = None
            continue
        try:
            out[name] = _items(spec, value) if spec.kind == "list" else _convert(spec, value)
        except _ItemErrors as exc:
            errors[name] = exc.errors
        except ValueError as exc:
            errors[name] = [str(exc)]
    if not errors and out.get("exchange") != "CRYPTO":
        for name in ("quantity", "position_size"):
            if name in out and schema[name].kind == "qty":
                qty = out[name]
                if qty != int(qty):
                    errors[name] = [f"Fractional quantity ({qty}) is not allowed for non-crypto "
                                    f"exchanges."]
                else:
                    out[name] = int(qty)
    return out, errors


class _ItemErrors(ValueError):
    """Errors of a list's items, by item index (marshmallow's nested form)."""

    def __init__(self, errors: dict[int, Any]) -> None:
        self.errors = errors
        super().__init__(str(errors))


def _items(spec: Field, value: object) -> list[dict[str, Any]]:
    """A list of objects of ``spec.item``; each item's errors under its index."""
    if not isinstance(value, list):
        raise ValueError("Not a valid list.")
    if (spec.min is not None and len(value) < spec.min) or \
            (spec.max is not None and len(value) > spec.max):
        raise ValueError(spec.range_error)
    assert spec.item is not None
    out, errors = [], {}
    for i, item in enumerate(value):
        fields, item_errors = _load(spec.item, item)
        if item_errors:
            errors[i] = item_errors
        out.append(fields)
    if errors:
        raise _ItemErrors(errors)
    return out


def _convert(spec: Field, value: object) -> Any:
    kind = spec.kind
    invalid = _INVALID[kind]
    result: Any
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(invalid)
        result = value
    elif kind == "bool":
        if isinstance(value, bool):
            result = value
        elif isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE | _FALSE:
            result = str(value).strip().lower() in _TRUE
        else:
            raise ValueError(invalid)
    elif kind == "date":
        if not isinstance(value, str):
            raise ValueError(invalid)
        try:
            result = date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(invalid) from None
        if len(value.strip()) != 10:
            raise ValueError(invalid)
    elif kind == "pairs":
        result = _pairs(value)
    else:
        result = _number(value, kind, invalid)
    if spec.choices is not None and result not in spec.choices:
        raise ValueError(f"Must be one of: {', '.join(spec.choices)}.")
    if spec.max is not None and (result < (spec.min or 0) or result > spec.max):
        raise ValueError(f"Must be greater than or equal to {spec.min:g} and less than or "
                         f"equal to {spec.max:g}.")
    if spec.min is not None:
        below = result < spec.min if spec.min_inclusive else result <= spec.min
        if below:
            raise ValueError(spec.range_error or f"Must be greater than or equal to {spec.min}.")
    return result


def _pairs(value: object) -> list[dict[str, str]]:
    """``[{"symbol": ..., "exchange": ...}, ...]``, at least one (MultiQuotesSchema)."""
    if not isinstance(value, list):
        raise ValueError(_INVALID["pairs"])
    if not value:
        raise ValueError("Shorter than minimum length 1.")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("symbol"), str) \
                or item.get("exchange") not in EXCHANGES or set(item) - {"symbol", "exchange"}:
            raise ValueError("Each item needs a symbol and a valid exchange, and nothing else.")
        out.append({"symbol": item["symbol"], "exchange": item["exchange"]})
    return out


def _number(value: object, kind: str, invalid: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(invalid)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        raise ValueError(invalid) from None
    except OverflowError:  # an integer beyond the float range (marshmallow's wording)
        raise ValueError("Number too large.") from None
    if not math.isfinite(number):
        raise ValueError("Special numeric values (nan or infinity) are not permitted.")
    if kind == "int":
        if number != int(number):
            raise ValueError(invalid)
        return int(number)
    return number


def parse_mode(raw: object) -> int:
    """A feed mode from 1/2/3 or "LTP"/"Quote"/"Depth" (any case); ValueError otherwise."""
    if isinstance(raw, bool):
        raise ValueError(f"Invalid mode: {raw!r}")
    if isinstance(raw, int) and raw in MODE_NAMES:
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.isdigit() and int(text) in MODE_NAMES:
            return int(text)
        mode = _MODES_BY_NAME.get(text.upper())
        if mode is not None:
            return mode
    raise ValueError(f"Invalid mode: {raw!r}. Use 1/2/3 or LTP/Quote/Depth")


# ---------------------------------------------------------------------------------------------
# Reply bodies
# ---------------------------------------------------------------------------------------------


def _num(value: float | int, as_string: bool) -> float | int | str:
    if not as_string:
        return value
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def order_json(row: OrderRow, *, strings: bool = False,
               string_fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    """An orderbook row (live format); a field the row does not have (None) is left out, and
    ``string_fields`` (or all numbers, with ``strings``) are sent as text."""
    def num(name: str, value: float | int) -> float | int | str:
        return _num(value, strings or name in string_fields)

    data: dict[str, Any] = {
        "action": row.action, "symbol": row.symbol, "exchange": row.exchange,
        "orderid": row.orderid, "product": row.product,
        "quantity": num("quantity", row.quantity), "price": num("price", row.price),
        "pricetype": row.pricetype, "order_status": row.status,
        "trigger_price": num("trigger_price", row.trigger_price), "timestamp": row.timestamp,
    }
    if row.average_price is not None:
        data["average_price"] = num("average_price", row.average_price)
    if row.filled_quantity is not None:
        data["filled_quantity"] = num("filled_quantity", row.filled_quantity)
    return data


def order_status_json(row: OrderRow, *, analyze: bool, strings: bool = False,
                      string_fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``orderstatus`` data: live uses ``pricetype``; sandbox ``price_type`` + pending_quantity."""
    data = order_json(row, strings=strings, string_fields=string_fields)
    if analyze:
        data["price_type"] = data.pop("pricetype")
        data["pending_quantity"] = _num(row.quantity - (row.filled_quantity or 0), strings)
    return data


def orderbook_json(rows: list[OrderRow], *, strings: bool = False,
                   string_fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    def count(pred: Any) -> int:
        return sum(1 for r in rows if pred(r))

    return {
        "orders": [order_json(r, strings=strings, string_fields=string_fields) for r in rows],
        "statistics": {
            "total_buy_orders": count(lambda r: r.action == "BUY"),
            "total_sell_orders": count(lambda r: r.action == "SELL"),
            "total_completed_orders": count(lambda r: r.status == "complete"),
            "total_open_orders": count(lambda r: r.status in ("open", "trigger pending")),
            "total_rejected_orders": count(lambda r: r.status == "rejected"),
        },
    }


def trade_json(row: TradeRow, *, strings: bool = False) -> dict[str, Any]:
    return {
        "action": row.action, "symbol": row.symbol, "exchange": row.exchange,
        "orderid": row.orderid, "product": row.product,
        "quantity": _num(row.quantity, strings), "average_price": _num(row.average_price, strings),
        "timestamp": row.timestamp, "trade_value": _num(row.trade_value, strings),
    }


def position_json(row: PositionRow, *, strings: bool = False,
                  personality: Personality | None = None) -> dict[str, Any]:
    average: float | str = _num(row.average_price, strings)
    if personality is not None and not strings:
        average = personality.position_average(row.average_price)
    return {
        "symbol": row.symbol, "exchange": row.exchange, "product": row.product,
        "quantity": _num(row.quantity, strings),
        "average_price": average,
        "ltp": _num(row.ltp, strings), "pnl": _num(row.pnl, strings),
    }


def funds_json(funds: Funds) -> dict[str, str]:
    """Funds as OpenAlgo sends them: two-decimal strings."""
    return {
        "availablecash": f"{funds.availablecash:.2f}", "collateral": f"{funds.collateral:.2f}",
        "m2mrealized": f"{funds.m2mrealized:.2f}", "m2munrealized": f"{funds.m2munrealized:.2f}",
        "utiliseddebits": f"{funds.utiliseddebits:.2f}",
    }


def quote_json(q: Quote) -> dict[str, Any]:
    return {"open": q.open, "high": q.high, "low": q.low, "ltp": q.ltp, "ask": q.ask,
            "bid": q.bid, "prev_close": q.prev_close, "volume": q.volume, "oi": q.oi}


def depth_json(d: Depth, q: Quote, last_quantity: int) -> dict[str, Any]:
    return {
        "ltp": d.ltp, "volume": d.volume, "oi": d.oi,
        "bids": [{"price": lv.price, "quantity": lv.quantity} for lv in d.bids],
        "asks": [{"price": lv.price, "quantity": lv.quantity} for lv in d.asks],
        "totalbuyqty": sum(lv.quantity for lv in d.bids),
        "totalsellqty": sum(lv.quantity for lv in d.asks),
        "open": q.open, "high": q.high, "low": q.low, "prev_close": q.prev_close,
        "ltq": last_quantity,
    }


def history_json(bars: list[HistoryBar]) -> list[dict[str, Any]]:
    return [{"timestamp": int(b.timestamp), "open": b.open, "high": b.high, "low": b.low,
             "close": b.close, "volume": b.volume, "oi": b.oi} for b in bars]


def holidays_json(days: list[date], exchanges: tuple[str, ...],
                  specials: Sequence[tuple[date, float, float]] = ()) -> list[dict[str, Any]]:
    """``market/holidays`` data: each listed holiday closes every exchange of the calendar; a
    special session (date, open, close in epoch seconds) is a ``SPECIAL_SESSION`` row whose
    ``open_exchanges`` carry its hours in epoch ms, and replaces a holiday of its date (one
    row per date, as OpenAlgo keeps them)."""
    special_days = {d for d, _, _ in specials}
    rows = [(d, {"date": d.isoformat(), "description": "Trading holiday",
                 "holiday_type": "TRADING_HOLIDAY", "closed_exchanges": list(exchanges),
                 "open_exchanges": []}) for d in days if d not in special_days]
    rows += [(d, {"date": d.isoformat(), "description": "Special trading session",
                  "holiday_type": "SPECIAL_SESSION", "closed_exchanges": [],
                  "open_exchanges": [{"exchange": x, "start_time": round(start * 1000),
                                      "end_time": round(end * 1000)} for x in exchanges]})
             for d, start, end in specials]
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def timings_json(session: tuple[float, float] | None,
                 exchanges: tuple[str, ...]) -> list[dict[str, Any]]:
    """``market/timings`` data: each exchange's open and close in epoch ms; [] when closed."""
    if session is None:
        return []
    start, end = (round(t * 1000) for t in session)
    return [{"exchange": x, "start_time": start, "end_time": end} for x in exchanges]


def order_update_frame(row: OrderRow, *, analyze: bool,
                       personality: Personality | None = None, user_id: str = "",
                       broker: str = "") -> dict[str, Any]:
    if personality is not None:
        frame = personality.order_update_frame(row, analyze=analyze, user_id=user_id,
                                               broker=broker)
        if frame is not None:
            return frame
    filled = row.filled_quantity or 0
    return {
        "type": "order_update", "orderid": row.orderid, "symbol": row.symbol,
        "exchange": row.exchange, "action": row.action, "quantity": row.quantity,
        "price": row.price, "trigger_price": row.trigger_price, "pricetype": row.pricetype,
        "product": row.product, "order_status": row.status,
        "filled_quantity": filled,
        "pending_quantity": row.quantity - filled,
        "average_price": row.average_price or 0.0, "rejection_reason": row.rejection_reason,
        "strategy": row.strategy, "timestamp": row.timestamp,
        "mode": "analyze" if analyze else "live",
    }


# ---------------------------------------------------------------------------------------------
# Market-data frames
# ---------------------------------------------------------------------------------------------


class FrameBuilder:
    """Encodes ``market_data`` frames for one published tick, each mode at most once.

    Hot path (every tick × every subscribed mode): the depth ladder is written as JSON text
    directly (integer paise steps) instead of as thirty small dicts.
    """

    __slots__ = ("_broker", "_cache", "_level_qty", "_ltp", "_ltt", "_personality", "_snap",
                 "_tick_size", "_ts")

    def __init__(self, snap: MarketSnapshot, ltp: float, ltt: float, tick_size: float,
                 level_quantity: int, broker: str,
                 personality: Personality | None = None) -> None:
        self._snap = snap
        self._personality = personality
        self._ts = ltt
        self._ltp = ltp
        self._tick_size = tick_size
        self._level_qty = level_quantity
        self._broker = broker
        self._cache: dict[int, bytes] = {}
        self._ltt = int(ltt * 1000)

    def frame(self, mode: int) -> bytes:
        """The UTF-8 JSON payload of the frame in ``mode``."""
        payload = self._cache.get(mode)
        if payload is None:
            payload = self._cache[mode] = self._encode(mode).encode()
        return payload

    def _encode(self, mode: int) -> str:
        s = self._snap
        head = {"type": "market_data", "symbol": s.symbol, "exchange": s.exchange, "mode": mode,
                "broker": self._broker}
        if self._personality is not None:
            text = self._personality.market_frame(mode, head, self._facts())
            if text is not None:
                return text
        if mode == 1:
            head["data"] = {"ltp": self._ltp, "ltt": self._ltt}
            return json.dumps(head, separators=(",", ":"))
        best_bid, best_ask = touch_prices(s.ltp, s.bid, s.ask, self._tick_size)
        tick, qty = self._tick_size, self._level_qty
        head["data"] = {
            "ltp": self._ltp, "ltt": self._ltt, "volume": s.volume, "open": s.open,
            "high": s.high, "low": s.low, "close": s.close,
            "last_trade_quantity": s.last_trade_quantity, "average_price": s.average_price,
            "total_buy_quantity": _ladder_total(best_bid, -tick, qty),
            "total_sell_quantity": _ladder_total(best_ask, tick, qty),
        }
        if mode == 2:
            return json.dumps(head, separators=(",", ":"))
        head["data"]["oi"] = s.oi
        text = json.dumps(head, separators=(",", ":"))  # ends with the data object's "}}"
        return (f'{text[:-2]},"depth":{{"buy":{_ladder_json(best_bid, -tick, qty)},'
                f'"sell":{_ladder_json(best_ask, tick, qty)}}}}}}}')


    def _facts(self) -> MarketFacts:
        s, tick, qty = self._snap, self._tick_size, self._level_qty
        best_bid, best_ask = touch_prices(s.ltp, s.bid, s.ask, tick)
        return MarketFacts(
            ltp=self._ltp, ltt=self._ts, volume=s.volume, open=s.open, high=s.high, low=s.low,
            close=s.close, last_quantity=s.last_trade_quantity, average_price=s.average_price,
            total_buy_quantity=_ladder_total(best_bid, -tick, qty),
            total_sell_quantity=_ladder_total(best_ask, tick, qty),
            oi=s.oi, bids=json.loads(_ladder_json(best_bid, -tick, qty)),
            asks=json.loads(_ladder_json(best_ask, tick, qty)))


def _ladder_total(best: float, step: float, qty: int) -> int:
    """Total quantity of the synthesized levels (as ``depth_ladder`` builds them)."""
    if best <= 0:
        return 0
    if round(best + (DEPTH_LEVELS - 1) * step, 2) > 0:
        return qty * DEPTH_LEVELS * (DEPTH_LEVELS + 1) // 2
    return sum(qty * (i + 1) for i in range(DEPTH_LEVELS) if round(best + i * step, 2) > 0)


def _ladder_json(best: float, step: float, qty: int) -> str:
    """One side of the synthesized depth as JSON text (as ``depth_ladder`` builds it)."""
    top, move = round(best * 100), round(step * 100)  # in paise: exact integer steps
    levels = []
    for i in range(DEPTH_LEVELS):
        paise = top + i * move
        if top > 0 and paise > 0:
            levels.append(f'{{"price":{paise / 100!r},"quantity":{qty * (i + 1)},'
                          f'"orders":{i + 1}}}')
        else:
            levels.append('{"price":0.0,"quantity":0,"orders":0}')
    return "[" + ",".join(levels) + "]"


def dumps(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"))


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")
