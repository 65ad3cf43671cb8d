"""The trading-day lifecycle: one process that trades every session, for weeks.

Owns ``DayLifecycle``, the single owner of the day (``live`` and ``paper --attach`` run it). Its
states and timetable come from ``engine.market.day_cycle``; here they are carried out:

- ``sleeping`` until the pre-open; ``pre_open``; ``waiting_for_broker``: the broker session is
  probed (funds) with backoff; one alert asks the operator to log in to OpenAlgo, one more at
  the login deadline; it goes on by itself once the session answers;
- ``selecting`` at ``[day] select_at`` (09:16): the day's instrument facts, spot, expiry and
  universe are read then, for that day, and the day's engine (its supervisor tree: execution,
  strategies, market data) is assembled;
- ``trading``: the day's engine runs; the broker session is probed every
  ``session_check_s``; when it expires (OpenAlgo refuses the key: a probe that is not
  answered is not an expiry), entries close (stops stay), the operator is alerted and
  the wait above runs again; entries reopen after the login;
- ``closing``: a final reconciliation pass, any position still open at the broker alerted, the
  day's report into ``<state_dir>/reports``, one summary alert, the day's engine stopped (so no
  order, position or latch of one day is in memory the next) and its memory handed back (the
  process's RSS is in the report and the ``closed`` transition), log rotation, old reports and
  session files pruned;
- ``closed``, then ``sleeping`` until the next trading day (weekends and holidays skipped).

Every transition is recorded (``day_transitions``) and ``status`` shows the state and the next
transition's time. Time comes from the venue's clock only. Rules: docs/operations/daily.md.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from loguru import logger

from engine.app.dashboard.channel import dashboard_channel
from engine.app.day_calendar import DayCalendar
from engine.app.facts import instrument_spec
from engine.app.live import day_engine, venue_broker
from engine.app.modes import entries_at_safe_stop, past_eod
from engine.app.operator import EngineOperator, graceful_stop, serve_control
from engine.app.session_end import SessionChecks, check_dead_letters, check_session
from engine.app.tree import Engine, notice_delivery
from engine.app.venues import Venue
from engine.broker import AuthError, BrokerError
from engine.config import Config
from engine.market.day_cycle import DayPlan, DaySettings, DayState
from engine.messages import Alert, Severity, StatusRequest, TimerFired, TradingGate
from engine.openalgo.rest import OpenAlgoClient
from engine.runtime.clock import fmt_ist
from engine.runtime.memory import release_free_heap, rss_mib
from engine.runtime.notify import NoticeGate, notice_of
from engine.store.database import Database, StoredDayTransition, record

#: the reconciler's timer name (actors/reconciler.py): a closing pass is one more of its passes
_RECONCILE_TIMER = "reconcile"
REPORTS_DIR = "reports"


@dataclass(frozen=True, slots=True)
class Transition:
    state: DayState
    ts: float
    trading_date: date
    next_state: DayState | None
    next_ts: float | None
    detail: str = ""


class DayLifecycle:
    """Runs trading days one after another until ``stop`` (see the module docstring)."""

    def __init__(self, cfg: Config, venue: Venue, *, db_path: Path,
                 strategies: tuple[str, ...], stop: threading.Event,
                 atm: int | None = None, control_path: str | None = None,
                 on_transition: Callable[[Transition, Engine | None], None] | None = None,
                 broker: OpenAlgoClient | None = None,
                 checks: SessionChecks | None = None) -> None:
        self.cfg = cfg
        self.venue = venue
        self.clock = venue.clock
        self.settings: DaySettings = cfg.section("day")
        self.db_path = db_path
        self.strategies = strategies
        self.stop_event = stop
        self.atm = atm
        self.control_path = control_path
        self.on_transition = on_transition
        self.broker = broker or venue_broker(cfg, venue, session_may_wait=True)
        self.state_dir = Path(cfg.engine.state_dir)
        self.engine: Engine | None = None
        self.safe_stop_reason: str | None = None
        self.last: Transition | None = None
        self.session_ok = True
        self.days_run = 0
        self.alerts_sent: list[Alert] = []
        #: every day's end-of-session checks (engine.app.session_end), failures by date
        self.checks = checks if checks is not None else SessionChecks()
        self.last_trading_date: date | None = None
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(db_path, cfg.store)
        self.calendar = DayCalendar(instrument_spec(cfg, None).calendar, self.settings,
                                    self.db, self.broker, self.clock.time)
        # the lifecycle's own alerts while no day's engine runs (its notifier does by day)
        self._delivery = notice_delivery(cfg, venue.name, venue.notify_urls)
        self._gate = NoticeGate(cfg.section("notify"))
        self._day_channels = ExitStack()  # the day's dashboard

    # -- the loop --------------------------------------------------------------------------------
    def run(self, max_days: int | None = None) -> int:
        """Trade day after day until ``stop`` (or ``max_days``); returns the days traded."""
        try:
            with serve_control(self.cfg, _DayOperator(self), self.control_path):
                while not self.stop_event.is_set():
                    if max_days is not None and self.days_run >= max_days:
                        break
                    self.calendar.refresh()
                    self._one_day(self.calendar.plan_next())
        finally:
            if self.engine is not None:
                self._stop_engine(graceful=True)
            if self._delivery is not None:
                self._delivery.stop(self.cfg.section("notify").timeout_s)
            self.db.close()
        return self.days_run

    def _one_day(self, plan: DayPlan) -> None:
        self._enter(DayState.SLEEPING, plan, DayState.PRE_OPEN, plan.pre_open_ts)
        if not self._sleep_until(plan.pre_open_ts):
            return
        self._enter(DayState.PRE_OPEN, plan, DayState.WAITING_FOR_BROKER, self.clock.time())
        self._enter(DayState.WAITING_FOR_BROKER, plan, DayState.SELECTING, plan.select_ts)
        if not self._wait_for_broker(plan) or not self._sleep_until(plan.select_ts):
            return
        if self.clock.time() >= plan.closing_ts:
            self._enter(DayState.CLOSED, plan, None, None, "the session ended before selection")
            return
        self._enter(DayState.SELECTING, plan, DayState.TRADING, self.clock.time())
        selected = self._select(plan)
        if selected is None:
            return
        engine, spot = selected
        self.engine = engine
        self.last_trading_date = plan.day
        engine.start()
        self._day_channels.enter_context(dashboard_channel(engine,
                                                           openalgo_url=self.venue.rest_url))
        self._enter(DayState.TRADING, plan, DayState.CLOSING, plan.closing_ts,
                    f"{len(engine.parts.symbols)} symbols, spot {spot}, "
                    f"{', '.join(engine.symbols()[:3])}{'…' if len(engine.symbols()) > 3 else ''}")
        self._trade_until(plan)
        if engine.safe_stop_reason:
            self.safe_stop_reason = engine.safe_stop_reason
            self.stop_event.set()  # the root supervisor gave up: the process stops (exit 4)
        if self.stop_event.is_set():
            return
        if engine.stopped.is_set():  # stopped by itself without a safe stop: the day again
            self._alert("engine_stopped", f"the day's engine stopped by itself; the day "
                        f"{plan.day} is planned again", Severity.CRITICAL)
            self._stop_engine(graceful=False)
            return
        self._enter(DayState.CLOSING, plan, DayState.CLOSED, None)
        memory = self._close(plan)
        self.days_run += 1
        self._enter(DayState.CLOSED, plan, DayState.SLEEPING, self.clock.time(),
                    f"RSS {memory:.1f} MiB" if memory is not None else "")

    def _select(self, plan: DayPlan) -> tuple[Engine, float | None] | None:
        """The day's engine, its universe read now; a broker failure is alerted once and
        retried with backoff until the closing (None: stopped, or the session ended)."""
        pause, alerted = self.settings.probe_backoff_s, False
        while self.clock.time() < plan.closing_ts:
            try:
                return day_engine(self.cfg, self.venue, self.broker, db_path=self.db_path,
                                  strategies=self.strategies, atm=self.atm)
            except BrokerError as exc:
                if not alerted:
                    alerted = True
                    self._alert("selection_failed", f"the day's universe could not be read "
                                f"({exc}); retrying")
            if not self._sleep_until(self.clock.time() + pause):
                return None
            pause = min(pause * 2, self.settings.probe_backoff_max_s)
        return None

    # -- transitions -----------------------------------------------------------------------------
    def _enter(self, state: DayState, plan: DayPlan, next_state: DayState | None,
               next_ts: float | None, detail: str = "") -> None:
        t = Transition(state, self.clock.time(), plan.day, next_state, next_ts, detail)
        self.last = t
        logger.info("day {}: {}{}{}", plan.day, state.value,
                    f" (next: {next_state.value} at {fmt_ist(next_ts, True)})"
                    if next_state is not None and next_ts is not None else "",
                    f"; {detail}" if detail else "")
        row = StoredDayTransition(self.venue.account, plan.day, state.value, t.ts,
                                  next_state.value if next_state else "", next_ts, detail)
        self.db.run_write(lambda tx: tx.apply(self.db.writes_for(record(row))))
        if self.on_transition is not None:
            self.on_transition(t, self.engine)

    def status(self) -> dict[str, Any]:
        t = self.last
        if t is None:
            return {"state": None}
        return {"state": t.state.value, "since": fmt_ist(t.ts, True),
                "trading_date": t.trading_date.isoformat(),
                "next_state": t.next_state.value if t.next_state else None,
                "next_at": fmt_ist(t.next_ts, True) if t.next_ts is not None else None,
                "next_ts": t.next_ts, "broker_session": "ok" if self.session_ok else "expired",
                "days_traded": self.days_run}

    # -- waiting ---------------------------------------------------------------------------------
    def _sleep_until(self, ts: float) -> bool:
        """Wait on the engine clock until ``ts``; False when stopped first (or the day's
        engine stopped by itself)."""
        while (now := self.clock.time()) < ts:
            if self.engine is not None and self.engine.stopped.is_set():
                return False
            real = _real_wait(self.clock, ts - now)
            if self.stop_event.wait(min(real, 0.5)):
                return False
        return not self.stop_event.is_set()

    def _probe(self, *, session_only: bool = False) -> str | None:
        """None when the broker session answers; else why not. ``session_only``: only a
        refused session counts (OpenAlgo not answering one probe is left to the engine's own
        retries and reconciliation, not taken for a login to wait for)."""
        try:
            self.broker.funds()
        except AuthError as exc:
            return f"session not usable: {exc}"
        except BrokerError as exc:
            if session_only:
                logger.info("broker-session probe not answered ({}); trading on", exc)
                return None
            return f"OpenAlgo not answering: {exc}"
        return None

    def _wait_for_broker(self, plan: DayPlan) -> bool:
        """Probe until the broker session answers; one alert, one more at the deadline (the
        login deadline before the open; mid-day, as long after the expiry as the deadline
        is after the pre-open)."""
        s = self.settings
        pause, alerted, reminded = s.probe_backoff_s, False, False
        deadline = max(plan.login_deadline_ts,
                       self.clock.time() + plan.login_deadline_ts - plan.pre_open_ts)
        while not self.stop_event.is_set():
            why = self._probe()
            if why is None:
                if alerted:
                    logger.info("broker session usable again")
                self.session_ok = True
                return True
            self.session_ok = False
            if not alerted:
                alerted = True
                self._alert("broker_login", f"log in to OpenAlgo: the broker session is not "
                            f"usable ({why}); entries wait, stops stay")
            elif not reminded and self.clock.time() >= deadline:
                reminded = True
                self._alert("broker_login", f"still no broker session at "
                            f"{fmt_ist(deadline)}: log in to OpenAlgo ({why})",
                            Severity.CRITICAL)
            if not self._sleep_until(self.clock.time() + pause):
                return False
            pause = min(pause * 2, s.probe_backoff_max_s)
        return False

    def _trade_until(self, plan: DayPlan) -> None:
        engine = self.engine
        assert engine is not None
        while self.clock.time() < plan.closing_ts:
            next_check = min(self.clock.time() + self.settings.session_check_s, plan.closing_ts)
            if not self._sleep_until(next_check):
                return
            if self.clock.time() >= plan.closing_ts or self._probe(session_only=True) is None:
                continue
            # the session expired mid-day: entries stop, stops (exits) stay
            engine.tell("orders", TradingGate(entries=False, exits=True,
                                              reason="broker session expired"))
            if not self._wait_for_broker(plan):
                return
            if not _ask_status(engine, "reconciler").get("hold"):
                engine.tell("orders", TradingGate(entries=True, exits=True,
                                                  reason="broker session restored"))

    # -- closing ---------------------------------------------------------------------------------
    def _close(self, plan: DayPlan) -> float | None:
        """The closing (module docstring); returns the process's RSS (MiB) once the day's
        engine is gone and its memory handed back."""
        engine = self.engine
        assert engine is not None
        recon = self._final_reconciliation(engine)
        try:
            open_rows = [p for p in self.broker.positionbook() if p.quantity != 0]
        except BrokerError as exc:
            open_rows = []
            recon["positionbook_error"] = str(exc)
        unresolved = [f"{p.symbol} {p.quantity:+d} ({p.product})" for p in open_rows]
        if unresolved:
            self._alert("position_after_close", "open after the close (reconcile it by hand; it "
                        f"is never carried silently): {', '.join(unresolved)}",
                        Severity.CRITICAL)
        failed = self._stop_engine(graceful=False, day_over=True).failures
        gc.collect()  # the day's actors, books and caches: gone before the night
        release_free_heap()
        memory = rss_mib()
        report = day_report(self.db, plan.day, self.venue.account, recon, unresolved, failed)
        report["rss_mib"] = round(memory, 1) if memory is not None else None
        path = write_report(self.state_dir / REPORTS_DIR, report)
        self._alert("day_summary", summary_line(report), Severity.INFO)
        logger.info("day {}: report {}", plan.day, path)
        rotate_logs()
        prune(self.state_dir, self.settings.retention_days, self.clock.time())
        return memory

    def _final_reconciliation(self, engine: Engine) -> dict[str, Any]:
        if not engine.parts.strategies:
            return {}
        before = _ask_status(engine, "reconciler").get("passes", 0)
        engine.tell("reconciler", TimerFired(_RECONCILE_TIMER, self.clock.time(), "closing"))
        deadline = time.monotonic() + 30.0
        status: Mapping[str, Any] = {}
        while time.monotonic() < deadline:
            status = _ask_status(engine, "reconciler")
            if status.get("passes", 0) > before:
                break
            time.sleep(0.05)
        else:
            self._alert("reconcile_failed", "the closing reconciliation did not finish in 30 s")
        return {"passes": status.get("passes"), "last_error": status.get("last_error") or None,
                "hold": status.get("hold"), "divergent": status.get("divergent") or {}}

    def _stop_engine(self, *, graceful: bool, day_over: bool | None = None) -> SessionChecks:
        """Stop the day's engine, its end-of-session checks run around the stop (``day_over``
        None: by the clock); returns them, and adds them, dated, to ``checks``."""
        engine = self.engine
        day_checks = SessionChecks()
        if engine is None:
            return day_checks
        if graceful and not engine.safe_stop_reason:
            graceful_stop(engine, self.cfg.engine.on_signal,
                          timeout_s=self.cfg.engine.shutdown_timeout_s)
        self._day_channels.close()
        trading = bool(self.strategies)
        if trading and not engine.safe_stop_reason:
            over = past_eod(self.cfg, self.clock.time()) if day_over is None else day_over
            check_session(day_checks, registry=engine.registry, db=engine.db,
                          broker=self.broker, account=self.venue.account, day_over=over,
                          trading_day=engine.parts.trading_day)
        engine.stop()
        self.engine = None
        if engine.safe_stop_reason:
            venue = self.venue
            entries_at_safe_stop(self.cfg, self.db_path, venue.account, day_checks,
                                 lambda: OpenAlgoClient(
                                     replace(self.cfg.openalgo, host=venue.rest_url),
                                     api_key=venue.api_key, clock=self.clock,
                                     account=venue.account, access=venue.access))
        if trading:
            check_dead_letters(day_checks, engine.registry)
        day = engine.parts.trading_day
        self.checks.failures.extend(f"{day}: {f}" for f in day_checks.failures)
        self.checks.notes.extend(f"{day}: {n}" for n in day_checks.notes)
        return day_checks

    def _alert(self, kind: str, message: str, severity: Severity = Severity.WARNING) -> None:
        alert = Alert(kind, message, self.clock.time(), severity)
        self.alerts_sent.append(alert)
        engine = self.engine
        if engine is not None and not engine.stopped.is_set():
            engine.tell("health", alert)  # logged, throttled and stored by the health actor
            return
        (logger.critical if severity is Severity.CRITICAL else logger.warning)(
            "[ALERT] {}: {}", kind, message)
        self.db.run_write(lambda tx: tx.apply(self.db.writes_for(alert)))
        notice = notice_of(alert) if self._delivery is not None else None
        if notice is not None and self._delivery is not None and self._gate.allow(notice):
            self._delivery.put(notice)


def _ask_status(engine: Engine, name: str) -> dict[str, Any]:
    """An actor's status section; empty when it does not answer in time (logged)."""
    try:
        return dict(engine.ask(name, StatusRequest(), timeout=10.0) or {})
    except Exception as exc:  # a busy or restarting actor: the caller decides without it
        logger.warning("{} did not answer a status request: {}", name, exc)
        return {}


def _real_wait(clock: Any, engine_delay: float) -> float:
    real = getattr(clock, "_real_delay", None)
    return float(real(engine_delay)) if real is not None else engine_delay


# -- the day's report ----------------------------------------------------------------------------
def day_report(db: Database, day: date, account: str, reconciliation: Mapping[str, Any],
               unresolved: list[str], checks_failed: Sequence[str] = ()) -> dict[str, Any]:
    """What one day did: its orders, trades, net P&L and R, what is left unresolved, and the
    end-of-session checks that failed (engine.app.session_end)."""
    trades = db.trades(trading_date=day, account=account)
    orders = db.orders(trading_date=day, account=account)
    return {"trading_date": day.isoformat(), "account": account, "orders": len(orders),
            "trades": len(trades), "net_pnl": round(sum(t.pnl for t in trades), 2),
            "r": round(sum(t.r_multiple for t in trades), 2),
            "symbols": sorted({o.symbol for o in orders}),
            "reconciliation": dict(reconciliation), "unresolved": unresolved,
            "checks_failed": list(checks_failed)}


def write_report(folder: Path, report: Mapping[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"day-{report['trading_date']}-{report['account']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def summary_line(report: Mapping[str, Any]) -> str:
    unresolved = report.get("unresolved") or []
    failed = report.get("checks_failed") or []
    return (f"day {report['trading_date']}: {report['trades']} trade(s), net P&L "
            f"{report['net_pnl']:+.2f}, {report['r']:+.2f} R; "
            + (f"UNRESOLVED: {'; '.join(unresolved)}" if unresolved else "nothing unresolved")
            + (f"; {len(failed)} end-of-session check(s) FAILED: {'; '.join(failed)}"
               if failed else ""))


def rotate_logs() -> None:
    """Start a fresh log file for the next day (loguru file sinks rotate on the time check;
    a size-rotated sink is left as it is)."""
    from engine.runtime.logs import rotate_files

    rotate_files()


def prune(state_dir: Path, days: int, now: float) -> list[Path]:
    """Reports and session files older than ``days`` (by modification time) deleted."""
    if days <= 0:
        return []
    cutoff = time.time() - days * 86400.0
    gone: list[Path] = []
    for pattern in (f"{REPORTS_DIR}/day-*.json", "sessions/*.jsonl*", "sessions/*.parquet"):
        for path in state_dir.glob(pattern):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                gone.append(path)
    if gone:
        logger.info("retention: {} file(s) older than {} days deleted", len(gone), days)
    return gone


class _DayOperator:
    """``status`` and commands across days: the lifecycle, plus the day's engine when one runs."""

    def __init__(self, life: DayLifecycle) -> None:
        self.life = life

    def status(self) -> dict[str, Any]:
        engine = self.life.engine
        if engine is not None and not engine.stopped.is_set():
            base = EngineOperator(engine, openalgo_url=self.life.venue.rest_url).status()
        else:  # between days: the sections are there, empty, for every reader of status
            base = {"connection": {"openalgo_url": self.life.venue.rest_url}, "api": {},
                    "pipeline": {}, "positions": [], "risk": {},
                    "supervisor": {"state": "between days"}}
        return {**base, "lifecycle": self.life.status()}

    def command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        from engine.app.control import CommandRejected

        engine = self.life.engine
        if engine is None or engine.stopped.is_set():
            raise CommandRejected(f"no trading engine now (lifecycle: "
                                  f"{self.life.status()['state']})")
        return EngineOperator(engine, openalgo_url=self.life.venue.rest_url).command(name, args)
