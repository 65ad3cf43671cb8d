"""FeedClient against the real simulator over loopback (and small hand-made WebSocket servers for
frames and behaviours the simulator does not produce: crafted bad frames, a server that never
answers pings)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loguru import logger
from websockets.sync.server import ServerConnection, serve

from engine.broker import AuthError
from engine.messages import FeedStatus, Tick
from engine.openalgo.feed import FeedClient, FeedSettings
from engine.runtime.clock import VirtualClock
from engine.sim.server import SimulatorServer
from tests.engine.openalgo.conftest import API_KEY, SYMBOLS

# the feed's VirtualClock, a little off the simulator's wall clock: every recv_ts must come from
# it, and tick times (ltt) stay within [feed] max_tick_skew_s of it
RECV_TS = float(int(time.time())) + 600.0


class Recorder:
    """Collects everything the feed hands out; ``wait`` blocks until a condition holds."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ticks: list[Tick] = []
        self.batches: list[list[Tick]] = []
        self.statuses: list[tuple[float, FeedStatus]] = []  # (monotonic, status)
        self.error_frames: list[tuple[str, str]] = []
        self.orders: list[dict[str, Any]] = []
        self.auth_errors: list[AuthError] = []

    def _add(self, items: list[Any], item: Any) -> None:
        with self.cond:
            items.append(item)
            self.cond.notify_all()

    def on_tick(self, tick: Tick) -> None:
        self._add(self.ticks, tick)

    def on_ticks(self, batch: list[Tick]) -> None:
        self._add(self.batches, batch)

    def on_status(self, status: FeedStatus) -> None:
        self._add(self.statuses, (time.monotonic(), status))

    def on_error_frame(self, code: str, message: str) -> None:
        self._add(self.error_frames, (code, message))

    def on_order_update(self, update: dict[str, Any]) -> None:
        self._add(self.orders, update)

    def on_auth_error(self, error: AuthError) -> None:
        self._add(self.auth_errors, error)

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def states(self) -> list[str]:
        with self.cond:
            return [s.state for _, s in self.statuses]

    def symbols_since(self, index: int) -> set[str]:
        with self.cond:
            return {t.symbol for t in self.ticks[index:]}


def feed_settings(url: str, **overrides: Any) -> FeedSettings:
    base: dict[str, Any] = {"ws_url": url, "reconnect_base_s": 0.05, "reconnect_max_s": 1.0,
                            "jitter": 0.0, "stable_after_s": 30.0, "auth_retry_s": 0.5,
                            "auth_timeout_s": 2.0, "connect_timeout_s": 2.0,
                            "frozen_after_s": 0.0, "ping_interval_s": 5.0,
                            "ping_timeout_s": 5.0, "log_interval_s": 0.0}
    return FeedSettings(**{**base, **overrides})


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make_feed(rec: Recorder) -> Iterator[Callable[..., FeedClient]]:
    feeds: list[FeedClient] = []

    def _make(url: str, *, key: str = API_KEY, batch: bool = False,
              on_tick: Callable[[Tick], None] | None = None, **overrides: Any) -> FeedClient:
        feed = FeedClient(feed_settings(url, **overrides), api_key=key,
                          clock=VirtualClock(RECV_TS), account="acct-feed",
                          on_tick=on_tick or (None if batch else rec.on_tick),
                          on_ticks=rec.on_ticks if batch else None, on_status=rec.on_status,
                          on_error_frame=rec.on_error_frame,
                          on_order_update=rec.on_order_update, on_auth_error=rec.on_auth_error)
        feeds.append(feed)
        return feed

    yield _make
    for feed in feeds:
        feed.stop()


@pytest.fixture
def known(sim: SimulatorServer, publish: Callable[..., Tick]) -> list[tuple[str, str]]:
    """Every test symbol published once, so the simulator knows it."""
    for i, symbol in enumerate(SYMBOLS):
        publish(symbol, 100.0 + i)
    return [(symbol, "NFO") for symbol in SYMBOLS]


def pump(publish: Callable[..., Tick], symbols: list[str], until: Callable[[], bool],
         timeout: float = 5.0, ltp: float = 101.0) -> bool:
    """Publish a tick for each symbol every 10 ms until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        for symbol in symbols:
            publish(symbol, ltp)
        time.sleep(0.01)
    return until()


# ---------------------------------------------------------------------------------------------
# Parsing and delivery
# ---------------------------------------------------------------------------------------------


def test_market_data_becomes_ticks_in_every_mode(sim: SimulatorServer, known: Any,
                                                 publish: Callable[..., Tick], rec: Recorder,
                                                 make_feed: Callable[..., FeedClient]) -> None:
    ltp_sym, quote_sym, depth_sym = SYMBOLS[0], SYMBOLS[1], SYMBOLS[2]
    feed = make_feed(sim.ws_url)
    feed.subscribe([(ltp_sym, "NFO")], mode=1)
    feed.subscribe([(quote_sym, "NFO")])  # settings' default mode: 2
    feed.subscribe([(depth_sym, "NFO")], mode=3)
    feed.start()
    assert pump(publish, [ltp_sym, quote_sym, depth_sym],
                lambda: rec.symbols_since(0) == {ltp_sym, quote_sym, depth_sym})
    sent = {s: publish(s, 150.25 + i) for i, s in enumerate((ltp_sym, quote_sym, depth_sym))}
    assert rec.wait(lambda: {t.symbol for t in rec.ticks if t.ltp >= 150.0} == set(sent))
    got = {t.symbol: t for t in rec.ticks if t.ltp >= 150.0}
    for symbol, tick in got.items():
        assert tick.exchange == "NFO" and tick.ltp == sent[symbol].ltp
        assert tick.recv_ts == RECV_TS  # from the feed's clock
        assert tick.exchange_ts == pytest.approx(sent[symbol].exchange_ts, abs=0.002)  # ltt ms
    assert got[ltp_sym].volume is None  # LTP mode has no volume
    assert got[quote_sym].volume == sent[quote_sym].volume  # cumulative day volume
    assert (got[depth_sym].bid, got[depth_sym].ask) == (sent[depth_sym].bid,
                                                        sent[depth_sym].ask)
    assert got[depth_sym].volume == sent[depth_sym].volume
    stats = feed.stats()
    assert stats.state == "connected" and stats.invalid == {} and stats.connects == 1
    assert stats.ticks == len(rec.ticks) and stats.subscribed == 3
    assert rec.states()[:3] == ["connecting", "authenticating", "connected"]


def test_zero_prices_are_not_delivered(sim: SimulatorServer, known: Any, rec: Recorder,
                                       publish: Callable[..., Tick],
                                       make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: bool(rec.ticks))
    start = len(rec.ticks)
    sim.faults.zero_prices(3)
    for ltp in (201.0, 202.0, 203.0, 204.0, 205.0):
        publish(SYMBOLS[0], ltp)
    assert rec.wait(lambda: any(t.ltp == 205.0 for t in rec.ticks))
    assert [t.ltp for t in rec.ticks[start:]] == [204.0, 205.0]
    assert feed.stats().invalid == {"non_positive_price": 3}


def test_malformed_and_error_frames_are_counted_and_never_kill_the_client(
        sim: SimulatorServer, known: Any, rec: Recorder, publish: Callable[..., Tick],
        make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: bool(rec.ticks))
    start = len(rec.ticks)
    sim.faults.malformed_frames(5)
    for i in range(10):
        publish(SYMBOLS[0], 300.0 + i)
    assert rec.wait(lambda: any(t.ltp == 309.0 for t in rec.ticks))
    assert [t.ltp for t in rec.ticks[start:]] == [305.0, 306.0, 307.0, 308.0, 309.0]
    assert sum(feed.stats().invalid.values()) == 5

    sim.faults.error_frames(3, code="BROKER_ERROR")
    assert rec.wait(lambda: len(rec.error_frames) == 3)
    assert {code for code, _ in rec.error_frames} == {"BROKER_ERROR"}
    publish(SYMBOLS[0], 400.0)
    assert rec.wait(lambda: rec.ticks[-1].ltp == 400.0)
    stats = feed.stats()
    assert stats.error_frames == {"BROKER_ERROR": 3}
    assert stats.connects == 1 and stats.state == "connected"  # never dropped


def test_a_raising_callback_is_counted_and_the_feed_goes_on(
        sim: SimulatorServer, known: Any, rec: Recorder, publish: Callable[..., Tick],
        make_feed: Callable[..., FeedClient]) -> None:
    def flaky(tick: Tick) -> None:
        rec.on_tick(tick)
        if len(rec.ticks) % 2:
            raise RuntimeError("strategy bug")

    feed = make_feed(sim.ws_url, on_tick=flaky)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: len(rec.ticks) >= 6)
    stats = feed.stats()
    assert stats.callback_errors >= 3 and stats.connects == 1


def test_on_ticks_receives_batches(sim: SimulatorServer, known: Any, rec: Recorder,
                                   publish: Callable[..., Tick],
                                   make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url, batch=True, batch_max=16)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: bool(rec.batches))
    sent = len([t for b in rec.batches for t in b])
    for i in range(300):
        publish(SYMBOLS[0], 500.0 + i)
    assert rec.wait(lambda: rec.batches[-1][-1].ltp == 799.0)
    ltps = [t.ltp for b in rec.batches for t in b][sent:]
    assert ltps == [500.0 + i for i in range(300)]  # all of them, in order
    assert max(len(b) for b in rec.batches) <= 16


def test_unsubscribe_stops_a_symbol(sim: SimulatorServer, known: Any, rec: Recorder,
                                    publish: Callable[..., Tick],
                                    make_feed: Callable[..., FeedClient]) -> None:
    keep, drop = SYMBOLS[0], SYMBOLS[1]
    feed = make_feed(sim.ws_url)
    feed.subscribe([(keep, "NFO"), (drop, "NFO")])
    feed.start()
    assert pump(publish, [keep, drop], lambda: rec.symbols_since(0) == {keep, drop})
    feed.unsubscribe([(drop, "NFO")])
    assert feed.subscriptions() == {(keep, "NFO"): 2}
    time.sleep(0.2)  # let the server apply it
    start = len(rec.ticks)
    for _ in range(5):
        publish(drop, 111.0)
        publish(keep, 222.0)
    assert rec.wait(lambda: sum(t.ltp == 222.0 for t in rec.ticks[start:]) == 5)
    assert rec.symbols_since(start) == {keep}


def test_a_refused_symbol_is_counted_and_the_others_flow(
        sim: SimulatorServer, known: Any, rec: Recorder, publish: Callable[..., Tick],
        make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url)
    feed.subscribe([(SYMBOLS[0], "NFO"), ("NOSUCHSYMBOL", "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: bool(rec.ticks))
    assert rec.wait(lambda: feed.stats().refused == {"subscribe": 1})
    assert sim.subscriptions() == [{(SYMBOLS[0], "NFO", 2)}]


def test_order_updates_are_delivered_after_subscribe_orders(
        sim: SimulatorServer, known: Any, rec: Recorder, publish: Callable[..., Tick],
        make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url)
    feed.subscribe_orders()
    feed.start()
    assert rec.wait(lambda: "connected" in rec.states())
    deadline = time.monotonic() + 3.0
    while not rec.orders and time.monotonic() < deadline:
        sim.broker.place_order(strategy="t1", symbol=SYMBOLS[0], exchange="NFO",
                               action="BUY", quantity=65, pricetype="LIMIT", price=50.0)
        rec.wait(lambda: bool(rec.orders), timeout=0.2)
    assert rec.orders and rec.orders[0]["symbol"] == SYMBOLS[0]
    assert rec.orders[0]["order_status"] == "open"


def test_bad_arguments_are_refused() -> None:
    settings = FeedSettings()
    with pytest.raises(ValueError, match="API key"):
        FeedClient(settings, api_key="", clock=VirtualClock())
    feed = FeedClient(settings, api_key=API_KEY, clock=VirtualClock())
    with pytest.raises(ValueError, match="mode"):
        feed.subscribe([(SYMBOLS[0], "NFO")], mode=4)
    with pytest.raises(ValueError, match="pairs"):
        feed.subscribe([SYMBOLS[0]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="pairs"):
        feed.unsubscribe([("", "NFO")])
    assert feed.subscriptions() == {}
    assert API_KEY not in repr(feed)


# ---------------------------------------------------------------------------------------------
# Connection life cycle
# ---------------------------------------------------------------------------------------------


def test_five_drops_in_a_row_reconnect_with_growing_delays_and_resubscribe(
        sim: SimulatorServer, known: list[tuple[str, str]], rec: Recorder,
        publish: Callable[..., Tick], make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url)
    feed.subscribe(known[:3], mode=2)
    feed.subscribe(known[3:], mode=1)
    feed.start()
    every = set(SYMBOLS)
    expected = {(s, "NFO", 2) for s in SYMBOLS[:3]} | {(s, "NFO", 1) for s in SYMBOLS[3:]}
    assert pump(publish, SYMBOLS, lambda: rec.symbols_since(0) == every)
    assert sim.subscriptions() == [expected]
    gaps: list[float] = []
    for drop in range(5):
        dropped_at = time.monotonic()
        assert sim.faults.drop_connections(abrupt=drop % 2 == 0) == 1
        assert rec.wait(lambda n=drop: feed.stats().connects == n + 2
                        and feed.state == "connected")
        gaps.append(time.monotonic() - dropped_at)
        start = len(rec.ticks)
        # every symbol was re-subscribed (in its mode): ticks flow again for all of them
        assert pump(publish, SYMBOLS, lambda s=start: rec.symbols_since(s) == every), drop
        assert sim.subscriptions() == [expected]  # one connection, every symbol in its mode
    delays = feed.stats().reconnect_delays
    assert delays == pytest.approx((0.05, 0.1, 0.2, 0.4, 0.8))
    # each reconnect waited its delay, and not much more (a half-closed old socket once held
    # the close handshake up for seconds)
    assert all(delay <= gap < delay + 1.0 for gap, delay in zip(gaps, delays, strict=True))
    assert feed.stats().reconnects == 5
    assert rec.states().count("reconnecting") == 5
    modes = {t.symbol: t.volume is None for t in rec.ticks[-50:]}
    assert all(modes[s] for s in SYMBOLS[3:]) and not any(modes[s] for s in SYMBOLS[:3])


def test_backoff_resets_after_a_stable_connection(sim: SimulatorServer, known: Any,
                                                  rec: Recorder, publish: Callable[..., Tick],
                                                  make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url, stable_after_s=0.3, jitter=0.5)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    for drop in range(3):
        assert pump(publish, [SYMBOLS[0]],
                    lambda n=drop: feed.stats().connects == n + 1 and feed.state == "connected")
        start = len(rec.ticks)
        assert pump(publish, [SYMBOLS[0]], lambda s=start: len(rec.ticks) > s)
        time.sleep(0.5)  # stable: up longer than stable_after_s with data
        sim.faults.drop_connections()
    assert pump(publish, [SYMBOLS[0]], lambda: feed.stats().connects == 4)
    delays = feed.stats().reconnect_delays
    assert len(delays) == 3 and all(0.05 <= d <= 0.075 for d in delays)  # base + jitter


def test_frozen_feed_is_detected_and_reconnected(sim: SimulatorServer, known: Any,
                                                 rec: Recorder, publish: Callable[..., Tick],
                                                 make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url, frozen_after_s=0.4)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: bool(rec.ticks))
    sim.faults.freeze_feed(True)
    frozen_at = time.monotonic()
    assert pump(publish, [SYMBOLS[0]], lambda: "frozen" in rec.states(), timeout=3.0)
    detected = next(t for t, s in rec.statuses if s.state == "frozen")
    assert 0.3 <= detected - frozen_at <= 1.5  # within its window (plus a poll interval)
    sim.faults.freeze_feed(False)
    assert pump(publish, [SYMBOLS[0]], lambda: feed.stats().connects >= 2
                and feed.state == "connected")
    start = len(rec.ticks)
    assert pump(publish, [SYMBOLS[0]], lambda: len(rec.ticks) > start)


def test_wrong_key_surfaces_auth_error_and_backs_off(sim: SimulatorServer, rec: Recorder,
                                                     make_feed: Callable[..., FeedClient]) -> None:
    wrong = "not-the-key-31415926535"
    raw = io.StringIO()
    sink = logger.add(raw, level="DEBUG", format="{message} | {extra}")  # no redaction here
    try:
        feed = make_feed(sim.ws_url, key=wrong, auth_retry_s=0.5)
        feed.start()
        assert rec.wait(lambda: bool(rec.auth_errors))
        time.sleep(1.2)
    finally:
        logger.remove(sink)
    assert "authentication refused" in raw.getvalue() and wrong not in raw.getvalue()
    stats = feed.stats()
    assert 2 <= stats.auth_failures <= 4 and stats.connects == stats.auth_failures
    assert feed.state in ("auth_failed", "connecting", "authenticating")
    error = rec.auth_errors[0]
    assert isinstance(error, AuthError) and "acct-feed" in str(error)
    assert wrong not in str(error) and wrong not in repr(error) and wrong not in repr(feed)


def test_stop_closes_the_connection(sim: SimulatorServer, known: Any, rec: Recorder,
                                    publish: Callable[..., Tick],
                                    make_feed: Callable[..., FeedClient]) -> None:
    feed = make_feed(sim.ws_url)
    feed.subscribe([(SYMBOLS[0], "NFO")])
    feed.start()
    assert pump(publish, [SYMBOLS[0]], lambda: bool(rec.ticks))
    feed.stop()
    assert feed.state == "stopped" and rec.states()[-1] == "stopped"
    deadline = time.monotonic() + 2.0
    while sim.connected_clients() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.connected_clients() == 0


# ---------------------------------------------------------------------------------------------
# Hand-made servers
# ---------------------------------------------------------------------------------------------


def _tick(ltp: object, **data: object) -> str:
    return json.dumps({"type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX",
                       "mode": 2, "data": {"ltp": ltp, **data}})


CRAFTED: list[tuple[str, str | None]] = [  # (frame, the kind it is counted as; None = a tick)
    ("{not json", "bad_json"),
    (b"\xff\xfe\x00".decode("latin-1"), "bad_json"),
    ("[1, 2, 3]", "not_object"),
    ('"just a string"', "not_object"),
    ('{"type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX"}', "missing_field"),
    ('{"type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX", "data": {}}',
     "missing_field"),
    ('{"type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX", "data": [1]}',
     "wrong_type"),
    ('{"type": "market_data", "symbol": 5, "exchange": "NSE_INDEX", "data": {"ltp": 1}}',
     "wrong_type"),
    (_tick("24000.5"), "wrong_type"),
    (_tick(True), "wrong_type"),
    (_tick(None), "wrong_type"),
    ('{"type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX", '
     '"data": {"ltp": NaN}}', "non_finite"),
    ('{"type": "market_data", "symbol": "NIFTY", "exchange": "NSE_INDEX", '
     '"data": {"ltp": Infinity}}', "non_finite"),
    (_tick(0), "non_positive_price"),
    (_tick(-5.5), "non_positive_price"),
    ('{"type": "mystery"}', "unknown_type"),
    (_tick(24001.0, ltt="soon", volume=12.0), None),  # bad ltt dropped, float volume kept
    (_tick(24002.0, ltt=1_738_208_700_123, volume=-1, oi="x"), None),
    (_tick(24003, depth={"buy": [{"price": 24002.95, "quantity": 75}],
                         "sell": [{"price": 24003.05, "quantity": 75}]}, oi=42), None),
]


def test_crafted_bad_frames_are_counted_by_kind(rec: Recorder,
                                                make_feed: Callable[..., FeedClient]) -> None:
    def handler(ws: ServerConnection) -> None:
        for raw in ws:
            msg = json.loads(raw)
            if msg.get("action") == "authenticate":
                ws.send(json.dumps({"type": "auth", "status": "success"}))
            elif msg.get("action") == "subscribe":
                for frame, _ in CRAFTED:
                    ws.send(frame)
                ws.send(_tick(1.0))  # sentinel

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        feed = make_feed(f"ws://127.0.0.1:{server.socket.getsockname()[1]}")
        feed.subscribe([("NIFTY", "NSE_INDEX")])
        feed.start()
        assert rec.wait(lambda: bool(rec.ticks) and rec.ticks[-1].ltp == 1.0)
        stats = feed.stats()
        feed.stop()
        server.shutdown()
    expected: dict[str, int] = {}
    for _, kind in CRAFTED:
        if kind:
            expected[kind] = expected.get(kind, 0) + 1
    expected["bad_optional_field"] = 3  # ltt "soon", volume -1, oi "x"
    expected["implausible_ltt"] = 1  # a 2025 ltt received in 2026
    assert stats.invalid == expected
    first, second, third, _ = rec.ticks
    assert (first.ltp, first.exchange_ts, first.volume) == (24001.0, None, 12)
    assert (second.exchange_ts, second.volume, second.oi) == (None, None, None)  # 2025: too far
    assert (third.ltp, third.bid, third.ask, third.oi) == (24003.0, 24002.95, 24003.05, 42)
    assert isinstance(third.ltp, float)
    assert stats.connects == 1


class SilentPongServer:
    """A minimal RFC 6455 server that authenticates the client and then ignores everything,
    pings included (so no pong ever comes back)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}"
        self.pings = 0
        self.connections = 0
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            try:
                while True:
                    opcode, _ = self._read_frame(conn)
                    if opcode == 0x1:  # the authenticate message
                        body = json.dumps({"type": "auth", "status": "success"}).encode()
                        conn.sendall(bytes((0x81, len(body))) + body)
                    elif opcode == 0x9:
                        self.pings += 1
                    elif opcode == 0x8:
                        return
            except (OSError, ConnectionError):
                return

    @staticmethod
    def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            return data

        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", exactly(8))[0]
        mask = exactly(4) if second & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(length)))
        return first & 0x0F, payload

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def test_no_pong_within_the_timeout_drops_the_connection(
        rec: Recorder, make_feed: Callable[..., FeedClient]) -> None:
    server = SilentPongServer()
    try:
        feed = make_feed(server.url, ping_interval_s=0.1, ping_timeout_s=0.3)
        feed.start()
        assert rec.wait(lambda: "reconnecting" in rec.states(), timeout=3.0)
        connected = next(t for t, s in rec.statuses if s.state == "connected")
        dropped = next((t, s) for t, s in rec.statuses if s.state == "reconnecting")
        assert "no pong" in dropped[1].reason
        assert 0.3 <= dropped[0] - connected <= 1.5  # ping at 0.1 s + 0.3 s timeout
        assert server.pings >= 1  # protocol-level pings were sent
        assert rec.wait(lambda: server.connections >= 2)
    finally:
        server.close()
