"""The engine's side of the operator channel: status gathering, commands, the stop-signal policy.

Owns what ``run.py status | pause | resume | kill | flatten | unhalt`` *do* in a running engine
(``engine.app.control`` carries them over the socket):

- ``status``: asks health, the order manager, the position monitor, the risk manager, the
  reconciler and the supervisor, and shapes the answer as ``engine.app.control.EngineStatus``;
- ``pause`` / ``resume`` go to the strategy hosts (new entries blocked / allowed again);
  ``kill`` (cancel working entries, block new ones; stops and positions stay), ``flatten``
  (the exit coordinator closes everything, HALTED) and ``unhalt`` go to the risk manager, which
  owns the latching states. ``--strategy NAME`` narrows any of them to one strategy;
- ``chaos`` (only when the control server allows it: ``[control] chaos_enabled``): crash one
  named actor of the tree by telling it ``Crash`` (the supervisor then restarts it as after any
  crash), or, without a name, list the actors that can be crashed (every supervised actor and
  group supervisor, not the root);
- ``graceful_stop``: what SIGTERM / SIGINT do, by ``[engine] on_signal``: ``keep_stops`` cancels
  the working entries and leaves every stop resting at the broker; ``flatten`` closes everything
  first (bounded by ``shutdown_timeout_s``). Then the engine stops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from loguru import logger

from engine.app.control import (
    CHAOS_COMMAND,
    CommandRejected,
    ControlError,
    ControlHandler,
    ControlServer,
    ControlSettings,
)
from engine.app.tree import Engine
from engine.config import Config
from engine.messages import (
    CancelIntent,
    Command,
    Crash,
    OrderPurpose,
    PositionQuery,
    StatusRequest,
    TradingGate,
    WorkingOrdersQuery,
)

_ASK_TIMEOUT_S = 5.0


class EngineOperator:
    """``engine.app.control.ControlHandler`` for one running ``Engine``."""

    def __init__(self, engine: Engine, *, openalgo_url: str = "") -> None:
        self.engine = engine
        self.openalgo_url = openalgo_url

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        health = self.ask_actor("health", StatusRequest()) or {}
        orders = self.ask_actor("orders", StatusRequest()) or {}
        risk = self.ask_actor("risk", StatusRequest()) or {}
        recon = self.ask_actor("reconciler", StatusRequest()) or {}
        marks = self.ask_actor("positions", PositionQuery()) or ()
        hosts = {name: self.ask_actor(f"strategy.{name}", StatusRequest()) or {}
                 for name in self.engine.parts.strategies}
        last = orders.get("last_request") or {}
        strategies = {name: _strategy_state(s, hosts.get(name) or {})
                      for name, s in (risk.get("strategies") or {}).items()}
        states = [s["state"] for s in strategies.values() if s["state"]]
        worst = next((st for st in _WORST_FIRST if st in states), "ACTIVE") if states else None
        call = getattr(self.engine.parts.broker, "last_request", None)
        return {
            "connection": {"openalgo_url": self.openalgo_url,
                           "websocket": health.get("feed_state"),
                           "last_tick_ts": health.get("last_tick_ts"),
                           "subscribed": health.get("subscribed"), "live": health.get("live"),
                           "coverage": health.get("coverage"),
                           "stale_after_s": health.get("stale_after_s")},
            "api": {**_last_call(call, last),
                    "last_order_id": orders.get("last_order_id"),
                    "reconciled": recon.get("ready"),
                    "reconcile_error": recon.get("last_error") or None,
                    "reconcile_hold": recon.get("hold"),
                    "divergent": recon.get("divergent") or {},
                    "lost_orders": recon.get("lost_orders")},
            "pipeline": {"bars_generated": health.get("bars"),
                         "stale": health.get("stale")},
            "positions": [{"symbol": m.symbol, "strategy": m.strategy, "quantity": m.quantity,
                           "average_price": m.average_price, "ltp": m.ltp,
                           "pnl": round(m.unrealized + m.realized, 2),
                           "r": round(m.r_multiple, 2),
                           "price_pending": m.price_pending,
                           "stop": _stop_of(orders.get("working") or [], m.strategy, m.symbol)}
                          for m in marks],
            "risk": {"state": worst, "limits": risk.get("limits"), "strategies": strategies,
                     "realized_pnl": _total(strategies, "realized_pnl"),
                     "unrealized_pnl": _total(strategies, "unrealized_pnl")},
            "supervisor": {"restarts": self.engine.restart_count(),
                           "state": "safe_stopped" if self.engine.safe_stop_reason
                           else "running", "rss_mib": health.get("rss_mib")},
        }

    # -- commands ------------------------------------------------------------------------------
    def command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        if name == CHAOS_COMMAND:
            return self.chaos(args)
        # refusals are phrased without the command's name: the CLI prints "<command>: <error>"
        strategy = str(args.get("strategy") or "")
        known = self.engine.parts.strategies
        if not known:
            raise CommandRejected("this engine runs no strategy")
        if strategy and strategy not in known:
            raise CommandRejected(f"unknown strategy {strategy!r} (running: "
                                  f"{', '.join(known)})")
        targets = (strategy,) if strategy else known
        message = Command(name, (("strategy", strategy),) if strategy else (),
                          self.engine.clock.time())
        if name not in ("pause", "resume", "kill", "flatten", "unhalt"):
            raise CommandRejected(f"unknown command {name!r}")
        if name in ("pause", "resume"):  # the pause is the strategy hosts'
            for target in targets:
                self.engine.tell(f"strategy.{target}", message)
        if name == "pause":
            return {"summary": f"pause: new entries blocked for {', '.join(targets)}"}
        # kill, flatten and unhalt latch in the risk manager; resume lifts a kill there
        reply = self.ask_actor("risk", message, timeout=30.0)
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise CommandRejected(str(reply.get("error") if isinstance(reply, dict)
                                      else "the risk manager did not answer"))
        if name == "unhalt":  # and the reconciler's hold (the operator has looked)
            self.engine.tell("reconciler", message)
        states = ", ".join(f"{k} {v}" for k, v in sorted(reply["states"].items()))
        return {"summary": f"{name}: {states}", "states": reply["states"]}

    def chaos(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Crash ``args["actor"]`` (fault injection), or list the actors that can be crashed."""
        supervisor = self.engine.supervisor
        if supervisor is None:
            raise CommandRejected("chaos: the engine is not running")
        names = [spec.name for spec in supervisor.spec.descendants()]
        actor = args.get("actor")
        if actor is None:
            return {"summary": f"chaos: {len(names)} actors can be crashed", "actors": names}
        if actor not in names:
            raise CommandRejected(f"chaos: no actor {actor!r} (try chaos without an actor for "
                                  "the list)")
        reason = str(args.get("reason") or "chaos: injected by the operator channel")
        logger.warning("chaos: crashing {} ({})", actor, reason)
        self.engine.tell(str(actor), Crash(reason))
        return {"summary": f"chaos: crash sent to {actor}", "actor": actor}

    # -- helpers -------------------------------------------------------------------------------
    def ask_actor(self, name: str, message: Any, timeout: float = _ASK_TIMEOUT_S) -> Any:
        try:
            return self.engine.ask(name, message, timeout=timeout)
        except Exception as exc:  # a missing or busy actor is "unknown" in the status
            logger.debug("operator: {} did not answer {}: {}", name, type(message).__name__,
                         exc)
            return None


def control_channel(engine: Engine, *, openalgo_url: str,
                    path: str | None = None) -> AbstractContextManager[ControlServer | None]:
    """The operator's control socket for a trading ``engine`` while the block runs (every mode
    that trades: live, paper, paper --attach); None when ``[control] enabled`` is off or the
    socket cannot be used (logged: the engine trades on, uncontrolled)."""
    return serve_control(engine.cfg, EngineOperator(engine, openalgo_url=openalgo_url), path)


@contextmanager
def serve_control(cfg: Config, handler: ControlHandler,
                  path: str | None = None) -> Iterator[ControlServer | None]:
    """The control socket answering with ``handler`` while the block runs (see
    ``control_channel``)."""
    settings: ControlSettings = cfg.section("control")
    server: ControlServer | None = None
    if settings.enabled:
        server = ControlServer(path or settings.socket_path, handler,
                               max_request_bytes=settings.max_request_bytes,
                               idle_timeout_s=settings.idle_timeout_s,
                               chaos_enabled=settings.chaos_enabled)
        try:
            server.start()
        except ControlError as exc:
            logger.error("control channel not available: {}", exc)
            server = None
    try:
        yield server
    finally:
        if server is not None:
            server.stop()


def graceful_stop(engine: Engine, policy: str, *, timeout_s: float) -> bool:
    """Carry out the stop-signal ``policy`` before the engine stops; True when it completed
    within ``timeout_s``. Entries are closed first either way; ``keep_stops`` then cancels the
    working entries (an entry left at the broker could fill with no engine to protect it) and
    leaves every stop resting; ``flatten`` has the exit coordinator close everything. Neither
    latches a risk state: the next start trades normally."""
    if not engine.parts.strategies:
        return True
    operator = EngineOperator(engine)
    engine.tell("orders", TradingGate(entries=False, reason="engine stopping"))
    deadline = time.monotonic() + timeout_s
    if policy == "flatten":
        logger.warning("stopping: policy flatten: closing every position")
        try:
            operator.command("flatten", {})
        except CommandRejected as exc:
            logger.error("stopping: {}", exc)
            return False
        while time.monotonic() < deadline:
            risk = operator.ask_actor("risk", StatusRequest()) or {}
            if risk and not any(s.get("exit") for s in risk.get("strategies", {}).values()):
                logger.info("stopping: flat")
                return True
            time.sleep(0.2)
        logger.critical("stopping: not flat after {:.0f} s; stops stay where they are",
                        timeout_s)
        return False
    logger.warning("stopping: policy keep_stops: working entries cancelled, stops stay at the "
                   "broker")
    asked: set[str] = set()
    while time.monotonic() < deadline:
        working = operator.ask_actor("orders", WorkingOrdersQuery())
        if working is None:
            return False
        entries = [o.intent.client_id for o in working
                   if o.intent.purpose is OrderPurpose.ENTRY]
        if not entries:
            return True
        for cid in entries:
            if cid not in asked:
                asked.add(cid)
                engine.tell("orders", CancelIntent(cid, "engine stopping"))
        time.sleep(0.1)
    logger.critical("stopping: working entries not all cancelled after {:.0f} s", timeout_s)
    return False


def _stop_of(working: list[Any], strategy: str, symbol: str) -> float | None:
    """The trigger of the stop working for a position (None: no stop works)."""
    for view in working:
        if isinstance(view, Mapping) and view.get("strategy") == strategy \
                and view.get("symbol") == symbol and view.get("purpose") == "stop":
            return view.get("trigger_price")  # type: ignore[no-any-return]
    return None


#: Strategy states, the one needing the operator most first (status shows the worst).
_WORST_FIRST = ("HALTED", "REDUCING", "KILLED", "PAUSED")


def _strategy_state(risk: Mapping[str, Any], host: Mapping[str, Any]) -> dict[str, Any]:
    """One strategy's line of the status: the risk manager's latch with the host's pause
    (a kill is the risk manager's REDUCING for the reason "operator kill")."""
    state, reason = risk.get("state"), risk.get("reason")
    if state == "REDUCING" and reason == "operator kill":
        state = "KILLED"
    paused = host.get("paused")
    if state == "ACTIVE" and paused:
        state = "PAUSED"
    return {"state": state, "halt_reason": reason or None, "paused": paused,
            "realized_pnl": risk.get("realized"), "r": risk.get("r"),
            "unrealized_pnl": _minus(risk.get("pnl"), risk.get("realized"))}


def _last_call(call: Any, order_request: Mapping[str, Any]) -> dict[str, Any]:
    """The API section from the broker client's last REST call (any endpoint): authenticated
    is True when the server answered and accepted the key, False when it refused the key, None
    when the last call got no answer (nothing is known of the key then); ``reachable`` says
    whether the last call got an answer at all. An in-process broker has no REST calls."""
    if call is None:
        request = f"{order_request.get('endpoint', '')} {order_request.get('client_id', '')}"
        return {"authenticated": None, "reachable": None,
                "last_request": request.strip() or None,
                "last_response": order_request.get("outcome")}
    outcome = str(call.outcome)
    answered = call.status is not None and call.status < 500
    return {"authenticated": False if call.status in (401, 403) else (True if answered else None),
            "reachable": answered,
            "last_request": f"POST {call.endpoint}",
            "last_response": f"{call.status if call.status is not None else 'no reply'} "
                             f"{outcome}, {call.duration_s * 1000:.0f} ms",
            "last_call_ts": call.ts}


def _minus(a: Any, b: Any) -> float | None:
    return round(a - b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
        else None


def _total(strategies: Mapping[str, Mapping[str, Any]], key: str) -> float | None:
    values = [s.get(key) for s in strategies.values()]
    numbers = [v for v in values if isinstance(v, (int, float))]
    return round(sum(numbers), 2) if numbers else None
