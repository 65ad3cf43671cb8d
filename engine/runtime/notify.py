"""Notifications: which engine events become a notice, which notices pass, and their delivery.

Owns the way out to the operator's phone (docs/operations/alerts.md):

- ``notice_of``: an engine message (a fill, an order event, a risk event, an alert, a feed
  status) as a ``Notice`` of one kind (``entry_filled``, ``stop_placed``, ``stop_out``,
  ``exit_done``, ``risk_latch``, ``divergence``, ``feed_down``, ``feed_back``, ``safe_stop``,
  ``alert``), or None;
- ``NoticeGate``: the per-kind filter and level (``[notify] kinds``), a throttle per kind and the
  deduplication of the same text;
- ``Delivery``: its own thread over a bounded queue that drops the oldest notice (counted) when
  full, sending through apprise to every URL; a failed delivery is logged once, the ones after
  it counted until one succeeds. Nothing here ever blocks its caller.

URLs come from ``NIFTY_ENGINE_NOTIFY_URLS`` and from the account the engine trades (stored
encrypted, ``run.py accounts set-notify``), never from config.toml; each one, and its secret
parts, is handed to the log redactor before anything can log it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from engine.messages import (
    Alert,
    FeedStatus,
    Fill,
    OrderEvent,
    OrderPurpose,
    OrderStatus,
    RiskEvent,
    Severity,
)
from engine.runtime.clock import fmt_ist
from engine.runtime.logs import REDACTOR, Throttle
from engine.settings import setting

URLS_ENV = "NIFTY_ENGINE_NOTIFY_URLS"

KINDS = ("entry_filled", "stop_placed", "stop_out", "exit_done", "risk_latch", "divergence",
         "feed_down", "feed_back", "safe_stop", "alert")
LEVELS = {"off": 99, "info": 0, "warning": 1, "critical": 2}
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: alert kinds raised by the reconciler when the engine and the broker disagree
DIVERGENCE_ALERTS = ("reconcile", "divergence", "mismatch", "untracked", "orphan")


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Section ``[notify]``: alerts and trade events to apprise URLs (URLs: environment only).

    The URLs come from ``NIFTY_ENGINE_NOTIFY_URLS``, never from this file."""

    enabled: bool = setting(True, "send notices when NIFTY_ENGINE_NOTIFY_URLS names at least "
                            "one apprise URL")
    min_level: str = setting("info", "the lowest level sent",
                             choices=("info", "warning", "critical"))
    kinds: str = setting("", "per-kind levels, 'kind=level,...' (level: off | info | warning "
                         "| critical): a kind is sent when its notice is at least that level; "
                         "kinds: " + ", ".join(KINDS))
    throttle_s: float = setting(10.0, "at most one notice of a kind per this many engine "
                                "seconds (critical ones always pass)", min=0, max=86_400)
    dedup_s: float = setting(600.0, "the same notice text again within this many engine "
                             "seconds is dropped", min=0, max=86_400)
    queue_size: int = setting(100, "notices waiting for delivery; when full the oldest is "
                              "dropped (counted)", min=1, max=100_000)
    timeout_s: float = setting(5.0, "seconds one delivery may take", min=0.1, max=120)
    replay: bool = setting(False, "also send notices from a replay (a replay's events are "
                           "history, not news)")

    def levels(self) -> dict[str, int]:
        """Kind -> lowest level rank sent (from ``min_level`` and ``kinds``)."""
        base = LEVELS[self.min_level]
        out = dict.fromkeys(KINDS, base)
        for item in filter(None, (p.strip() for p in self.kinds.split(","))):
            kind, _, level = item.partition("=")
            out[kind.strip()] = LEVELS[level.strip().lower()]
        return out

    def problems(self) -> list[tuple[str, str]]:
        for item in filter(None, (p.strip() for p in self.kinds.split(","))):
            kind, sep, level = item.partition("=")
            if not sep or kind.strip() not in KINDS or level.strip().lower() not in LEVELS:
                return [("kinds", f"{item!r}: expected kind=level with kind one of "
                                  f"{', '.join(KINDS)} and level one of "
                                  f"{', '.join(LEVELS)}")]
        return []


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str
    severity: Severity
    title: str
    body: str
    ts: float


def notice_of(message: Any) -> Notice | None:
    """The notice an engine message makes, or None."""
    if isinstance(message, Fill):
        side = f"{message.action.value} {message.symbol} x{message.quantity} @ {message.price}"
        if message.purpose is OrderPurpose.ENTRY:
            return Notice("entry_filled", Severity.INFO, f"{message.strategy}: entry filled",
                          f"{side} at {fmt_ist(message.ts)}", message.ts)
        kind = "stop_out" if message.purpose is OrderPurpose.STOP else "exit_done"
        what = "stopped out" if kind == "stop_out" else "exit filled"
        return Notice(kind, Severity.INFO, f"{message.strategy}: {what}",
                      f"{side} at {fmt_ist(message.ts)}", message.ts)
    if isinstance(message, OrderEvent):
        if message.purpose is OrderPurpose.STOP and message.status in (
                OrderStatus.OPEN, OrderStatus.TRIGGER_PENDING):
            return Notice("stop_placed", Severity.INFO, f"{message.strategy}: stop placed",
                          f"{message.symbol} ({message.client_id}) at {fmt_ist(message.ts)}",
                          message.ts)
        return None
    if isinstance(message, RiskEvent):
        what = "scheduled end-of-day exit" if message.kind == "eod" else \
            f"{message.kind} at {message.value:.2f} (threshold {message.threshold:.2f})"
        severity = Severity.CRITICAL if message.kind in ("max_loss", "trailing_stop") \
            else Severity.INFO
        return Notice("risk_latch", severity, f"{message.strategy}: halted for the day",
                      f"{what}; {message.action} at {fmt_ist(message.ts)}", message.ts)
    if isinstance(message, FeedStatus):
        up = message.state in ("connected", "replay")
        return Notice("feed_back" if up else "feed_down",
                      Severity.INFO if up else Severity.WARNING, f"feed {message.state}",
                      f"{message.reason or message.state} at {fmt_ist(message.ts)}", message.ts)
    if isinstance(message, Alert):
        if message.kind.startswith("risk_"):
            return None  # the RiskEvent says it
        kind = "divergence" if any(w in message.kind for w in DIVERGENCE_ALERTS) else "alert"
        return Notice(kind, message.severity, f"[{message.severity.value}] {message.kind}",
                      message.message, message.ts)
    return None


def safe_stop_notice(reason: str, ts: float) -> Notice:
    return Notice("safe_stop", Severity.CRITICAL, "SAFE STOP: act now",
                  f"supervisor gave up: {reason}. No new orders; resting stops stay at the "
                  f"broker.", ts)


class NoticeGate:
    """Which notices pass: the kind's level, then one per kind per ``throttle_s`` (critical
    ones always), then no repeat of the same text within ``dedup_s``; counts what it holds."""

    def __init__(self, settings: NotifySettings) -> None:
        self.levels = settings.levels()
        self.dedup_s = settings.dedup_s
        self._throttle = Throttle(settings.throttle_s)
        self._seen: dict[tuple[str, str], float] = {}
        self.filtered = 0
        self.throttled = 0
        self.duplicates = 0

    def allow(self, notice: Notice) -> bool:
        if _RANK[notice.severity] < self.levels.get(notice.kind, 0):
            self.filtered += 1
            return False
        key = (notice.kind, notice.body)
        last = self._seen.get(key)
        if last is not None and notice.ts - last < self.dedup_s:
            self.duplicates += 1
            return False
        if notice.severity is not Severity.CRITICAL and \
                not self._throttle.allow(notice.kind, notice.ts)[0]:
            self.throttled += 1
            return False
        self._seen[key] = notice.ts
        return True


def notify_urls(text: str | None) -> list[str]:
    """The apprise URLs in ``text`` (separated by commas, spaces or newlines), each one and its
    secret parts (user, password, path segments, query values) registered with the redactor."""
    urls = [u for u in re.split(r"[\s,]+", text or "") if u]
    for url in urls:
        REDACTOR.add(url, *_secret_parts(url))
    return urls


def _secret_parts(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or ""]
    # a token in the host place (tgram://BOTID:TOKEN/CHAT, discord://ID/TOKEN) is a secret
    # too; a real host name or address is not, and masking it would hide it in every log line
    host, _, after = parts.netloc.rpartition("@")[2].partition(":")
    if host != "localhost" and "." not in host and not host.startswith("["):
        found.append(host)
    if after and not after.isdigit():  # not a port: the token's second half
        found.append(after)
    found += [seg for seg in parts.path.split("/") if len(seg) >= 6]
    found += [v for _, _, v in (q.partition("=") for q in parts.query.split("&")) if len(v) >= 6]
    return [p for p in found if len(p) >= 6]


def unknown_urls(urls: Iterable[str]) -> list[str]:
    """The URLs apprise cannot use (no plugin for the scheme, or malformed for it)."""
    import apprise

    _quiet_apprise()
    return [url for url in urls if apprise.Apprise.instantiate(url) is None]


def _quiet_apprise() -> None:
    # apprise logs every failed send and every URL it cannot parse, URL included; ours are
    # one line per failure spell, the URL redacted
    logging.getLogger("apprise").setLevel(logging.CRITICAL)


def redacted(url: str) -> str:
    """``scheme://***`` for a log line."""
    return f"{url.split('://', 1)[0]}://***" if "://" in url else "***"


class Delivery:
    """A thread that sends notices through apprise; ``put`` never blocks (a full queue drops
    its oldest notice, counted). A failure is logged once until a delivery succeeds again."""

    def __init__(self, urls: Iterable[str], settings: NotifySettings, *,
                 send: Callable[[Notice], bool] | None = None) -> None:
        self.urls = notify_urls(" ".join(urls))  # registered with the redactor
        self.settings = settings
        self._queue: deque[Notice] = deque(maxlen=settings.queue_size)
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._failing = False
        self._send = send or self._apprise_sender()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _apprise_sender(self) -> Callable[[Notice], bool]:
        import apprise

        _quiet_apprise()
        asset = apprise.AppriseAsset(app_id="nifty-engine", app_desc="nifty-engine")
        box = apprise.Apprise(asset=asset)
        for url in self.urls:
            if not box.add(url):
                logger.warning("notify: {} is not an apprise URL; skipped", redacted(url))
        kinds = {Severity.INFO: apprise.NotifyType.INFO,
                 Severity.WARNING: apprise.NotifyType.WARNING,
                 Severity.CRITICAL: apprise.NotifyType.FAILURE}
        timeout = self.settings.timeout_s
        for server in box:  # every plugin's socket timeouts: a hung endpoint costs one timeout
            with contextlib.suppress(AttributeError):
                server.socket_connect_timeout = timeout
                server.socket_read_timeout = timeout

        def send(notice: Notice) -> bool:
            if not len(box):
                return False
            return bool(box.notify(title=notice.title, body=notice.body,
                                   notify_type=kinds[notice.severity]))
        return send

    def put(self, notice: Notice) -> None:
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(notice)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                notice = self._queue.popleft()
                self._busy = True
            try:
                ok = self._send(notice)
                error = "" if ok else "the service refused it or could not be reached"
            except Exception as exc:  # a plugin's bug must not end the thread
                ok, error = False, f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            self._outcome(ok, error, notice)

    def _outcome(self, ok: bool, error: str, notice: Notice) -> None:
        if ok:
            self.sent += 1
            if self._failing:
                self._failing = False
                logger.info("notify: delivering again ({} notice(s) failed meanwhile)",
                            self.failed)
            return
        self.failed += 1
        if not self._failing:
            self._failing = True
            logger.warning("notify: could not deliver {} ({}); further failures are counted, "
                           "trading is not affected", notice.kind, REDACTOR.redact(error))

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queue to empty (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Send what is queued within ``timeout`` seconds, then stop (the thread is a daemon:
        a hung endpoint never holds the process)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self.dropped:
            logger.info("notify: {} notice(s) dropped (the queue was full)", self.dropped)
