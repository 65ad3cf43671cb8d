"""The day report (engine.report and ``run.py report``): what it reads, what the page says, that
it is self-contained and escaped, its errors — and, in a real headless Chromium, that the page
loads with every chart decoded.

Databases are real SQLite files: one made by replaying the handcrafted baseline session (one
short trade, stopped out) through the real actors, others written row by row through the store.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from engine.app.cli import main
from engine.app.command_spec import EXIT_CONFIG, EXIT_OK
from engine.messages import (
    Action,
    Bar,
    Fill,
    OrderIntent,
    OrderPurpose,
    PriceType,
    RiskEvent,
    Swing,
    SwingBroken,
    SwingKind,
)
from engine.report.data import ReportError, load_day
from engine.report.excursions import excursion
from engine.report.page import build_report, write_report
from engine.runtime.clock import ist_epoch
from engine.store.database import Correction, Database, StoredTrade, record
from engine.trading.trades import summarize
from tests.engine.browser import Browser, chromium_or_skip
from tests.strategies.test_baseline_replay import CE, handcrafted_session, replay

DAY = date(2025, 1, 30)
HOSTILE = "<script>document.title='pwned'</script>&<b>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def at(hour: int, minute: int, second: float = 0.0) -> float:
    return ist_epoch(2025, 1, 30, hour, minute, second)


def trade(symbol: str, entry: float, exit_: float, pnl: float, r: float, *,
          strategy: str = "s1", account: str = "acc1", reason: str = "stop") -> StoredTrade:
    return StoredTrade(strategy=strategy, account=account, symbol=symbol, trading_date=DAY,
                       action=Action.SELL, quantity=65, entry_ts=entry, entry_price=100.0,
                       exit_ts=exit_, exit_price=100.0 - pnl / 65, pnl=pnl, r_multiple=r,
                       exit_reason=reason)


def bars(symbol: str, first: float, count: int) -> list[Bar]:
    return [Bar(symbol, first + 60 * i, 100 + i, 103 + i, 98 + i, 101 + i - 2 * (i % 2), 1000,
                30, 100.5 + i) for i in range(count)]


def write(db_path: Path, messages: Sequence[object]) -> Path:
    with Database(db_path) as db:
        db.run_write(lambda tx: [tx.apply(db.writes_for(m)) for m in messages])
    return db_path


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def trade_charts_of(page: str) -> dict | None:
    """The R and equity charts' payloads embedded in a report (None: no trade charts)."""
    found = re.search(r"const TRADE_CHARTS = (.*?);\n", page)
    return json.loads(found.group(1)) if found else None


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The handcrafted baseline session replayed: one SELL of CE, stopped out at -1.05 R (of
    its own risk)."""
    work = tmp_path_factory.mktemp("replayed")
    summary = replay(handcrafted_session(work / "session.sqlite"), work / "engine.db")
    assert summary.stuck_steps == 0
    return work / "engine.db"


@pytest.fixture
def two_strategies(tmp_path: Path) -> Path:
    """s1: two trades of A (+1000, -3000) and one of B (+500); s2: one trade of B. Bars of B
    with a swing low that is broken, an entry, a stop order and the stop's fill."""
    entry = OrderIntent("s1-1", "s1", "acc1", "B", "NFO", Action.SELL, 65, PriceType.SL,
                        price=99.0, trigger_price=100.0, created_ts=at(9, 20))
    stop = OrderIntent("s1-2", "s1", "acc1", "B", "NFO", Action.BUY, 65, PriceType.SL,
                       price=106.0, trigger_price=105.0, purpose=OrderPurpose.STOP,
                       parent_id="s1-1", created_ts=at(9, 21))
    fills = [Fill("s1-1", "b1", "s1", "acc1", "B", "NFO", Action.SELL, 65, 100.0, 65, at(9, 21),
                  OrderPurpose.ENTRY),
             Fill("s1-2", "b2", "s1", "acc1", "B", "NFO", Action.BUY, 65, 105.0, 65, at(9, 25),
                  OrderPurpose.STOP)]
    messages: list[object] = [
        record(trade("A", at(9, 16), at(9, 30), 1000.0, 0.5)),
        record(trade("A", at(9, 40), at(10, 5), -3000.0, -1.5)),
        record(trade("B", at(9, 21), at(9, 50), 500.0, 0.25)),
        record(trade("B", at(11, 0), at(11, 30), -200.0, -0.1, strategy="s2", account="acc2")),
        *bars("B", at(9, 15), 40),
        Swing("B", SwingKind.LOW, 98.0, at(9, 15), 0, 100.5),
        SwingBroken("B", SwingKind.LOW, 98.0, at(9, 15), at(9, 30), "bar"),
        Swing("B", SwingKind.HIGH, 110.0, at(9, 24), 9, 109.0),
        entry, stop, *fills,
    ]
    return write(tmp_path / "engine.db", messages)


# ---------------------------------------------------------------------------------------------
# What the report reads and shows
# ---------------------------------------------------------------------------------------------


def test_a_replayed_day_reads_its_trade_and_the_traded_symbols_market(replayed: Path) -> None:
    data = load_day(replayed)
    assert (data.day, data.strategies, data.accounts, data.symbol) == (
        DAY, ("baseline_v1",), ("replay",), CE)
    [t] = data.trades
    assert (t.pnl, t.r_multiple, t.exit_reason) == (-6552.0, -1.05, "stop")
    assert len(data.bars) == 13
    assert {s.kind for s in data.swings} == {SwingKind.LOW, SwingKind.HIGH}
    assert any(b.price == 200.0 for b in data.breaks)
    assert [(f.purpose, f.price) for f in data.fills] == [(OrderPurpose.ENTRY, 199.9),
                                                          (OrderPurpose.STOP, 212.5)]
    assert [o.purpose for o in data.orders] == [OrderPurpose.ENTRY, OrderPurpose.STOP]


def test_a_replayed_day_renders_summary_table_and_interactive_charts(
        replayed: Path) -> None:
    page = build_report(replayed)
    assert "<title>Day report 2025-01-30</title>" in page
    for text in ("baseline_v1", "replay", CE, "09:24:30", "09:26:40", "199.90", "212.50",
                 "-6,552.00", "-1.05", "-₹6,552.00", "₹6,552.00 (1.05 R)", ">stop<",
                 "No risk events.", "No reconciliation corrections."):
        assert text in page, text
    assert images(page) == []  # every chart is interactive: R, equity and the candles
    trades = trade_charts_of(page)
    assert trades is not None
    assert [(b["time"], b["value"]) for b in trades["r"]["bars"]] == [(1, -1.05)]
    assert trades["r"]["labels"]["1"].startswith(f"#1 {CE} exit 09:26:40 IST stop  R -1.05")
    assert [p["value"] for p in trades["equity"]["equity"]] == [0, -6552.0]
    assert [p["value"] for p in trades["equity"]["drawdown"]] == [0, -6552.0]
    assert '<div class="chart" id="r-chart">' in page
    assert '<div class="chart" id="equity-chart">' in page
    assert re.findall(r'<div class="candles" id="candles-\d+" data-symbol="([^"]+)"', page)[0] \
        == CE
    payloads = charts_of(page)
    assert payloads[0]["symbol"] == CE and len(payloads[0]["candles"]) == 13
    texts = [m["text"] for m in payloads[0]["markers"]]
    assert "entry SELL 520 @ 199.90" in texts and "stop BUY 520 @ 212.50" in texts
    assert any(s["title"].startswith("stop ") for s in payloads[0]["segments"])
    # self-contained: nothing fetched from anywhere (the one URL is the library's licence)
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "http://" not in page
    assert re.findall(r"https://[^\s\"']+", page) == ["https://www.apache.org/licenses/LICENSE-2.0"]
    assert build_report(replayed) == page  # deterministic, charts included


def charts_of(page: str) -> list[dict]:
    """The interactive charts' payloads embedded in a report."""
    found = re.search(r"const CHARTS = (.*?);\n", page)
    return json.loads(found.group(1)) if found else []


def test_the_order_log_and_each_trades_mae_and_mfe(replayed: Path) -> None:
    page = build_report(replayed)
    log = re.search(r'<table id="order-log">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", log, re.S)[1:]
    assert len(rows) == 2  # the entry and its stop
    assert "<td>entry</td>" in rows[0] and "<td>stop</td>" in rows[1]
    assert "<td>complete</td>" in rows[1] and "09:26:40 complete" in rows[1]
    assert "→" in rows[1]  # its history of state changes
    header = re.search(r'<table id="trades">.*?</tr>', page, re.S).group(0)
    assert "<th>MAE</th><th>MFE</th>" in header
    [t] = load_day(replayed).trades
    data = load_day(replayed)
    move = excursion(t, data.bars)
    # a short stopped out at 212.50 from 199.90: at least 12.60 against, and R beyond -1
    assert move.mae_points <= -12.6 and move.mae_r is not None and move.mae_r <= -1.05
    assert move.mfe_points >= 0 and move.bars >= 2
    assert f"{move.mae_points:+.2f} ({move.mae_r:+.2f} R)" in page


def test_mae_and_mfe_come_from_the_bars_the_trade_was_open_in() -> None:
    long = StoredTrade(strategy="s", account="a", symbol="X", trading_date=DAY,
                       action=Action.BUY, quantity=10, entry_ts=at(9, 20, 30), entry_price=100.0,
                       exit_ts=at(9, 22, 10), exit_price=104.0, pnl=40.0, r_multiple=2.0)
    market = [Bar("X", at(9, m), 100, high, low, 100, 1, 1, 100) for m, high, low in (
        (19, 200.0, 1.0),  # before the entry: not counted
        (20, 101.0, 97.0), (21, 106.0, 99.0), (22, 105.0, 98.5),
        (23, 300.0, 0.5))]  # after the exit: not counted
    move = excursion(long, market)
    assert (move.mae_points, move.mfe_points, move.bars) == (-3.0, 6.0, 3)
    # the initial risk is pnl / R = 20 rupees: 3 points × 10 against is -1.5 R
    assert (move.mae_rupees, move.mfe_rupees, move.mae_r, move.mfe_r) == (-30.0, 60.0, -1.5, 3.0)
    short = replace(long, action=Action.SELL, exit_price=96.0)
    move = excursion(short, market)
    assert (move.mae_points, move.mfe_points) == (-6.0, 4.0)  # the exit price counts
    assert excursion(replace(long, r_multiple=0.0), []).mae_r is None  # no R: none
    assert excursion(long, []).bars == 0


def test_the_r_and_equity_charts_number_trades_and_merge_exits_of_one_second() -> None:
    """Three trades closed in the same second (an exit-all) are three R bars (the axis is the
    trade number) and one equity point (the chart's clock has one slot per second)."""
    from engine.report.candles import IST_OFFSET_S
    from engine.report.trade_charts import equity_payload, r_payload

    day = [trade("A", at(9, 16), at(9, 30), 1000.0, 1.0),
           trade("B", at(9, 20), at(10, 0, 5.25), -3000.0, -2.0),
           trade("C", at(9, 21), at(10, 0, 5.5), 500.0, 0.5),
           trade("D", at(9, 22), at(10, 0, 5.75), 250.0, 0.25)]
    r = r_payload(day)
    assert [(b["time"], b["value"], b["color"]) for b in r["bars"]] == [
        (1, 1.0, "#1a7f37"), (2, -2.0, "#cf222e"), (3, 0.5, "#1a7f37"), (4, 0.25, "#1a7f37")]
    assert r["labels"]["2"].startswith("#2 B exit 10:00:05 IST stop  R -2.00  P&L -3,000.00")
    eq = equity_payload(day)
    times = [p["time"] for p in eq["equity"]]
    assert times == [int(at(9, 16)) + IST_OFFSET_S, int(at(9, 30)) + IST_OFFSET_S,
                     int(at(10, 0, 5)) + IST_OFFSET_S]
    assert [p["value"] for p in eq["equity"]] == [0, 1000.0, -1250.0]
    assert [p["value"] for p in eq["drawdown"]] == [0, 0.0, -2250.0]
    assert equity_payload([]) == {"equity": [], "drawdown": []}


def test_the_summary_is_engine_trades_summary_and_a_strategy_can_be_chosen(
        two_strategies: Path) -> None:
    everyone = load_day(two_strategies)
    assert everyone.strategies == ("s1", "s2") and everyone.accounts == ("acc1", "acc2")
    assert len(everyone.trades) == 4
    s1 = load_day(two_strategies, strategy="s1")
    assert [t.pnl for t in s1.trades] == [1000.0, 500.0, -3000.0]  # by exit time
    summary = summarize(s1.trades)
    assert (summary.trades, summary.wins, summary.losses, summary.pnl, summary.max_drawdown) == (
        3, 2, 1, -1500.0, 3000.0)
    page = build_report(two_strategies, strategy="s1")
    assert "<tr><th>Strategy</th><td>s1</td></tr>" in page
    assert "-₹1,500.00" in page and "₹3,000.00 (1.50 R)" in page and "-0.75" in page
    assert ">s2<" not in page and "acc2" not in page


def test_each_trade_is_labelled_with_the_unit_it_was_measured_in(
        replayed: Path, tmp_path: Path) -> None:
    """The replayed trade was measured in its own risk (the default ``[risk] r_unit``) and its
    row says so. A report made after the setting changed to "fixed" still names that unit; a
    later trade measured in the fixed R (the setting changed mid-day) gets its own unit beside
    it, and the total says the units are mixed."""
    db = tmp_path / "engine.db"
    src, dst = sqlite3.connect(replayed), sqlite3.connect(db)
    src.backup(dst)  # a copy: the replayed database is shared by the module's tests
    src.close()
    dst.close()
    [stored] = load_day(db).trades
    assert (stored.r_unit, stored.r_multiple) == ("position", -1.05)
    out = tmp_path / "day.html"
    assert main(["report", str(db), "--set", "risk.r_unit=fixed", "--out", str(out)]) == EXIT_OK
    page = out.read_text(encoding="utf-8")
    assert "Total R (own risk per trade)" in page and "total R -1.05 (own risk per trade)" in page
    assert "fixed R" not in page

    later = replace(trade(CE, at(10, 0), at(10, 5), -650.0, -0.1, strategy="baseline_v1",
                          account="replay"), r_unit="fixed")
    write(db, [record(later)])
    page = build_report(db)
    assert "Total R (mixed units)" in page
    table = re.search(r'<pre class="plain">(.*?)</pre>', page, re.S)
    assert table is not None
    lines = table.group(1).splitlines()
    assert lines[0].split()[-3:] == ["R", "unit", "reason"]
    assert lines[2].split()[-6:] == ["-1.05", "own", "risk", "per", "trade", "stop"]
    assert lines[3].split()[-4:] == ["-0.10", "fixed", "R", "stop"]
    assert lines[4].startswith("trades 2 |") and "total R -1.15 (mixed units)" in lines[4]


def test_the_most_traded_symbol_is_charted_unless_one_is_chosen(two_strategies: Path) -> None:
    assert load_day(two_strategies, strategy="s1").symbol == "A"  # 2 trades against 1
    page = build_report(two_strategies, strategy="s1")
    assert "No 1-minute bars stored for A on 2025-01-30." in page
    assert trade_charts_of(page) is not None  # R and equity
    # every traded symbol with bars is charted interactively: B (traded by s2 too)
    assert [c["symbol"] for c in charts_of(page)] == ["B"]
    chosen = load_day(two_strategies, strategy="s1", symbol="B")
    assert (chosen.symbol, len(chosen.bars), len(chosen.swings), len(chosen.breaks)) == (
        "B", 40, 2, 1)
    assert [o.client_id for o in chosen.orders] == ["s1-1", "s1-2"]
    page = build_report(two_strategies, strategy="s1", symbol="B")
    assert "Candles: B" in page and charts_of(page)[0]["symbol"] == "B"


def test_every_text_from_the_database_is_escaped(tmp_path: Path) -> None:
    db = write(tmp_path / "engine.db", [
        record(trade(HOSTILE, at(9, 16), at(9, 30), 100.0, 0.1, strategy=HOSTILE,
                     account=HOSTILE, reason=HOSTILE)),
        RiskEvent(HOSTILE, HOSTILE, 1.0, 2.0, HOSTILE, at(9, 31), (HOSTILE,), HOSTILE),
        record(Correction(HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE, at(9, 32), DAY,
                          detail=HOSTILE)),
        *bars(HOSTILE, at(9, 15), 5),  # charted: its name goes into the charts' JSON too
    ])
    page = build_report(db)
    assert "<script>document" not in page and "<b>" not in page and "</script>&" not in page
    assert charts_of(page)[0]["symbol"] == HOSTILE
    escaped = "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;&amp;&lt;b&gt;"
    assert page.count(escaped) >= 10


def test_a_day_without_trades_still_renders(tmp_path: Path) -> None:
    order = OrderIntent("s1-1", "s1", "acc1", "B", "NFO", Action.SELL, 65, PriceType.SL,
                        price=99.0, trigger_price=100.0, created_ts=at(9, 20))
    db = write(tmp_path / "engine.db", [order, *bars("B", at(9, 15), 10),
                                        *bars("NIFTY", at(9, 15), 10)])
    page = build_report(db)
    assert "No trades on 2025-01-30." in page and "No trades.</p>" in page
    assert "(no closed trades)" in page  # the plain-text table from engine.trading.trades
    assert "Candles: B" in page and trade_charts_of(page) is None  # no R or equity chart
    assert 'id="r-chart"' not in page
    assert [c["symbol"] for c in charts_of(page)] == ["B", "NIFTY"]  # and NIFTY spot


def test_an_empty_database_needs_a_date_and_then_renders_no_trades(tmp_path: Path) -> None:
    db = write(tmp_path / "engine.db", [])
    with pytest.raises(ReportError, match=r"no trading day recorded.*pass --date"):
        build_report(db)
    page = build_report(db, trading_date="2025-01-30")
    assert "No trades on 2025-01-30." in page
    assert "No symbol was traded or ordered that day" in page
    assert not charts_of(page) and trade_charts_of(page) is None
    assert "<script>" not in page  # nothing to draw


def test_a_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(ReportError, match="no such database file"):
        build_report(missing)
    assert not missing.exists()


@pytest.mark.parametrize("kind", ["garbage", "foreign"])
def test_a_corrupt_or_foreign_database_is_an_error_and_is_left_untouched(
        tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.db"
    if kind == "garbage":
        path.write_bytes(b"this is not a database at all" * 200)
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
        conn.close()
    before = path.read_bytes()
    with pytest.raises(ReportError) as err:
        build_report(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_a_bad_date_is_an_error(two_strategies: Path) -> None:
    with pytest.raises(ReportError, match="bad date '30-01-2025': expected YYYY-MM-DD"):
        build_report(two_strategies, trading_date="30-01-2025")


def test_write_report_puts_the_file_beside_the_database_by_default(two_strategies: Path) -> None:
    out = write_report(two_strategies)
    assert out == two_strategies.with_name("engine-report-2025-01-30.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir() if "partial" in p.name] == []


def test_an_output_that_cannot_be_written_is_an_error(two_strategies: Path,
                                                       tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ReportError, match="cannot write the report"):
        write_report(two_strategies, taken)
    assert list(taken.iterdir()) == [] and not list(tmp_path.glob("*.partial"))


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_cli_report_writes_the_file_and_prints_its_path(
        two_strategies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "day.html"
    code = main(["report", str(two_strategies), "--date", "2025-01-30", "--strategy", "s1",
                 "--symbol", "B", "--out", str(out)])
    assert code == EXIT_OK
    assert capsys.readouterr().out == f"{out}\n"
    page = out.read_text(encoding="utf-8")
    assert "Candles: B" in page and "<tr><th>Strategy</th><td>s1</td></tr>" in page


def test_cli_report_defaults_to_the_configured_store(
        two_strategies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--set", f"store.path={two_strategies}"])
    assert code == EXIT_OK
    assert capsys.readouterr().out.strip() == str(
        two_strategies.with_name("engine-report-2025-01-30.html"))


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such database file"),
    (["{db}", "--date", "2025-13-01"], "bad date '2025-13-01'"),
])
def test_cli_report_errors_are_one_line_with_exit_2(
        two_strategies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], message: str) -> None:
    argv = [a.format(missing=tmp_path / "missing.db", db=two_strategies) for a in args]
    assert main(["report", *argv]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("report: ") and message in captured.err
    assert captured.err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------


def test_a_running_engine_never_loads_matplotlib() -> None:
    """The charts' matplotlib is for the report writer only: an engine reads ``ReportSettings``
    with its configuration, and must not pay matplotlib's import (memory, start-up) for it."""
    code = ("import sys, engine.app.sections, engine.app.live, engine.app.tree, "
            "engine.report.data; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[3], timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_without_chromium_the_browser_test_skips_locally_and_fails_on_ci(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser in there
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium on PATH"):
        chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        chromium_or_skip()


def test_the_report_loads_in_headless_chromium_with_every_chart_decoded(
        replayed: Path, tmp_path: Path) -> None:
    executable = chromium_or_skip()
    day = write_report(replayed, tmp_path / "day.html")
    hostile_db = write(tmp_path / "hostile.db", [
        record(trade("A", at(9, 16), at(9, 30), 100.0, 0.1, reason=HOSTILE))])
    hostile = write_report(hostile_db, tmp_path / "hostile.html")
    with Browser(executable, tmp_path) as browser:
        page = browser.load(day.as_uri())
        # the interactive candles were drawn: a canvas holding every minute of the symbol
        drawn = browser.wait_for("(() => { const e = document.getElementById('candles-0'); "
                                 "return e && e.querySelector('canvas') && "
                                 "[e.dataset.symbol, e.dataset.candles, e.dataset.markers]; })()")
        # the R and equity charts too, each a canvas
        trade_drawn = browser.wait_for(
            "(() => { const r = document.getElementById('r-chart'), "
            "e = document.getElementById('equity-chart'); "
            "return r && e && r.querySelector('canvas') && e.querySelector('canvas') && "
            "[r.dataset.bars, e.dataset.points]; })()")
        escaped_page = browser.load(hostile.as_uri())
    assert drawn[0] == CE and drawn[1] == "13" and int(drawn[2]) >= 4
    assert trade_drawn == ["1", "2"]  # one R bar; the equity from 0 to the exit
    assert page.title == "Day report 2025-01-30"
    assert not page.images  # no static chart left
    for text in ("Day report 2025-01-30", "baseline_v1", CE, "-₹6,552.00", "-1.05",
                 "₹6,552.00 (1.05 R)", "09:24:30", "09:26:40", "No risk events."):
        assert text in page.text, text
    assert [u for u in page.requested if not u.startswith(("file:", "data:"))] == []
    # the injected script is shown as text and never ran
    assert escaped_page.title == "Day report 2025-01-30"
    assert HOSTILE in escaped_page.text
