"""Notices through apprise to a real HTTP server on loopback (``json://``), and what a dead
endpoint costs (a closed port, a server that never answers): nothing for trading, one log line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from loguru import logger

from engine.app.replay import ReplayDriver
from engine.app.sections import load_config
from engine.market.synth import small_session
from engine.messages import Action, Fill, OrderPurpose, Severity
from engine.runtime.logs import add_sink
from engine.runtime.notify import Delivery, Notice, NoticeGate, NotifySettings, notice_of
from tests.support import JsonHook

SETTINGS = NotifySettings(timeout_s=1.0)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[dict[str, object]]]]:
    with JsonHook(hang=getattr(request, "param", "") == "hang") as hook:
        yield f"json://127.0.0.1:{hook.port}/hook", hook.bodies


SECRET = "s3cr3t-hook-token"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(purpose: OrderPurpose, ts: float = 1756871400.0) -> Fill:
    return Fill("c1", "b1", "baseline_v1", "paper", "NIFTY09SEP2524000CE", "NFO", Action.SELL,
                75, 101.5, 75, ts, purpose)


def test_a_notice_reaches_a_loopback_endpoint(server: tuple[str, list[dict[str, object]]]) -> None:
    url, received = server
    delivery = Delivery([url], SETTINGS)
    notice = notice_of(_fill(OrderPurpose.ENTRY))
    assert notice is not None and notice.kind == "entry_filled"
    delivery.put(notice)
    assert delivery.drain(10)
    delivery.stop()
    assert delivery.sent == 1 and delivery.failed == 0
    assert received[0]["title"] == "baseline_v1: entry filled"
    assert "NIFTY09SEP2524000CE x75 @ 101.5" in str(received[0]["message"])


def test_gate_filters_levels_throttles_and_deduplicates() -> None:
    gate = NoticeGate(NotifySettings(kinds="entry_filled=off,alert=warning", throttle_s=60,
                                     dedup_s=600))
    assert not gate.allow(notice_of(_fill(OrderPurpose.ENTRY)))  # type: ignore[arg-type]
    info = Notice("alert", Severity.INFO, "t", "a", 0.0)
    assert not gate.allow(info) and gate.filtered == 2
    warn = Notice("alert", Severity.WARNING, "t", "b", 0.0)
    assert gate.allow(warn)
    assert not gate.allow(Notice("alert", Severity.WARNING, "t", "c", 10.0))  # throttled
    assert not gate.allow(Notice("alert", Severity.WARNING, "t", "b", 100.0))  # duplicate
    assert gate.allow(Notice("alert", Severity.CRITICAL, "t", "d", 11.0))  # critical passes
    assert (gate.throttled, gate.duplicates) == (1, 1)
    assert NotifySettings(kinds="nope=info").problems()


def test_a_full_queue_drops_the_oldest_with_a_count() -> None:
    release = threading.Event()
    sent: list[str] = []

    def slow(notice: Notice) -> bool:
        release.wait(10)
        sent.append(notice.body)
        return True

    delivery = Delivery([], NotifySettings(queue_size=2), send=slow)
    for i in range(5):
        delivery.put(Notice("alert", Severity.INFO, "t", str(i), float(i)))
    release.set()
    assert delivery.drain(10)
    delivery.stop()
    assert delivery.dropped >= 2 and sent[-1] == "4"


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_dead_endpoints_log_once_and_never_block(server: tuple[str, list[dict[str, object]]]
                                                 ) -> None:
    hung, _ = server
    lines: list[str] = []
    sink = add_sink(lines.append, level="WARNING", fmt="{message}")  # redacted as every sink
    try:
        closed = Delivery([f"json://127.0.0.1:{_closed_port()}/tok-{SECRET}"], SETTINGS)
        hanging = Delivery([hung], SETTINGS)
        for i in range(3):
            for d in (closed, hanging):
                d.put(Notice("alert", Severity.WARNING, "t", f"n{i}", float(i)))  # returns at once
        assert closed.drain(30) and hanging.drain(30)
        closed.stop()
        hanging.stop()
    finally:
        logger.remove(sink)
    assert closed.failed == 3 and hanging.failed == 3
    failures = [line for line in lines if "could not deliver" in line]
    assert len(failures) == 2, lines  # once per endpoint, the rest counted
    assert all(SECRET not in line for line in lines)  # the URLs' secret parts are redacted


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_a_dead_endpoint_costs_trading_nothing(server: tuple[str, list[dict[str, object]]],
                                              tmp_path: Path) -> None:
    session = tmp_path / "s.db"
    small_session(session, date=date(2025, 9, 3), seed=1, symbols=2, minutes=60,
                  start="09:15")
    cfg = load_config(None, overrides={"notify.replay": "true", "notify.timeout_s": "2"})
    hung, _ = server

    def trades(urls: str | None, name: str) -> list[tuple[object, ...]]:
        def hook(parts: object) -> None:
            parts.notify_urls = urls  # type: ignore[attr-defined]

        driver = ReplayDriver(cfg, session, db_path=tmp_path / f"{name}.db", progress=False,
                              strategies=("baseline_v1",), parts_hook=hook)
        summary = driver.run()
        from engine.store.database import Database

        db = Database(tmp_path / f"{name}.db", cfg.store)
        try:
            fills = [(f.client_id, f.quantity, f.price, f.ts) for f in db.fills()]
        finally:
            db.close()
        return [summary.bars_hash, *fills]

    quiet = trades("", "none")
    dead = trades(f"{hung} json://127.0.0.1:{_closed_port()}/x", "dead")
    assert len(quiet) > 1, "the session must trade for the comparison to mean something"
    assert dead == quiet


def test_a_url_masks_its_secrets_but_not_its_host() -> None:
    """A bot token in the host place is masked; a real address is not (masking 127.0.0.1 hid
    it in every later line, e.g. the dashboard's own port-in-use message)."""
    from engine.runtime.logs import REDACTOR
    from engine.runtime.notify import notify_urls

    notify_urls("tgram://123456789:AAbbCCddEEff/987654 json://127.0.0.1:9/tok-" + SECRET)
    shown = REDACTOR.redact("tgram 123456789:AAbbCCddEEff json tok-" + SECRET + " at 127.0.0.1")
    assert "AAbbCCddEEff" not in shown and SECRET not in shown
    assert "127.0.0.1" in shown
