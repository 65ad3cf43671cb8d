"""Issue 20, the live dashboard (engine.app.dashboard): a paper engine trading against the
in-process simulator over loopback serves its page; a real headless Chromium opens it, the
positions and P&L it shows equal ``run.py status``'s, and a fill arrives on the open page by
server-sent events. Also: the token is required and never logged in full, a port in use is one
line and no dead engine, a replay serves none unless asked, and ``run.py dashboard --db`` shows a
finished run's day."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from loguru import logger

from engine.app.dashboard.channel import dashboard_channel
from engine.app.dashboard.server import URL_FILE, DashboardSettings
from engine.app.modes import run_paper
from engine.app.sections import load_config
from engine.market.synth import small_session
from engine.messages import Action, OrderIntent, OrderPurpose, PriceType
from tests.engine.app.test_operator_controls import Trading
from tests.engine.browser import Browser, chromium_or_skip
from tests.support import until

ROOT = Path(__file__).resolve().parents[3]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Paper(Trading):
    """A paper engine (``run_trading`` at a paper venue) on the in-process simulator, with its
    dashboard on a free port and every log line kept."""

    def __init__(self, tmp: Path) -> None:
        self.logs: list[str] = []
        self.sink = logger.add(lambda m: self.logs.append(str(m)), level="DEBUG")
        self.state_dir = tmp  # test_live's config puts [engine] state_dir there
        super().__init__(tmp, dashboard=DashboardSettings(port=0, push_interval_s=0.2))

    @property
    def url(self) -> str:
        return (self.state_dir / URL_FILE).read_text().strip()

    def buy(self) -> None:
        self.engine.tell("orders", OrderIntent(
            client_id="dash-1", strategy="baseline_v1", account="paper", symbol=self.ce,
            exchange="NFO", action=Action.BUY, quantity=65, pricetype=PriceType.MARKET,
            purpose=OrderPurpose.ENTRY, created_ts=time.time()))

    def close(self) -> None:
        super().close()
        logger.remove(self.sink)


@pytest.fixture
def paper(tmp_path: Path) -> Iterator[Paper]:
    p = Paper(tmp_path)
    try:
        yield p
    finally:
        p.close()


_PAGE = """(() => {
  const pos = document.getElementById('positions');
  const rows = Array.from(document.querySelectorAll('#positions-table tbody tr'))
    .map(r => Array.from(r.cells).map(c => c.textContent));
  return {updates: Number(document.body.dataset.updates || 0), count: pos.dataset.count,
          pnl: pos.dataset.pnl, rows: rows, marker: window.__sameDocument === 1,
          working: document.getElementById('working').innerText,
          feed: document.getElementById('connection').innerText};
})()"""


def test_the_page_of_a_paper_engine_agrees_with_status_and_a_fill_arrives_live(
        paper: Paper, tmp_path: Path) -> None:
    executable = chromium_or_skip()
    paper.tick(100.0)
    url = paper.url
    token = url.split("token=", 1)[1]
    with Browser(executable, tmp_path) as browser:
        page = browser.load(url)
        assert page.title == "nifty-engine dashboard"
        assert [u for u in page.requested if not u.startswith(url.split("/?")[0])] == []
        browser.wait_for("Number(document.body.dataset.updates || 0) >= 1")
        before = browser.evaluate(_PAGE)
        assert before["count"] == "0" and "No open position." in browser.evaluate(
            "document.getElementById('positions').innerText")
        browser.evaluate("window.__sameDocument = 1")  # gone if the page were reloaded
        paper.buy()
        until(lambda: any(p["quantity"] == 65 for p in paper.status()["positions"]),
              timeout=20)
        paper.tick(103.0)  # the position is marked: P&L moves
        until(lambda: paper.status()["positions"][0]["ltp"] == 103.0, timeout=20)
        status = paper.status()
        [position] = status["positions"]
        # the page shows the status's figures, pushed to the open page (no reload)
        after = browser.wait_for(
            f"(() => {{ const v = {_PAGE}; return v.count === '1' && "
            f"v.pnl === '{position['pnl']:.2f}' && v; }})()", timeout=20)
        assert after["marker"] and after["updates"] > before["updates"]
        [row] = after["rows"]
        assert row[0] == paper.ce and row[1] == "baseline_v1" and row[2] == "65"
        assert float(row[3]) == pytest.approx(position["average_price"])
        assert float(row[4]) == position["ltp"] == 103.0
        assert float(row[5]) == position["pnl"] and position["pnl"] != 0
        assert float(row[6]) == position["r"]
        assert "connected" in after["feed"]
        # the chart of the subscribed symbol is drawn
        drawn = browser.wait_for("document.querySelector('#chart canvas') && "
                                 "document.getElementById('chart').dataset.symbol")
        assert drawn == paper.ce
    # read-only, and nothing without the token
    base = url.split("/?")[0]
    assert get(f"{base}/api/state")[0] == 401
    assert get(f"{base}/api/state?token=wrong")[0] == 401
    code, body = get(f"{base}/api/state?token={token}")
    assert code == 200 and json.loads(body)["status"]["positions"][0]["symbol"] == paper.ce
    request = urllib.request.Request(f"{base}/api/state?token={token}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    # the token is never logged in full; the link is in a private file
    text = "\n".join(paper.logs)
    assert token not in text and f"token={token[:4]}…" in text
    assert oct((paper.state_dir / URL_FILE).stat().st_mode & 0o777) == "0o600"


def test_a_port_in_use_is_one_line_and_the_engine_trades_on(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    session = small_session(tmp_path / "s.db", date="2025-09-03", seed=31, symbols=1,
                            minutes=2).path
    cfg = load_config(None, env={}, overrides={
        "simulator.rest_port": "0", "simulator.ws_port": "0", "store.synchronous": "NORMAL",
        "dashboard.port": str(port), "engine.state_dir": str(tmp_path)})
    cfg = cfg.replace(control=replace(cfg.control, enabled=False))
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(str(m)), level="DEBUG")
    try:
        result = run_paper(cfg, Path(session), speed=120.0, db_path=tmp_path / "e.db")
    finally:
        logger.remove(sink)
        taken.close()
    assert result.ticks_published > 0 and not result.stopped_early and not result.safe_stop
    lines = [m for m in logs if "dashboard" in m]
    assert len(lines) == 1, lines
    assert f"dashboard not available: port {port} on 127.0.0.1 is in use" in lines[0]
    assert "Traceback" not in lines[0] and not (tmp_path / URL_FILE).exists()


def test_a_replay_serves_no_dashboard_unless_asked(tmp_path: Path) -> None:
    class Quiet:  # what dashboard_channel reads of an engine before it serves
        cfg = load_config(None, env={})

    with dashboard_channel(Quiet(), openalgo_url="", replay=True) as served:
        assert served is None


def test_run_py_dashboard_shows_a_finished_runs_day(tmp_path: Path) -> None:
    from engine.store.database import record
    from tests.engine.report.test_report import DAY, at, trade, write

    db = write(tmp_path / "done.db", [record(trade("A", at(9, 16), at(9, 30), 650.0, 0.5))])
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "dashboard", "--db", str(db),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path,
                            env={**os.environ, "NIFTY_ENGINE__LOGGING__CONSOLE": "false"})
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        code, body = get(url.replace("/?token", "/api/state?token"))
        state = json.loads(body)
        assert code == 200 and state["source"] == "database" and state["day"] == DAY.isoformat()
        assert [(t["symbol"], t["pnl"], t["r"]) for t in state["trades"]] == [("A", 650.0, 0.5)]
        assert state["status"]["risk"]["realized_pnl"] == 650.0
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert url.split("token=")[1] not in err


def test_run_py_dashboard_errors_are_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "dashboard", "--db",
                           str(tmp_path / "missing.db")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"dashboard: {tmp_path / 'missing.db'}: no such database file"
