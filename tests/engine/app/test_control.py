"""The control channel: real Unix sockets, a real (small) handler, the real CLI in a subprocess."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.app.control import (
    ACTION_COMMANDS,
    CommandFailed,
    CommandRejected,
    ControlError,
    ControlServer,
    ControlSettings,
    EngineAlreadyRunning,
    NoEngineRunning,
    encode_reply,
    handle_request,
    recommend,
    render_status,
    send_command,
    summarize,
)
from engine.runtime.clock import ist_epoch
from tests.chaos.security import NOBODY, status_as_nobody

ROOT = Path(__file__).resolve().parents[3]
HEADERS = ["[CONNECTION STATUS]", "[API STATUS]", "[DATA PIPELINE]", "[POSITIONS]", "[RISK]",
           "[SUPERVISOR]", "[RECOMMENDATION]"]
NEXT_STATE = {"pause": "PAUSED", "resume": "ACTIVE", "kill": "KILLED", "flatten": "HALTED",
              "unhalt": "ACTIVE"}


def full_status(state: str = "ACTIVE") -> dict[str, Any]:
    return {
        "connection": {"openalgo_url": "http://127.0.0.1:5000", "websocket": "connected",
                       "last_tick_ts": ist_epoch(2025, 9, 3, 10, 31, 5), "subscribed": 82,
                       "live": 82, "coverage": 100.0},
        "api": {"authenticated": True, "last_request": "POST placeorder",
                "last_response": "200 success, 41 ms", "last_order_id": "250903000012345"},
        "pipeline": {"bars_generated": 1234, "vwap_active": 82, "stale": []},
        "positions": [{"symbol": "NIFTY09SEP2524800CE", "strategy": "baseline_v1",
                       "quantity": -65, "average_price": 120.5, "ltp": 118.0, "pnl": 162.5,
                       "stop": 135.0}],
        "risk": {"state": state, "realized_pnl": 1200.0, "unrealized_pnl": 162.5, "r": 1.25,
                 "realized_r": 1.0, "unrealized_r": 0.25,
                 "limits": {"daily_r": "±5", "max_positions": 5}},
        "supervisor": {"restarts": 1, "by_child": {"feed": 1}, "state": "running",
                       "rss_mib": 1234.56},
    }


class Desk:
    """A small real handler: one strategy whose risk state the commands move."""

    def __init__(self) -> None:
        self.state = "ACTIVE"
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.status_calls = 0
        self.release = threading.Event()
        self.release.set()

    def status(self) -> dict[str, Any]:
        self.status_calls += 1
        return full_status(self.state)

    def command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        strategy = args.get("strategy", "baseline_v1")
        if strategy != "baseline_v1":
            raise CommandRejected(f"unknown strategy {strategy!r}")
        if args.get("explode"):
            raise RuntimeError("broker unreachable\nwhile cancelling")
        self.release.wait(10)
        self.calls.append((name, dict(args)))
        self.state = NEXT_STATE[name]
        return {"summary": f"{name}: {strategy} is now {self.state}", "state": self.state}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory (AF_UNIX paths are limited to 107 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="ctl", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir: Path) -> Path:
    return sock_dir / "run" / "e.sock"


@pytest.fixture
def desk() -> Desk:
    return Desk()


@pytest.fixture
def server(sock_path: Path, desk: Desk) -> Iterator[ControlServer]:
    with ControlServer(sock_path, desk, max_request_bytes=4096, idle_timeout_s=2.0) as srv:
        yield srv


def exchange(path: Path, payload: bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send raw bytes, close the writing side, return every reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close first (an oversized request): read what it answered
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTION_COMMANDS)
def test_every_command_round_trips(server: ControlServer, sock_path: Path, desk: Desk,
                                   name: str) -> None:
    result = send_command(sock_path, name, {"strategy": "baseline_v1"}, timeout=5)
    assert result == {"summary": f"{name}: baseline_v1 is now {NEXT_STATE[name]}",
                      "state": NEXT_STATE[name]}
    assert desk.calls == [(name, {"strategy": "baseline_v1"})]
    assert summarize(name, result) == f"{name}: baseline_v1 is now {NEXT_STATE[name]}"


def test_status_round_trips_and_renders(server: ControlServer, sock_path: Path,
                                        desk: Desk) -> None:
    send_command(sock_path, "pause", timeout=5)
    status = send_command(sock_path, "status", timeout=5)
    assert status == full_status("PAUSED")
    assert desk.status_calls == 1
    assert "State:               PAUSED" in render_status(status)


def test_handler_refusal_and_failure_come_back_as_one_line_errors(
        server: ControlServer, sock_path: Path, desk: Desk, log_capture: io.StringIO) -> None:
    with pytest.raises(CommandFailed, match=r"^unknown strategy 'nope'$"):
        send_command(sock_path, "kill", {"strategy": "nope"}, timeout=5)
    with pytest.raises(CommandFailed) as failed:
        send_command(sock_path, "flatten", {"explode": True}, timeout=5)
    assert str(failed.value) == ("flatten failed: RuntimeError: broker unreachable while "
                                 "cancelling")
    assert "Traceback" in log_capture.getvalue()  # an unexpected failure is logged in full
    assert desk.calls == []
    assert send_command(sock_path, "resume", timeout=5)["state"] == "ACTIVE"  # still serving


def test_summary_falls_back_to_the_result_fields() -> None:
    assert summarize("pause", {"state": "PAUSED"}) == "pause: ok (state=PAUSED)"
    assert summarize("pause", {}) == "pause: ok"
    assert summarize("pause", {"summary": "paused\n2 strategies"}) == "paused 2 strategies"


def test_several_requests_on_one_connection_are_answered_in_order(
        server: ControlServer, sock_path: Path) -> None:
    replies = exchange(sock_path, b'{"command": "pause"}\nnot json\n\n'
                                  b'{"command": "status", "args": null}\n')
    assert [r["ok"] for r in replies] == [True, False, True]
    assert replies[1]["error"].startswith("malformed request: not JSON")
    assert replies[2]["result"]["risk"]["state"] == "PAUSED"


# ---------------------------------------------------------------------------------------------
# Bad requests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "error"), [
    (b"{not json", "malformed request: not JSON (Expecting property name enclosed in double "
                   "quotes)"),
    (b"\xff\xfe", "malformed request: not JSON (not UTF-8)"),
    (b'["status"]', "malformed request: expected a JSON object with 'command' and 'args'"),
    (b'{"args": {}}', "unknown command None; known: status, pause, resume, kill, flatten, "
                      "unhalt"),
    (b'{"command": "reboot"}', "unknown command 'reboot'; known: status, pause, resume, kill, "
                               "flatten, unhalt"),
    (b'{"command": "pause", "args": [1]}', "malformed request: 'args' must be a JSON object"),
    (b'{"command": "pause", "argz": {}}', "malformed request: unexpected keys 'argz'"),
])
def test_malformed_requests_get_error_replies(desk: Desk, raw: bytes, error: str) -> None:
    assert handle_request(desk, raw) == {"ok": False, "error": error}
    assert desk.calls == [] and desk.status_calls == 0


def test_handler_returning_no_dict_is_an_error() -> None:
    class Broken:
        def status(self) -> Any:
            return ["not", "a", "dict"]

        def command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
            return {}

    assert handle_request(Broken(), b'{"command": "status"}') == {
        "ok": False, "error": "status failed: the engine returned no result"}


def test_values_json_cannot_hold_are_sent_as_text() -> None:
    from datetime import date

    line = encode_reply({"ok": True, "result": {"day": date(2025, 9, 3)}})
    assert line.endswith(b"\n") and json.loads(line) == {"ok": True,
                                                         "result": {"day": "2025-09-03"}}


def test_malformed_request_over_the_socket_leaves_the_server_serving(
        server: ControlServer, sock_path: Path) -> None:
    assert exchange(sock_path, b"\x00garbage\n") == [
        {"ok": False, "error": "malformed request: not JSON (Expecting value)"}]
    assert send_command(sock_path, "status", timeout=5)["api"]["authenticated"] is True


def test_oversized_request_is_refused_and_the_server_survives(
        server: ControlServer, sock_path: Path, desk: Desk) -> None:
    big = json.dumps({"command": "pause", "args": {"note": "x" * 10_000}}).encode() + b"\n"
    assert exchange(sock_path, big) == [
        {"ok": False, "error": "request too large (limit 4096 bytes)"}]
    with pytest.raises(CommandFailed, match="request too large"):
        send_command(sock_path, "pause", {"note": "y" * 200_000}, timeout=5)
    assert desk.calls == []
    # a line of exactly the limit is accepted
    pad = 4096 - len(json.dumps({"command": "pause", "args": {"note": ""}}).encode())
    exact = json.dumps({"command": "pause", "args": {"note": "z" * pad}}).encode()
    assert len(exact) == 4096
    assert exchange(sock_path, exact + b"\n")[0]["ok"] is True


def test_an_idle_connection_neither_blocks_others_nor_lives_forever(
        sock_path: Path, desk: Desk) -> None:
    with ControlServer(sock_path, desk, idle_timeout_s=0.3), \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.settimeout(5)
        idle.connect(str(sock_path))
        assert send_command(sock_path, "status", timeout=5)["risk"]["state"] == "ACTIVE"
        assert idle.recv(10) == b""  # the engine closed it after the idle timeout


# ---------------------------------------------------------------------------------------------
# Client errors
# ---------------------------------------------------------------------------------------------


def test_client_without_an_engine(sock_dir: Path) -> None:
    missing = sock_dir / "none.sock"
    with pytest.raises(NoEngineRunning) as exc:
        send_command(missing, "status", timeout=2)
    assert str(exc.value) == f"no engine is running (no control socket at {missing})"
    stale = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # a socket file nobody listens on
    with pytest.raises(NoEngineRunning, match=r"^no engine is running"):
        send_command(stale, "pause", timeout=2)
    with pytest.raises(ControlError, match="unknown command 'reboot'"):
        send_command(stale, "reboot")


def test_client_times_out_on_a_slow_engine(server: ControlServer, sock_path: Path,
                                           desk: Desk) -> None:
    desk.release.clear()
    try:
        with pytest.raises(ControlError, match=r"did not answer flatten within 0.3 s"):
            send_command(sock_path, "flatten", timeout=0.3)
    finally:
        desk.release.set()


# ---------------------------------------------------------------------------------------------
# Ownership of the socket path
# ---------------------------------------------------------------------------------------------


def test_permission_bits_and_clean_stop(sock_path: Path, desk: Desk) -> None:
    srv = ControlServer(sock_path, desk)
    srv.start()
    try:
        assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(srv.lock_path).st_mode) == 0o600
        assert srv.lock_path.read_text().strip() == str(os.getpid())
    finally:
        srv.stop()
    assert not sock_path.exists() and not srv.running
    srv.stop()  # idempotent
    with ControlServer(sock_path, desk):  # the path is free again
        assert send_command(sock_path, "status", timeout=5)


def test_second_server_on_the_same_path_is_refused(server: ControlServer, sock_path: Path,
                                                    desk: Desk) -> None:
    with pytest.raises(EngineAlreadyRunning) as exc:
        ControlServer(sock_path, Desk()).start()
    assert str(exc.value) == f"another engine is running (pid {os.getpid()})"
    assert send_command(sock_path, "status", timeout=5)  # the first one is untouched


def test_a_listener_without_the_lock_is_still_detected(sock_path: Path, desk: Desk) -> None:
    sock_path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(sock_path))
        other.listen(1)
        with pytest.raises(EngineAlreadyRunning, match=rf"\(pid {os.getpid()}\)"):
            ControlServer(sock_path, desk).start()
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)  # not removed


CHILD_ENGINE = """
import sys, time
from engine.app.control import ControlServer

class Handler:
    def status(self):
        return {"supervisor": {"state": "running"}}

    def command(self, name, args):
        return {"summary": name}

ControlServer(sys.argv[1], Handler()).start()
print("ready", flush=True)
time.sleep(120)
"""


def test_killed_engine_leaves_a_stale_socket_that_is_replaced(sock_path: Path,
                                                               desk: Desk) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD_ENGINE, str(sock_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             cwd=ROOT)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert send_command(sock_path, "status", timeout=5) == {
            "supervisor": {"state": "running"}}
        with pytest.raises(EngineAlreadyRunning) as exc:
            ControlServer(sock_path, desk).start()
        assert exc.value.pid == child.pid
        assert f"another engine is running (pid {child.pid})" == str(exc.value)
    finally:
        child.kill()
        child.wait(10)
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)  # left behind by the killed engine
    with pytest.raises(NoEngineRunning):
        send_command(sock_path, "status", timeout=2)
    with ControlServer(sock_path, desk):
        assert send_command(sock_path, "pause", timeout=5)["state"] == "PAUSED"


def test_a_directory_open_to_others_is_refused(sock_dir: Path, desk: Desk) -> None:
    shared = sock_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with pytest.raises(ControlError, match=r"open to other users \(mode 0755\)"):
        ControlServer(shared / "e.sock", desk).start()
    assert not (shared / "e.sock").exists()


def test_a_regular_file_at_the_path_is_not_replaced(sock_path: Path, desk: Desk) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("precious")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(sock_path, desk).start()
    assert sock_path.read_text() == "precious"
    # the lock was released: a later start on a free path works
    sock_path.unlink()
    with ControlServer(sock_path, desk):
        assert send_command(sock_path, "status", timeout=5)


def test_a_path_too_long_for_af_unix_is_refused(sock_dir: Path, desk: Desk) -> None:
    with pytest.raises(ControlError, match="control socket path too long"):
        ControlServer(sock_dir / ("x" * 120) / "e.sock", desk).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another uid needs root "
                    "(os.setuid in a forked child)")
def test_another_uid_is_refused(server: ControlServer, sock_dir: Path, sock_path: Path,
                                desk: Desk, log_capture: io.StringIO) -> None:
    os.chmod(sock_dir, 0o711)  # the test's own temporary directory is not under test
    # layer 1: the private directory (0700) keeps another user out
    assert status_as_nobody(str(sock_path)) == "EACCES"
    # layer 2: with the directory opened, the socket's own mode (0600) still does
    os.chmod(sock_path.parent, 0o711)
    assert status_as_nobody(str(sock_path)) == "EACCES"
    # layer 3: with the socket opened too, the peer-uid check (SO_PEERCRED) refuses
    os.chmod(sock_path, 0o666)
    reply = json.loads(status_as_nobody(str(sock_path)))
    assert reply == {"ok": False,
                     "error": f"permission denied: uid {NOBODY} may not control this engine"}
    assert desk.status_calls == 0 and desk.calls == []
    assert f"refused a connection from uid {NOBODY}" in log_capture.getvalue()
    assert send_command(sock_path, "status", timeout=5)  # the owner still gets in


# ---------------------------------------------------------------------------------------------
# Status rendering
# ---------------------------------------------------------------------------------------------


def test_full_status_renders_every_section() -> None:
    text = render_status(full_status())
    positions = [text.index(h) for h in HEADERS]
    assert positions == sorted(positions)
    for expected in [
        "  OpenAlgo URL:        http://127.0.0.1:5000",
        "  WebSocket:           connected",
        "  Last tick:           2025-09-03 10:31:05 IST",
        "  Symbols subscribed:  82",
        "  Coverage:            100.0% (82/82 live)",
        "  Authentication:      ok",
        "  Last request:        POST placeorder",
        "  Last response:       200 success, 41 ms",
        "  Last order id:       250903000012345",
        "  Bars generated:      1,234",
        "  VWAP active:         82 symbols",
        "  Stale symbols:       none",
        "  NIFTY09SEP2524800CE       qty -65  avg 120.50  ltp 118.00  P&L +162.50  stop 135.00"
        "  [baseline_v1]",
        "  State:               ACTIVE",
        "  P&L:                 realized +1,200.00  unrealized +162.50",
        "  R:                   +1.25R (realized +1.00R, unrealized +0.25R)",
        "  Limits:              daily_r ±5, max_positions 5",
        "  Restarts:            1 (feed 1)",
        "  Memory:              1,234.6 MiB resident",
        "[RECOMMENDATION]\n  none",
    ]:
        assert expected in text, expected
    assert "unknown" not in text


def test_a_position_with_its_price_pending_says_so() -> None:
    status = full_status()
    pos = status["positions"][0]
    status["positions"] = [{**pos, "average_price": 0.0, "price_pending": 65},
                           {**pos, "quantity": -130, "price_pending": 65}]
    text = render_status(status)
    assert "qty -65  avg PRICE PENDING  ltp 118.00" in text
    assert "qty -130  avg 120.50 (65 PRICE PENDING)  ltp 118.00" in text


def test_empty_status_renders_unknowns() -> None:
    text = render_status({})
    assert all(h in text for h in HEADERS)
    assert "  OpenAlgo URL:        unknown" in text
    assert "  Authentication:      unknown" in text
    assert "[POSITIONS]\n  unknown" in text
    assert text.endswith("[RECOMMENDATION]\n  the engine reported no status: check its log")


def test_partial_and_mistyped_status_never_crashes() -> None:
    text = render_status({
        "connection": "garbage", "api": {"authenticated": "yes", "last_order_id": ""},
        "pipeline": {"bars_generated": "many", "stale": [None, {"symbol": 3}, "NIFTYX"]},
        "positions": [{"symbol": "A", "quantity": None}, 7],
        "risk": {"state": 5, "limits": [1], "r": float("nan"), "strategies": {"s": "x"}},
        "supervisor": {"restarts": True, "by_child": {"feed": None}},
    })
    assert all(h in text for h in HEADERS)
    assert "  Authentication:      unknown" in text
    assert "  Last order id:       none" in text
    assert "  Stale symbols:       3 (unknown, 3, NIFTYX)" in text
    assert "  A                         qty unknown" in text
    assert "  R:                   unknown" in text
    assert "  Restarts:            unknown (feed unknown)" in text


def _with(**sections: Any) -> dict[str, Any]:
    status = full_status()
    for key, changes in sections.items():
        status[key] = {**status[key], **changes}
    return status


@pytest.mark.parametrize(("status", "advice"), [
    (full_status(), "none"),
    (_with(risk={"state": "HALTED", "halt_reason": "daily R -5"}),
     "risk halted (daily R -5): run `run.py unhalt` after review"),
    (_with(risk={"strategies": {"baseline_v1": {"state": "HALTED", "halt_reason": "+5R"}}},
           connection={"websocket": "reconnecting"}),
     "risk halted (baseline_v1: +5R): run `run.py unhalt --strategy baseline_v1` after review"),
    (_with(supervisor={"state": "safe_stopped"}, risk={"state": "HALTED"}),
     "the engine stopped itself safely: read the log, fix the cause, then restart it"),
    (_with(api={"authenticated": False}),
     "OpenAlgo authentication failed: check OPENALGO_API_KEY and the OpenAlgo server"),
    (_with(connection={"websocket": "auth_failed"}),
     "OpenAlgo authentication failed: check OPENALGO_API_KEY and the OpenAlgo server"),
    (_with(connection={"websocket": "reconnecting"}),
     "market feed is reconnecting: check the OpenAlgo server and the network (the engine "
     "reconnects by itself)"),
    (_with(connection={"websocket": "unknown"}), "none"),
    (_with(pipeline={"stale": [{"symbol": "A", "age_s": 9.0}, {"symbol": "B", "age_s": None}]}),
     "2 stale symbols (A, B): check the feed subscription and the broker's data for them"),
    (_with(risk={"state": "KILLED"}),
     "kill switch on (entries cancelled and blocked, stops kept): `run.py resume` to trade "
     "again"),
    (_with(risk={"state": "PAUSED"}),
     "paused (new entries blocked): `run.py resume` to trade again"),
])
def test_recommendation_rules(status: dict[str, Any], advice: str) -> None:
    assert recommend(status) == advice
    assert render_status(status).endswith(f"[RECOMMENDATION]\n  {advice}")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
_FIELDS = ["openalgo_url", "websocket", "last_tick_ts", "subscribed", "live", "coverage",
           "authenticated", "last_request", "last_response", "last_order_id", "bars_generated",
           "vwap_active", "stale", "state", "halt_reason", "realized_pnl", "unrealized_pnl", "r",
           "realized_r", "unrealized_r", "limits", "strategies", "restarts", "by_child",
           "symbol", "quantity", "average_price", "ltp", "pnl", "stop", "strategy"]
_SECTION = _JSON | st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=8)
_STATUS = st.dictionaries(
    st.sampled_from(["connection", "api", "pipeline", "positions", "risk", "supervisor"]),
    _SECTION | st.lists(_SECTION, max_size=3), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STATUS)
def test_any_json_shaped_status_renders(status: dict[str, Any]) -> None:
    text = render_status(status)
    assert [line for line in text.splitlines() if line.startswith("[")] == HEADERS
    assert "\n" not in recommend(status)


# ---------------------------------------------------------------------------------------------
# The CLI against a live server
# ---------------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NIFTY_ENGINE") and k != "OPENALGO_API_KEY"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_commands_against_a_live_engine(sock_dir: Path, desk: Desk) -> None:
    (sock_dir / "config.toml").write_text("")  # defaults only: ./config.toml is read first
    default = sock_dir / ControlSettings().socket_path  # relative to the working directory
    with ControlServer(default, desk):
        status = _cli("status", cwd=sock_dir)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert [line for line in lines if line.startswith("[")] == HEADERS
        assert "  OpenAlgo URL:        http://127.0.0.1:5000" in lines

        paused = _cli("pause", "--strategy", "baseline_v1", "--socket", str(default),
                      cwd=sock_dir)
        assert (paused.returncode, paused.stdout) == (0, "pause: baseline_v1 is now PAUSED\n")
        assert desk.calls == [("pause", {"strategy": "baseline_v1"})]

        refused = _cli("kill", "--strategy", "nope", "--socket", str(default), cwd=sock_dir)
        assert (refused.returncode, refused.stderr) == (1, "kill: unknown strategy 'nope'\n")
    gone = _cli("status", cwd=sock_dir)
    assert gone.returncode == 1
    assert gone.stderr == ("status: no engine is running (no control socket at "
                           "var/control/engine.sock)\n")
    assert gone.stdout == ""
