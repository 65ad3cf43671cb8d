"""OpenAlgo WebSocket market-data client: one connection, kept alive, parsed into ``Tick``s.

Owns the socket (websocket-client, read on one daemon thread), the subscription set (symbol,
exchange → mode), the connection life cycle and the frame parser:

- connect → ``authenticate`` (waits for the ``type: auth`` reply) → one bulk ``subscribe`` per
  mode for every remembered symbol (and ``subscribe_orders`` if asked) → read until the connection
  is lost, frozen or stopped → back off → again. A refused key is surfaced as ``AuthError`` through
  ``on_auth_error`` and waits ``auth_retry_s`` before the next try (no tight loop). Behind a
  reverse proxy (``wss://host/ws``; ``ProxyAccess``: basic auth, CA bundle), a handshake the
  proxy refuses with 401/403 is a ``ProxyAuthError``, handled the same way; its other refusals
  (502, a wrong path's 404) are one line and a reconnect.
- Backoff: ``min(reconnect_base_s · 2ⁿ, reconnect_max_s)`` plus up to ``jitter`` of that at random;
  ``n`` counts failed connections and resets once a connection has stayed up ``stable_after_s``
  with market data flowing.
- Keepalive: a protocol ping every ``ping_interval_s``; no pong within ``ping_timeout_s`` drops the
  connection. A feed that stays silent for ``frozen_after_s`` while symbols are subscribed is
  reported ``frozen`` and reconnected (the socket can stay open after the broker session died).
- ``market_data`` frames become ``Tick``s: ``ltt`` → ``exchange_ts`` seconds, in the unit
  (s, ms, µs, ns) nearest the receive time (Zerodha's depth mode sends seconds, the rest ms); a
  time further than ``max_tick_skew_s`` from it is counted (``implausible_ltt``) and dropped,
  cumulative ``volume``, ``oi``, bid/ask from the depth's first level (or ``bid``/``ask``),
  ``recv_ts`` from the engine clock. Frames that are not JSON, lack fields, carry wrong types,
  non-finite or non-positive prices, or are for a symbol not subscribed here are counted per kind
  (``stats()``), logged at a throttled rate and dropped; an optional field that is bad (or a
  count beyond 64 bits) is dropped from the tick (and counted), the price is kept. Symbols the
  server refuses to subscribe are counted (``stats().refused``) and logged, and so are error
  frames, both at the same throttled rate. Nothing a frame or a callback does stops the client.
- Reading: websocket-client parses the frames; its small reads are served from 64 KiB socket
  reads (``_ChunkReader``), and JSON goes straight from bytes to ``json.loads``.

States reported through ``on_status``: connecting, authenticating, connected, frozen,
reconnecting, auth_failed, stopped. Silence is watched for the feed as a whole; silence of one
symbol among many is for the caller to judge (it sees every tick).

Callbacks run on the reader thread and must be quick (typically an actor ``tell``): ``on_tick``
per tick and/or ``on_ticks`` with the ticks read back to back (at most ``batch_max``),
``on_status`` (``FeedStatus``), ``on_error_frame(code, message)``, ``on_order_update(dict)`` and
``on_auth_error(AuthError)``.
"""

from __future__ import annotations

import json
import math
import random
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import websocket
from loguru import logger

from engine.broker import AuthError, ProxyAuthError
from engine.messages import FeedStatus, Tick
from engine.openalgo.access import ProxyAccess, proxy_refusal
from engine.runtime import probes
from engine.runtime.clock import Clock
from engine.settings import setting

MODES = (1, 2, 3)
_TEXT = websocket.ABNF.OPCODE_TEXT
_BINARY = websocket.ABNF.OPCODE_BINARY
_CLOSE = websocket.ABNF.OPCODE_CLOSE
_PONG = websocket.ABNF.OPCODE_PONG
_INF = math.inf
_MAX_DOUBLINGS = 32
_CHUNK = 1 << 16
_INT64_MAX = 2**63 - 1  # counts, timestamps and integer prices beyond a signed 64-bit int are junk
#: drops of routine market-data dirt: logged at DEBUG (counted in the end-of-run table)
ROUTINE_DROPS = frozenset({"non_positive_price"})


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """Section ``[feed]``: the market-data WebSocket, its keepalive and its reconnect policy."""

    ws_url: str = setting("ws://127.0.0.1:8765", "OpenAlgo WebSocket URL")
    mode: int = setting(2, "default subscription mode: 1 LTP, 2 Quote, 3 Depth", choices=MODES)
    reconnect_base_s: float = setting(1.0, "first reconnect delay; doubles per failed connection",
                                      min=0.001, max=60.0)
    reconnect_max_s: float = setting(60.0, "longest reconnect delay (before jitter), seconds",
                                     min=0.001, max=600.0)
    jitter: float = setting(0.2, "random extra reconnect delay, as a fraction of the delay",
                            min=0.0, max=1.0)
    stable_after_s: float = setting(30.0, "a connection up this long with data resets the "
                                    "backoff, seconds", min=0.01, max=3600.0)
    auth_retry_s: float = setting(60.0, "wait after the API key was refused before trying "
                                  "again, seconds", min=0.01, max=3600.0)
    auth_timeout_s: float = setting(10.0, "wait for the authentication reply, seconds",
                                    min=0.01, max=120.0)
    connect_timeout_s: float = setting(10.0, "TCP + WebSocket handshake timeout, seconds",
                                       min=0.01, max=120.0)
    frozen_after_s: float = setting(15.0, "no market data this long while subscribed = frozen "
                                    "feed, reconnect (0 = never)", min=0.0, max=3600.0)
    ping_interval_s: float = setting(20.0, "protocol ping interval, seconds", min=0.01,
                                     max=600.0)
    ping_timeout_s: float = setting(20.0, "no pong this long after a ping drops the "
                                    "connection, seconds", min=0.01, max=600.0)
    max_tick_skew_s: float = setting(3600.0, "a tick time (ltt) further than this from the "
                                     "receive time is implausible: counted (implausible_ltt) "
                                     "and replaced by the receive time, seconds", min=1.0,
                                     max=86_400.0)
    batch_max: int = setting(256, "most ticks handed to on_ticks in one call", min=1,
                             max=100_000)
    log_interval_s: float = setting(10.0, "at most one log line per kind of bad frame per "
                                    "interval, seconds", min=0.0, max=3600.0)


@dataclass(frozen=True, slots=True)
class FeedStats:
    """A snapshot of the client's counters."""

    state: str
    frames: int
    ticks: int
    invalid: dict[str, int]
    error_frames: dict[str, int]
    refused: dict[str, int]  # symbols the server refused to subscribe / unsubscribe
    callback_errors: int
    connects: int
    reconnects: int
    auth_failures: int
    reconnect_delays: tuple[float, ...]
    subscribed: int
    last_tick_ts: float | None


class _AuthRefused(Exception):
    """The server refused the API key."""


class _ProxyRefused(_AuthRefused):
    """The proxy in front of the server refused the handshake (401/403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Drop(Exception):
    """This connection is to be abandoned; the message says why."""


Pair = tuple[str, str]


class FeedClient:
    """OpenAlgo market-data WebSocket client; see the module docstring."""

    def __init__(self, settings: FeedSettings, *, api_key: str, clock: Clock,
                 on_tick: Callable[[Tick], None] | None = None,
                 on_ticks: Callable[[list[Tick]], None] | None = None,
                 on_status: Callable[[FeedStatus], None] | None = None,
                 on_error_frame: Callable[[str, str], None] | None = None,
                 on_order_update: Callable[[dict[str, Any]], None] | None = None,
                 on_auth_error: Callable[[AuthError], None] | None = None,
                 account: str = "default", rng: random.Random | None = None,
                 access: ProxyAccess | None = None) -> None:
        if not api_key:
            raise ValueError(f"account {account!r}: empty OpenAlgo API key")
        _check_mode(settings.mode)
        self.account = account
        self._settings = settings
        self._api_key = api_key
        self._access = access or ProxyAccess()
        self._clock = clock
        self._on_tick = on_tick
        self._on_ticks = on_ticks
        self._on_status = on_status
        self._on_error_frame = on_error_frame
        self._on_order_update = on_order_update
        self._on_auth_error = on_auth_error
        self._rng = rng or random.Random()

        self._lock = threading.Lock()  # guards the subscription set and the "ready" socket
        self._subs: dict[Pair, int] = {}
        self._names: dict[str, str] = {}  # interned symbol and exchange strings
        self._orders_wanted = False
        self._ws: websocket.WebSocket | None = None
        self._ready = False

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "idle"
        self._failures = 0
        self._batch: list[Tick] = []
        # reader-thread bookkeeping, monotonic seconds
        self._last_data = 0.0  # last market_data frame
        self._watch_since = 0.0  # last (re)subscription: silence is measured from here too
        self._connected_at = 0.0
        self._next_ping = 0.0
        self._pong_deadline: float | None = None
        self._stable = False

        self._stats_lock = threading.Lock()
        self._frames = 0
        self._ticks = 0
        self._invalid: Counter[str] = Counter()
        self._error_frames: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._callback_errors = 0
        self._connects = 0
        self._auth_failures = 0
        self._delays: deque[float] = deque(maxlen=100)
        self._last_tick_ts: float | None = None
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (f"FeedClient(account={self.account!r}, url={self._settings.ws_url!r}, "
                f"state={self._state!r})")

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("feed client already started")
        self._thread = threading.Thread(target=self._run, name=f"feed-{self.account}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection and end the reader thread (idempotent)."""
        self._stop.set()
        if self._thread is None:
            return
        # The reader notices within one poll interval and closes with a close frame; a reader
        # stuck in a connect or handshake is woken by aborting its socket.
        self._thread.join(min(timeout, 1.0))
        with self._lock:
            ws = self._ws
        if ws is not None and self._thread.is_alive():
            ws.abort()
        self._thread.join(max(0.0, timeout - 1.0))

    @property
    def state(self) -> str:
        return self._state

    # -- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, symbols: Iterable[Pair], mode: int | None = None) -> None:
        """Add (symbol, exchange) pairs in ``mode`` (default from settings); remembered across
        reconnects. A symbol already subscribed in another mode is moved to this one."""
        mode = self._settings.mode if mode is None else mode
        _check_mode(mode)
        pairs = _check_pairs(symbols)
        with self._lock:
            moved = [(p, old) for p in pairs
                     if (old := self._subs.get(p)) is not None and old != mode]
            added = [p for p in pairs if self._subs.get(p) != mode]
            for symbol, exchange in pairs:
                self._subs[(symbol, exchange)] = mode
                self._names.setdefault(symbol, symbol)
                self._names.setdefault(exchange, exchange)
            if self._ready and added:
                if moved:
                    self._send_locked(_unsubscribe_message(moved))
                self._send_locked(_subscribe_message(added, mode))
                self._watch_since = time.monotonic()

    def unsubscribe(self, symbols: Iterable[Pair]) -> None:
        pairs = _check_pairs(symbols)
        with self._lock:
            removed = [(p, mode) for p in pairs if (mode := self._subs.pop(p, None)) is not None]
            if self._ready and removed:
                self._send_locked(_unsubscribe_message(removed))

    def subscribe_orders(self) -> None:
        """Ask for ``order_update`` pushes (delivered to ``on_order_update``), on every
        connection from now on."""
        with self._lock:
            self._orders_wanted = True
            if self._ready:
                self._send_locked({"action": "subscribe_orders"})

    def subscriptions(self) -> dict[Pair, int]:
        with self._lock:
            return dict(self._subs)

    # -- introspection ---------------------------------------------------------------------------
    def stats(self) -> FeedStats:
        with self._stats_lock:
            return FeedStats(
                state=self._state, frames=self._frames, ticks=self._ticks,
                invalid=dict(self._invalid), error_frames=dict(self._error_frames),
                refused=dict(self._refused), callback_errors=self._callback_errors,
                connects=self._connects,
                reconnects=max(0, self._connects - 1), auth_failures=self._auth_failures,
                reconnect_delays=tuple(self._delays), subscribed=len(self._subs),
                last_tick_ts=self._last_tick_ts)

    # -- the connection loop (reader thread) -----------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._set_state("connecting")
            delay: float | None = None
            reason = "stopped"
            try:
                ws = self._connect()
                try:
                    self._authenticate(ws)
                    self._go_ready(ws)
                    reason = self._read(ws)
                finally:
                    self._go_down(ws)
            except _AuthRefused as refused:
                reason = f"authentication refused: {refused}"
                delay = self._settings.auth_retry_s
                self._auth_refused(refused)
            except _Drop as drop:
                reason = str(drop)
            except (websocket.WebSocketException, OSError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except Exception as exc:
                logger.exception("feed[{}]: unexpected error in the reader", self.account)
                reason = f"unexpected {type(exc).__name__}"
            if self._stop.is_set():
                break
            if delay is None:
                delay = self._next_delay()
            with self._stats_lock:
                self._delays.append(delay)
            if self._state != "auth_failed":
                self._set_state("reconnecting", f"{reason}; retry in {delay:.2f} s")
            logger.warning("feed[{}]: {}; reconnecting in {:.2f} s", self.account, reason, delay)
            self._stop.wait(delay)
        self._set_state("stopped")

    def _connect(self) -> websocket.WebSocket:
        try:
            ws = websocket.create_connection(self._settings.ws_url,
                                             timeout=self._settings.connect_timeout_s,
                                             skip_utf8_validation=True, enable_multithread=True,
                                             **self._access.ws_options())
        except websocket.WebSocketBadStatusException as exc:
            raise self._handshake_refused(exc) from None
        with self._lock:
            self._ws = ws
        with self._stats_lock:
            self._connects += 1
        if self._stop.is_set():
            self._go_down(ws)
            raise _Drop("stopped")
        return ws

    def _handshake_refused(self, exc: websocket.WebSocketBadStatusException) -> Exception:
        """What a refused upgrade means: the proxy refused us, or the URL is wrong."""
        status = exc.status_code
        try:
            payload = json.loads(exc.resp_body or b"")
        except (ValueError, RecursionError):
            payload = None
        refused = proxy_refusal(status, payload, self._access)
        if refused is not None and status in (401, 403):
            return _ProxyRefused(refused, status)
        return _Drop(refused or f"WebSocket handshake refused (HTTP {status} "
                                f"{exc.status_message or ''}): check [feed] ws_url")

    def _authenticate(self, ws: websocket.WebSocket) -> None:
        self._set_state("authenticating")
        ws.send(json.dumps({"action": "authenticate", "api_key": self._api_key}))
        deadline = time.monotonic() + self._settings.auth_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Drop(f"no authentication reply within {self._settings.auth_timeout_s} s")
            ws.settimeout(remaining)
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                continue
            if opcode == _CLOSE:
                raise _Drop(f"closed during authentication {_close_reason(frame.data)}")
            if opcode not in (_TEXT, _BINARY):
                continue
            try:
                msg = json.loads(frame.data)
            except (ValueError, RecursionError):
                self._count_invalid("bad_json", frame.data)
                continue
            if not isinstance(msg, dict):
                self._count_invalid("not_object", frame.data)
                continue
            if msg.get("type") == "auth":
                if msg.get("status") == "success":
                    return
                raise _AuthRefused(self._scrub(str(msg.get("message", "refused"))))
            if msg.get("status") == "error":
                code = self._scrub(str(msg.get("code", "")))
                message = self._scrub(str(msg.get("message", "")))
                self._count_error_frame(code, message)
                if code in ("AUTHENTICATION_ERROR", "NOT_AUTHENTICATED"):
                    raise _AuthRefused(message or code)
                raise _Drop(f"error frame during authentication: {code} {message}")

    def _go_ready(self, ws: websocket.WebSocket) -> None:
        """Authenticated: re-send every subscription, then start reading."""
        with self._lock:
            by_mode: dict[int, list[Pair]] = {}
            for pair, mode in self._subs.items():
                by_mode.setdefault(mode, []).append(pair)
            for mode, pairs in sorted(by_mode.items()):
                ws.send(json.dumps(_subscribe_message(pairs, mode)))
            if self._orders_wanted:
                ws.send(json.dumps({"action": "subscribe_orders"}))
            self._ready = True
            count = len(self._subs)
        self._watch_since = time.monotonic()
        self._set_state("connected", f"{count} symbols subscribed")

    def _go_down(self, ws: websocket.WebSocket) -> None:
        with self._lock:
            self._ready = False
            self._ws = None
        self._flush()
        try:
            ws.close(timeout=0.2)  # returns at once when the server already closed
        except (websocket.WebSocketException, OSError) as exc:
            logger.debug("feed[{}]: close: {}", self.account, type(exc).__name__)
        finally:
            ws.shutdown()

    def _read(self, ws: websocket.WebSocket) -> str:
        """Read frames until the connection has to go; returns why."""
        settings = self._settings
        frozen_poll = settings.frozen_after_s / 4 if settings.frozen_after_s else 0.25
        poll = max(0.005, min(0.25, settings.ping_interval_s / 2, settings.ping_timeout_s / 2,
                              frozen_poll))
        ws.settimeout(poll)
        sock = ws.sock
        reader = _ChunkReader.install(ws)
        recv = ws.recv_data_frame
        on_frame = self._on_frame
        batching = self._on_ticks is not None
        now = time.monotonic()
        self._connected_at = now
        self._next_ping = now + settings.ping_interval_s
        self._pong_deadline = None
        self._stable = False
        next_check = now + poll
        while not self._stop.is_set():
            try:
                opcode, frame = recv(True)
            except websocket.WebSocketTimeoutException:
                opcode, frame = 0, None
            now = time.monotonic()
            if opcode in (_TEXT, _BINARY):
                on_frame(frame.data, now)
                if batching and self._batch and (len(self._batch) >= settings.batch_max
                                                 or not (reader.pending() or _readable(sock))):
                    self._flush()
                if now < next_check:
                    continue
            elif opcode == _CLOSE:
                return f"server closed the connection {_close_reason(frame.data)}"
            elif opcode == _PONG:
                self._pong_deadline = None
            next_check = now + poll
            reason = self._housekeeping(ws, now)
            if reason is not None:
                return reason
        return "stopped"

    def _housekeeping(self, ws: websocket.WebSocket, now: float) -> str | None:
        """Keepalive, frozen-feed and stability checks; a reason to drop the connection, or
        None."""
        settings = self._settings
        self._flush()
        if now >= self._next_ping:
            ws.ping()
            self._next_ping = now + settings.ping_interval_s
            if self._pong_deadline is None:
                self._pong_deadline = now + settings.ping_timeout_s
        if self._pong_deadline is not None and now >= self._pong_deadline:
            return f"no pong within {settings.ping_timeout_s} s"
        quiet_since = max(self._last_data, self._watch_since)
        if settings.frozen_after_s and self._subs and \
                now - quiet_since >= settings.frozen_after_s:
            self._set_state("frozen", f"no market data for {now - quiet_since:.1f} s")
            return f"feed frozen: no market data for {now - quiet_since:.1f} s"
        if not self._stable and now - self._connected_at >= settings.stable_after_s and \
                (self._last_data > self._connected_at or not self._subs):
            self._stable = True
            self._failures = 0
        return None

    # -- frames (reader thread, hot path) --------------------------------------------------------
    def _on_frame(self, raw: bytes, now: float) -> None:
        self._frames += 1
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, too deep
            self._count_invalid("bad_json", raw)
            return
        if type(msg) is not dict:
            self._count_invalid("not_object", raw)
            return
        kind = msg.get("type")
        if kind == "market_data":
            self._last_data = now
            tick = self._parse_tick(msg)
            if tick is not None:
                probe = probes.tick_received  # benchmarks only; None otherwise
                if probe is not None:
                    probe(tick, now)
                self._deliver(tick)
        elif kind is None and msg.get("status") == "error":
            self._on_error_msg(msg)
        elif kind == "order_update":
            self._call(self._on_order_update, "on_order_update", msg)
        elif kind in ("subscribe", "unsubscribe"):
            self._on_ack(kind, msg)
        elif kind not in ("pong", "auth", "subscribe_orders", "unsubscribe_orders"):
            # the order-update (un)subscription is acknowledged by its own type
            self._count_invalid("unknown_type", raw)

    def _parse_tick(self, msg: dict[str, Any]) -> Tick | None:
        try:
            data = msg["data"]
            symbol = msg["symbol"]
            exchange = msg["exchange"]
            ltp = data["ltp"]
        except KeyError:
            return self._count_invalid("missing_field", msg)
        except TypeError:
            return self._count_invalid("wrong_type", msg)
        if type(symbol) is not str or type(exchange) is not str or type(data) is not dict:
            return self._count_invalid("wrong_type", msg)
        if (symbol, exchange) not in self._subs:
            return self._count_invalid("unsubscribed", msg)
        kind = type(ltp)
        if kind is int:
            try:
                ltp = float(ltp)
            except OverflowError:  # an integer beyond the float range
                return self._count_invalid("non_finite", msg)
        elif kind is not float:
            return self._count_invalid("wrong_type", msg)
        if not 0 < ltp < _INF:
            return self._count_invalid("non_positive_price" if ltp <= 0 else "non_finite", msg)
        ltt = data.get("ltt")
        exchange_ts = None
        recv = self._clock.time()
        if ltt is not None:
            if (type(ltt) is int or type(ltt) is float) and 0 < ltt < _INF and \
                    ltt <= _INT64_MAX:
                exchange_ts = ltt_seconds(ltt, recv)
                if abs(exchange_ts - recv) > self._settings.max_tick_skew_s:
                    exchange_ts = None
                    self._count_invalid("implausible_ltt", msg)
            else:
                self._count_invalid("bad_optional_field", msg)
        volume = data.get("volume")
        if volume is not None and not (type(volume) is int and 0 <= volume <= _INT64_MAX):
            volume = self._whole(volume, msg)
        oi = data.get("oi")
        if oi is not None and not (type(oi) is int and 0 <= oi <= _INT64_MAX):
            oi = self._whole(oi, msg)
        depth = data.get("depth")
        if depth is not None:
            bid, ask = self._top_of_book(depth, msg)
        else:
            bid = self._price(data.get("bid"), msg)
            ask = self._price(data.get("ask"), msg)
        names = self._names
        return Tick(names.get(symbol, symbol), names.get(exchange, exchange), ltp,
                    recv, exchange_ts, volume, bid, ask, oi)

    def _whole(self, value: object, msg: dict[str, Any]) -> int | None:
        """A non-negative whole count from a float like ``1234.0``; else None (counted)."""
        if type(value) is float and 0 <= value <= _INT64_MAX and value.is_integer():
            return int(value)
        self._count_invalid("bad_optional_field", msg)
        return None

    def _price(self, value: object, msg: dict[str, Any]) -> float:
        """An optional price: 0.0 when absent or zero; a bad value is counted and dropped."""
        if value is None:
            return 0.0
        kind = type(value)
        if (kind is float and 0 <= value < _INF) or (kind is int and 0 <= value <= _INT64_MAX):
            return float(value)
        self._count_invalid("bad_optional_field", msg)
        return 0.0

    def _top_of_book(self, depth: object, msg: dict[str, Any]) -> tuple[float, float]:
        try:
            buy = depth["buy"]  # type: ignore[index]
            sell = depth["sell"]  # type: ignore[index]
            bid = self._price(buy[0]["price"], msg) if buy else 0.0
            ask = self._price(sell[0]["price"], msg) if sell else 0.0
        except (KeyError, TypeError, IndexError):
            self._count_invalid("bad_optional_field", msg)
            return 0.0, 0.0
        return bid, ask

    def _deliver(self, tick: Tick) -> None:
        self._ticks += 1
        self._last_tick_ts = tick.recv_ts
        if self._on_tick is not None:
            try:
                self._on_tick(tick)
            except Exception:
                self._callback_failed("on_tick")
        if self._on_ticks is not None:
            self._batch.append(tick)

    def _flush(self) -> None:
        if self._batch:
            batch = self._batch
            self._batch = []
            self._call(self._on_ticks, "on_ticks", batch)

    def _on_error_msg(self, msg: dict[str, Any]) -> None:
        code = self._scrub(str(msg.get("code", "UNKNOWN")))
        message = self._scrub(str(msg.get("message", "")))
        self._count_error_frame(code, message)
        if self._on_error_frame is not None:
            try:
                self._on_error_frame(code, message)
            except Exception:
                self._callback_failed("on_error_frame")
        if code == "NOT_AUTHENTICATED":
            raise _Drop("server says the connection is not authenticated")

    def _on_ack(self, kind: str, msg: dict[str, Any]) -> None:
        """A (partially) refused subscribe/unsubscribe is counted per symbol and logged."""
        if msg.get("status") == "success":
            return
        if kind == "subscribe":
            items = msg.get("subscriptions")
            failed = [item for item in items if isinstance(item, dict)
                      and item.get("status") != "success"] if isinstance(items, list) else []
        else:
            failed = msg.get("failed") if isinstance(msg.get("failed"), list) else []
        with self._stats_lock:
            self._refused[kind] += max(1, len(failed))
            count = self._due(f"refused:{kind}")
        if count:
            logger.warning("feed[{}]: {} {} repl(ies) not successful; latest status {}: {}",
                           self.account, count, kind, self._scrub(repr(msg.get("status")))[:40],
                           self._scrub(str(failed or msg.get("message", "")))[:300])

    # -- accounting and callbacks ----------------------------------------------------------------
    def _count_invalid(self, kind: str, sample: object) -> None:
        with self._stats_lock:
            self._invalid[kind] += 1
            count = self._due(kind)
        if count:
            # a zero price is routine dirt (counted, in the end-of-run table); a frame that
            # breaks the protocol is not
            logger.log("DEBUG" if kind in ROUTINE_DROPS else "WARNING",
                       "feed[{}]: {} frame(s) dropped as {}; latest: {}", self.account, count,
                       kind, self._scrub(repr(sample))[:200])
        return None

    def _count_error_frame(self, code: str, message: str) -> None:
        with self._stats_lock:
            self._error_frames[code] += 1
            count = self._due(f"error:{code}")
        if count:
            logger.warning("feed[{}]: {} error frame(s) {}; latest: {}", self.account, count,
                           code, message[:200])

    def _due(self, key: str) -> int:
        """One more event of ``key`` (caller holds ``_stats_lock``): how many to report in a
        log line now, or 0 while ``key`` was logged less than ``log_interval_s`` ago."""
        self._unlogged[key] += 1
        now = time.monotonic()
        if now - self._last_log.get(key, -_INF) < self._settings.log_interval_s:
            return 0
        self._last_log[key] = now
        return self._unlogged.pop(key)

    def _callback_failed(self, name: str) -> None:
        with self._stats_lock:
            self._callback_errors += 1
            now = time.monotonic()
            key = f"callback:{name}"
            if now - self._last_log.get(key, -_INF) < self._settings.log_interval_s:
                return
            self._last_log[key] = now
        logger.exception("feed[{}]: {} callback raised; the feed continues", self.account, name)

    def _call(self, callback: Callable[[Any], None] | None, name: str, arg: Any) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:
            self._callback_failed(name)

    def _set_state(self, state: str, reason: str = "") -> None:
        self._state = state
        if self._on_status is not None:
            status = FeedStatus(state, self._clock.time(), reason, max(0, self._connects - 1))
            self._call(self._on_status, "on_status", status)

    def _auth_refused(self, refused: _AuthRefused) -> None:
        with self._stats_lock:
            self._auth_failures += 1
        message = str(refused)
        error = ProxyAuthError(message, endpoint="websocket", status=refused.status,
                               account=self.account) \
            if isinstance(refused, _ProxyRefused) else \
            AuthError(f"API key refused for account {self.account!r}: {message}",
                      endpoint="websocket", account=self.account)
        self._set_state("auth_failed", message)
        self._call(self._on_auth_error, "on_auth_error", error)

    def _next_delay(self) -> float:
        settings = self._settings
        base = min(settings.reconnect_base_s * 2.0 ** min(self._failures, _MAX_DOUBLINGS),
                   settings.reconnect_max_s)
        self._failures += 1
        return base + self._rng.uniform(0.0, base * settings.jitter)

    def _send_locked(self, payload: dict[str, Any]) -> None:
        """Send on the current connection (caller holds ``_lock``); a broken socket is left for
        the reader thread to notice and reconnect, which re-sends the subscriptions."""
        if self._ws is None:
            return
        try:
            self._ws.send(json.dumps(payload))
        except (websocket.WebSocketException, OSError) as exc:
            logger.warning("feed[{}]: send failed ({}); the reconnect will re-send",
                           self.account, type(exc).__name__)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***")


#: the units an ``ltt`` comes in: seconds (Zerodha's depth mode), milliseconds (every other
#: mode and broker), micro- and nanoseconds
_LTT_DIVISORS = (1.0, 1e3, 1e6, 1e9)


def ltt_seconds(ltt: float, recv: float) -> float:
    """Epoch seconds of a tick time in whichever unit puts it nearest the receive time (units
    differ per broker and mode: docs/broker-personalities.md)."""
    return min((ltt / d for d in _LTT_DIVISORS), key=lambda t: abs(t - recv))


def _check_mode(mode: int) -> None:
    if mode not in MODES:
        raise ValueError(f"feed mode must be 1 (LTP), 2 (Quote) or 3 (Depth), got {mode!r}")


def _check_pairs(symbols: Iterable[Pair]) -> list[Pair]:
    pairs = list(symbols)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(part, str) and part for part in pair)):
            raise ValueError(f"expected (symbol, exchange) pairs of non-empty strings, "
                             f"got {pair!r}")
    return pairs


def _subscribe_message(pairs: list[Pair], mode: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "action": "subscribe",
        "symbols": [{"symbol": symbol, "exchange": exchange} for symbol, exchange in pairs],
        "mode": mode,
    }
    if mode == 3:
        message["depth"] = 5
    return message


def _unsubscribe_message(pairs: list[tuple[Pair, int]]) -> dict[str, Any]:
    return {"action": "unsubscribe",
            "symbols": [{"symbol": symbol, "exchange": exchange, "mode": mode}
                        for (symbol, exchange), mode in pairs]}


class _ChunkReader:
    """Serves websocket-client's small frame reads (header, length, payload) from large socket
    reads: one ``recv`` syscall per many frames instead of three per frame (about twice the
    frame rate). It is slotted under websocket-client's frame parser (its internal
    ``frame_buffer.recv`` hook), which keeps doing the protocol work: control frames,
    continuation frames, close. Where that hook is missing, reading falls back to the plain path.
    """

    __slots__ = ("_buf", "_pos", "_recv")

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buf = b""
        self._pos = 0

    @classmethod
    def install(cls, ws: websocket.WebSocket) -> _ChunkReader:
        reader = cls(lambda size: b"")
        parser = getattr(ws, "frame_buffer", None)
        if parser is not None and callable(getattr(parser, "recv", None)):
            reader._recv = parser.recv
            parser.recv = reader
        return reader

    def __call__(self, size: int) -> bytes:
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            buf = self._buf = self._recv(_CHUNK)
            pos = 0
        end = pos + size
        self._pos = end if end < len(buf) else len(buf)
        return buf[pos:end]

    def pending(self) -> bool:
        return self._pos < len(self._buf)


def _readable(sock: Any) -> bool:
    """More bytes already waiting on the socket (the next frame is there)."""
    try:
        return bool(select.select((sock,), (), (), 0)[0])
    except (OSError, ValueError):
        return False


def _close_reason(payload: bytes) -> str:
    if len(payload) >= 2:
        code = int.from_bytes(payload[:2], "big")
        return f"(code {code} {payload[2:].decode('utf-8', 'replace')})".replace(" )", ")")
    return "(no close code)"
