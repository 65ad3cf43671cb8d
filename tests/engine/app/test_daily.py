"""The trading-day lifecycle (engine.app.daily) against the simulator over real sockets, on a
fast-forward clock: three short generated days with a holiday between the second and the
third in one engine process; and a broker session that has expired (before the open, and
mid-day)."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path

from engine.app.control import ControlSettings, render_status, send_command
from engine.app.daily import DayLifecycle, Transition
from engine.app.facts import instrument_spec
from engine.app.sections import load_config
from engine.app.tree import Engine
from engine.app.venues import Venue
from engine.config import Config
from engine.market.day_cycle import DaySettings, DayState
from engine.market.instruments import INDEX_EXCHANGE, INDEX_SYMBOL, next_expiry, option_symbol
from engine.market.universe import UniverseSettings
from engine.messages import (
    Action,
    OrderIntent,
    OrderPurpose,
    PriceType,
    Severity,
    StatusRequest,
    Tick,
)
from engine.runtime.clock import IST
from engine.runtime.fastforward import FastForwardClock
from engine.sim.server import SimulatorServer, SimulatorSettings
from engine.store.database import Database
from tests.actors.test_notifier import server  # noqa: F401 - a loopback json:// endpoint
from tests.support import until

KEY = "daily-test-key-5c2e81"
HOLIDAY = date(2026, 1, 7)  # a Wednesday
DAYS = (date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 8))
SPOTS = (24000.0, 24200.0, 23800.0)
SPEED = 100.0


def at(day: date, hh: int, mm: int, ss: int = 0) -> float:
    return datetime.combine(day, time(hh, mm, ss), IST).timestamp()


def config(tmp: Path) -> Config:
    cfg = load_config(None)
    return cfg.replace(
        engine=replace(cfg.engine, state_dir=str(tmp), on_signal="keep_stops"),
        universe=UniverseSettings(width=0),
        day=DaySettings(pre_open="09:14", login_deadline="09:15:30", probe_backoff_s=5.0,
                        probe_backoff_max_s=20.0, session_check_s=10.0),
        control=ControlSettings(socket_path=str(Path(tempfile.mkdtemp(dir="/tmp")) / "d.sock")))


def day_ticks(day: date, spot: float, cfg: Config) -> Iterator[Tick]:
    """A few minutes after the open and the last twenty of the session, every 5 s."""
    expiry = next_expiry(day, instrument_spec(cfg, None))
    ce = option_symbol("NIFTY", expiry, int(round(spot, -2)), "CE")
    pe = option_symbol("NIFTY", expiry, int(round(spot, -2)), "PE")
    for start, end in ((at(day, 9, 15), at(day, 9, 20)), (at(day, 15, 12), at(day, 15, 31))):
        ts = start
        while ts < end:
            for sym, exch, ltp in ((INDEX_SYMBOL, INDEX_EXCHANGE, spot), (ce, "NFO", 100.0),
                                   (pe, "NFO", 95.0)):
                yield Tick(sym, exch, ltp, recv_ts=ts, exchange_ts=ts,
                           bid=round(ltp - 0.05, 2) if exch == "NFO" else 0.0,
                           ask=round(ltp + 0.05, 2) if exch == "NFO" else 0.0)
            ts += 5.0


def skips() -> list[tuple[float, float]]:
    """Idle market time jumped over: the quiet middle of each day, each night, the holiday."""
    out = []
    for i, day in enumerate(DAYS):
        out.append((at(day, 9, 20, 30), at(day, 15, 12)))
        if i + 1 < len(DAYS):
            out.append((at(day, 15, 33), at(DAYS[i + 1], 9, 13)))
    return out


@dataclass
class Run:
    cfg: Config
    sim: SimulatorServer
    life: DayLifecycle
    transitions: list[Transition] = field(default_factory=list)
    universes: dict[date, list[str]] = field(default_factory=dict)
    statuses: list[dict] = field(default_factory=list)

    def run_days(self, n: int) -> int:
        """The lifecycle for at most ``n`` days (how many it ran), then the simulator and the
        clock stopped."""
        try:
            return self.life.run(max_days=n)
        finally:
            self.sim.stop()
            self.life.clock.stop()


def start(tmp: Path, *, days: int, on_trading=None, speed: float = SPEED) -> Run:
    cfg = config(tmp)
    clock = FastForwardClock(at(DAYS[0], 9, 13), speed, skips())
    # the holiday is known to OpenAlgo (the simulator's calendar) only: the engine reads it
    spec = replace(instrument_spec(cfg, None), holidays=frozenset({HOLIDAY}))
    sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False),
                          api_key=KEY, clock=clock, instrument=spec)
    ticks = [t for d, s in zip(DAYS, SPOTS, strict=False) for t in day_ticks(d, s, cfg)]
    sim.declare_symbols(sorted({(t.symbol, t.exchange) for t in ticks}))
    sim.start()
    sim.play(iter(ticks), clock)
    venue = Venue("paper", sim.rest_url, sim.ws_url, KEY, clock, "paper")
    stop = threading.Event()
    run: Run

    def on_transition(t: Transition, engine: Engine | None) -> None:
        run.transitions.append(t)
        if t.state is DayState.TRADING and engine is not None:
            run.universes[t.trading_date] = engine.symbols()
            threading.Thread(target=trade, args=(run, engine), daemon=True).start()
            if on_trading is not None:
                on_trading(run, t)
        if t.state is DayState.CLOSED:
            sim.faults.lose_state()  # OpenAlgo's books are empty each morning
        if t.state in (DayState.SLEEPING, DayState.TRADING):
            run.statuses.append(send_command(cfg.section("control").socket_path, "status"))

    life = DayLifecycle(cfg, venue, db_path=tmp / "engine.db", strategies=("baseline_v1",),
                        stop=stop, on_transition=on_transition)
    run = Run(cfg, sim, life)
    return run


def trade(run: Run, engine: Engine) -> None:
    """One entry each day once the gate is open: the lifecycle exits it at 15:15."""
    try:
        until(lambda: (engine.ask("reconciler", StatusRequest()) or {}).get("ready"), 20)
    except Exception:
        return
    ce = next(s for s in engine.symbols() if s.endswith("CE"))
    engine.tell("orders", OrderIntent(
        client_id=f"t-{engine.parts.trading_day:%m%d}", strategy="baseline_v1",
        account="paper", symbol=ce, exchange="NFO", action=Action.SELL, quantity=65,
        pricetype=PriceType.MARKET, purpose=OrderPurpose.ENTRY, created_ts=engine.clock.time()))


def test_three_days_with_a_holiday_in_one_process(tmp_path: Path) -> None:
    run = start(tmp_path, days=3)
    assert run.run_days(3) == 3
    states = [(t.trading_date, t.state) for t in run.transitions]
    traded = [d for d, s in states if s is DayState.TRADING]
    assert traded == list(DAYS)  # the holiday (OpenAlgo's market/holidays) is slept through
    assert HOLIDAY not in {d for d, _ in states}
    # each day chose its own universe, after the open, for that day's expiry and spot
    assert len({tuple(u) for u in run.universes.values()}) == 3
    for t in run.transitions:
        if t.state is DayState.SELECTING:
            assert t.ts >= at(t.trading_date, 9, 16)
    with Database(tmp_path / "engine.db") as db:
        for day in DAYS:
            orders = db.orders(trading_date=day)
            assert orders and {o.trading_date for o in orders} == {day}
            exits = [o for o in orders if o.purpose is OrderPurpose.EXIT]
            assert exits and all(at(day, 15, 15) <= o.created_ts < at(day, 15, 31)
                                 for o in exits)
            report = json.loads((tmp_path / "reports" / f"day-{day}-paper.json").read_text())
            assert report["orders"] == len(orders) and report["unresolved"] == []
        recorded = [(r.trading_date, r.state) for r in db.day_transitions()]
        summaries = [a for a in db.alerts() if a.kind == "day_summary"]
        cached = db.holidays(2026)
    assert cached is not None and HOLIDAY.isoformat() in cached.holidays
    assert recorded == states
    assert len(summaries) == 3
    # no position is left at the broker after any close (each day exits at 15:15)
    assert all(p.quantity == 0 for p in run.sim.broker.positionbook())
    sleeping = [s["lifecycle"] for s in run.statuses if s["lifecycle"]["state"] == "sleeping"]
    assert sleeping[0]["next_state"] == "pre_open" and sleeping[0]["next_at"]
    shown = render_status(next(s for s in run.statuses if s["lifecycle"]["state"] == "sleeping"))
    assert f"pre_open at {sleeping[0]['next_at']}" in shown
    trading = [s for s in run.statuses if s["lifecycle"]["state"] == "trading"]
    assert trading and "risk" in trading[0]


def test_an_expired_broker_session_is_waited_for_before_and_during_the_day(
        tmp_path: Path) -> None:
    """Before the open: one alert, then the day trades once the operator logs in. Mid-day:
    entries close, the stop stays at the broker, and entries reopen after the login."""
    day = DAYS[0]
    seen: dict[str, object] = {}

    def mid_day(run: Run, _t: Transition) -> None:
        def watch() -> None:
            engine = run.life.engine
            # the entry is short and its (fallback) stop rests at the broker
            until(lambda: any(r.status == "trigger pending"
                              for r in run.sim.broker.orderbook()), 30)
            run.sim.faults.expire_session(until=at(day, 9, 19, 15))
            until(lambda: run.life.status()["broker_session"] == "expired", 20)
            gate = engine.ask("orders", StatusRequest())["gate"]
            seen["gate_during"] = (gate["entries"], gate["exits"], gate["reason"])
            seen["stops_during"] = [r.action for r in run.sim.broker.orderbook()
                                    if r.status == "trigger pending"]
            until(lambda: run.life.status()["broker_session"] == "ok", 30)
            until(lambda: engine.ask("orders", StatusRequest())["gate"]["entries"], 10)
            seen["gate_after"] = engine.ask("orders", StatusRequest())["gate"]["reason"]

        threading.Thread(target=watch, daemon=True).start()

    run = start(tmp_path, days=1, on_trading=mid_day, speed=SPEED / 2)  # slower: a window
    run.sim.faults.expire_session(until=at(day, 9, 15, 20))  # the operator logs in at 09:15:20
    assert run.run_days(1) == 1
    logins = [a for a in run.life.alerts_sent if a.kind == "broker_login"]
    # one alert before the open (the deadline passed unreached), one mid-day
    assert len(logins) == 2 and logins[0].ts < at(day, 9, 15, 30) < logins[1].ts
    waits = [t for t in run.transitions if t.state is DayState.SELECTING]
    assert waits and waits[0].ts >= at(day, 9, 16)
    assert seen["gate_during"] == (False, True, "broker session expired")
    assert seen["stops_during"] == ["BUY"]
    assert seen["gate_after"] == "broker session restored"
    with Database(tmp_path / "engine.db") as db:
        assert any(o.purpose is OrderPurpose.EXIT for o in db.orders(trading_date=day))


def test_a_failed_selection_is_retried_and_an_unanswered_probe_is_no_expiry(
        tmp_path: Path) -> None:
    """The spot cannot be read at 09:16 (OpenAlgo answers 400): one alert,
    then the selection is retried and the day trades. Mid-day a broker-session probe that
    OpenAlgo does not answer (503) is not an expired session: entries stay open, no login
    alert (before the fix, it closed entries and asked the operator to log in)."""
    day = DAYS[0]
    seen: dict[str, object] = {}

    def unanswered_probe(run: Run, _t: Transition) -> None:
        def watch() -> None:
            engine = run.life.engine
            until(lambda: engine.ask("orders", StatusRequest())["gate"]["entries"], 20)
            run.sim.faults.http_error(status=503, count=3, endpoints=["funds"])
            until(lambda: run.sim.faults.armed() == 0, 20)  # a probe met all three
            seen["gate"] = engine.ask("orders", StatusRequest())["gate"]["entries"]
            seen["session"] = run.life.status()["broker_session"]

        threading.Thread(target=watch, daemon=True).start()

    run = start(tmp_path, days=1, on_trading=unanswered_probe)
    inner = run.life.on_transition

    def on_transition(t: Transition, engine: Engine | None) -> None:
        if t.state is DayState.SELECTING and not seen.get("armed"):
            seen["armed"] = True  # the expiries and the spot cannot be read once (as while
            # OpenAlgo still loads the day's master contract after the login)
            run.sim.faults.http_error(status=400, count=2, endpoints=["expiry", "quotes"])
        if inner is not None:
            inner(t, engine)

    run.life.on_transition = on_transition
    assert run.run_days(1) == 1
    failed = [a for a in run.life.alerts_sent if a.kind == "selection_failed"]
    assert len(failed) == 1 and "could not be read" in failed[0].message
    assert [t.state for t in run.transitions].count(DayState.TRADING) == 1
    assert seen["gate"] is True and seen["session"] == "ok"
    assert not [a for a in run.life.alerts_sent if a.kind == "broker_login"]
    assert (tmp_path / "reports" / f"day-{day}-paper.json").exists()


def test_an_alert_between_days_reaches_the_notifier(
        tmp_path: Path, server: tuple[str, list[dict[str, object]]]) -> None:  # noqa: F811
    """No day's engine (and so no notifier actor) runs before the open: the lifecycle's own
    alert (the morning's "log in to OpenAlgo") goes to the account's notice URLs itself."""
    url, received = server
    cfg = config(tmp_path)
    clock = FastForwardClock(at(DAYS[0], 9, 0), 1.0, paused=True)
    sim = SimulatorServer(SimulatorSettings(rest_port=0, ws_port=0, rate_limits_enabled=False),
                          api_key=KEY, clock=clock).start()
    venue = Venue("paper", sim.rest_url, sim.ws_url, KEY, clock, "paper", notify_urls=url)
    life = DayLifecycle(cfg, venue, db_path=tmp_path / "engine.db", strategies=(),
                        stop=threading.Event())
    try:
        life._alert("broker_login", "log in to OpenAlgo: the broker session is not usable",
                    Severity.CRITICAL)
        until(lambda: received, 10)
    finally:
        if life._delivery is not None:
            life._delivery.stop(5.0)
        life.db.close()
        sim.stop()
        clock.stop()
    assert "log in to OpenAlgo" in str(received[0])
