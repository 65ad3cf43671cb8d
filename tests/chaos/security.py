"""Security checks run against a chaos run's live processes and the files it left behind.

Owns four checks, each returning an ``invariants.Check``:

- ``no_key_in_files``: the API key's raw bytes appear in no file under the run directory (logs,
  the engine database and its WAL / shared memory, the day report, the simulator's state files,
  the processes' captured output) nor in the control socket's directory;
- ``simulator_refuses_wrong_keys``: REST with a wrong key is ``AuthError`` (HTTP 403), and a
  WebSocket authenticating with one gets ``AUTHENTICATION_ERROR`` and no market data after a
  subscribe;
- ``control_refuses_other_users``: a forked child that drops to uid 65534 (nobody) cannot use
  the engine's control socket (needs root to run; reported as skipped otherwise);
- ``loopback_only``: every listening TCP socket of the engine and simulator processes (from
  ``/proc/net/tcp`` / ``tcp6`` and each process's file descriptors) is bound to 127.0.0.1 / ::1.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import websocket

from engine.broker import AuthError, BrokerError
from engine.openalgo.rest import OpenAlgoClient, RestSettings
from engine.runtime.clock import WallClock
from tests.chaos.invariants import Check

NOBODY = 65534
LISTEN = "0A"
LOOPBACK = {"127.0.0.1", "::1"}


def no_key_in_files(key: str, roots: Iterable[Path]) -> Check:
    needle = key.encode()
    scanned = 0
    leaks: list[str] = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                data = path.read_bytes()
            except OSError:
                continue  # a socket or a file removed meanwhile
            scanned += 1
            if needle in data:
                leaks.append(str(path))
    names = ", ".join(leaks)
    return Check("no API key in files", not leaks and scanned > 0,
                 f"key found in {names}" if leaks else f"{scanned} files scanned, key absent")


def simulator_refuses_wrong_keys(rest_url: str, ws_url: str, symbol: str) -> Check:
    wrong = "wrong-" + os.urandom(8).hex()
    problems: list[str] = []
    client = OpenAlgoClient(replace(RestSettings(), host=rest_url, retries=1), api_key=wrong,
                            clock=WallClock())
    try:
        client.funds()
        problems.append("REST accepted a wrong key")
    except AuthError:
        pass  # the expected answer: the key is refused, nothing to report
    except BrokerError as exc:
        problems.append(f"REST answered a wrong key with {type(exc).__name__}: {exc}")
    ws = websocket.create_connection(ws_url, timeout=5)
    try:
        ws.send(json.dumps({"action": "authenticate", "api_key": wrong}))
        reply = json.loads(ws.recv())
        if reply.get("code") != "AUTHENTICATION_ERROR":
            problems.append(f"WebSocket answered a wrong key with {reply}")
        ws.send(json.dumps({"action": "subscribe", "symbols": [
            {"symbol": symbol, "exchange": "NFO"}], "mode": 2}))
        data = _frames(ws, 1.5)
        if any(f.get("type") == "market_data" for f in data):
            problems.append("market data sent to an unauthenticated client")
        if not any(f.get("code") == "NOT_AUTHENTICATED" for f in data):
            problems.append(f"subscribe without authentication was not refused: {data}")
    finally:
        ws.close()
    return Check("simulator refuses keys", not problems,
                 "; ".join(problems) or "REST 403 and WebSocket AUTHENTICATION_ERROR for a "
                 "wrong key; subscribe refused, no market data")


def _frames(ws: websocket.WebSocket, seconds: float) -> list[dict[str, object]]:
    frames: list[dict[str, object]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ws.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            text = ws.recv()
        except websocket.WebSocketTimeoutException:
            break
        try:
            frame = json.loads(text)
        except ValueError:
            continue
        if isinstance(frame, dict):
            frames.append(frame)
    return frames


def control_refuses_other_users(socket_path: str) -> Check:
    if os.geteuid() != 0:
        return Check("control refuses others", True, "skipped: switching to uid 65534 needs "
                     "root")
    outcome = status_as_nobody(socket_path)
    refused = outcome == "EACCES" or "permission denied" in outcome
    return Check("control refuses others", refused,
                 f"uid {NOBODY} got {outcome[:120]!r}" if not refused
                 else f"uid {NOBODY} refused ({outcome[:60]})")


def status_as_nobody(path: str) -> str:
    """Fork a child that drops to uid 65534 and asks for status; what happened, as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no logging, no threads of its own, just the socket
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(5)
                    sock.connect(path)
                    try:
                        sock.sendall(b'{"command": "status"}\n')
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # refused at once: the refusal is still there to read
                    outcome = sock.recv(65536).decode() or "EOF"
            except PermissionError:
                outcome = "EACCES"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != LISTEN or fields[9] not in inodes:
                continue
            address, port = fields[1].split(":")
            found.append((_address(address, family), int(port, 16)))
    return found


def _address(hex_address: str, family: int) -> str:
    """/proc/net's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words)


def loopback_only(processes: Sequence[tuple[str, int]]) -> Check:
    seen: list[str] = []
    exposed: list[str] = []
    for name, pid in processes:
        for address, port in listening_sockets(pid):
            seen.append(f"{name} {address}:{port}")
            if address not in LOOPBACK:
                exposed.append(f"{name} {address}:{port}")
    return Check("loopback only", not exposed and bool(seen),
                 f"listening beyond loopback: {exposed}" if exposed
                 else f"listening: {', '.join(seen) or 'nothing (the check saw no socket)'}")
