"""The operator control channel: the engine's Unix-socket server, its client, and the status report.

Owns how an operator talks to a running engine (``run.py status|pause|resume|kill|flatten|unhalt``)
and how the answer to ``status`` is rendered. The engine itself is reached through the
``ControlHandler`` protocol; what a command *does* is the engine's business, not this module's.

Wire protocol (JSON lines over a Unix stream socket; a connection may carry several requests):

    request   {"command": "status"|"pause"|"resume"|"kill"|"flatten"|"unhalt", "args": {...}}
    reply     {"ok": true, "result": {...}}   or   {"ok": false, "error": "one line"}

A command's result should carry a one-line ``"summary"``; the CLI prints it. A handler refuses an
operator request (an unknown strategy, say) by raising ``CommandRejected``; any other exception is
logged with its traceback and answered as ``"<command> failed: ..."``. The server never crashes on
a request: bad JSON, a wrong shape, an unknown command or a line over ``max_request_bytes`` each
get an error reply.

Fault injection for tests and drills: ``{"command": "chaos", "args": {"actor": NAME}}`` makes the
named actor crash (``engine.messages.Crash``); without ``actor`` it lists the names that can be
crashed. It is refused unless the server was started with ``chaos_enabled`` (``[control]
chaos_enabled = true``; off by default), and it is not a ``run.py`` command.

Access control, three layers: the socket's directory is mode 0700 (created so, or refused if it
already exists with wider access or another owner), the socket file is chmod 0600, and every
connection's peer uid (``SO_PEERCRED``) must equal the engine's ``os.getuid()``; any other uid is
refused and logged. A lock file beside the socket (``<socket>.lock``, holding the owner's pid;
left in place after a stop) is held with ``flock`` while the server runs, so two engines cannot
both claim the path; a socket file left by a killed engine is detected (connecting to it is
refused) and replaced, while a live one stops the second engine with "another engine is running
(pid N)". Connections in progress when ``stop`` is called finish on their own threads.

The status dict (``EngineStatus`` below; every key optional, JSON types only). Times are epoch
seconds (rendered in IST), money in rupees, R as a multiple of the initial risk:

    connection  openalgo_url: str, websocket: str ("connected", "reconnecting", ...),
                last_tick_ts: float, subscribed: int, live: int, coverage: float (percent)
    api         authenticated: bool | None (the last REST call: key accepted / refused /
                no answer), reachable: bool, last_request: str ("POST placeorder"),
                last_response: str ("200 ok, 41 ms"), last_order_id: str, reconciled: bool,
                reconcile_hold: str (why entries are held), divergent: {symbol: {engine,
                broker}}
    pipeline    bars_generated: int, vwap_active: int (symbols with a live VWAP),
                stale: list of symbol names or of {"symbol": str, "age_s": float | None}
    positions   list of {symbol, strategy, quantity (signed), average_price, ltp, pnl, stop,
                price_pending (of the quantity, filled with the broker's price not known yet)}
    risk        state ("ACTIVE" | "PAUSED" | "KILLED" | "REDUCING" | "HALTED"), halt_reason, paused,
                realized_pnl, unrealized_pnl, r, realized_r, unrealized_r,
                limits: {name: value}, strategies: {name: the same fields, per strategy}
    supervisor  restarts: int, by_child: {name: int}, state ("running" | "safe_stopped"),
                rss_mib: the engine process's resident memory

Anything missing or of the wrong type renders as "unknown"; ``render_status`` never raises on a
JSON-shaped dict. The last section, ``[RECOMMENDATION]``, is one line chosen by ``recommend``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TypedDict

from loguru import logger

from engine.app.control_settings import ControlSettings
from engine.runtime.clock import fmt_ist

ACTION_COMMANDS = ("pause", "resume", "kill", "flatten", "unhalt")
CONTROL_COMMANDS = ("status", *ACTION_COMMANDS)
CHAOS_COMMAND = "chaos"  # fault injection; only with chaos_enabled (see the module docstring)
MAX_UNIX_PATH_BYTES = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
MAX_REPLY_BYTES = 16 * 1024 * 1024
_UCRED = struct.Struct("iII")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ControlError(Exception):
    """A control-channel problem, phrased as one line."""


class NoEngineRunning(ControlError):
    """Nothing listens on the control socket."""


class EngineAlreadyRunning(ControlError):
    """Another live engine owns the control socket."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"another engine is running (pid {pid if pid else 'unknown'})")


class CommandFailed(ControlError):
    """The engine answered a request with ``ok: false``."""


class CommandRejected(ControlError):
    """Raised by a handler to refuse an operator request; the message goes back as the error."""


# ---------------------------------------------------------------------------------------------
# The status shape
# ---------------------------------------------------------------------------------------------


class ConnectionStatus(TypedDict, total=False):
    openalgo_url: str
    websocket: str
    last_tick_ts: float
    subscribed: int
    live: int
    coverage: float


class ApiStatus(TypedDict, total=False):
    authenticated: bool
    last_request: str
    last_response: str
    last_order_id: str


class PipelineStatus(TypedDict, total=False):
    bars_generated: int
    vwap_active: int
    stale: list[Any]  # symbol names, or {"symbol": str, "age_s": float | None}


class PositionStatus(TypedDict, total=False):
    symbol: str
    strategy: str
    quantity: int
    average_price: float
    ltp: float
    pnl: float
    stop: float
    price_pending: int


class RiskStatus(TypedDict, total=False):
    state: str
    halt_reason: str
    realized_pnl: float
    unrealized_pnl: float
    r: float
    realized_r: float
    unrealized_r: float
    limits: dict[str, Any]
    strategies: dict[str, RiskStatus]


class SupervisorStatus(TypedDict, total=False):
    restarts: int
    by_child: dict[str, int]
    state: str


class EngineStatus(TypedDict, total=False):
    connection: ConnectionStatus
    api: ApiStatus
    pipeline: PipelineStatus
    positions: list[PositionStatus]
    risk: RiskStatus
    supervisor: SupervisorStatus


class ControlHandler(Protocol):
    """What the engine implements to be controlled."""

    def status(self) -> dict[str, Any]: ...

    def command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "no detail"


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": _one_line(message)}


def handle_request(handler: ControlHandler, raw: bytes, *,
                   chaos_enabled: bool = False) -> dict[str, Any]:
    """Answer one request line; every problem becomes an error reply, never an exception.
    ``chaos`` is passed to the handler only when ``chaos_enabled``."""
    try:
        request = json.loads(raw.decode("utf-8"))  # bytes would be sniffed as UTF-16/32
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return _error(f"malformed request: not JSON ({reason})")
    if not isinstance(request, dict):
        return _error("malformed request: expected a JSON object with 'command' and 'args'")
    extra = sorted(set(request) - {"command", "args"})
    if extra:
        return _error(f"malformed request: unexpected keys {', '.join(map(repr, extra))}")
    command = request.get("command")
    if command == CHAOS_COMMAND and not chaos_enabled:
        return _error("chaos is disabled: set [control] chaos_enabled = true (tests and drills "
                      "only)")
    if command not in CONTROL_COMMANDS and command != CHAOS_COMMAND:
        return _error(f"unknown command {command!r}; known: {', '.join(CONTROL_COMMANDS)}")
    args = request.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return _error("malformed request: 'args' must be a JSON object")
    try:
        result = handler.status() if command == "status" else handler.command(command, args)
    except CommandRejected as exc:
        logger.warning("control: {} refused: {}", command, exc)
        return _error(str(exc))
    except Exception as exc:
        logger.exception("control: {} failed", command)
        return _error(f"{command} failed: {type(exc).__name__}: {exc}")
    if not isinstance(result, Mapping):
        logger.error("control: {} returned {} instead of a dict", command, type(result).__name__)
        return _error(f"{command} failed: the engine returned no result")
    return {"ok": True, "result": dict(result)}


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """One JSON line; values JSON cannot hold (dates, enums) are sent as their text."""
    try:
        text = json.dumps(reply, default=str, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        logger.error("control: reply could not be encoded: {}", exc)
        text = json.dumps(_error(f"the engine's answer could not be encoded: {exc}"))
    return text.encode("utf-8") + b"\n"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s
        super().setup()

    def handle(self) -> None:
        pid, uid, _ = peer_credentials(self.request)
        if uid != self.server.owner_uid:
            logger.warning("control: refused a connection from uid {} (pid {}); only uid {} may "
                           "control this engine", uid, pid, self.server.owner_uid)
            self._send(_error(f"permission denied: uid {uid} may not control this engine"))
            return
        limit = self.server.max_request_bytes
        while True:
            try:
                line = self.rfile.readline(limit + 1)
            except OSError:  # idle timeout or the client went away
                return
            if not line:
                return
            if len(line) > limit and not line.endswith(b"\n"):
                logger.warning("control: refused a request over {} bytes from pid {}", limit, pid)
                self._send(_error(f"request too large (limit {limit} bytes)"))
                return
            if not line.strip():
                continue
            reply = handle_request(self.server.handler, line,
                                   chaos_enabled=self.server.chaos_enabled)
            self._log(line, reply, pid)
            if not self._send(reply):
                return

    def _send(self, reply: Mapping[str, Any]) -> bool:
        try:
            self.wfile.write(encode_reply(reply))
            self.wfile.flush()
        except OSError:
            return False
        return True

    @staticmethod
    def _log(line: bytes, reply: Mapping[str, Any], pid: int) -> None:
        try:
            command = json.loads(line).get("command")
        except (ValueError, AttributeError):
            command = None
        outcome = "ok" if reply.get("ok") else f"error: {reply.get('error')}"
        if command == "status":
            logger.debug("control: status from pid {}: {}", pid, outcome)
        else:
            logger.info("control: {} from pid {}: {}", command, pid, outcome)


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, handler: ControlHandler, *, max_request_bytes: int,
                 idle_timeout_s: float, chaos_enabled: bool) -> None:
        self.handler = handler
        self.chaos_enabled = chaos_enabled
        self.max_request_bytes = max_request_bytes
        self.idle_timeout_s = idle_timeout_s
        self.owner_uid = os.getuid()
        super().__init__(path, _RequestHandler, bind_and_activate=False)


class ControlServer:
    """The engine's end of the control channel; ``start()`` to listen, ``stop()`` to close.

    Also a context manager. ``start`` raises ``EngineAlreadyRunning`` when a live engine owns
    ``path`` and ``ControlError`` when the path cannot be used safely.
    """

    def __init__(self, path: str | os.PathLike[str], handler: ControlHandler, *,
                 max_request_bytes: int = 65536, idle_timeout_s: float = 10.0,
                 chaos_enabled: bool = False) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._handler = handler
        self._max_request_bytes = max_request_bytes
        self._idle_timeout_s = idle_timeout_s
        self._chaos_enabled = chaos_enabled
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None

    @classmethod
    def from_settings(cls, settings: ControlSettings, handler: ControlHandler) -> ControlServer:
        return cls(settings.socket_path, handler, max_request_bytes=settings.max_request_bytes,
                   idle_timeout_s=settings.idle_timeout_s, chaos_enabled=settings.chaos_enabled)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        if len(os.fsencode(self.path)) > MAX_UNIX_PATH_BYTES:
            raise ControlError(f"control socket path too long ({len(os.fsencode(self.path))} "
                               f"bytes, at most {MAX_UNIX_PATH_BYTES}): {self.path}")
        _private_directory(self.path.parent)
        self._lock_fd = _acquire_lock(self.lock_path, self.path)
        try:
            _remove_stale_socket(self.path)
            server = _UnixServer(str(self.path), self._handler,
                                 max_request_bytes=self._max_request_bytes,
                                 idle_timeout_s=self._idle_timeout_s,
                                 chaos_enabled=self._chaos_enabled)
            try:
                server.server_bind()
                os.chmod(self.path, 0o600)
                server.server_activate()
            except OSError as exc:
                server.server_close()
                if exc.errno == errno.EADDRINUSE:
                    raise EngineAlreadyRunning(_socket_owner_pid(self.path)) from None
                raise ControlError(f"cannot listen on {self.path}: {exc.strerror}") from None
        except BaseException:
            self._release_lock()
            raise
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="control-server", daemon=True)
        self._thread.start()
        logger.info("control: listening on {}", self.path)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._release_lock()
        logger.info("control: stopped listening on {}", self.path)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check that an existing one is private and ours."""
    try:
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        return
    except FileExistsError:
        pass
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"control socket directory {directory} is not a directory")
    if st.st_uid != os.getuid():
        raise ControlError(f"control socket directory {directory} belongs to uid {st.st_uid}, "
                           f"not to this user (uid {os.getuid()})")
    if st.st_mode & 0o077:
        raise ControlError(f"control socket directory {directory} is open to other users "
                           f"(mode {stat.S_IMODE(st.st_mode):04o}); use a private directory "
                           "(mode 0700)")


def _acquire_lock(lock_path: Path, socket_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        recorded = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        pid = _socket_owner_pid(socket_path)
        raise EngineAlreadyRunning(pid or (int(recorded) if recorded.isdigit() else None)) \
            from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def _socket_owner_pid(path: Path) -> int | None:
    """The pid listening on ``path``, or None when nothing accepts a connection there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except OSError:
            return None
        return peer_credentials(probe)[0]


def _remove_stale_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            logger.info("control: replaced a stale control socket at {}", path)
            return
        except OSError as exc:
            raise ControlError(f"cannot check the existing control socket {path}: "
                               f"{exc.strerror}") from None
        raise EngineAlreadyRunning(peer_credentials(probe)[0])


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


def send_command(path: str | os.PathLike[str], name: str, args: Mapping[str, Any] | None = None,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Send one command to the engine at ``path`` and return its result.

    Raises ``NoEngineRunning`` when nothing listens there, ``CommandFailed`` when the engine
    answers with an error, and ``ControlError`` for anything else (timeout, bad reply).
    """
    if name not in CONTROL_COMMANDS and name != CHAOS_COMMAND:
        raise ControlError(f"unknown command {name!r}; known: {', '.join(CONTROL_COMMANDS)}")
    request = json.dumps({"command": name, "args": dict(args or {})}).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise NoEngineRunning(f"no engine is running (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise NoEngineRunning(f"no engine is running (stale control socket at {path})") \
                from None
        except PermissionError:
            raise ControlError(f"permission denied on the control socket {path}: it belongs to "
                               "another user") from None
        except TimeoutError:
            raise ControlError(f"the engine did not accept a connection within {timeout:g} s") \
                from None
        except OSError as exc:
            raise ControlError(f"cannot connect to the control socket {path}: "
                               f"{exc.strerror or exc}") from None
        try:
            sock.sendall(request)
        except BrokenPipeError:
            pass  # the engine answered (a refusal) and closed before reading: read that answer
        except TimeoutError:
            raise ControlError(f"the engine did not take the request within {timeout:g} s") \
                from None
        line = _read_line(sock, timeout, name)
    return _parse_reply(line)


def _read_line(sock: socket.socket, timeout: float, name: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ControlError(f"the engine did not answer {name} within {timeout:g} s (it may "
                               "still be working on it; check `run.py status`)") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
        if size > MAX_REPLY_BYTES:
            raise ControlError(f"the engine's reply exceeds {MAX_REPLY_BYTES} bytes")
    data = b"".join(chunks)
    if not data:
        raise ControlError("the engine closed the connection without answering")
    return data.split(b"\n", 1)[0]


def _parse_reply(line: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError("malformed reply from the engine (not JSON)") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError("malformed reply from the engine (no 'ok' field)")
    if not reply["ok"]:
        raise CommandFailed(_one_line(reply.get("error")))
    result = reply.get("result")
    if not isinstance(result, dict):
        raise ControlError("malformed reply from the engine (no result)")
    return result


def summarize(name: str, result: Mapping[str, Any]) -> str:
    """The one line the CLI prints for a command's result."""
    summary = result.get("summary")
    if isinstance(summary, str) and summary.strip():
        return _one_line(summary)
    details = ", ".join(f"{k}={v}" for k, v in result.items())
    return f"{name}: ok" + (f" ({_one_line(details)})" if details else "")


# ---------------------------------------------------------------------------------------------
# Status rendering
# ---------------------------------------------------------------------------------------------

UNKNOWN = "unknown"
_LABEL_WIDTH = 20
_FEED_UP = {"connected", "replay"}  # feed states that need nothing from the operator
_FEED_NO_INFO = {"unknown", "none"}


def _section(status: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = status.get(key)
    return value if isinstance(value, Mapping) else {}


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _text(value: Any) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, str):
        return _one_line(value) if value.strip() else "none"
    if isinstance(value, (bool, int, float)):
        return str(value)
    return UNKNOWN


def _num(value: Any, fmt: str = ",") -> str:
    if _is_number(value):
        return format(value, fmt)
    return _text(value) if isinstance(value, str) else UNKNOWN


def _money(value: Any) -> str:
    return _num(value, "+,.2f")


def _r(value: Any) -> str:
    return _num(value, "+.2f") + ("R" if _is_number(value) else "")


def _when(value: Any) -> str:
    if _is_number(value):
        try:
            return fmt_ist(value, with_date=True)
        except (OverflowError, OSError, ValueError):
            return UNKNOWN
    return _text(value) if isinstance(value, str) else UNKNOWN


def _line(label: str, value: str) -> str:
    return f"  {label + ':':<{_LABEL_WIDTH}} {value}"


def _stale_names(pipeline: Mapping[str, Any]) -> list[str] | None:
    stale = pipeline.get("stale")
    if not isinstance(stale, list):
        return None
    names: list[str] = []
    for item in stale:
        symbol = item.get("symbol") if isinstance(item, Mapping) else item
        names.append(_text(symbol))
    return names


def _render_connection(conn: Mapping[str, Any]) -> list[str]:
    subscribed, live, coverage = conn.get("subscribed"), conn.get("live"), conn.get("coverage")
    cov = f"{coverage:.1f}%" if _is_number(coverage) else UNKNOWN
    if _is_number(live) and _is_number(subscribed):
        cov += f" ({live}/{subscribed} live)"
    return [
        "[CONNECTION STATUS]",
        _line("OpenAlgo URL", _text(conn.get("openalgo_url"))),
        _line("WebSocket", _text(conn.get("websocket"))),
        _line("Last tick", _when(conn.get("last_tick_ts"))),
        _line("Symbols subscribed", _num(subscribed)),
        _line("Coverage", cov),
    ]


def _render_api(api: Mapping[str, Any]) -> list[str]:
    auth, reachable = api.get("authenticated"), api.get("reachable")
    if isinstance(auth, bool):
        auth_text = "ok (last call)" if auth else "FAILED (the key was refused)"
    elif reachable is False:
        auth_text = "unknown (the broker did not answer the last call)"
    else:
        auth_text = "unknown (no REST call yet)"
    lines = ["[API STATUS]", _line("Authentication", auth_text)]
    if isinstance(reachable, bool):
        lines.append(_line("Broker", "reachable" if reachable else "UNREACHABLE"))
    lines += [_line("Last request", _text(api.get("last_request"))),
              _line("Last response", _text(api.get("last_response"))),
              _line("Last order id", _text(api.get("last_order_id")) if api.get(
                  "last_order_id") is not None else "none yet")]
    hold, divergent = api.get("reconcile_hold"), api.get("divergent")
    if "reconciled" in api:
        recon = "ok" if api.get("reconciled") else "not yet"
        if isinstance(hold, str) and hold.strip():
            recon = f"ENTRIES HALTED: {_one_line(hold)}"
        lines.append(_line("Reconciliation", recon))
    if isinstance(divergent, Mapping) and divergent:
        lines.append(_line("Diverges from broker", _divergence(divergent)))
    return lines


def _divergence(divergent: Mapping[str, Any]) -> str:
    parts = []
    for symbol, q in divergent.items():
        q = q if isinstance(q, Mapping) else {}
        parts.append(f"{symbol} engine {_num(q.get('engine'), '+,')} broker "
                     f"{_num(q.get('broker'), '+,')}")
    return "; ".join(parts)


def _render_pipeline(pipeline: Mapping[str, Any]) -> list[str]:
    names = _stale_names(pipeline)
    if names is None:
        stale = UNKNOWN
    elif not names:
        stale = "none"
    else:
        shown = ", ".join(names[:5]) + (f", … (+{len(names) - 5})" if len(names) > 5 else "")
        stale = f"{len(names)} ({shown})"
    vwap, bars = pipeline.get("vwap_active"), pipeline.get("bars_generated")
    return [
        "[DATA PIPELINE]",
        *([_line("Bars generated", _num(bars))] if bars is not None else []),
        *([_line("VWAP active", f"{vwap:,} symbols" if _is_number(vwap) else _num(vwap))]
          if vwap is not None else []),
        _line("Stale symbols", stale),
    ]


def _render_position(pos: Any) -> str:
    if not isinstance(pos, Mapping):
        return f"  {UNKNOWN}"
    pending = pos.get("price_pending")
    avg = f"avg {_num(pos.get('average_price'), ',.2f')}"
    if _is_number(pending) and pending:
        whole = pending == abs(pos.get("quantity") or 0)
        avg = "avg PRICE PENDING" if whole else f"{avg} ({_num(pending, ',')} PRICE PENDING)"
    parts = [f"{_text(pos.get('symbol')):<24}", f"qty {_num(pos.get('quantity'), '+,')}",
             avg, f"ltp {_num(pos.get('ltp'), ',.2f')}",
             f"P&L {_money(pos.get('pnl'))}",
             f"stop {_num(pos.get('stop'), ',.2f')}" if pos.get("stop") is not None
             else "stop NONE"]
    if pos.get("strategy") is not None:
        parts.append(f"[{_text(pos.get('strategy'))}]")
    return "  " + "  ".join(parts)


def _render_positions(positions: Any) -> list[str]:
    if not isinstance(positions, list):
        return ["[POSITIONS]", f"  {UNKNOWN}"]
    if not positions:
        return ["[POSITIONS]", "  none"]
    return ["[POSITIONS]", *(_render_position(p) for p in positions)]


def _risk_lines(risk: Mapping[str, Any], indent: str = "") -> list[str]:
    state = _text(risk.get("state"))
    reason = risk.get("halt_reason")
    if isinstance(reason, str) and reason.strip():
        state += f" ({_one_line(reason)})"
    pnl = (f"realized {_money(risk.get('realized_pnl'))}  "
           f"unrealized {_money(risk.get('unrealized_pnl'))}")
    r = _r(risk.get("r"))
    if risk.get("realized_r") is not None or risk.get("unrealized_r") is not None:
        r += (f" (realized {_r(risk.get('realized_r'))}, "
              f"unrealized {_r(risk.get('unrealized_r'))})")
    limits = risk.get("limits")
    if isinstance(limits, Mapping):
        limit_text = ", ".join(f"{k} {_text(v)}" for k, v in limits.items()) or "none"
    else:
        limit_text = UNKNOWN
    lines = [indent + _line("State", state)]
    if isinstance(risk.get("paused"), bool):
        lines.append(indent + _line("Paused", "yes (new entries blocked)" if risk["paused"]
                                    else "no"))
    lines += [indent + _line("P&L", pnl), indent + _line("R", r)]
    if limits is not None or not indent:
        lines.append(indent + _line("Limits", limit_text))
    return lines


def _render_risk(risk: Mapping[str, Any]) -> list[str]:
    lines = ["[RISK]", *_risk_lines(risk)]
    strategies = risk.get("strategies")
    if isinstance(strategies, Mapping):
        for name, sub in strategies.items():
            lines.append(f"  strategy {_text(name)}:")
            lines.extend(_risk_lines(sub if isinstance(sub, Mapping) else {}, "  "))
    return lines


def _render_supervisor(sup: Mapping[str, Any]) -> list[str]:
    restarts = _num(sup.get("restarts"))
    by_child = sup.get("by_child")
    if isinstance(by_child, Mapping) and by_child:
        restarts += " (" + ", ".join(f"{k} {_num(v)}" for k, v in by_child.items()) + ")"
    rss = sup.get("rss_mib")
    return ["[SUPERVISOR]", _line("State", _text(sup.get("state"))),
            _line("Restarts", restarts),
            _line("Memory", f"{_num(rss, ',.1f')} MiB resident" if _is_number(rss) else UNKNOWN)]


def _render_day(day: Mapping[str, Any]) -> list[str]:
    """The trading-day lifecycle (engine/app/daily.py); nothing when the engine has none."""
    if not day:
        return []
    nxt = f"{_text(day.get('next_state'))} at {_text(day.get('next_at'))}" \
        if day.get("next_state") else UNKNOWN
    return ["[DAY]", _line("State", f"{_text(day.get('state'))} since {_text(day.get('since'))}"
                           f" ({_text(day.get('trading_date'))})"),
            _line("Next", nxt), _line("Broker session", _text(day.get("broker_session")))]


def _halted(risk: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """(strategy or None for the engine, reason) for every HALTED risk state."""
    found: list[tuple[str | None, str]] = []
    if risk.get("state") == "HALTED":
        found.append((None, _text(risk.get("halt_reason"))))
    strategies = risk.get("strategies")
    if isinstance(strategies, Mapping):
        for name, sub in strategies.items():
            if isinstance(sub, Mapping) and sub.get("state") == "HALTED":
                found.append((str(name), _text(sub.get("halt_reason"))))
    return found


def recommend(status: Mapping[str, Any]) -> str:
    """The one thing the operator should do now, by rules in priority order, or "none"."""
    conn, api = _section(status, "connection"), _section(status, "api")
    pipeline, risk = _section(status, "pipeline"), _section(status, "risk")
    sup = _section(status, "supervisor")
    if not any((conn, api, pipeline, risk, sup)) and not isinstance(status.get("positions"),
                                                                    list):
        return "the engine reported no status: check its log"
    if sup.get("state") == "safe_stopped":
        return "the engine stopped itself safely: read the log, fix the cause, then restart it"
    halted = _halted(risk)
    if halted:
        who, reason = halted[0]
        target = f" --strategy {who}" if who else ""
        label = f"{who}: {reason}" if who else reason
        return f"risk halted ({label}): run `run.py unhalt{target}` after review"
    ws = conn.get("websocket")
    if api.get("authenticated") is False or ws == "auth_failed":
        return "OpenAlgo authentication failed: check OPENALGO_API_KEY and the OpenAlgo server"
    hold, divergent = api.get("reconcile_hold"), api.get("divergent")
    if (isinstance(hold, str) and hold.strip()) or (isinstance(divergent, Mapping)
                                                     and divergent):
        what = _one_line(hold) if isinstance(hold, str) and hold.strip() else \
            "positions diverge from the broker: " + _divergence(divergent)
        return (f"{what}: check the broker's books, then `run.py unhalt` to accept them (or "
                "`run.py flatten`)")
    if api.get("reachable") is False:
        return (f"the broker is unreachable (last call: {_text(api.get('last_response'))}): "
                "check the OpenAlgo server and the network")
    if isinstance(ws, str) and ws.strip() and ws.lower() not in _FEED_UP | _FEED_NO_INFO:
        return (f"market feed is {_one_line(ws)}: check the OpenAlgo server and the network "
                "(the engine reconnects by itself)")
    stale = _stale_names(pipeline)
    if stale:
        return (f"{len(stale)} stale symbol{'s' if len(stale) != 1 else ''} "
                f"({', '.join(stale[:3])}{', …' if len(stale) > 3 else ''}): check the feed "
                "subscription and the broker's data for them")
    state = risk.get("state")
    if state == "KILLED":
        return "kill switch on (entries cancelled and blocked, stops kept): " \
               "`run.py resume` to trade again"
    if state == "PAUSED":
        return "paused (new entries blocked): `run.py resume` to trade again"
    if state == "REDUCING":
        return "risk is reducing exposure: watch the positions; no action needed unless it stalls"
    return "none"


def render_status(status: Mapping[str, Any]) -> str:
    """The operator's status report, section by section (see the module docstring)."""
    if not isinstance(status, Mapping):
        status = {}
    lines = [
        *_render_day(_section(status, "lifecycle")),
        *_render_connection(_section(status, "connection")),
        *_render_api(_section(status, "api")),
        *_render_pipeline(_section(status, "pipeline")),
        *_render_positions(status.get("positions")),
        *_render_risk(_section(status, "risk")),
        *_render_supervisor(_section(status, "supervisor")),
        "[RECOMMENDATION]",
        f"  {recommend(status)}",
    ]
    return "\n".join(lines)
