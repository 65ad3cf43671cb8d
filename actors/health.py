"""The Health actor: the heartbeat, data coverage and staleness, and every alert's throttle.

Owns the operator's view of whether the engine is well:
- the heartbeat every ``heartbeat_interval_s`` (engine time), logged at INFO every
  ``log_every_s`` (a replay: every ``replay_heartbeat_log_s``), else at DEBUG:
  ``[HEARTBEAT] Positions: 2 | Data: 82/82 | Coverage: 100.0% | Stale: 0 | Restarts: 0 |
  State: ACTIVE``, logged and stored;
- per-symbol staleness from the feed's reports (a symbol is stale when it has not ticked for
  ``stale_after_s``; one that never ticked is stale too; while the feed is not connected every
  symbol is: coverage counts only symbols that can tick now);
- the "feed silent" alert when no symbol has ticked for ``feed_silent_after_s`` during market
  hours;
- alerts from every actor: each kind at most once per ``alert_throttle_s``; a critical one at
  once, and the very same critical alert again only at growing intervals (``critical_repeat_s``
  doubling up to ``alert_throttle_s``)
  (baseline-v1.md, failure mode 6: alert floods), logged and stored, the suppressed ones counted;
- the process's memory: its RSS in the status, and at each heartbeat the heap memory freed
  since handed back to the OS (``engine.runtime.memory``, ``release_memory``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from engine.market.instruments import InstrumentSpec, session_bounds, trading_date
from engine.messages import (
    Alert,
    FeedHealth,
    FeedStatus,
    HealthUpdate,
    Heartbeat,
    Severity,
    StatusRequest,
    TimerFired,
)
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.runtime.clock import fmt_ist
from engine.runtime.logs import RepeatGate, Throttle
from engine.runtime.memory import release_free_heap, rss_mib
from engine.settings import setting

HEARTBEAT_TIMER = "health.heartbeat"
SILENCE_TIMER = "health.silence"


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Section ``[health]``: heartbeat, staleness and alert throttling."""

    heartbeat_interval_s: float = setting(60.0, "seconds between heartbeats (stored; logged in "
                                          "live and paper)", min=1, max=3600)
    replay_heartbeat_log_s: float = setting(1800.0, "in a replay, market seconds between "
                                            "heartbeats logged at INFO (the others at DEBUG)",
                                            min=1, max=86_400)
    stale_after_s: float = setting(300.0, "a symbol without a tick this long is stale, seconds",
                                   min=1, max=86_400)
    feed_silent_after_s: float = setting(30.0, "no tick from any symbol this long in market "
                                         "hours raises the feed-silent alert, seconds",
                                         min=1, max=3600)
    silence_check_s: float = setting(5.0, "how often silence is checked, seconds", min=0.1,
                                     max=600)
    alert_throttle_s: float = setting(3600.0, "at most one alert of a kind per this many "
                                      "seconds (critical alerts: see critical_repeat_s)", min=0,
                                      max=86_400)
    critical_repeat_s: float = setting(60.0, "a critical alert always passes the first time; "
                                       "the same one again (a failure on every retry) passes "
                                       "after this many seconds, then at doubling intervals up "
                                       "to alert_throttle_s", min=0, max=86_400)
    release_memory: bool = setting(True, "at each heartbeat, give the heap memory freed since "
                                   "back to the OS (glibc malloc_trim; a no-op elsewhere)")


@dataclass(frozen=True, slots=True)
class Coverage:
    live: int
    total: int
    stale: tuple[tuple[str, float | None], ...]  # (symbol, seconds since its last tick or None)


class Health(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *, settings: HealthSettings,
                 instrument: InstrumentSpec, restarts: Callable[[], int] = lambda: 0,
                 store: str | None = "store", notify: str | None = None,
                 log_every_s: float | None = None, **kw: Any) -> None:
        super().__init__(supervision, **kw)
        self.notify = notify
        # heartbeats logged at INFO this often (engine time); the others at DEBUG
        self.log_every_s = log_every_s or settings.heartbeat_interval_s
        self._logged_at: float | None = None
        self.settings = settings
        self.instrument = instrument
        self.restarts = restarts
        self.store = store
        self._feed: FeedHealth | None = None
        self._feed_state = "unknown"
        self._positions = 0
        self._state = "ACTIVE"
        self._throttle = Throttle(settings.alert_throttle_s)
        self._repeats = RepeatGate(settings.critical_repeat_s, settings.alert_throttle_s)
        self._alerts_sent = 0
        self._alerts_suppressed = 0
        self.last_heartbeat: Heartbeat | None = None

    def on_start(self) -> None:
        self.schedule_every(self.settings.heartbeat_interval_s, HEARTBEAT_TIMER)
        self.schedule_every(self.settings.silence_check_s, SILENCE_TIMER)

    # -- inputs ----------------------------------------------------------------------------------
    @handles(FeedHealth)
    def on_feed_health(self, report: FeedHealth) -> None:
        self._feed = report
        self._feed_state = report.state

    @handles(FeedStatus)
    def on_feed_status(self, status: FeedStatus) -> None:
        if self.notify and status.state != self._feed_state:
            self.tell(self.notify, status)  # feed down and back
        self._feed_state = status.state
        if status.state in ("frozen", "auth_failed"):
            self._alert(Alert(f"feed_{status.state}", f"feed {status.state}: {status.reason}",
                              status.ts, Severity.CRITICAL if status.state == "auth_failed"
                              else Severity.WARNING))

    @handles(HealthUpdate)
    def on_update(self, update: HealthUpdate) -> None:
        if update.key == "positions":
            self._positions = int(update.value)
        elif update.key == "state":
            self._state = str(update.value)

    @handles(Alert)
    def on_alert(self, alert: Alert) -> None:
        self._alert(alert)

    def _alert(self, alert: Alert) -> None:
        critical = alert.severity is Severity.CRITICAL
        if critical:  # each distinct one at once; the very same one again at growing intervals
            allowed, suppressed = self._repeats.allow((alert.kind, alert.message), alert.ts)
        else:
            allowed, suppressed = self._throttle.allow(alert.kind, alert.ts)
        if not allowed:
            self._alerts_suppressed += 1
            return
        self._alerts_sent += 1
        extra = f" ({suppressed} similar suppressed)" if suppressed else ""
        level = {Severity.CRITICAL: "CRITICAL", Severity.WARNING: "WARNING"}.get(
            alert.severity, "INFO")
        logger.log(level, "[ALERT] {}: {}{}", alert.kind, alert.message, extra)
        if self.store:
            self.tell(self.store, alert)

    # -- timers ----------------------------------------------------------------------------------
    @handles(TimerFired)
    def on_timer(self, timer: TimerFired) -> None:
        if timer.name == HEARTBEAT_TIMER:
            self._heartbeat(timer.due)
        elif timer.name == SILENCE_TIMER:
            self._check_silence(timer.due)

    def coverage(self, now: float) -> Coverage:
        report = self._feed
        if report is None:
            return Coverage(0, 0, ())
        last = dict(report.last_tick)
        stale: list[tuple[str, float | None]] = []
        state = self._feed_state
        up = state in ("connected", "replay") or (state in ("", "unknown") and report.connected)
        down = not up  # nothing can tick: none live
        for sym in report.subscribed:
            ts = last.get(sym)
            if down or ts is None or now - ts > self.settings.stale_after_s:
                stale.append((sym, None if ts is None else now - ts))
        return Coverage(len(report.subscribed) - len(stale), len(report.subscribed),
                        tuple(stale))

    def _heartbeat(self, now: float) -> None:
        cov = self.coverage(now)
        beat = Heartbeat(ts=now, positions=self._positions, data_live=cov.live,
                         data_total=cov.total, stale=len(cov.stale), restarts=self.restarts(),
                         state=self._state)
        self.last_heartbeat = beat
        due = self._logged_at is None or now - self._logged_at >= self.log_every_s - 1e-6
        if due:
            self._logged_at = now
        logger.log("INFO" if due else "DEBUG", beat.line())
        if self.store:
            self.tell(self.store, beat)
        if self.settings.release_memory:
            release_free_heap()

    def _in_market_hours(self, now: float) -> bool:
        open_, close = session_bounds(trading_date(now), self.instrument)
        return open_ <= now < close

    def _check_silence(self, now: float) -> None:
        report = self._feed
        if report is None or not report.subscribed or not self._in_market_hours(now):
            return
        newest = max((ts for _, ts in report.last_tick), default=None)
        silent_for = now - newest if newest is not None else None
        if silent_for is None or silent_for >= self.settings.feed_silent_after_s:
            since = f"since {fmt_ist(newest)}" if newest is not None else "since start"
            self._alert(Alert("feed_silent", f"no tick from any of {len(report.subscribed)} "
                              f"symbols {since}", now, Severity.WARNING))

    # -- status ----------------------------------------------------------------------------------
    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, Any]:
        assert self.clock is not None
        now = self.clock.time()
        cov = self.coverage(now)
        report = self._feed
        newest = max((ts for _, ts in report.last_tick), default=None) if report else None
        return {
            "feed_state": self._feed_state,
            "subscribed": cov.total,
            "live": cov.live,
            "coverage": 100.0 * cov.live / cov.total if cov.total else 0.0,
            "stale_after_s": self.settings.stale_after_s,
            "stale": [{"symbol": s, "age_s": age} for s, age in cov.stale],
            "last_tick_ts": newest,
            "positions": self._positions,
            "state": self._state,
            "restarts": self.restarts(),
            "alerts_sent": self._alerts_sent,
            "alerts_suppressed": self._alerts_suppressed,
            "heartbeat": self.last_heartbeat.line() if self.last_heartbeat else "",
            "rss_mib": rss_mib(),
        }
