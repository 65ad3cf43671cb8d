"""The OpenAlgo-compatible simulator: a simulated broker and a tick source behind OpenAlgo's REST
and WebSocket protocol, with fault injection.

``SimulatorServer`` wires the parts together and owns their lifecycle:
- ``engine.sim.matching.SimulatedBroker``: the account and matching engine (``sim.broker``);
- ``engine.sim.rest.RestServer``: ``/api/v1/<endpoint>`` on ``rest_port`` (stdlib threaded HTTP);
- ``engine.sim.feed.FeedServer``: market data / order updates on ``ws_port`` (``websockets``);
- ``engine.sim.faults.FaultInjector``: ``sim.faults``.

``publish(tick)`` applies a tick to the broker and then fans it out to the subscribers;
``play(ticks, clock)`` does that from a background thread as the clock reaches each tick's time.
Known symbols are NIFTY on NSE_INDEX, ``settings.symbols``, any symbol published so far and, when
the tick source is a sequence, every symbol in it. ``serve_forever`` is the ``run.py simulator``
entry point. Everything binds to loopback.
"""

from __future__ import annotations

import itertools
import math
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType, TracebackType
from typing import Any

from loguru import logger

from engine.market.instruments import INDEX_EXCHANGE, INDEX_SYMBOL, InstrumentSpec
from engine.messages import Tick
from engine.runtime.clock import Clock, ScaledClock, WallClock
from engine.runtime.pacing import Pacer
from engine.sim.faults import FaultInjector
from engine.sim.feed import FeedServer
from engine.sim.matching import MatchingSettings, SimulatedBroker
from engine.sim.rest import RestApi, RestServer
from engine.sim.settings import LOOPBACK_HOSTS, SimulatorSettings
from engine.sim.wire import FrameBuilder


def _parse_symbol(text: str) -> tuple[str, str]:
    exchange, sep, symbol = text.partition(":")
    if not sep or not exchange or not symbol:
        raise ValueError(f"expected EXCHANGE:SYMBOL, got {text!r}")
    return symbol, exchange


class Playback:
    """A background thread publishing ticks as the clock reaches each tick's time."""

    def __init__(self, sim: SimulatorServer, ticks: Iterable[Tick], clock: Clock,
                 name: str, pacer: Pacer | None = None) -> None:
        self._sim = sim
        self._ticks = ticks
        self._clock = clock
        self._pacer = pacer
        # a scaled clock is held at each tick's time until it is out (engine.runtime.pacing)
        self._leash = clock if isinstance(clock, ScaledClock) and pacer is not None else None
        self._stop = threading.Event()
        self.done = threading.Event()
        self.published = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of the ticks (or a stop); True when finished."""
        return self.done.wait(timeout)

    def _run(self) -> None:
        try:
            pacer, leash = self._pacer, self._leash
            for tick in self._ticks:
                # paced by arrival time: a recorded session replays as it was received,
                # late and out-of-order ticks included
                if pacer is not None and not pacer.wait_transit(tick.recv_ts, self._stop):
                    return
                if leash is not None:
                    leash.hold_at(tick.recv_ts)
                if self._stop.is_set() or not self._wait_until(tick.recv_ts):
                    return
                if pacer is not None and not pacer.wait(self._stop):
                    return
                sent = self._sim.publish(tick)
                if pacer is not None:
                    pacer.published(tick.ts, tick.recv_ts if sent else None)
                self.published += 1
        except Exception as exc:
            self.error = exc
            logger.exception("simulator playback failed after {} ticks", self.published)
        finally:
            if self._leash is not None:
                self._leash.hold_at(float("inf"))
            self.done.set()

    def _wait_until(self, due: float) -> bool:
        """Wait until the clock reaches ``due``; False if stopped first."""
        clock = self._clock
        if clock.time() >= due:
            return True
        if math.isinf(clock.speed):  # a virtual clock moves only when driven: wake on its timer
            reached = threading.Event()
            handle = clock.call_at(due, reached.set, name="sim-playback")
            while not reached.wait(0.05):
                if self._stop.is_set():
                    handle.cancel()
                    return False
            return True
        while True:
            left = (due - clock.time()) / clock.speed
            if left <= 0:
                return True
            if self._stop.wait(min(left, 0.05)):
                return False


class SimulatorServer:
    """OpenAlgo-compatible REST + WebSocket simulator (see the module docstring)."""

    def __init__(self, settings: SimulatorSettings | None = None, *, api_key: str, clock: Clock,
                 instrument: InstrumentSpec | None = None,
                 tick_source: Iterable[Tick] | None = None,
                 matching: MatchingSettings | None = None) -> None:
        if not api_key:
            raise ValueError("the simulator needs a non-empty API key")
        self.settings = settings or SimulatorSettings()
        if self.settings.host not in LOOPBACK_HOSTS:
            raise ValueError(f"the simulator binds loopback only, not {self.settings.host!r}")
        self.clock = clock
        self.instrument = instrument or InstrumentSpec()
        self.broker = SimulatedBroker(clock, self.instrument, matching,
                                      account=self.settings.broker_name)
        self.faults = FaultInjector(drop=self._drop, push_error_frames=self._push_error_frames,
                                    reject=self.broker.force_rejections,
                                    broker=self.broker)
        self._api = RestApi(self.broker, api_key, self.settings)
        self._rest = RestServer(self._api, self.faults, self.settings)
        self._feed = FeedServer(self.settings, api_key, self.faults, clock, self.broker.is_known,
                                lambda: self._api.analyze, self.broker.personality)
        self._tick_source = tick_source
        self._playbacks: list[Playback] = []
        self._level_quantity = self.broker.level_quantity
        self._started = False
        self._stopped = False
        self.playback: Playback | None = None
        self.broker.declare_symbol(INDEX_SYMBOL, INDEX_EXCHANGE)
        self.declare_symbols(_parse_symbol(s) for s in self.settings.symbols)
        if isinstance(tick_source, Sequence):
            self.declare_symbols({(t.symbol, t.exchange) for t in tick_source})

    def __repr__(self) -> str:
        where = f"{self.rest_url} {self.ws_url}" if self._started else "not started"
        return f"SimulatorServer({where})"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> SimulatorServer:
        """Bind both ports and start serving; returns once both listen."""
        if self._started or self._stopped:
            raise RuntimeError("a simulator starts once; create a new one to serve again")
        host = self.settings.host
        self._rest.start(host, self.settings.rest_port)
        try:
            self._feed.start(host, self.settings.ws_port)
        except BaseException:
            self._rest.stop()
            raise
        self.broker.add_order_listener(self._feed.submit_order_update)
        self._started = True
        logger.info("simulator listening: REST {} WS {}", self.rest_url, self.ws_url)
        if self._tick_source is not None:
            self.playback = self.play(self._tick_source, self.clock)
        return self

    def stop(self) -> None:
        for playback in self._playbacks:
            playback.stop()
        if not self._started:
            return
        self.broker.remove_order_listener(self._feed.submit_order_update)
        self._feed.stop()
        self._rest.stop()
        self._started = False
        self._stopped = True
        logger.info("simulator stopped")

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self._url_host}:{self._rest.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host}:{self._feed.port}"

    @property
    def _url_host(self) -> str:
        host = self.settings.host
        return f"[{host}]" if ":" in host else host

    # -- market data -------------------------------------------------------------------------------
    def declare_symbols(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Make (symbol, exchange) pairs known before their first tick."""
        for symbol, exchange in pairs:
            self.broker.declare_symbol(symbol, exchange)

    def publish(self, tick: Tick) -> bool:
        """Apply one tick to the broker now, then send it to every subscriber in its modes.
        Returns whether it went out with a valid (positive) price: a client drops the others."""
        if self.faults.take_zero_price():
            tick = tick._replace(ltp=0.0)
        snap = self.broker.on_tick(tick)
        frames = FrameBuilder(snap, tick.ltp, tick.ts, self.instrument.tick_size,
                              self._level_quantity, self.settings.broker_name,
                              self.broker.personality)
        self._feed.submit_tick(frames, (tick.symbol, tick.exchange))
        return tick.ltp > 0

    def play(self, ticks: Iterable[Tick], clock: Clock | None = None,
             pacer: Pacer | None = None) -> Playback:
        """Publish ``ticks`` from a background thread, each once ``clock.time() >= tick.recv_ts``
        (its arrival time in the recording); with a ``pacer``, also only once the consumer keeps
        up, a scaled clock standing still meanwhile (``engine.runtime.pacing``)."""
        playback = Playback(self, ticks, clock or self.clock,
                            name=f"sim-playback-{len(self._playbacks) + 1}", pacer=pacer)
        self._playbacks.append(playback)
        return playback

    # -- observation ------------------------------------------------------------------------------
    def connected_clients(self) -> int:
        """Open WebSocket connections, authenticated or not."""
        return self._feed.connected_clients()

    def pending_ticks(self) -> int:
        """Ticks published but not yet turned into frames by the feed server."""
        return self._feed.pending()

    def subscriptions(self) -> list[set[tuple[str, str, int]]]:
        """Per open WebSocket connection, its (symbol, exchange, mode) subscriptions."""
        return self._feed.subscriptions()

    def rest_calls(self, endpoint: str) -> int:
        """How many requests reached ``endpoint`` (faulted and rate-limited ones included)."""
        return self._rest.call_count(endpoint)

    def stats(self) -> dict[str, Any]:
        return {"rest_calls": self._rest.call_counts(),
                "ws_connections_total": self._feed.connections_total,
                "ws_connected": self._feed.connected_clients(),
                "ws_auth_failures": self._feed.auth_failures,
                "ws_frames_sent": self._feed.frames_sent}

    @property
    def analyze_mode(self) -> bool:
        return self._api.analyze

    # -- fault plumbing ----------------------------------------------------------------------------
    def _drop(self, abrupt: bool) -> int:
        return self._feed.drop_connections(abrupt) if self._started else 0

    def _push_error_frames(self, n: int, code: str, message: str) -> int:
        return self._feed.push_error_frames(n, code, message) if self._started else 0


def serve_forever(settings: SimulatorSettings, api_key: str, session_ticks: Iterable[Tick],
                  clock: Clock | None = None, speed: float = 1.0, *,
                  symbols: Iterable[tuple[str, str]] = (),
                  instrument: InstrumentSpec | None = None,
                  matching: MatchingSettings | None = None,
                  stop_event: threading.Event | None = None,
                  on_started: Callable[[SimulatorServer], None] | None = None) -> int:
    """Serve a session until SIGINT/SIGTERM (or ``stop_event``); returns the ticks published.

    Without a clock, time starts at the first tick's time and runs ``speed`` times faster than
    real time (a ``ScaledClock``; a ``WallClock`` when there are no ticks). ``symbols`` are made
    known up front, so clients can subscribe before a symbol's first tick. ``on_started`` is
    called with the running server (its URLs, faults) before the first tick is played.
    """
    ticks = iter(session_ticks)
    first = next(ticks, None)
    own_clock = clock is None
    if clock is None:
        clock = WallClock() if first is None else ScaledClock(first.ts, speed)
    stream: Iterable[Tick] = itertools.chain([first], ticks) if first is not None else ()
    stop = stop_event or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_term)
    sim = SimulatorServer(settings, api_key=api_key, clock=clock, instrument=instrument,
                          matching=matching)
    sim.declare_symbols(symbols)
    playback: Playback | None = None
    try:
        sim.start()
        if on_started is not None:
            on_started(sim)
        playback = sim.play(stream, clock)
        logger.info("simulator serving at speed {}x; Ctrl-C to stop", clock.speed)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        logger.info("simulator interrupted")
    finally:
        sim.stop()
        if own_clock:
            clock.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return playback.published if playback is not None else 0
