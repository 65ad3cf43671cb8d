"""The simulator's WebSocket side: OpenAlgo's market-data protocol on its own port.

One asyncio loop on a background thread runs a ``websockets`` server. Per connection it keeps the
auth state, the subscriptions (symbol, exchange → modes) and an outbox drained by one writer task,
so replies and pushed frames leave in order and a slow client only slows itself.

Ticks and order updates arrive from any thread through ``submit_tick`` / ``submit_order_update``:
they go into one thread-safe inbox and the loop is woken at most once per burst (no per-tick
thread hop); the loop fans them out to the subscribers, encoding each frame once per mode.

Protocol (openalgo-protocol.md): authenticate (AUTHENTICATION_ERROR on a wrong key; close 4401
"auth timeout" after the grace period), subscribe / unsubscribe / unsubscribe_all (per-symbol
results, "partial" when some fail, the single-symbol form the SDK sends is accepted), ping → pong,
subscribe_orders → order_update pushes; errors are ``{"status":"error","code","message"}`` frames.
Faults (frozen feed, malformed frames, dropped connections, error frames) hook in here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine.broker import OrderRow
from engine.sim import wire
from engine.sim.faults import FaultInjector
from engine.sim.personalities import Personality

if TYPE_CHECKING:
    from engine.runtime.clock import Clock
    from engine.sim.settings import SimulatorSettings

T = TypeVar("T")
Key = tuple[str, str]

_TICK = 0
_ORDER = 1
_BATCH = 1024  # frames written per transport write (one flow-control check per batch)
_DRAIN_BATCH = 2048  # inbox items fanned out before the writers get a turn


class _Client:
    """One WebSocket connection's state; touched only on the loop thread."""

    __slots__ = ("authenticated", "cid", "orders", "outbox", "subs", "wake", "ws")

    def __init__(self, cid: int, ws: ServerConnection) -> None:
        self.cid = cid
        self.ws = ws
        self.authenticated = False
        self.orders = False
        self.subs: dict[Key, set[int]] = {}
        self.outbox: deque[bytes] = deque()
        self.wake = asyncio.Event()


class FeedServer:
    """OpenAlgo-compatible WebSocket market-data server (see the module docstring)."""

    def __init__(self, settings: SimulatorSettings, api_key: str, faults: FaultInjector,
                 clock: Clock, is_known: Callable[[str, str], bool],
                 is_analyze: Callable[[], bool],
                 personality: Personality | None = None) -> None:
        self._settings = settings
        self._personality = personality
        self._key = api_key.encode()
        self._faults = faults
        self._clock = clock
        self._is_known = is_known
        self._is_analyze = is_analyze
        self._inbox: deque[tuple[int, Any]] = deque()
        self._wake_pending = False
        self._clients: dict[int, _Client] = {}  # by connection id, in connection order
        self._index: dict[Key, set[_Client]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._malformed_variant = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.frames_sent = 0
        self.connections_total = 0
        self.auth_failures = 0

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def start(self, host: str, port: int) -> int:
        """Start the loop thread and bind; returns the bound port once it listens."""
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(host, port, ready),
                                        name="sim-ws", daemon=True)
        self._thread.start()
        self._port = ready.result(timeout=10)
        return self._port

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            logger.warning("simulator ws: shutdown timed out")
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, host: str, port: int, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(self._listen(host, port))
            sock = next(iter(self._server.sockets))
            # answered from inside run_forever, so a caller that saw the port sees a running loop
            loop.call_soon(ready.set_result, int(sock.getsockname()[1]))
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self, host: str, port: int) -> Server:
        s = self._settings
        return await serve(self._handle, host, port, compression=None,
                           ping_interval=s.ws_ping_interval_s, ping_timeout=s.ws_ping_timeout_s,
                           close_timeout=2, max_queue=1024)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)
        for client in list(self._clients.values()):
            client.ws.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("simulator feed is not running")

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    # -- thread-safe entry points ----------------------------------------------------------------
    def submit_tick(self, frames: wire.FrameBuilder, key: Key) -> None:
        self._inbox.append((_TICK, (key, frames)))
        self._wake()

    def submit_order_update(self, row: OrderRow) -> None:
        self._inbox.append((_ORDER, row))
        self._wake()

    def connected_clients(self) -> int:
        return len(self._clients)

    def pending(self) -> int:
        """Ticks and order updates submitted and not yet handled by the loop."""
        return len(self._inbox)

    def subscriptions(self) -> list[set[tuple[str, str, int]]]:
        """Per open connection: its (symbol, exchange, mode) subscriptions."""
        return self._call(lambda: [{(k[0], k[1], m) for k, modes in c.subs.items() for m in modes}
                                   for c in self._clients.values()])

    def drop_connections(self, abrupt: bool) -> int:
        loop = self._loop
        if loop is None or not loop.is_running():
            return 0
        return asyncio.run_coroutine_threadsafe(self._drop(abrupt), loop).result(timeout=10)

    def push_error_frames(self, n: int, code: str, message: str) -> int:
        frame = wire.dumps({"status": "error", "code": code, "message": message}).encode()

        def push() -> int:
            for client in self._clients.values():
                self._queue(client, *([frame] * n))
            return n * len(self._clients)

        return self._call(push)

    # -- fan-out -----------------------------------------------------------------------------------
    def _wake(self) -> None:
        if not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed: the server is stopping
                self._wake_pending = False

    def _drain(self) -> None:
        """Fan out at most ``_DRAIN_BATCH`` inbox items, then let the writers run; reschedules
        itself while the inbox is not empty (a busy publisher never starves the writers)."""
        woken: set[_Client] = set()
        try:
            self._fan_out(woken)
        except Exception:
            logger.exception("simulator ws: fan-out failed; continuing")
        finally:
            limit = self._settings.max_client_backlog
            for client in woken:
                if len(client.outbox) > limit:
                    logger.warning("simulator ws: client {} is {} frames behind; disconnecting",
                                   client.cid, len(client.outbox))
                    client.outbox.clear()
                    client.ws.transport.abort()
                else:
                    client.wake.set()
            self._reschedule()

    def _fan_out(self, woken: set[_Client]) -> None:
        inbox = self._inbox
        frozen = self._faults.feed_frozen
        for _ in range(min(len(inbox), _DRAIN_BATCH)):
            kind, item = inbox.popleft()
            if kind == _TICK:
                key, frames = item
                subscribers = self._index.get(key)
                if not subscribers or frozen:
                    continue
                for client in subscribers:
                    for mode in client.subs[key]:
                        client.outbox.append(frames.frame(mode))
                    woken.add(client)
                continue
            frame = None
            for client in self._clients.values():
                if client.orders:
                    if frame is None:
                        frame = wire.dumps(wire.order_update_frame(
                            item, analyze=self._is_analyze(), personality=self._personality,
                            user_id=self._settings.user_id,
                            broker=self._settings.broker_name)).encode()
                    client.outbox.append(frame)
                    woken.add(client)

    def _reschedule(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._inbox:
            loop.call_soon(self._drain)
            return
        self._wake_pending = False
        if self._inbox and not self._wake_pending:  # a producer appended before the reset
            self._wake_pending = True
            loop.call_soon(self._drain)

    def _queue(self, client: _Client, *frames: bytes) -> None:
        client.outbox.extend(frames)
        client.wake.set()

    def _send(self, client: _Client, payload: dict[str, Any]) -> None:
        self._queue(client, wire.dumps(payload).encode())

    def _error(self, client: _Client, code: str, message: str) -> None:
        self._send(client, {"status": "error", "code": code, "message": message})

    async def _writer(self, client: _Client) -> None:
        """Write the outbox in batches: whole text frames joined into one transport write,
        inside ``send_context`` (state check on entry, flow control on exit)."""
        ws = client.ws
        outbox = client.outbox
        faults = self._faults
        header = wire.text_frame_header
        try:
            while True:
                await client.wake.wait()
                client.wake.clear()
                while outbox:
                    count = min(len(outbox), _BATCH)
                    parts: list[bytes] = []
                    for _ in range(count):
                        payload = outbox.popleft()
                        if faults.take_malformed_frame():
                            payload = self._corrupt(payload)
                        parts.append(header(len(payload)))
                        parts.append(payload)
                    async with ws.send_context():
                        ws.transport.write(b"".join(parts))
                    self.frames_sent += count
        except ConnectionClosed:
            outbox.clear()
        except Exception:
            logger.exception("simulator ws: writer for client {} failed; closing", client.cid)
            outbox.clear()
            ws.transport.abort()

    def _corrupt(self, payload: bytes) -> bytes:
        """A valid text frame whose content is truncated JSON or garbage."""
        if next(self._malformed_variant) % 2 == 0:
            return payload[: max(1, len(payload) // 2)].decode("utf-8", "ignore").encode()
        return b"#!garbage{{" + payload[:8].decode("utf-8", "ignore").encode()

    async def _drop(self, abrupt: bool) -> int:
        """Abort every connection, or start a 1001 close handshake on each (not waiting for
        the clients' replies: they may be busy, as a real proxy would not wait either)."""
        clients = list(self._clients.values())
        for client in clients:
            if abrupt:
                client.ws.transport.abort()
            else:
                task = asyncio.create_task(client.ws.close(1001, "going away"))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        return len(clients)

    # -- one connection --------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(next(self._ids), ws)
        self._clients[client.cid] = client
        self.connections_total += 1
        writer = asyncio.create_task(self._writer(client))
        deadline = asyncio.create_task(self._auth_deadline(client))
        try:
            async for message in ws:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            deadline.cancel()
            writer.cancel()
            self._clients.pop(client.cid, None)
            for key in client.subs:
                subscribers = self._index.get(key)
                if subscribers is not None:
                    subscribers.discard(client)
                    if not subscribers:
                        del self._index[key]

    async def _auth_deadline(self, client: _Client) -> None:
        await asyncio.sleep(self._settings.auth_grace_s)
        if not client.authenticated:
            logger.info("simulator ws: client {} did not authenticate in {}s; closing",
                        client.cid, self._settings.auth_grace_s)
            await client.ws.close(4401, "auth timeout")

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
            self._error(client, "INVALID_JSON", "Invalid JSON message")
            return
        if not isinstance(data, dict):
            self._error(client, "INVALID_JSON", "Message must be a JSON object")
            return
        action = data.get("action") or data.get("type")
        try:
            if action in ("authenticate", "auth"):
                self._authenticate(client, data)
            elif action == "ping":
                self._pong(client, data)
            elif action not in ("subscribe", "unsubscribe", "unsubscribe_all",
                                "subscribe_orders", "unsubscribe_orders"):
                self._error(client, "INVALID_ACTION", f"Invalid action: {action}")
            elif not client.authenticated:
                self._error(client, "NOT_AUTHENTICATED", "You must authenticate first")
            elif action == "subscribe":
                self._subscribe(client, data)
            elif action in ("unsubscribe", "unsubscribe_all"):
                self._unsubscribe(client, data, action == "unsubscribe_all")
            else:
                client.orders = action == "subscribe_orders"
                self._send(client, {"type": action, "status": "success",
                                    "message": "Subscribed to order updates" if client.orders
                                    else "Unsubscribed from order updates"})
        except Exception as exc:
            logger.exception("simulator ws: {} failed", action)
            self._error(client, "SERVER_ERROR", str(exc))

    def _authenticate(self, client: _Client, data: dict[str, Any]) -> None:
        key = data.get("api_key") or data.get("apikey")
        if not key:
            self.auth_failures += 1
            self._error(client, "AUTHENTICATION_ERROR", "API key is required")
            return
        if not isinstance(key, str) or not hmac.compare_digest(
                key.encode("utf-8", "surrogatepass"), self._key):
            self.auth_failures += 1
            self._error(client, "AUTHENTICATION_ERROR", "Invalid API key")
            return
        client.authenticated = True
        s = self._settings
        self._send(client, {"type": "auth", "status": "success",
                            "message": "Authentication successful", "broker": s.broker_name,
                            "user_id": s.user_id,
                            "supported_features": {"ltp": True, "quote": True, "depth": True}})

    def _pong(self, client: _Client, data: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong", "status": "success",
                                 "server_timestamp": int(self._clock.time() * 1000)}
        if data.get("timestamp") is not None:
            reply["client_timestamp"] = data["timestamp"]
        if data.get("_pingId") is not None:
            reply["_pingId"] = data["_pingId"]
        self._send(client, reply)

    def _subscribe(self, client: _Client, data: dict[str, Any]) -> None:
        try:
            mode = wire.parse_mode(data.get("mode", "Quote"))
        except ValueError as exc:
            self._error(client, "INVALID_MODE", str(exc))
            return
        symbols = data.get("symbols") or []
        if not symbols and data.get("symbol") and data.get("exchange"):
            symbols = [{"symbol": data["symbol"], "exchange": data["exchange"]}]
        if not symbols or not isinstance(symbols, list):
            self._error(client, "INVALID_PARAMETERS", "At least one symbol must be specified")
            return
        broker = self._settings.broker_name
        depth = data.get("depth", 5)
        results: list[dict[str, Any]] = []
        all_ok = True
        for entry in symbols:
            symbol = entry.get("symbol") if isinstance(entry, dict) else None
            exchange = entry.get("exchange") if isinstance(entry, dict) else None
            if not isinstance(symbol, str) or not isinstance(exchange, str):
                all_ok = False
                results.append({"symbol": symbol, "exchange": exchange, "status": "error",
                                "message": "symbol and exchange are required", "broker": broker})
                continue
            if not self._is_known(symbol, exchange):
                all_ok = False
                results.append({"symbol": symbol, "exchange": exchange, "status": "error",
                                "message": f"Symbol {symbol} not found on {exchange}",
                                "broker": broker})
                continue
            key = (symbol, exchange)
            client.subs.setdefault(key, set()).add(mode)
            self._index.setdefault(key, set()).add(client)
            results.append({"symbol": symbol, "exchange": exchange, "status": "success",
                            "mode": wire.MODE_NAMES[mode], "depth": depth, "broker": broker})
        reply: dict[str, Any] = {"type": "subscribe",
                                 "status": "success" if all_ok else "partial",
                                 "subscriptions": results,
                                 "message": "Subscription processing complete", "broker": broker}
        if data.get("request_id") is not None:
            reply["request_id"] = data["request_id"]
        self._send(client, reply)

    def _unsubscribe(self, client: _Client, data: dict[str, Any], everything: bool) -> None:
        broker = self._settings.broker_name
        targets: list[tuple[str, str, int]] = []
        failed: list[dict[str, Any]] = []
        if everything:
            targets = [(k[0], k[1], m) for k, modes in client.subs.items() for m in modes]
        else:
            symbols = data.get("symbols") or []
            if not symbols and data.get("symbol") and data.get("exchange"):
                symbols = [{"symbol": data["symbol"], "exchange": data["exchange"],
                            "mode": data.get("mode", 2)}]
            if not symbols or not isinstance(symbols, list):
                self._error(client, "INVALID_PARAMETERS",
                            "Either symbols or unsubscribe_all is required")
                return
            for entry in symbols:
                if not isinstance(entry, dict) or not entry.get("symbol") \
                        or not entry.get("exchange") or not isinstance(entry["symbol"], str) \
                        or not isinstance(entry["exchange"], str):
                    continue
                try:
                    mode = wire.parse_mode(entry.get("mode", 2))
                except ValueError as exc:
                    failed.append({"symbol": entry["symbol"], "exchange": entry["exchange"],
                                   "status": "error", "message": str(exc), "broker": broker})
                    continue
                targets.append((entry["symbol"], entry["exchange"], mode))
        done: list[dict[str, Any]] = []
        for symbol, exchange, mode in targets:
            key = (symbol, exchange)
            modes = client.subs.get(key)
            if modes is not None:
                modes.discard(mode)
                if not modes:
                    del client.subs[key]
                    subscribers = self._index.get(key)
                    if subscribers is not None:
                        subscribers.discard(client)
                        if not subscribers:
                            del self._index[key]
            done.append({"symbol": symbol, "exchange": exchange, "status": "success",
                         "broker": broker})
        status = "success" if not failed else ("partial" if done else "error")
        reply: dict[str, Any] = {"type": "unsubscribe", "status": status,
                                 "message": "Unsubscription processing complete",
                                 "successful": done, "failed": failed, "broker": broker}
        if data.get("request_id") is not None:
            reply["request_id"] = data["request_id"]
        self._send(client, reply)
