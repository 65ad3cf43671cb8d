"""Strict value parsing shared by the OpenAlgo clients (engine.openalgo.wire)."""

from __future__ import annotations

import pytest

from engine.openalgo.wire import Fields, WireError, to_float, to_int


@pytest.mark.parametrize(("raw", "expected"), [
    (1, 1.0), (2.5, 2.5), ("123.45", 123.45), (" 7 ", 7.0), ("-3", -3.0), (0, 0.0),
])
def test_to_float_accepts_numbers_and_numeric_strings(raw: object, expected: float) -> None:
    assert to_float(raw, "x") == expected


@pytest.mark.parametrize("raw", ["", "abc", "1,000", "nan", "inf", True, None, [1], {"a": 1},
                                 float("nan"), float("inf")])
def test_to_float_refuses_what_is_not_a_finite_number(raw: object) -> None:
    with pytest.raises(WireError, match="x"):
        to_float(raw, "x")


@pytest.mark.parametrize(("raw", "expected"), [(65, 65), ("65", 65), (65.0, 65), ("130.0", 130),
                                               (-65, -65), ("-65", -65)])
def test_to_int_accepts_whole_numbers(raw: object, expected: int) -> None:
    assert to_int(raw, "q") == expected


@pytest.mark.parametrize("raw", [65.5, "65.5", "", "x", False, None])
def test_to_int_refuses_fractions_and_junk(raw: object) -> None:
    with pytest.raises(WireError, match="q"):
        to_int(raw, "q")


def test_fields_reads_typed_values_and_names_the_path_on_failure() -> None:
    row = Fields({"orderid": 250130000012345, "price": "101.5", "qty": "65", "flag": "true",
                  "Status": "Trigger Pending", "nested": {"n": 1}, "items": [{"a": 1}],
                  "empty": None},
                 "reply.data")
    assert row.text("orderid") == "250130000012345"
    assert row.number("price") == 101.5
    assert row.whole("qty") == 65
    assert row.flag("flag") is True
    assert row.status("Status") == "trigger pending"
    assert row.obj("nested").whole("n") == 1
    assert row.objects("items")[0].whole("a") == 1
    assert row.number("empty", 0.0) == 0.0  # null on an optional field means absent
    assert row.first_text("price_type", "orderid") == "250130000012345"
    with pytest.raises(WireError, match=r"reply\.data\.missing: missing"):
        row.number("missing")
    with pytest.raises(WireError, match=r"reply\.data\.empty: missing"):
        row.text("empty")
    with pytest.raises(WireError, match=r"reply\.data\.nested: expected text"):
        row.text("nested")
    with pytest.raises(WireError, match=r"reply\.data\.items\[0\]"):
        Fields({"items": [1]}, "reply.data").objects("items")
    with pytest.raises(WireError, match="expected an object"):
        Fields([1, 2])
