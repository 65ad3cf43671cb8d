"""A real headless Chromium driven over the Chrome DevTools Protocol, for tests that must see a
page the way a browser does (does it load, are its images decoded, what text does it show).

``chromium_or_skip`` finds the browser: missing, the test is skipped with the reason, except
when the ``CI`` environment variable is set, where it fails (CI must never skip silently).
``Browser`` starts Chromium with a throw-away profile and a DevTools port chosen by Chromium
(read from ``DevToolsActivePort``), talks to it with ``websocket-client`` and always kills the
browser's whole process group on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websocket

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0")

# Waits for every image to decode (or fail), then reports what the page shows.
_INSPECT = """(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  return {
    title: document.title,
    text: document.body ? document.body.innerText : "",
    images: images.map(i => ({alt: i.alt, naturalWidth: i.naturalWidth,
                              naturalHeight: i.naturalHeight, complete: i.complete,
                              scheme: i.src.split(":")[0]})),
  };
})()"""


class BrowserError(Exception):
    """Chromium did not start, answer or load the page in time."""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_skip() -> str:
    """The Chromium executable; skips the test when there is none (fails it under ``CI``)."""
    path = find_chromium()
    if path is not None:
        return path
    reason = f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}; apt-get install " \
             f"chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser test must run", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True, slots=True)
class PageImage:
    alt: str
    natural_width: int
    natural_height: int
    complete: bool
    scheme: str  # of its src: "data" for an embedded image


@dataclass(frozen=True, slots=True)
class PageView:
    """What the browser showed after the page loaded and its images decoded."""

    title: str
    text: str  # document.body.innerText
    images: tuple[PageImage, ...]
    requested: tuple[str, ...]  # every URL the page asked for (Network.requestWillBeSent)


class Browser:
    """One headless Chromium; use as a context manager."""

    def __init__(self, executable: str, work_dir: Path, *, timeout: float = 30.0) -> None:
        self.executable = executable
        self.profile = work_dir / "chromium-profile"
        self.log = work_dir / "chromium.log"
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: websocket.WebSocket | None = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._session: str | None = None  # the tab ``load`` opened last

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        try:
            with self.log.open("wb") as log:
                self._proc = subprocess.Popen(
                    [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            self._ws = websocket.create_connection(self._devtools_url(), timeout=self.timeout,
                                                   suppress_origin=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and kill the browser's process group (idempotent)."""
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue

    def _devtools_url(self) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}: "
                                   f"{self._log_tail()}")
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.05)
        raise BrowserError(f"no DevToolsActivePort after {self.timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " | ".join(text.strip().splitlines()[-5:])

    # -- the protocol ---------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any] | None = None,
              session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        assert self._ws is not None, "the browser is not running"
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def _receive(self) -> dict[str, Any]:
        assert self._ws is not None, "the browser is not running"
        try:
            message: dict[str, Any] = json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException:
            raise BrowserError(f"no answer from chromium within {self.timeout} s") from None
        if "method" in message:
            self._events.append(message)
        return message

    def _wait_event(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        seen = 0
        while time.monotonic() < deadline:
            for event in self._events[seen:]:
                if event["method"] == method and event.get("sessionId") == session:
                    return
            seen = len(self._events)
            self._receive()
        raise BrowserError(f"no {method} within {self.timeout} s")

    def load(self, url: str) -> PageView:
        """Open ``url`` in a new tab, wait for its load event and its images, and report."""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target,
                                                       "flatten": True})["sessionId"]
        self._send("Page.enable", session=session)
        self._send("Network.enable", session=session)
        self._events.clear()
        navigation = self._send("Page.navigate", {"url": url}, session=session)
        if navigation.get("errorText"):
            raise BrowserError(f"navigating to {url}: {navigation['errorText']}")
        self._wait_event("Page.loadEventFired", session)
        self._session = session
        value = self.evaluate(_INSPECT)
        requested = tuple(e["params"]["request"]["url"] for e in self._events
                          if e["method"] == "Network.requestWillBeSent"
                          and e.get("sessionId") == session)
        return PageView(
            title=value["title"], text=value["text"], requested=requested,
            images=tuple(PageImage(alt=i["alt"], natural_width=i["naturalWidth"],
                                   natural_height=i["naturalHeight"], complete=i["complete"],
                                   scheme=i["scheme"]) for i in value["images"]))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript ``expression`` (promises awaited) in the last loaded tab."""
        assert self._session is not None, "no page loaded"
        result = self._send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                 "returnByValue": True}, session=self._session)
        if "exceptionDetails" in result:
            raise BrowserError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Evaluate ``expression`` in the last loaded tab until it is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"still false after {timeout or self.timeout} s: "
                                   f"{expression}")
            time.sleep(0.1)
