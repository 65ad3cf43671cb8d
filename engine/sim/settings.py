"""The simulator server's settings (section ``[simulator]``): ports, auth, rate limits.

Owns only the declaration, so the REST and WebSocket halves and the server that joins them can
all read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import setting

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """Tunables of the simulator server (section ``simulator``)."""

    host: str = setting("127.0.0.1", "address both servers bind (loopback only)",
                        choices=LOOPBACK_HOSTS)
    rest_port: int = setting(5000, "REST port (0 = any free port)", min=0, max=65535)
    ws_port: int = setting(8765, "WebSocket port (0 = any free port)", min=0, max=65535)
    broker_name: str = setting("simulator", "broker name reported by ping and the feed")
    user_id: str = setting("simulator", "user id reported on WebSocket authentication")
    auth_grace_s: float = setting(15.0, "seconds a WS client may stay unauthenticated before "
                                        "close 4401", min=0.01, max=3600)
    ws_ping_interval_s: float = setting(20.0, "protocol-level WS ping interval", min=0.1,
                                        max=3600)
    ws_ping_timeout_s: float = setting(20.0, "close a WS client that does not answer a ping in "
                                             "this many seconds", min=0.1, max=3600)
    rate_limits_enabled: bool = setting(True, "apply OpenAlgo's per-IP REST rate limits")
    order_rate_per_s: int = setting(0, "placeorder/modifyorder/cancelorder calls per window "
                                       "per client IP (0 = the broker personality's default)",
                                    min=0, max=100_000)
    smart_order_rate_per_s: int = setting(0, "placesmartorder calls per window per client IP "
                                             "(0 = the broker personality's default)",
                                          min=0, max=100_000)
    default_rate_per_s: int = setting(0, "calls per window per client IP for other endpoints "
                                         "(0 = the broker personality's default: 10 for zerodha "
                                         "and angel, 50 for ideal and sandbox)",
                                      min=0, max=100_000)
    rate_window_s: float = setting(1.0, "length of the moving rate-limit window", min=0.01,
                                   max=3600)
    retry_after_s: float = setting(60.0, "retry_after sent with a 429 (OpenAlgo says 60)",
                                   min=0, max=3600)
    lost_reply_hold_s: float = setting(120.0, "how long a lost reply keeps the connection "
                                              "open unanswered", min=0, max=3600)
    max_client_backlog: int = setting(200_000, "frames queued for one WS client before it is "
                                               "disconnected as too slow", min=10_000,
                                      max=100_000_000)
    symbols: tuple[str, ...] = setting((), "extra known symbols, EXCHANGE:SYMBOL")
    string_numbers: bool = setting(False, "send numbers in order/trade/position books as "
                                          "strings, as some brokers do")
    analyze_mode: bool = setting(False, "start in analyzer (sandbox) mode (always, for the "
                                        "sandbox personality)")
    semi_auto: bool = setting(False, "answer as OpenAlgo in semi-auto (Action Center) mode: "
                                     "orders queued, never placed; cancels refused")
