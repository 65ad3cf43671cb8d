"""Redaction: an API key never reaches any sink, whatever shape it travels in."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from loguru import logger

from engine.runtime.logs import REDACTOR, Redactor, Throttle, setup_logging

KEY = "oa-7f3c9e1d2b4a"


@pytest.fixture
def sinks(tmp_path: Path):
    console = io.StringIO()
    log_file = tmp_path / "engine.log"
    setup_logging(level="DEBUG", log_file=log_file, console=True, stream=console,
                  secrets=[KEY])
    yield console, log_file
    setup_logging(level="DEBUG", console=True, stream=io.StringIO())


def everything(sinks) -> str:
    console, log_file = sinks
    logger.complete()
    return console.getvalue() + log_file.read_text(encoding="utf-8")


def test_key_inside_an_exception_message(sinks) -> None:
    try:
        raise RuntimeError(f"request failed for apikey {KEY}")
    except RuntimeError:
        logger.exception("placeorder failed")
    text = everything(sinks)
    assert "placeorder failed" in text and "RuntimeError" in text
    assert KEY not in text


def test_key_inside_a_dict_in_a_log_call(sinks) -> None:
    logger.info("request body {}", {"apikey": KEY, "symbol": "NIFTY"})
    logger.info("unknown key shape {}", {"api_key": "never-registered-9x"})
    text = everything(sinks)
    assert "NIFTY" in text
    assert KEY not in text
    assert "never-registered-9x" not in text


def test_key_inside_a_url(sinks) -> None:
    logger.warning("GET http://127.0.0.1:5000/api/v1/funds?apikey={}&x=1", KEY)
    logger.warning("ws://host/ws?api_key=fresh-unknown-key-1&mode=2")
    text = everything(sinks)
    assert "/api/v1/funds" in text
    assert KEY not in text
    assert "fresh-unknown-key-1" not in text


def test_key_in_bound_extra_and_stdlib_logging(sinks) -> None:
    logger.bind(apikey=KEY).info("bound context")
    logging.getLogger("urllib3.connectionpool").warning("retrying with apikey=%s", KEY)
    text = everything(sinks)
    assert "retrying with apikey" in text
    assert KEY not in text


def test_basic_auth_headers_masked() -> None:
    r = Redactor()
    assert "dHJhZGVyOnB3" not in r.redact("Authorization: Basic dHJhZGVyOnB3")
    assert "dHJhZGVyOnB3" not in r.redact("{'Authorization': 'Basic dHJhZGVyOnB3'}")
    assert r.redact("basic auth as trader") == "basic auth as trader"


def test_bearer_tokens_masked() -> None:
    r = Redactor()
    assert "abc.def" not in r.redact("Authorization: Bearer abc.def")


def test_redactor_masks_longest_secret_first() -> None:
    r = Redactor(["abcd", "abcdefgh"])
    assert r.redact("x abcdefgh y") == "x *** y"


def test_short_strings_are_not_treated_as_secrets() -> None:
    r = Redactor(["ab"])
    assert r.redact("ab cd") == "ab cd"


def test_the_process_redactor_learns_secrets_from_setup(sinks) -> None:
    assert KEY not in REDACTOR.redact(f"plain text {KEY}")


def test_throttle_allows_one_per_interval_and_counts_the_rest() -> None:
    t = Throttle(60.0)
    assert t.allow("zero_price", 0.0) == (True, 0)
    assert t.allow("zero_price", 10.0) == (False, 0)
    assert t.allow("zero_price", 20.0) == (False, 0)
    assert t.allow("other", 20.0) == (True, 0)
    assert t.allow("zero_price", 61.0) == (True, 2)


def test_a_log_file_that_fails_for_a_while_says_so_once_and_counts(tmp_path: Path,
                                                                   capsys) -> None:
    from engine.runtime.logs import GuardedFile

    guarded = GuardedFile(tmp_path / "engine.log", rotation="50 MB", retention=3)
    real_write = guarded._sink.write
    guarded._sink.write = lambda message: (_ for _ in ()).throw(OSError(28, "No space left"))
    for _ in range(50):
        guarded.write("lost line\n")
    guarded._sink.write = real_write
    guarded.write("back line\n")
    guarded.stop()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "cannot write" in err[0] and "50 line(s) were lost" in err[1]
    text = (tmp_path / "engine.log").read_text()
    assert "50 line(s) lost" in text and text.endswith("back line\n")


def test_the_log_file_rotates_as_loguru_reads_the_setting(tmp_path: Path) -> None:
    # GuardedFile wraps loguru's private file sink: this pins that it still rotates
    setup_logging(level="INFO", log_file=tmp_path / "e.log", rotation="2 KB", retention=2,
                  console=False)
    try:
        for i in range(200):
            logger.info("line {} {}", i, "x" * 40)
    finally:
        setup_logging(level="DEBUG", console=True, stream=io.StringIO())
    assert len(list(tmp_path.glob("e*.log"))) == 3  # the file and two rotations kept


@pytest.mark.parametrize(("rotation", "ok"), [("50 MB", True), ("1 week", True),
                                              ("daily", True), ("00:00", True),
                                              ("50 XB", False), ("", False), ("0 MB", False),
                                              ("-5 MB", False), ("1e400 MB", False)])
def test_rotation_problem_reads_the_rotation_as_loguru_does(rotation: str, ok: bool) -> None:
    from engine.runtime.logs import rotation_problem

    assert (rotation_problem(rotation) is None) is ok
