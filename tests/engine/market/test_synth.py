"""The synthetic day: determinism, universe, prices, arrivals, volume, dirt, files, cache."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import struct
import threading
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from engine.app.sections import load_config
from engine.config import ConfigError
from engine.market import session_file
from engine.market.instruments import (
    InstrumentSpec,
    next_expiry,
    parse_option_symbol,
    round_to_tick,
    universe_symbols,
)
from engine.market.session_file import SessionReader
from engine.market.synth import (
    GENERATOR_VERSION,
    SyntheticDay,
    SynthSettings,
    bundled_day_path,
    generate_session,
    iter_day,
    small_session,
)
from engine.market.tick_columns import CACHE_ENV
from engine.messages import Tick
from engine.runtime.clock import ist_epoch

DAY = "2025-09-03"  # a Wednesday; the weekly expiry is Tuesday 2025-09-09
# A 20-minute window of the full universe with the silent spell, the volume reset and heavier
# dirt inside it, so every property can be measured on ~80k ticks in well under a second.
WINDOW = SynthSettings(duration_minutes=20, silent_start="09:22:00", silent_seconds=40,
                       volume_reset_at="09:27:30", zero_price_rate=0.01, duplicate_rate=0.01,
                       late_rate=0.01)


def fingerprint(ticks: list[Tick]) -> str:
    """A byte-level digest of a tick stream (floats by their IEEE bits, not their repr)."""
    h = hashlib.sha256()
    for t in ticks:
        h.update(t.symbol.encode() + b"|" + t.exchange.encode())
        h.update(struct.pack("<5d", t.ltp, t.recv_ts, t.exchange_ts, t.bid, t.ask))
        h.update(struct.pack("<q", t.volume))
    return h.hexdigest()


@pytest.fixture(scope="module")
def window() -> tuple[SyntheticDay, list[Tick]]:
    day = SyntheticDay(DAY, 11, WINDOW)
    return day, list(day.ticks())


# -- determinism -------------------------------------------------------------------------------


def test_same_inputs_give_identical_streams() -> None:
    settings = SynthSettings(duration_minutes=4, width=3)
    a = list(SyntheticDay(DAY, 5, settings).ticks())
    b = list(iter_day(date=date(2025, 9, 3), seed=5, settings=settings))
    assert a == b and fingerprint(a) == fingerprint(b)
    assert fingerprint(list(SyntheticDay(DAY, 6, settings).ticks())) != fingerprint(a)
    assert fingerprint(list(SyntheticDay("2025-09-04", 5, settings).ticks())) != fingerprint(a)
    changed = replace(settings, atm_iv=0.2)
    assert fingerprint(list(SyntheticDay(DAY, 5, changed).ticks())) != fingerprint(a)


def test_stream_is_pinned_for_this_generator_version() -> None:
    """If this fails the generator's output changed: bump GENERATOR_VERSION (so cached days are
    regenerated) and update the digest."""
    ticks = list(SyntheticDay(DAY, 3, SynthSettings(duration_minutes=2, width=2)).ticks())
    assert GENERATOR_VERSION == "1"
    assert fingerprint(ticks) == PINNED_DIGEST


PINNED_DIGEST = "ec1f6591224d88bdeb94f14c7aa35a7067380a6f8909718ff8616ba2e17d95a3"


def test_window_shows_the_same_market_as_the_whole_day() -> None:
    whole = SyntheticDay(DAY, 9)
    part = SyntheticDay(DAY, 9, width=2, start="11:00", minutes=5)
    ts = ist_epoch(2025, 9, 3, 11, 2, 30.5)
    assert part.spot_at(ts) == whole.spot_at(ts)
    assert part.regimes == whole.regimes


# -- universe ----------------------------------------------------------------------------------


def test_default_universe_is_the_baseline_82() -> None:
    day = SyntheticDay(DAY, 1)
    spec = InstrumentSpec()
    assert day.expiry == next_expiry(date(2025, 9, 3), spec) == date(2025, 9, 9)
    assert day.atm == 24000
    options = [s.symbol for s in day.symbols[1:]]
    assert len(options) == 82
    assert options == universe_symbols(24000, date(2025, 9, 9), spec, 20)
    assert options[0] == "NIFTY09SEP2523000CE" and options[-1] == "NIFTY09SEP2525000PE"
    assert (day.symbols[0].symbol, day.symbols[0].exchange) == ("NIFTY", "NSE_INDEX")
    assert all(s.exchange == "NFO" and s.expiry == date(2025, 9, 9) for s in day.symbols[1:])


@pytest.mark.parametrize(("spot_open", "atm"), [(24037.0, 24000), (24051.0, 24100),
                                                 (23949.9, 23900)])
def test_atm_is_the_open_rounded_to_100(spot_open: float, atm: int) -> None:
    day = SyntheticDay(DAY, 1, SynthSettings(spot_open=spot_open))
    assert day.atm == atm
    assert parse_option_symbol(day.symbols[1].symbol).strike == atm - 20 * 50


def test_expiry_day_prices_to_the_close() -> None:
    day = SyntheticDay("2025-09-09", 2, SynthSettings(duration_minutes=2, width=1),
                       start="15:27")
    assert day.expiry == date(2025, 9, 9)
    ticks = [t for t in day.ticks() if t.exchange == "NFO" and t.ltp > 0]
    assert ticks and all(t.ltp >= 0.05 for t in ticks)


def test_rejects_days_and_settings_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="not a trading day"):
        SyntheticDay("2025-09-06", 1)  # a Saturday
    with pytest.raises(ValueError, match="seed"):
        SyntheticDay(DAY, -1)
    with pytest.raises(ValueError, match="start must lie inside the session"):
        SyntheticDay(DAY, 1, start="16:00")
    assert SynthSettings().problems() == []
    bad = SynthSettings(silent_start="noon", regime_min_min=90.0, regime_mean_min=30.0,
                        late_min_s=5.0, late_max_s=1.0, default_date="2025-13-01",
                        volume_reset_at="25:00")
    assert [k if isinstance(k, str) else k[0] for k, _ in bad.problems()] == [
        "default_date", "silent_start", "volume_reset_at", "regime_min_min", "late_min_s"]
    with pytest.raises(ConfigError, match=r"synth\.silent_start: silent_start: expected HH:MM "
                       r"or HH:MM:SS, got 'noon'"):
        load_config(None, env={}, overrides={"synth.silent_start": "noon"})
    with pytest.raises(ValueError, match=r"synth\.silent_start"):
        SyntheticDay(DAY, 1, bad)


# -- prices ------------------------------------------------------------------------------------


def test_prices_positive_on_the_grid_and_consistent(window: tuple[SyntheticDay, list[Tick]]
                                                    ) -> None:
    day, ticks = window
    strikes = {s.symbol: s for s in day.symbols}
    options = [t for t in ticks if t.exchange == "NFO" and t.ltp != 0]
    assert options
    for t in options[::7]:
        assert t.ltp >= 0.05 and round_to_tick(t.ltp) == t.ltp
        assert round_to_tick(t.bid) == t.bid and round_to_tick(t.ask) == t.ask
        assert 0.05 <= t.bid < t.ltp < t.ask
        info = strikes[t.symbol]
        want = day.pricer.price_ticks(np.array([day.spot_at(t.exchange_ts)]),
                                      np.array([t.exchange_ts * 1000.0]),
                                      np.array([float(info.strike or 0)]),
                                      np.array([info.kind == "CE"]))[0]
        assert t.ltp == want / 20
    for t in (t for t in ticks if t.exchange == "NSE_INDEX" and t.ltp != 0):
        assert t.ltp == round_to_tick(day.spot_at(t.exchange_ts))
        assert (t.bid, t.ask, t.volume) == (0.0, 0.0, 0)


def test_chain_is_monotone_in_strike_at_every_moment() -> None:
    day = SyntheticDay(DAY, 4)
    strikes = np.arange(day.atm - 1500, day.atm + 1501, 50, dtype=np.float64)
    calls = np.ones(len(strikes), dtype=bool)
    expiry_ms = day.pricer.expiry_ms
    for minutes_left in (6 * 24 * 60, 3 * 24 * 60, 24 * 60, 300, 60, 10, 1):
        t_ms = expiry_ms - minutes_left * 60_000.0
        for spot in np.linspace(day.atm - 600, day.atm + 600, 25):
            s = np.full(len(strikes), spot)
            t = np.full(len(strikes), t_ms)
            ce = day.pricer.price_ticks(s, t, strikes, calls)
            pe = day.pricer.price_ticks(s, t, strikes, ~calls)
            assert np.all(np.diff(ce) <= 0), (minutes_left, spot)
            assert np.all(np.diff(pe) >= 0), (minutes_left, spot)
            assert ce.min() >= 1 and pe.min() >= 1


def test_smile_makes_otm_puts_richer_and_time_decays() -> None:
    day = SyntheticDay(DAY, 4)
    spot = np.array([24000.0, 24000.0])
    strikes = np.array([23500.0, 24500.0])
    years = np.array([5 / 365, 5 / 365])
    put_side, call_side = day.pricer.implied_vol(spot, strikes, years)
    assert put_side > day.settings.atm_iv > 0 and put_side > call_side
    far = day.pricer.expiry_ms - 5 * 86_400_000.0
    near = day.pricer.expiry_ms - 1 * 86_400_000.0
    atm = np.array([24000.0])
    early = day.pricer.fair(atm, np.array([far]), atm, np.array([True]))[0]
    late = day.pricer.fair(atm, np.array([near]), atm, np.array([True]))[0]
    assert early > late > 0


# -- arrivals and volume -----------------------------------------------------------------------


def test_arrivals_fall_away_from_the_money(window: tuple[SyntheticDay, list[Tick]]) -> None:
    day, ticks = window
    seconds = (day.end_ms - day.start_ms) / 1000.0
    counts = Counter(t.symbol for t in ticks)
    by_distance: dict[int, list[int]] = defaultdict(list)
    for s in day.symbols[1:]:
        by_distance[abs((s.strike or 0) - day.atm) // 50].append(counts[s.symbol])
    near = np.mean(by_distance[0] + by_distance[1]) / seconds
    far = np.mean(by_distance[19] + by_distance[20]) / seconds
    assert near > 5 * far
    assert 0.03 < far < 0.5
    assert 0.8 < counts["NIFTY"] / seconds < 1.2


def test_arrival_order_and_latency(window: tuple[SyntheticDay, list[Tick]]) -> None:
    day, ticks = window
    recv = [t.recv_ts for t in ticks]
    assert recv == sorted(recv)
    lat = np.array([t.recv_ts - t.exchange_ts for t in ticks])
    ordinary = lat[lat < 0.5]
    # 2..120 ms, plus up to 3 ms more for the second delivery of a duplicate
    assert ordinary.min() >= 0.002 - 1e-6 and ordinary.max() <= 0.123 + 1e-6
    assert np.median(ordinary) < 0.05
    assert all(day.start_ms / 1000 <= t.exchange_ts < day.end_ms / 1000 for t in ticks)
    assert all(round(t.exchange_ts * 1000) / 1000 == t.exchange_ts for t in ticks[::11])


def test_cumulative_volume_grows_by_lots_except_the_one_reset(
        window: tuple[SyntheticDay, list[Tick]]) -> None:
    day, ticks = window
    assert day.volume_reset is not None
    reset_symbol, reset_ts = day.volume_reset
    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for t in ticks:
        if t.exchange == "NFO":
            assert t.volume is not None and t.volume > 0 and t.volume % 65 == 0
            series[t.symbol].append((t.exchange_ts, t.volume))
    drops: list[tuple[str, float]] = []
    for symbol, points in series.items():
        points.sort()
        drops += [(symbol, b[0]) for a, b in itertools.pairwise(points) if b[1] < a[1]]
    assert len(drops) == 1
    assert drops[0][0] == reset_symbol and drops[0][1] >= reset_ts
    near = Counter()
    for s in day.symbols[1:]:
        near[abs((s.strike or 0) - day.atm) // 50 <= 2] += max(v for _, v in series[s.symbol])
    assert near[True] / 10 > near[False] / 72  # heavier volume near the money


# -- dirt --------------------------------------------------------------------------------------


def test_dirt_is_present_at_the_configured_rates(window: tuple[SyntheticDay, list[Tick]]) -> None:
    day, ticks = window
    n = len(ticks)
    zeros = sum(1 for t in ticks if t.ltp == 0)
    # an option trade is unique by (symbol, exchange time, cumulative volume): a repeat is a
    # duplicate delivery (index ticks carry no volume, so they are left out of this count)
    options = [t for t in ticks if t.exchange == "NFO"]
    seen: set[tuple[str, float | None, int | None, float]] = set()
    duplicates = 0
    for t in options:
        key = (t.symbol, t.exchange_ts, t.volume, t.ltp)
        duplicates += key in seen
        seen.add(key)
    late = [t for t in ticks if t.recv_ts - t.exchange_ts >= 0.5]
    assert 0.7 * 0.01 * n < zeros < 1.3 * 0.01 * n
    assert 0.7 * 0.01 * n < len(late) < 1.3 * 0.01 * n
    assert 0.7 * 0.01 * len(options) < duplicates < 1.3 * 0.01 * len(options)
    assert day.dirt.zero_prices == zeros and day.dirt.late == len(late)
    assert duplicates <= day.dirt.duplicates <= duplicates + 0.03 * (n - len(options))
    assert all(t.recv_ts - t.exchange_ts <= 3.0 + 1e-6 for t in late)

    # late ticks arrive after later trades of the same symbol (out of order)
    newest: dict[str, float] = {}
    late_out_of_order = 0
    for t in ticks:
        if t.recv_ts - t.exchange_ts >= 0.5 and t.exchange_ts < newest.get(t.symbol, 0.0):
            late_out_of_order += 1
        newest[t.symbol] = max(newest.get(t.symbol, 0.0), t.exchange_ts)
    assert late_out_of_order > 0.3 * len(late)


def test_silent_spell_has_no_ticks(window: tuple[SyntheticDay, list[Tick]]) -> None:
    day, ticks = window
    assert day.silent_spell_ms is not None
    lo, hi = (x / 1000 for x in day.silent_spell_ms)
    assert hi - lo == 40
    assert not [t for t in ticks if lo <= t.recv_ts < hi or lo <= t.exchange_ts < hi]
    assert any(lo - 2 <= t.recv_ts < lo for t in ticks)
    assert any(hi <= t.recv_ts < hi + 2 for t in ticks)


def test_dirt_can_be_switched_off() -> None:
    clean = SynthSettings(duration_minutes=3, width=2, zero_price_rate=0, duplicate_rate=0,
                          late_rate=0, silent_seconds=0, volume_reset_at="")
    day = SyntheticDay(DAY, 8, clean, start="12:19")
    ticks = list(day.ticks())
    assert day.silent_spell_ms is None and day.volume_reset is None
    assert all(t.ltp > 0 and t.recv_ts - t.exchange_ts < 0.5 for t in ticks)
    spell = ist_epoch(2025, 9, 3, 12, 20)  # the default silent spell is not applied
    assert any(spell <= t.recv_ts < spell + 40 for t in ticks)
    keys = [(t.symbol, t.exchange_ts, t.volume) for t in ticks if t.exchange == "NFO"]
    assert len(keys) == len(set(keys))  # no duplicates


# -- files -------------------------------------------------------------------------------------


def test_generated_file_holds_exactly_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "day.sqlite"
    settings = SynthSettings(duration_minutes=3, width=3)
    summary = generate_session(path, date=DAY, seed=12, settings=settings)
    expected = list(SyntheticDay(DAY, 12, settings).ticks())
    with SessionReader(path) as reader:
        assert list(reader.ticks()) == expected
        meta = reader.meta()
        symbols = reader.symbols()
    assert summary.ticks == len(expected) and summary.symbols == 15 == len(symbols)
    assert summary.file_bytes == path.stat().st_size > 0
    assert summary.atm == 24000 and summary.expiry == date(2025, 9, 9)
    assert (meta["date"], meta["seed"], meta["generator_version"]) == (DAY, "12",
                                                                        GENERATOR_VERSION)
    assert meta["expiry"] == "2025-09-09" and '"lot_size":65' in meta["instrument"]
    assert meta["universe"].count("NIFTY09SEP25") == 14 and "created" in meta
    options = universe_symbols(24000, date(2025, 9, 9), InstrumentSpec(), 3)
    assert [s.symbol for s in symbols] == ["NIFTY", *options]
    with pytest.raises(Exception, match="already exists"):
        generate_session(path, date=DAY, seed=12, settings=settings)


def test_small_session(tmp_path: Path) -> None:
    path = tmp_path / "small.sqlite"
    summary = small_session(path, date=DAY, seed=3, symbols=1, minutes=2, start="10:30")
    with SessionReader(path) as reader:
        ticks = list(reader.ticks())
        assert len(reader.symbols()) == 7
    start = ist_epoch(2025, 9, 3, 10, 30)
    assert summary.ticks == len(ticks) > 100
    assert all(start <= t.exchange_ts < start + 120 for t in ticks)
    assert {t.symbol for t in ticks} == {s.symbol for s in SyntheticDay(
        DAY, 3, width=1, start="10:30").symbols}


# -- the bundled day ---------------------------------------------------------------------------

TINY = SynthSettings(duration_minutes=2, width=1)


def test_bundled_day_is_generated_once_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = bundled_day_path(cache, settings=TINY)
    assert path.parent == cache and path.exists()
    inode = path.stat().st_ino
    assert bundled_day_path(cache, settings=TINY) == path
    assert path.stat().st_ino == inode  # not regenerated
    with SessionReader(path) as reader:
        assert reader.meta()["date"] == TINY.default_date
        assert reader.meta()["seed"] == str(TINY.default_seed)
        assert reader.count() > 0
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temp files left
    other = bundled_day_path(cache, settings=replace(TINY, default_seed=2))
    assert other != path and other.exists()


def test_bundled_day_regenerates_a_stale_or_broken_file(tmp_path: Path) -> None:
    path = bundled_day_path(tmp_path, settings=TINY)
    count = SessionReader(path).count()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'generator_version'")
    conn.close()
    assert bundled_day_path(tmp_path, settings=TINY) == path
    with SessionReader(path) as reader:
        assert reader.meta()["generator_version"] == GENERATOR_VERSION
        assert reader.count() == count
    path.write_bytes(b"junk")
    assert bundled_day_path(tmp_path, settings=TINY) == path
    assert SessionReader(path).count() == count


def test_a_settled_bundled_day_is_stamped_and_reopened_without_a_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundled_day_path(tmp_path, settings=TINY)
    stamp = path.with_name(path.name + ".stamp")
    assert not stamp.exists()  # written just now: within any timestamp granularity, unstamped
    settled = path.stat().st_mtime_ns - 10 * 10**9
    os.utime(path, ns=(settled, settled))
    assert bundled_day_path(tmp_path, settings=TINY) == path
    assert stamp.exists()
    with SessionReader(path) as reader:
        scanned = reader.scan
    scans: list[Path] = []
    check = session_file._check_ticks
    monkeypatch.setattr(session_file, "_check_ticks",
                        lambda p, conn: (scans.append(p), check(p, conn))[1])
    monkeypatch.setattr(session_file, "_SCANNED", {})  # as in a new process
    assert bundled_day_path(tmp_path, settings=TINY) == path
    with SessionReader(path) as reader:
        assert reader.scan == scanned and reader.count() == scanned.ticks
    assert scans == []  # the stamp stood in for the scan
    # edited in place (same inode and size): a new mtime, so the full check runs and regenerates
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'generator_version'")
    conn.close()
    monkeypatch.setattr(session_file, "_SCANNED", {})
    assert bundled_day_path(tmp_path, settings=TINY) == path
    assert scans
    with SessionReader(path) as reader:
        assert reader.meta()["generator_version"] == GENERATOR_VERSION
        assert reader.scan == scanned
    # a stamp that does not parse is no stamp
    stamp.write_text("{")
    os.utime(path, ns=(settled, settled))
    assert bundled_day_path(tmp_path, settings=TINY) == path
    assert json.loads(stamp.read_text())["scan"]["ticks"] == scanned.ticks


def test_bundled_day_uses_the_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    assert bundled_day_path(settings=TINY).parent == tmp_path / "env-cache"


def test_racing_first_uses_all_get_a_complete_file(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(bundled_day_path(tmp_path, settings=TINY))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(set(results)) == 1 and len(results) == 4
    with SessionReader(results[0]) as reader:
        assert reader.count() > 0
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]


# -- the default day ---------------------------------------------------------------------------


@pytest.mark.slow
def test_default_day_size_and_shape() -> None:
    day = SyntheticDay(DAY, SynthSettings().default_seed)
    counts: Counter[str] = Counter()
    per_minute = np.zeros(375, dtype=np.int64)
    for t in day.ticks():
        counts[t.symbol] += 1
        per_minute[min(374, int((t.exchange_ts - day.open_ms / 1000) // 60))] += 1
    total = sum(counts.values())
    assert 500_000 <= total <= 1_500_000
    seconds = 22_500
    assert 0.9 < counts["NIFTY"] / seconds < 1.1
    atm = [s.symbol for s in day.symbols if s.strike == day.atm]
    far = [s.symbol for s in day.symbols[1:] if abs((s.strike or 0) - day.atm) == 1000]
    assert 1.5 < np.mean([counts[s] for s in atm]) / seconds < 4.0
    assert 0.05 < np.mean([counts[s] for s in far]) / seconds < 0.25
    # U shape: the first and last half hours are busier than midday
    assert per_minute[:30].mean() > 1.3 * per_minute[150:210].mean()
    assert per_minute[-30:].mean() > 1.1 * per_minute[150:210].mean()
    assert day.dirt.zero_prices > 0 and day.dirt.duplicates > 0 and day.dirt.late > 0
    assert day.volume_reset is not None and day.silent_spell_ms is not None
    spot = day.spot_summary()
    assert 0.003 < (spot[2] - spot[3]) / spot[0] < 0.05
