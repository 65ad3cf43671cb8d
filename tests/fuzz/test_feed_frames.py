"""Fuzzing the market-data client with hostile WebSocket frames.

Each generated frame carries its expected outcome: a clean ``market_data`` frame (with junk in the
fields the client ignores), a frame with exactly one defect that drops it (not JSON, truncated,
not an object, a required field missing or of the wrong type, a price that is zero, negative,
NaN, infinite or beyond the float range, a symbol not subscribed, an unknown ``type``), a frame
with exactly one bad optional field (the tick still comes out, without it), an error frame, or a
frame the client ignores. Properties: nothing raises out of the client; every tick it hands out
has a finite positive price and a subscribed (symbol, exchange); the invalid-frame counter grows
by exactly the number of defective frames; the log line about them is throttled (one line per
kind while the interval lasts); the API key never reaches the log.

The bulk runs through the frame parser (``FeedClient._on_frame``, the reader thread's entry
point); one test sends the frames through a real ``FeedClient`` connected to a loopback
``websockets`` server, as text and binary frames.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from loguru import logger
from websockets.sync.server import ServerConnection, serve

from engine.messages import Tick
from engine.openalgo.feed import FeedClient, FeedSettings
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import add_sink
from tests.fuzz.support import (
    API_KEY,
    any_text,
    dumps,
    fuzz_settings,
    json_scalar,
    json_value,
    odd_text,
    raw_not_json,
    truncations,
)
from tests.support import until

RECV_TS = 1_800_000_000.0
SUBSCRIBED = [("NIFTY30JAN2524000CE", "NFO"), ("NIFTY30JAN2524000PE", "NFO"),
              ("NIFTY", "NSE_INDEX")]
KNOWN_TYPES = ("market_data", "order_update", "subscribe", "unsubscribe", "pong", "auth")
INVALID_KINDS = {"bad_json", "not_object", "missing_field", "wrong_type", "non_positive_price",
                 "non_finite", "unsubscribed", "unknown_type", "bad_optional_field"}
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Frame:
    """One frame and what the client must make of it."""

    payload: bytes
    defect: str | None = None  # what is wrong with it (None: nothing the client counts)
    delivers: bool = False  # a Tick comes out of it
    error_frame: bool = False  # an OpenAlgo error frame (counted apart)
    text: bool = True  # sent as a text frame (else binary)


# -- valid market_data frames ---------------------------------------------------------------------
prices = st.one_of(st.floats(min_value=0.05, max_value=1e6), st.integers(1, 10**6),
                   st.sampled_from([5e-324, 1e308, 1.7976931348623157e308, INT64_MAX]))
counts = st.one_of(st.integers(0, INT64_MAX), st.integers(0, 10**12).map(float))
book_prices = st.one_of(st.floats(min_value=0.0, max_value=1e6), st.integers(0, 10**6))
level = st.fixed_dictionaries({"price": book_prices},
                              optional={"quantity": json_scalar, "orders": json_scalar})
FRAME_KEYS = {"type", "symbol", "exchange", "data", "status"}
DATA_KEYS = {"ltp", "ltt", "volume", "oi", "depth", "bid", "ask"}


def _extra(reserved: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Fields the client does not read, holding junk."""
    return st.dictionaries(any_text.filter(lambda k: k not in reserved), json_value, max_size=2)


@st.composite
def market_data(draw: st.DrawFn) -> dict[str, Any]:
    symbol, exchange = draw(st.sampled_from(SUBSCRIBED))
    data: dict[str, Any] = {"ltp": draw(prices)}
    # a tick time near the receive time, in seconds (Zerodha's depth mode) or milliseconds
    near = st.floats(-3000.0, 3000.0)
    optional = {"ltt": st.one_of(near.map(lambda d: int((RECV_TS + d) * 1000)),
                                 near.map(lambda d: RECV_TS + d)),
                "volume": counts, "oi": counts}
    for key, values in optional.items():
        if draw(st.booleans()):
            data[key] = draw(st.none() | values)
    if draw(st.booleans()):
        data["depth"] = {"buy": draw(st.lists(level, max_size=3)),
                         "sell": draw(st.lists(level, max_size=3))}
    else:
        for key in ("bid", "ask"):
            if draw(st.booleans()):
                data[key] = draw(st.none() | book_prices)
    data.update(draw(_extra(DATA_KEYS)))
    frame = {"type": "market_data", "symbol": symbol, "exchange": exchange, "data": data,
             "mode": draw(json_scalar)}
    frame.update(draw(_extra(FRAME_KEYS)))
    return frame


# -- one defect each ------------------------------------------------------------------------------
not_a_string = json_value.filter(lambda v: not isinstance(v, str))
not_a_number = st.one_of(st.none(), st.booleans(), any_text, st.just("24000.5"),
                         st.lists(json_value, max_size=2), st.dictionaries(any_text, json_value,
                                                                           max_size=2))
BAD_PRICES = [0, 0.0, -0.0, -1, -0.05, -1e308, math.nan, math.inf, -math.inf, 10**400,
              -(10**400)]
BAD_TIMES = ["soon", "", 0, -1, -0.0, math.nan, math.inf, -math.inf, True, False, [], {},
             2**63, 10**400, 1e300]
BAD_COUNTS = [-1, -0.5, 1.5, "100", "", True, math.nan, math.inf, -math.inf, 2**63, 10**400,
              1e300, [], {}]
BAD_BOOK_PRICES = [-1, -0.05, math.nan, math.inf, -math.inf, "1.0", True, [], {}, 2**63,
                   10**400]
BAD_DEPTHS: list[Any] = ["ab", 5, True, [], {}, {"sell": []}, {"buy": []}, {"buy": 5, "sell": []},
                         {"buy": [5], "sell": []}, {"buy": [{"qty": 1}], "sell": []},
                         {"buy": [{"price": -1}], "sell": []},
                         {"buy": [], "sell": [{"price": "x"}]},
                         {"buy": [{"price": math.nan}], "sell": [{"price": 1.0}]}]


def _encoded(frame: dict[str, Any]) -> bytes:
    return dumps(frame).encode("utf-8", "surrogatepass")


@st.composite
def dropped(draw: st.DrawFn) -> Frame:
    """A frame the client must count once and drop."""
    frame = draw(market_data())
    data = frame["data"]
    how = draw(st.sampled_from(["truncated", "raw", "not_utf8", "deep", "not_object", "missing",
                                "wrong_type", "price", "unsubscribed", "unknown_type"]))
    if how == "truncated":
        return Frame(draw(truncations(dumps(frame))).encode("utf-8", "surrogatepass"), how)
    if how == "raw":
        return Frame(draw(raw_not_json), how)
    if how == "not_utf8":
        return Frame(_encoded(frame).replace(b"market_data", b"market_\xff\xfedata"), how)
    if how == "deep":  # nested far beyond what the parser allows
        data["nested"] = "@"
        return Frame(_encoded(frame).replace(b'"@"', b"[" * 100_000 + b"]" * 100_000), how)
    if how == "not_object":
        value = draw(json_value.filter(lambda v: not isinstance(v, dict)))
        return Frame(_encoded(value), how)
    if how == "missing":
        key = draw(st.sampled_from(["symbol", "exchange", "data", "ltp"]))
        del (data if key == "ltp" else frame)[key]
    elif how == "wrong_type":
        key = draw(st.sampled_from(["symbol", "exchange", "data", "ltp"]))
        if key == "ltp":
            data["ltp"] = draw(not_a_number)
        else:
            frame[key] = draw(not_a_string if key != "data" else
                              json_value.filter(lambda v: not isinstance(v, dict)))
    elif how == "price":
        data["ltp"] = draw(st.sampled_from(BAD_PRICES) | st.floats(max_value=0.0))
    elif how == "unsubscribed":
        if draw(st.booleans()):
            frame["symbol"] = draw(odd_text.filter(lambda s: s not in dict(SUBSCRIBED)))
        else:
            frame["exchange"] = draw(st.sampled_from(["NSE", "BFO", "nfo", ""]))
    else:
        frame["type"] = draw(json_value.filter(lambda v: v not in KNOWN_TYPES))
    return Frame(_encoded(frame), how)


@st.composite
def with_bad_optional_field(draw: st.DrawFn) -> Frame:
    """A tick with exactly one bad optional field: counted once, the tick still delivered."""
    frame = draw(market_data())
    data = frame["data"]
    key = draw(st.sampled_from(["ltt", "volume", "oi", "bid", "depth"]))
    if key == "ltt":
        data["ltt"] = draw(st.sampled_from(BAD_TIMES))
    elif key in ("volume", "oi"):
        data[key] = draw(st.sampled_from(BAD_COUNTS) | st.integers(max_value=-1))
    elif key == "bid":
        data.pop("depth", None)
        data.pop("ask", None)
        data["bid"] = draw(st.sampled_from(BAD_BOOK_PRICES))
    else:
        data["depth"] = draw(st.sampled_from(BAD_DEPTHS))
    return Frame(_encoded(frame), key, delivers=True)


@st.composite
def other_frames(draw: st.DrawFn) -> Frame:
    """Frames that are not market data: error frames (counted apart) and ones to ignore."""
    if draw(st.booleans()):
        code = draw(st.sampled_from(["BROKER_ERROR", "INVALID_MODE", "SERVER_ERROR", "X"])
                    | json_value.filter(lambda v: str(v) != "NOT_AUTHENTICATED"))
        body = {"status": "error", "code": code, "message": draw(json_value)}
        return Frame(_encoded(body), error_frame=True)
    kind = draw(st.sampled_from(["pong", "auth", "order_update", "subscribe", "unsubscribe"]))
    body = {"type": kind, **draw(_extra({"type", "status"}))}
    if kind in ("subscribe", "unsubscribe"):
        body["status"] = "success"
    return Frame(_encoded(body))


def clean() -> st.SearchStrategy[Frame]:
    return market_data().map(lambda frame: Frame(_encoded(frame), delivers=True))


frames = st.one_of(clean(), dropped(), with_bad_optional_field(), other_frames())
frame_lists = st.lists(frames, max_size=20)


# -- checks --------------------------------------------------------------------------------------
def assert_sound(tick: Tick) -> None:
    assert (tick.symbol, tick.exchange) in SUBSCRIBED
    assert type(tick.ltp) is float and math.isfinite(tick.ltp) and tick.ltp > 0
    assert tick.recv_ts == RECV_TS
    assert tick.exchange_ts is None or (math.isfinite(tick.exchange_ts) and tick.exchange_ts > 0)
    for count in (tick.volume, tick.oi):
        assert count is None or (type(count) is int and 0 <= count <= INT64_MAX)
    for price in (tick.bid, tick.ask):
        assert type(price) is float and math.isfinite(price) and price >= 0


def settings_for(url: str = "ws://127.0.0.1:9", log_interval_s: float = 3600.0) -> FeedSettings:
    return FeedSettings(ws_url=url, reconnect_base_s=0.05, reconnect_max_s=0.5, jitter=0.0,
                        auth_timeout_s=5.0, connect_timeout_s=5.0, frozen_after_s=0.0,
                        ping_interval_s=5.0, ping_timeout_s=5.0, log_interval_s=log_interval_s)


def log_lines(text: str, account: str, marker: str) -> int:
    return sum(1 for line in text.splitlines() if f"feed[{account}]" in line and marker in line)


def _example(*payloads: bytes, defect: str | None = None, delivers: bool = False) -> list[Frame]:
    return [Frame(p, defect, delivers) for p in payloads]


def _tick_text(**data: str) -> bytes:
    fields = ",".join(f'"{k}":{v}' for k, v in {"ltp": "100.5", **data}.items())
    return (f'{{"type":"market_data","symbol":"NIFTY","exchange":"NSE_INDEX",'
            f'"data":{{{fields}}}}}').encode()


# -- the parser ----------------------------------------------------------------------------------
@fuzz_settings(200)
@given(frame_lists)
# crashes found by this fuzzing (OverflowError, RecursionError) before the fixes:
@example(_example(_tick_text(ltp="1" + "0" * 400), defect="price"))
@example(_example(_tick_text(ltt="1" + "0" * 400), defect="ltt", delivers=True))
@example(_example(_tick_text(bid="1" + "0" * 400), defect="bid", delivers=True))
@example(_example(b"[" * 100_000, defect="deep"))
# a tick for a symbol never subscribed used to be handed out
@example(_example(b'{"type":"market_data","symbol":"BANKNIFTY","exchange":"NSE_INDEX",'
                  b'"data":{"ltp":1.0}}', defect="unsubscribed"))
# an error frame's code used to be logged without the API key scrubbed from it
@example([Frame(f'{{"status": "error", "code": {{"{API_KEY}": null}}}}'.encode(),
                error_frame=True)])
def test_parser_counts_every_bad_frame_and_hands_out_only_sound_ticks(
        frames: list[Frame]) -> None:
    ticks: list[Tick] = []
    errors: list[tuple[str, str]] = []
    feed = FeedClient(settings_for(), api_key=API_KEY, clock=VirtualClock(RECV_TS),
                      account="fuzz", on_tick=ticks.append,
                      on_error_frame=lambda code, message: errors.append((code, message)),
                      on_order_update=lambda update: None)
    feed.subscribe(SUBSCRIBED)  # not started: the subscription set only
    log = io.StringIO()
    sink = add_sink(log, level="DEBUG")  # zero prices are logged at DEBUG
    try:
        for frame in frames:
            feed._on_frame(frame.payload, 0.0)
    finally:
        logger.remove(sink)

    stats = feed.stats()
    assert set(stats.invalid) <= INVALID_KINDS
    assert sum(stats.invalid.values()) == sum(f.defect is not None for f in frames)
    assert len(ticks) == stats.ticks == sum(f.delivers for f in frames)
    for tick in ticks:
        assert_sound(tick)
    assert len(errors) == sum(stats.error_frames.values()) == sum(f.error_frame for f in frames)
    text = log.getvalue()
    # throttled: the first frame of each kind is logged, the rest wait for the interval
    assert log_lines(text, "fuzz", "dropped as") == len(stats.invalid)
    assert log_lines(text, "fuzz", "error frame(s)") == len(stats.error_frames)
    assert API_KEY not in text


def test_frames_nested_around_the_parsers_recursion_limit_never_crash() -> None:
    """Nesting just inside the limit parses, and the log line then quotes the frame."""
    ticks: list[Tick] = []
    feed = FeedClient(settings_for(log_interval_s=0.0), api_key=API_KEY,
                      clock=VirtualClock(RECV_TS), account="fuzz-deep", on_tick=ticks.append)
    feed.subscribe(SUBSCRIBED)
    limit = sys.getrecursionlimit()
    depths = range(limit - 150, limit + 10)
    for depth in depths:
        feed._on_frame(_tick_text(ltt='"late"', junk="[" * depth + "]" * depth), 0.0)
    stats = feed.stats()
    assert stats.invalid["bad_optional_field"] == len(ticks) > 0  # parsed: ltt dropped
    assert stats.invalid["bad_json"] > 0  # too deep
    assert len(ticks) + stats.invalid["bad_json"] == len(depths)


# -- a real client over a loopback WebSocket -------------------------------------------------------
class FrameServer:
    """A ``websockets`` server that authenticates the client, acknowledges its subscription and
    then sends whatever batches of (payload, is_text) are put in ``batches``."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[tuple[bytes, bool]]] = queue.Queue()
        self._stop = threading.Event()
        self._server = serve(self._handle, "127.0.0.1", 0, max_size=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def _handle(self, ws: ServerConnection) -> None:
        for raw in ws:
            action = json.loads(raw).get("action")
            if action == "authenticate":
                ws.send(json.dumps({"type": "auth", "status": "success"}))
            elif action == "subscribe":
                ws.send(json.dumps({"type": "subscribe", "status": "success"}))
                break
        while not self._stop.is_set():
            try:
                batch = self.batches.get(timeout=0.05)
            except queue.Empty:
                continue
            for payload, text in batch:
                ws.send(payload, text=text)

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._thread.join(5)


@dataclass
class LiveFeed:
    feed: FeedClient
    server: FrameServer
    log: io.StringIO
    ticks: list[Tick]
    cond: threading.Condition

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveFeed]:
    server = FrameServer()
    ticks: list[Tick] = []
    cond = threading.Condition()

    def on_tick(tick: Tick) -> None:
        with cond:
            ticks.append(tick)
            cond.notify_all()

    log = io.StringIO()
    sink = add_sink(log, level="DEBUG")  # zero prices are logged at DEBUG
    feed = FeedClient(settings_for(server.url), api_key=API_KEY, clock=VirtualClock(RECV_TS),
                      account="fuzz-live", on_tick=on_tick)
    feed.subscribe(SUBSCRIBED)
    feed.start()
    live = LiveFeed(feed, server, log, ticks, cond)
    try:
        until(lambda: feed.stats().state == "connected")
        yield live
    finally:
        feed.stop()
        server.close()
        logger.remove(sink)


_sentinels = itertools.count(1)


@fuzz_settings(30)
@given(frames=frame_lists, binary=st.lists(st.booleans(), min_size=20, max_size=20))
def test_real_client_over_loopback_survives_and_counts(live: LiveFeed, frames: list[Frame],
                                                       binary: list[bool]) -> None:
    before = live.feed.stats()
    start = len(live.ticks)
    sentinel = 10_000.0 + next(_sentinels)  # a clean tick sent last: all before it were read
    batch = [(f.payload, not flag) for f, flag in zip(frames, binary, strict=False)]
    batch.append((_tick_text(ltp=repr(sentinel)), True))
    live.server.batches.put(batch)
    assert live.wait(lambda: any(t.ltp == sentinel for t in live.ticks[start:]))

    after = live.feed.stats()
    got = live.ticks[start:]
    assert len(got) == sum(f.delivers for f in frames) + 1
    for tick in got:
        assert_sound(tick)
    assert sum(after.invalid.values()) - sum(before.invalid.values()) == \
        sum(f.defect is not None for f in frames)
    assert sum(after.error_frames.values()) - sum(before.error_frames.values()) == \
        sum(f.error_frame for f in frames)
    assert after.connects == 1 and after.state == "connected"  # never dropped
    text = live.log.getvalue()
    assert log_lines(text, "fuzz-live", "dropped as") == len(after.invalid)  # throttled (1 h)
    assert "unexpected error" not in text and API_KEY not in text
