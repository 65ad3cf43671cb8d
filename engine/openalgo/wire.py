"""Strict reading of OpenAlgo JSON values: numbers that may arrive as strings, never a silent 0.

OpenAlgo passes brokers' replies through, so a number can be ``123.45``, ``"123.45"`` or ``"65"``.
``Fields`` wraps one JSON object and reads typed values out of it; anything missing, null where
required, unparsable, non-finite or of the wrong kind raises ``WireError`` naming the field path.
The REST client turns a ``WireError`` into ``MalformedResponse``.
"""

from __future__ import annotations

import math
from typing import Any


class WireError(ValueError):
    """A JSON value was missing or could not be read as the expected type."""


_MISSING: Any = object()
_INT64 = 2**63  # whole numbers must fit a signed 64-bit integer


def to_float(value: object, name: str) -> float:
    """A finite float from a JSON number or numeric string; bools and blanks are errors."""
    if isinstance(value, bool):
        raise WireError(f"{name}: expected a number, got a boolean")
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:  # an int beyond the float range
            raise WireError(f"{name}: number out of range") from None
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise WireError(f"{name}: not a number: {value[:40]!r}") from None
    else:
        raise WireError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(result):
        raise WireError(f"{name}: not a finite number: {value!r}")
    return result


def to_int(value: object, name: str) -> int:
    """A whole number from a JSON number or numeric string (``"65"``, ``65.0``); ``65.5`` fails,
    and so does anything beyond a signed 64-bit integer (no count or id is that large, and a
    database column could not hold it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _in_range(value, name)
    if isinstance(value, str):
        try:
            whole = int(value.strip())
        except ValueError:
            pass
        else:
            return _in_range(whole, name)
    number = to_float(value, name)
    if not number.is_integer():
        raise WireError(f"{name}: not a whole number: {value!r}")
    return _in_range(int(number), name)


def _in_range(number: int, name: str) -> int:
    if not -_INT64 <= number < _INT64:
        raise WireError(f"{name}: number out of range")
    return number


class Fields:
    """Typed access to one JSON object; ``path`` names it in error messages."""

    __slots__ = ("_path", "_raw")

    def __init__(self, raw: object, path: str = "reply") -> None:
        if not isinstance(raw, dict):
            raise WireError(f"{path}: expected an object, got {type(raw).__name__}")
        self._raw: dict[str, Any] = raw
        self._path = path

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def _get(self, key: str, default: object) -> object:
        value = self._raw.get(key)
        if value is None:
            if default is _MISSING:
                raise WireError(f"{self._path}.{key}: missing")
            return default
        return value

    def obj(self, key: str) -> Fields:
        return Fields(self._get(key, _MISSING), f"{self._path}.{key}")

    def objects(self, key: str) -> list[Fields]:
        """A list of objects; an absent or null list is an error, an empty list is fine."""
        items = self._get(key, _MISSING)
        if not isinstance(items, list):
            raise WireError(f"{self._path}.{key}: expected a list, got {type(items).__name__}")
        return [Fields(item, f"{self._path}.{key}[{i}]") for i, item in enumerate(items)]

    def values(self, key: str, default: list[Any] | None = None) -> list[Any]:
        items = self._get(key, _MISSING if default is None else default)
        if not isinstance(items, list):
            raise WireError(f"{self._path}.{key}: expected a list, got {type(items).__name__}")
        return items

    def text(self, key: str, default: str | None = None) -> str:
        """A string; a number is accepted and rendered (order ids arrive as either)."""
        value = self._get(key, _MISSING if default is None else default)
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise WireError(f"{self._path}.{key}: expected text, got {type(value).__name__}")

    def first_text(self, *keys: str) -> str:
        """The first present key's text (``pricetype`` or ``price_type``)."""
        for key in keys:
            if self.has(key):
                return self.text(key)
        raise WireError(f"{self._path}: none of {', '.join(keys)} present")

    def status(self, key: str) -> str:
        """A status string, normalised to OpenAlgo's lowercase form."""
        return self.text(key).strip().lower()

    def number(self, key: str, default: float | None = None) -> float:
        value = self._get(key, _MISSING if default is None else default)
        return to_float(value, f"{self._path}.{key}")

    def whole(self, key: str, default: int | None = None) -> int:
        value = self._get(key, _MISSING if default is None else default)
        return to_int(value, f"{self._path}.{key}")

    def flag(self, key: str) -> bool:
        value = self._get(key, _MISSING)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise WireError(f"{self._path}.{key}: expected a boolean, got {value!r}")
