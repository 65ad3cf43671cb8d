"""Fuzzing the configuration loader with generated ``config.toml`` files and overrides.

Valid TOML documents are generated from the real sections and keys (plus unknown ones), each key
given a value of its own type (in range or out of it) or of any other TOML type: strings with odd
unicode and control characters, integers beyond 64 bits and beyond the float range, NaN and
infinities, arrays, inline tables, dates and times. Invalid documents are those mutated
(truncated, a character inserted, a line repeated), raw bytes, text that is not UTF-8, nesting
deeper than the parser allows, integers too long to read. Environment variables and ``--set``
overrides get the same treatment as text.

Property: ``load_config`` returns a ``Config`` or raises ``ConfigError`` whose message is one
line naming where the problem is; never any other exception. Without a file, where the defaults
are valid, the source named is always the environment variable or the ``--set`` argument that
caused the problem (cross-key problems included). And what loads is usable: loguru reads its
log rotation, the end-of-day exit falls inside the session (issue 16: ``logging.rotation='50
XB'`` passed and then failed in loguru; ``risk.eod_exit = 16:00`` passed and never fired).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from collections.abc import Iterator
from datetime import date, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from engine.app.sections import SECTIONS, load_config
from engine.config import Config, ConfigError
from tests.fuzz.support import fuzz_settings, odd_text


@dataclasses.dataclass(frozen=True)
class Raw:
    """TOML text written as is (a token Python cannot print, such as a 5000-digit integer)."""

    text: str


# -- a small TOML writer ---------------------------------------------------------------------------
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(tables: dict[str, Any]) -> str:
    """Scalars at the top; each dict as a ``[table]`` (nested dicts as inline tables)."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in tables.items()
             if not isinstance(v, dict)]
    for name, table in tables.items():
        if isinstance(table, dict):
            lines.append(f"\n[{toml_key(name)}]")
            lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# -- values --------------------------------------------------------------------------------------
TOML_TEXT = st.one_of(odd_text, st.sampled_from(["09:15", "9:15", "25:00", "09:15+05:30",
                                                 "2025-01-26", "2025-02-30", "MARKET", "DEBUG",
                                                 "15:15", "16:00", "15:30", "08:00", "50 MB",
                                                 "50 XB", "0 MB", "-1 KB", "daily", "1 week",
                                                 "baseline_v1", "vwap_cross"]))
TOML_SCALAR = st.one_of(
    st.booleans(), st.integers(), st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), TOML_TEXT,
    st.dates(), st.times(), st.datetimes(),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=5, minutes=30)))),
    st.just(Raw("0x" + "f" * 5000)), st.just(Raw("1" + "0" * 5000)),
)
TOML_VALUE = st.recursive(
    TOML_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(odd_text, inner, max_size=3)),
    max_leaves=6,
)


def of_its_type(hint: Any, meta: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a setting's own type: in range, at the edges, just outside."""
    base = typing.get_args(hint)[0] if typing.get_origin(hint) in (typing.Union,
                                                                    type(int | None)) else hint
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices:
        return st.sampled_from(choices)
    if base is bool:
        return st.booleans()
    edges = [v for v in (lo, hi) if v is not None]
    near = [e + d for e in edges for d in (-1, 0, 1)] + [e * 0.999 for e in edges]
    if base is int:
        return st.sampled_from([int(v) for v in near] or [0]) | st.integers(-(10**6), 10**6)
    if base is float:
        return st.sampled_from([float(v) for v in near] or [0.0]) | st.floats()
    if typing.get_origin(base) is tuple:
        return st.lists(TOML_TEXT, max_size=3)
    return TOML_TEXT


def section_fields(cls: type) -> dict[str, tuple[Any, dict[str, Any]]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}


@st.composite
def section_table(draw: st.DrawFn, cls: type, depth: int = 0) -> dict[str, Any]:
    fields = section_fields(cls)
    table: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=4)):
        hint, meta = fields[name]
        if dataclasses.is_dataclass(hint) and depth < 2:
            table[name] = draw(section_table(typing.cast(type, hint), depth + 1)
                               | TOML_VALUE)
        else:
            table[name] = draw(st.one_of(of_its_type(hint, meta), of_its_type(hint, meta),
                                         TOML_VALUE))
    if not draw(st.integers(0, 4)):
        table[draw(odd_text)] = draw(TOML_VALUE)  # an unknown key
    return table


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True, max_size=4))
    tables: dict[str, Any] = {name: draw(section_table(SECTIONS[name])) for name in names}
    if not draw(st.integers(0, 5)):
        tables[draw(odd_text)] = draw(TOML_VALUE | st.just({}))  # an unknown section
    if not draw(st.integers(0, 5)):
        tables[draw(st.sampled_from(sorted(SECTIONS)))] = draw(TOML_SCALAR)  # not a table
    return tables


@st.composite
def broken(draw: st.DrawFn) -> bytes:
    """Bytes that are not a valid TOML document (or barely are)."""
    text = toml_document(draw(documents()))
    how = draw(st.sampled_from(["truncate", "insert", "repeat", "bytes", "utf8", "deep"]))
    if how == "truncate":
        return text[:draw(st.integers(0, len(text)))].encode()
    if how == "insert":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["=", "[", "]", '"', "\x00", "\n[", "\ufeff", "#", "{", "'"]))
        return (text[:at] + junk + text[at:]).encode()
    if how == "repeat":
        return (text + text).encode()
    if how == "bytes":
        return draw(st.binary(max_size=80))
    if how == "utf8":
        at = draw(st.integers(0, len(text)))
        return text[:at].encode() + b"\xff\xfe" + text[at:].encode()
    return b"[engine]\nstate_dir = " + b"[" * 100_000


# -- the property --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz-config") / "config.toml"


def load_or_refuse(path: Path | None, **kw: Any) -> Config | ConfigError:
    try:
        cfg = load_config(path, env=kw.pop("env", {}), **kw)
    except ConfigError as error:  # anything else fails the test
        message = str(error)
        assert message and len(message.splitlines()) == 1, message
        if path is not None:
            assert message.startswith(str(path)), message
        else:  # the defaults are valid: the cause is an environment variable or a --set
            assert error.source.startswith(("environment $NIFTY_ENGINE__", "--set ")), message
        return error
    assert_usable(cfg)
    return cfg


def assert_usable(cfg: Config) -> None:
    """What the loader accepts, the engine can run with."""
    from loguru._file_sink import FileSink

    from engine.market.instruments import parse_hhmm

    FileSink._make_rotation_function(cfg.logging.rotation)  # raises on what loguru refuses
    spec = cfg.instrument.spec()
    assert spec.session_open < parse_hhmm(cfg.risk.eod_exit) < spec.session_close


@fuzz_settings(250)
@given(documents())
# crashes found by this fuzzing before the fixes: an integer float setting beyond the float
# range (OverflowError), a session time with a UTC offset compared with one without (TypeError),
# an integer too long to print in the error message (ValueError), a key with a newline (a
# two-line message)
@example({"instrument": {"tick_size": 10**400}})
@example({"instrument": {"session_open": "09:15+05:30"}})
@example({"instrument": {"lot_size": Raw("0x" + "f" * 5000)}})
@example({"instrument": {"lot\nsize": 1}})
# holes found by a user (issue 16): a log rotation loguru cannot read, an end-of-day exit after
# the close, a session close before it
@example({"logging": {"rotation": "50 XB"}})
@example({"risk": {"eod_exit": "16:00"}})
@example({"instrument": {"session_close": "15:00"}})
def test_a_valid_toml_file_gives_a_config_or_one_config_error_line(
        config_path: Path, tables: dict[str, Any]) -> None:
    text = toml_document(tables)
    config_path.write_text(text, encoding="utf-8")
    try:
        tomllib.loads(text)
    except ValueError:  # only when it holds an integer too long for Python to read
        assert "0x" + "f" * 5000 in text or "1" + "0" * 5000 in text
    event(type(load_or_refuse(config_path)).__name__)


@fuzz_settings(150)
@given(broken())
# crashes found by this fuzzing before the fixes: not UTF-8 (UnicodeDecodeError), nested
# beyond the parser's limit (RecursionError)
@example(b"\xff\xfe[engine]\n")
@example(b"a = " + b"[" * 5000)
def test_a_broken_toml_file_gives_one_config_error_line(config_path: Path,
                                                        content: bytes) -> None:
    config_path.write_bytes(content)
    event(type(load_or_refuse(config_path)).__name__)


def dotted_keys() -> list[str]:
    keys: list[str] = []
    for name, cls in SECTIONS.items():
        for field, (hint, _) in section_fields(cls).items():
            if dataclasses.is_dataclass(hint):
                keys.extend(f"{name}.{field}.{sub}" for sub in section_fields(hint))
            else:
                keys.append(f"{name}.{field}")
    return keys


OVERRIDE_TEXTS = st.one_of(odd_text, TOML_SCALAR.map(toml_value),
                           st.sampled_from(["[" * 5000, "1" + "0" * 5000, "1\nx = 2", "{",
                                            "nan", "-inf", "true", "[1, 2]", '"a"']))


@fuzz_settings(150)
@given(st.dictionaries(st.sampled_from(dotted_keys()) | odd_text, OVERRIDE_TEXTS, max_size=3),
       st.booleans())
@example({"engine.shutdown_timeout_s": "[" * 5000}, False)
# issue 16: a section set to a scalar; a cross-key problem once blamed on the defaults
@example({"supervision.root": "3"}, True)
@example({"supervision.root": "3"}, False)
@example({"instrument.session_open": "16:00"}, False)
@example({"instrument.session_close": "15:00"}, True)
@example({"logging.rotation": "50 XB"}, True)
@example({"engine.strategy": "nope"}, False)
def test_environment_and_overrides_give_a_config_or_one_config_error_line(
        values: dict[str, str], as_env: bool) -> None:
    if as_env:
        env = {"NIFTY_ENGINE__" + key.replace(".", "__").upper(): text
               for key, text in values.items()}
        event(type(load_or_refuse(None, env=env)).__name__)
    else:
        event(type(load_or_refuse(None, overrides=values)).__name__)
