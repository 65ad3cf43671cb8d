"""Shared test helpers: an actor that collects what it is told, polling with a deadline, and
the environment every test's engine runs with (``TEST_ENV``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.runtime.actor import EngineActor

#: what the tests' engines read from the environment whatever the developer's shell holds: every
#: paper or live engine serves its dashboard on a free port, never the default 8780, so tests
#: running side by side (and an engine the developer runs meanwhile) never collide. conftest.py
#: puts it in ``os.environ`` (``load_config`` and every ``run.py`` subprocess see it); a test
#: that builds its configuration from an empty environment passes ``env=TEST_ENV``.
TEST_ENV = {"NIFTY_ENGINE__DASHBOARD__PORT": "0"}


class Collector(EngineActor):
    """Stands in for another actor: appends every message it is told to ``got`` (only those of
    ``kinds`` when given). Liveness pings, flush tokens and crashes are handled by the base."""

    def __init__(self, got: list[Any], *, kinds: tuple[type, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.got = got
        self.kinds = kinds

    def handle(self, message: Any) -> None:
        if not self.kinds or isinstance(message, self.kinds):
            self.got.append(message)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` real seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Like ``wait_for`` but fails the test when the condition never holds."""
    if not wait_for(cond, timeout):
        raise AssertionError("condition not met before the timeout")


class JsonHook:
    """A real HTTP server on loopback that records each POSTed JSON body (apprise's ``json://``
    target in the notifier tests). ``hang``: it never answers (a dead endpoint)."""

    def __init__(self, *, hang: bool = False) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls: list[tuple[str, dict[str, object]]] = []  # (path, body)
        self.bodies: list[dict[str, object]] = []
        self.hang = threading.Event() if hang else None
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if hook.hang is not None:
                    hook.hang.wait(10)  # never answers in time
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                hook.calls.append((self.path, body))
                hook.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Silent: the tests read what arrived, not the server's log."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.hang is not None:
            self.hang.set()
        self._httpd.shutdown()

    def __enter__(self) -> JsonHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
