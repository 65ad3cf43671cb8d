"""The dashboard's web server: a read-only Starlette app on 127.0.0.1, behind a token, served by
uvicorn on a thread of its own.

Owns ``DashboardServer``; its settings (section ``[dashboard]``) are in ``settings`` and
``dashboard_channel`` (the server for a trading engine while it runs) in ``channel``. What the
pages show is ``engine.app.dashboard.view``'s; the rules are in docs/operations/dashboard.md:

- it listens on 127.0.0.1 only, and every route but the static scripts needs the token (the
  ``token`` query parameter, or ``Authorization: Bearer``), compared in constant time; a wrong or
  missing one is a 401. Only GET exists: nothing on the page can act on the engine;
- the token is new for every start (``secrets.token_urlsafe``). The full link goes to
  ``<state_dir>/dashboard.url`` (mode 0600, removed at stop); the log shows the token's first
  four characters only, and uvicorn's access log (which would print query strings) is off;
- a port in use (or any other bind failure) is one ERROR line, and the engine trades on without
  a dashboard; it never stops an engine;
- live updates: ``/api/events`` is a server-sent-events stream that sends the snapshot whenever
  its ``version`` changes (checked every ``push_interval_s``), and a comment line as keep-alive.
  Snapshots are built at most once per interval whatever the number of open pages.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from engine.app.dashboard.settings import DashboardSettings
from engine.app.dashboard.view import DashboardView

HOST = "127.0.0.1"
URL_FILE = "dashboard.url"
_START_TIMEOUT_S = 10.0


class DashboardError(Exception):
    """The dashboard cannot be served (its port is taken, say); one line."""


def redact(token: str) -> str:
    """How the token appears in a log line: its first four characters."""
    return f"{token[:4]}…"


class _Snapshots:
    """The latest snapshot, rebuilt at most once per ``interval`` for every open page."""

    def __init__(self, view: DashboardView, interval: float) -> None:
        self.view = view
        self.interval = interval
        self._lock = threading.Lock()
        self._at = -1e18
        self._last: dict[str, Any] = {}

    def latest(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at >= self.interval:
                self._last = self.view.snapshot()
                self._at = time.monotonic()
            return self._last


class DashboardServer:
    """The dashboard of one ``DashboardView`` at http://127.0.0.1:<port>/?token=..."""

    def __init__(self, view: DashboardView, settings: DashboardSettings, *,
                 token: str | None = None) -> None:
        self.view = view
        self.settings = settings
        self.token = token or secrets.token_urlsafe(24)
        self.port = settings.port
        self._snapshots = _Snapshots(view, settings.push_interval_s)
        self._closing = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's link, token included (for the URL file and a test; never logged)."""
        return f"http://{HOST}:{self.port}/?token={self.token}"

    # -- the app ---------------------------------------------------------------------------------
    def app(self) -> Any:
        from sse_starlette.sse import EventSourceResponse
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        def refused(request: Request) -> Response | None:
            given = request.query_params.get("token", "")
            auth = request.headers.get("authorization", "")
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given and secrets.compare_digest(given.encode(), self.token.encode()):
                return None
            return PlainTextResponse("the dashboard needs its token: open the link in "
                                     "<state_dir>/dashboard.url\n", status_code=401)

        async def page(request: Request) -> Response:
            return refused(request) or HTMLResponse(_static("index.html"), headers=_NO_STORE)

        async def state(request: Request) -> Response:
            return refused(request) or JSONResponse(
                await asyncio.to_thread(self._snapshots.latest), headers=_NO_STORE)

        async def candles(request: Request) -> Response:
            denied = refused(request)
            if denied:
                return denied
            symbol = request.query_params.get("symbol", "")
            if not symbol:
                return PlainTextResponse("symbol is required\n", status_code=400)
            payload = await asyncio.to_thread(self.view.candles, symbol)
            return JSONResponse(payload, headers=_NO_STORE)

        async def events(request: Request) -> Response:
            return refused(request) or EventSourceResponse(self._stream(request), ping=15,
                                                           headers=_NO_STORE)

        static = files("engine.report").joinpath("static")
        own = files("engine.app.dashboard").joinpath("static")
        return Starlette(routes=[
            Route("/", page), Route("/api/state", state), Route("/api/candles", candles),
            Route("/api/events", events),
            Mount("/static/report", StaticFiles(directory=str(static)), name="report"),
            Mount("/static", StaticFiles(directory=str(own)), name="static")])

    async def _stream(self, request: Any) -> AsyncIterator[dict[str, str]]:
        import orjson

        sent = ""
        while not self._closing.is_set():
            snap = await asyncio.to_thread(self._snapshots.latest)
            if snap.get("version") != sent:
                sent = str(snap.get("version"))
                yield {"event": "state", "data": orjson.dumps(snap).decode()}
            if await request.is_disconnected():
                return
            await asyncio.sleep(self.settings.push_interval_s)

    # -- serving ---------------------------------------------------------------------------------
    def start(self) -> DashboardServer:
        """Bind 127.0.0.1:<port> and serve on a thread; ``DashboardError`` when it cannot."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, self.settings.port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used " \
                f"({exc.strerror})"
            raise DashboardError(f"port {self.settings.port} on {HOST} {why} (set [dashboard] "
                                 f"port, 0 for any free one)") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2,
                                server_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise DashboardError(f"the server on {HOST}:{self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def close(self) -> None:
        """Stop serving and close the view's database."""
        self.stop()
        self.view.close()

    def write_url_file(self, state_dir: Path) -> Path:
        """The full link in ``<state_dir>/dashboard.url``, readable by the owner only."""
        path = state_dir / URL_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.url + "\n")
        os.chmod(path, 0o600)
        return path


_NO_STORE = {"Cache-Control": "no-store"}


def _static(name: str) -> str:
    return files("engine.app.dashboard").joinpath("static", name).read_text(encoding="utf-8")
