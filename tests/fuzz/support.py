"""Shared pieces of the fuzz tests: Hypothesis settings and strategies for hostile input.

``fuzz_settings(n)`` keeps each test within the suite's time budget (``n`` examples, no deadline);
the ``FUZZ_EXAMPLES`` environment variable replaces ``n`` for a long run
(``FUZZ_EXAMPLES=5000 pytest tests/fuzz``).

The strategies produce what a broken or hostile peer sends: odd unicode, numbers at and beyond
every limit (NaN, infinities, -0, 1e308, integers beyond 64 bits and beyond the float range),
junk JSON values nested a few levels, and raw texts that are not JSON at all (truncated
documents, nesting deeper than any parser allows, bytes that are not UTF-8).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

API_KEY = "fuzz-secret-key-5b7e0c2d9a41"  # must never show up in an error text or a log line


def fuzz_settings(examples: int) -> settings:
    """``examples`` Hypothesis examples (``FUZZ_EXAMPLES`` overrides), no per-example deadline."""
    override = os.environ.get("FUZZ_EXAMPLES", "").strip()
    return settings(max_examples=int(override) if override else examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


ODD_TEXTS = ["", " ", "\x00", "\t\n\r", "\u202e\u202d", "\u200b", "\ufeff", "\u2028\u2029",
             "\U0001f600", "NIFTY\u200b30JAN2524000CE", "ＮＩＦＴＹ", "é" * 3, "\\", '"', "'",
             "null", "NaN", "Infinity", "-0", "1e400", "<html>", "%s%s%n", "x" * 300,
             API_KEY, f"apikey={API_KEY}"]

odd_text = st.one_of(st.sampled_from(ODD_TEXTS), st.text(max_size=30))
# plus lone surrogates, which JSON can carry as \ud800 escapes
any_text = st.one_of(odd_text, st.text(st.characters(categories=["Cs"]), min_size=1,
                                       max_size=3))

HUGE_INTS = [2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**308, 10**400, -(10**400)]
EDGE_FLOATS = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e-9,
               1.7976931348623157e308]

json_number = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGE_FLOATS),
)
json_scalar = st.one_of(st.none(), st.booleans(), json_number, any_text)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=8,
)

# Raw texts that no JSON parser accepts as a document.
RAW_NOT_JSON = [b"", b" ", b"{", b"}", b"[", b'{"a":', b'{"a" 1}', b"{'a': 1}", b"nul",
                b"\xff\xfe\x00", b'{"status": "succ\xff"}', b"\xed\xa0\x80",
                b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                b"[" * 100_000, b'{"a":' * 50_000, b"1" + b"0" * 5000,
                b'{"ltp": 1' + b"0" * 5000 + b"}", b"\x00" * 16]
raw_not_json = st.one_of(st.sampled_from(RAW_NOT_JSON), st.binary(max_size=64).map(
    lambda junk: b"#" + junk))


def dumps(value: Any) -> str:
    """JSON text as a broken peer may send it: NaN and Infinity tokens allowed."""
    return json.dumps(value, allow_nan=True)


def truncations(text: str) -> st.SearchStrategy[str]:
    """Every strict prefix of a JSON object's text (none of them is a JSON document)."""
    return st.integers(min_value=0, max_value=max(0, len(text) - 1)).map(lambda n: text[:n])
