"""A realistic synthetic NIFTY trading day, deterministic for (date, seed, settings).

Owns the generator behind the bundled replay day, the simulator's default tick source and the
test sessions:

- **spot**: the NIFTY index as a one-second log random walk from ``spot_open`` with a U-shaped
  intraday volatility (lively open, quiet midday, livelier close) plus trend / reversal / range
  regimes, so options make clean swings;
- **options**: the baseline universe (ATM ± ``width`` strikes, CE and PE, nearest weekly expiry)
  priced by Black-Scholes on the spot with a volatility smile (OTM puts richer) and time decay
  to the expiry's 15:30 close, rounded to the tick, never below one tick;
- **arrivals**: Poisson per symbol and minute, with a rate that falls away from the money and
  follows the intraday activity shape; the index ticks about once a second; cumulative volume
  grows by whole lots, heavier near the money; receive time = exchange time + a small latency;
- **dirt** real feeds have: zero prices, duplicate ticks, late ticks that arrive out of order,
  one silent spell for every symbol, and one cumulative-volume reset (a feed restart).

Determinism: every random draw comes from a numpy ``PCG64`` stream seeded by (seed, date,
purpose[, minute]); each minute has its own stream, so nothing downstream depends on how many
draws an earlier minute took. Times are integer milliseconds/microseconds and prices integer
ticks until they become the floats of a ``Tick`` (by one correctly rounded division), so the tick
stream is the same bytes on every run and machine. (numpy keeps ``PCG64`` bit streams stable
across platforms; a future numpy release could in principle change how a distribution is drawn,
so the file's meta records ``numpy_version``.) ``GENERATOR_VERSION`` changes whenever the output
for the same inputs would change; a test pins a digest of a small day to catch that.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from time import time_ns
from typing import Any

import numpy as np
from loguru import logger

from engine.market.instruments import (
    INDEX_EXCHANGE,
    INDEX_SYMBOL,
    OPTION_EXCHANGE,
    InstrumentFacts,
    InstrumentSpec,
    atm_strike,
    is_trading_day,
    next_expiry,
    session_bounds,
    universe_symbols,
)
from engine.market.session_file import (
    SessionFileError,
    SessionReader,
    SessionWriter,
    SymbolInfo,
    TickScan,
    file_identity,
    trust_scan,
)
from engine.market.synth_settings import SynthSettings, parse_clock_time
from engine.market.tick_columns import STABLE_AGE_NS, default_cache_dir, write_atomic
from engine.messages import Tick
from engine.runtime.clock import IST, Clock

GENERATOR_VERSION = "1"

_YEAR_MS = 365.0 * 86_400_000.0
_MIN_YEARS = 1e-7  # ~3 s: time to expiry never reaches zero (prices stay finite)
_CHUNK_MS = 60_000  # one random stream and one generation step per minute
_DUP_DELAY_MAX_US = 3_000
_WRITE_BATCH = 20_000
# purposes of the random streams (part of each stream's seed)
_STREAM_REGIMES = 1
_STREAM_SPOT = 2
_STREAM_RESET = 3
_STREAM_MINUTE = 4


@dataclass(frozen=True, slots=True)
class DirtCounts:
    """How much deliberate dirt a generated stream holds."""

    zero_prices: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What ``generate_session`` wrote."""

    path: Path
    date: date
    seed: int
    expiry: date
    atm: int
    ticks: int
    symbols: int
    file_bytes: int
    spot_open: float
    spot_close: float
    spot_high: float
    spot_low: float
    dirt: DirtCounts
    silent_spell: tuple[float, float] | None
    volume_reset: tuple[str, float] | None


@dataclass(frozen=True, slots=True)
class Regime:
    """A stretch of the day with one drift: ``pct_per_hour`` > 0 up, < 0 down, 0 range."""

    start_s: int
    end_s: int
    pct_per_hour: float


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _ticks_per_rupee(tick_size: float) -> int:
    per = round(1.0 / tick_size)
    if per <= 0 or abs(per * tick_size - 1.0) > 1e-9:
        raise ValueError(f"tick size {tick_size} must divide one rupee evenly")
    return per


def _stream(*entropy: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


_erfc = np.frompyfunc(math.erfc, 1, 1)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erfc(-x / math.sqrt(2.0)), dtype=np.float64) * 0.5


class OptionPricer:
    """Black-Scholes with a smile, time to an expiry at ``expiry_ts`` (epoch s) in years."""

    def __init__(self, settings: SynthSettings, expiry_ts: float, tick_size: float) -> None:
        self.settings = settings
        self.expiry_ms = expiry_ts * 1000.0
        self.ticks_per_rupee = _ticks_per_rupee(tick_size)

    def implied_vol(self, spot: np.ndarray, strike: np.ndarray,
                    years: np.ndarray) -> np.ndarray:
        """The smile in standardised moneyness z = ln(K/S)/(atm_iv·√T), flat beyond the wing.

        Measured in z rather than ln(K/S), the default smile keeps every chain monotone in strike
        from a week out to the last minute before expiry (a test sweeps that)."""
        s = self.settings
        z = np.clip(np.log(strike / spot) / (s.atm_iv * np.sqrt(years)),
                    -s.smile_wing_z, s.smile_wing_z)
        return np.maximum(s.atm_iv + s.iv_skew * z + s.iv_smile * z * z, s.min_iv)

    def fair(self, spot: np.ndarray, t_ms: np.ndarray, strike: np.ndarray,
             is_call: np.ndarray) -> np.ndarray:
        """Theoretical prices (rupees) for arrays of spot, time (epoch ms), strike, kind."""
        spot = np.asarray(spot, dtype=np.float64)
        strike = np.asarray(strike, dtype=np.float64)
        years = np.maximum((self.expiry_ms - np.asarray(t_ms, dtype=np.float64)) / _YEAR_MS,
                           _MIN_YEARS)
        vol = self.implied_vol(spot, strike, years)
        r = self.settings.rate
        sd = vol * np.sqrt(years)
        d1 = (np.log(spot / strike) + (r + 0.5 * vol * vol) * years) / sd
        d2 = d1 - sd
        disc = strike * np.exp(-r * years)
        call = spot * _norm_cdf(d1) - disc * _norm_cdf(d2)
        put = disc * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        return np.where(is_call, call, put)

    def price_ticks(self, spot: np.ndarray, t_ms: np.ndarray, strike: np.ndarray,
                    is_call: np.ndarray) -> np.ndarray:
        """Prices as whole ticks (int64), at least one tick."""
        fair = self.fair(spot, t_ms, strike, is_call)
        return np.maximum(np.rint(fair * self.ticks_per_rupee), 1).astype(np.int64)


# Structured array of generated events; prices in ticks, times in integer ms / µs.
_EVENT = np.dtype([("sym", np.int32), ("t_ms", np.int64), ("recv_us", np.int64),
                   ("ltp", np.int64), ("bid", np.int64), ("ask", np.int64),
                   ("volume", np.int64), ("gen", np.int64)])


@dataclass
class _Counters:
    zero_prices: int = 0
    duplicates: int = 0
    late: int = 0


@dataclass
class _StreamState:
    """What carries over from one minute to the next while generating."""

    volume: np.ndarray
    pending: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=_EVENT))
    generated: int = 0
    counters: _Counters = field(default_factory=_Counters)


class SyntheticDay:
    """One generated day: its universe, spot path, dirt plan, and its tick stream.

    ``width``, ``start`` (IST time) and ``minutes`` narrow the day for small sessions; the spot
    path and regimes are always those of the whole session, so a window shows the same market.
    """

    def __init__(self, day: date | str, seed: int, settings: SynthSettings | None = None,
                 spec: InstrumentSpec | None = None, *, width: int | None = None,
                 start: time | str | None = None, minutes: int | None = None) -> None:
        self.settings = settings or SynthSettings()
        problems = self.settings.problems()
        if problems:
            raise ValueError("; ".join(f"synth.{key if isinstance(key, str) else key[0]}: {message}"
                                       for key, message in problems))
        self.spec = spec or InstrumentSpec()
        self.date = _as_date(day)
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        if not is_trading_day(self.date, self.spec):
            raise ValueError(f"{self.date} is not a trading day (weekend or holiday)")
        self._per_rupee = _ticks_per_rupee(self.spec.tick_size)
        s = self.settings
        self.width = s.width if width is None else width
        if self.width < 0:
            raise ValueError(f"width must be >= 0, got {self.width}")

        open_ts, close_ts = session_bounds(self.date, self.spec)
        self.open_ms = round(open_ts * 1000)
        self.close_ms = round(close_ts * 1000)
        start_ms = self.open_ms if start is None else self._ist_ms(
            start if isinstance(start, time) else parse_clock_time(start, "start"))
        span = s.duration_minutes if minutes is None else minutes
        if span < 1:
            raise ValueError(f"minutes must be >= 1, got {span}")
        if not self.open_ms <= start_ms < self.close_ms:
            raise ValueError(f"start must lie inside the session, got {start}")
        self.start_ms = start_ms
        self.end_ms = min(start_ms + span * 60_000, self.close_ms)

        self._session_s = (self.close_ms - self.open_ms) // 1000
        self._activity_mean = float(self._activity_shape(
            np.arange(self._session_s + 1, dtype=np.float64)).mean())
        self._state: _StreamState | None = None
        day = self.date.toordinal()
        self.regimes = self._draw_regimes(_stream(seed, day, _STREAM_REGIMES))
        self._spot = self._spot_path(_stream(seed, day, _STREAM_SPOT))

        self.expiry = next_expiry(self.date, self.spec)
        expiry_close = datetime.combine(self.expiry, self.spec.session_close, IST).timestamp()
        self.pricer = OptionPricer(s, expiry_close, self.spec.tick_size)
        self.atm = atm_strike(self.spot_at(self.start_ms / 1000.0))
        options = universe_symbols(self.atm, self.expiry, self.spec, self.width)
        self.symbols = [SymbolInfo(INDEX_SYMBOL, INDEX_EXCHANGE, "INDEX"),
                        *(SymbolInfo.for_symbol(o, OPTION_EXCHANGE) for o in options)]
        self._strike = np.array([sym.strike or 0 for sym in self.symbols], dtype=np.float64)
        self._is_call = np.array([sym.kind == "CE" for sym in self.symbols])

        silent_ms = self._ist_ms(parse_clock_time(s.silent_start, "silent_start"))
        self.silent_spell_ms = ((silent_ms, silent_ms + round(s.silent_seconds * 1000))
                                if s.silent_seconds > 0 else None)
        self.volume_reset = self._pick_volume_reset(_stream(seed, day, _STREAM_RESET))

    # -- the market ----------------------------------------------------------------------------
    def _ist_ms(self, at: time) -> int:
        return round(datetime.combine(self.date, at, IST).timestamp() * 1000)

    def _activity_shape(self, seconds_from_open: np.ndarray) -> np.ndarray:
        s = self.settings
        to_close = self._session_s - seconds_from_open
        return (1.0 + s.open_boost * np.exp(-seconds_from_open / (60.0 * s.open_decay_min))
                + s.close_boost * np.exp(-to_close / (60.0 * s.close_decay_min)))

    def activity(self, seconds_from_open: np.ndarray) -> np.ndarray:
        """The U-shaped intraday activity, mean 1 over the session."""
        return self._activity_shape(seconds_from_open) / self._activity_mean

    def _draw_regimes(self, rng: np.random.Generator) -> list[Regime]:
        s = self.settings
        regimes: list[Regime] = []
        start, direction = 0, 1.0 if rng.random() < 0.5 else -1.0
        while start < self._session_s:
            minutes = s.regime_min_min + rng.exponential(s.regime_mean_min - s.regime_min_min)
            end = min(self._session_s, start + max(60, round(minutes * 60)))
            is_range = rng.random() < s.range_prob
            flip = rng.random() < s.reversal_prob
            strength = 0.6 + 0.8 * rng.random()
            if is_range:
                pct = 0.0
            else:
                if regimes and flip:
                    direction = -direction
                pct = direction * strength * s.trend_pct_per_hour
            regimes.append(Regime(start, end, round(pct, 6)))
            start = end
        return regimes

    def _spot_path(self, rng: np.random.Generator) -> np.ndarray:
        """Spot at every second of the session (index 0 = the open)."""
        s = self.settings
        n = self._session_s
        z = rng.standard_normal(n)
        act = self.activity(np.arange(n, dtype=np.float64) + 0.5)
        vol_shape = act / math.sqrt(float(np.mean(act * act)))
        sigma = s.annual_vol / math.sqrt(252.0 * n) * vol_shape
        drift = np.zeros(n)
        for regime in self.regimes:
            drift[regime.start_s:regime.end_s] = regime.pct_per_hour / 100.0 / 3600.0
        steps = drift - 0.5 * sigma * sigma + sigma * z
        log_path = np.concatenate(([0.0], np.cumsum(steps)))
        return s.spot_open * np.exp(log_path)

    def spot_at(self, ts: float | np.ndarray) -> Any:
        """The (unrounded) spot at epoch seconds ``ts``, linear between whole seconds."""
        seconds = (np.asarray(ts, dtype=np.float64) * 1000.0 - self.open_ms) / 1000.0
        value = np.interp(seconds, np.arange(self._session_s + 1, dtype=np.float64), self._spot)
        return float(value) if np.ndim(value) == 0 else value

    def _pick_volume_reset(self, rng: np.random.Generator) -> tuple[str, float] | None:
        offset = int(rng.integers(-2, 3))
        kind = "CE" if rng.random() < 0.5 else "PE"
        text = self.settings.volume_reset_at
        if not text:
            return None
        at_ms = self._ist_ms(parse_clock_time(text, "volume_reset_at"))
        if not self.start_ms <= at_ms < self.end_ms:
            return None
        offset = max(-self.width, min(self.width, offset))
        strike = self.atm + offset * self.spec.strike_step
        symbol = next(sym.symbol for sym in self.symbols
                      if sym.strike == strike and sym.kind == kind)
        return symbol, at_ms / 1000.0

    # -- the stream ----------------------------------------------------------------------------
    def ticks(self) -> Iterator[Tick]:
        """Every tick of the day in arrival order (as a feed would deliver them)."""
        for rows in self._row_blocks():
            for row in rows:
                yield Tick(*row)

    def _row_blocks(self) -> Iterator[list[tuple[Any, ...]]]:
        """The stream as lists of ``Tick`` field tuples, one list per generated minute."""
        state = _StreamState(volume=np.zeros(len(self.symbols), dtype=np.int64))
        self._state = state
        first = (self.start_ms - self.open_ms) // _CHUNK_MS
        last = (self.end_ms - 1 - self.open_ms) // _CHUNK_MS
        for minute in range(first, last + 1):
            c0 = max(self.open_ms + minute * _CHUNK_MS, self.start_ms)
            c1 = min(self.open_ms + (minute + 1) * _CHUNK_MS, self.end_ms)
            events = np.concatenate((state.pending, self._minute_events(minute, c0, c1, state)))
            events = events[np.lexsort((events["gen"], events["recv_us"]))]
            ready = events["recv_us"] < c1 * 1000
            state.pending = events[~ready]
            yield self._rows(events[ready])
        yield self._rows(state.pending)
        state.pending = state.pending[:0]

    @property
    def dirt(self) -> DirtCounts:
        """Dirt in the ticks generated so far by the last ``ticks()`` stream."""
        if self._state is None:
            return DirtCounts()
        c = self._state.counters
        return DirtCounts(c.zero_prices, c.duplicates, c.late)

    def _rates(self, spot: float, mid_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """Ticks per second and mean lots per trade for every symbol (index first)."""
        s = self.settings
        dist = np.abs(self._strike - spot) / self.spec.strike_step
        act = float(self.activity(np.array([(mid_ms - self.open_ms) / 1000.0]))[0])
        rate = np.maximum(s.far_tps, s.atm_tps * np.exp(-dist / s.tps_decay_strikes)) * act
        rate[0] = s.index_tps
        lots = 1.0 + (s.atm_lots - 1.0) * np.exp(-dist / s.lots_decay_strikes)
        lots[0] = 0.0
        return rate, lots

    def _minute_events(self, minute: int, c0: int, c1: int, state: _StreamState) -> np.ndarray:
        s = self.settings
        rng = _stream(self.seed, self.date.toordinal(), _STREAM_MINUTE, minute)
        rate, mean_lots = self._rates(self.spot_at(c0 / 1000.0), (c0 + c1) / 2.0)
        counts = rng.poisson(rate * (c1 - c0) / 1000.0)
        n = int(counts.sum())
        ev = np.empty(n, dtype=_EVENT)
        sym = np.repeat(np.arange(len(self.symbols), dtype=np.int32), counts)
        t_ms = c0 + np.floor(rng.random(n) * (c1 - c0)).astype(np.int64)
        order = np.lexsort((t_ms, sym))
        sym, t_ms = sym[order], t_ms[order]
        ev["sym"], ev["t_ms"] = sym, t_ms
        ev["gen"] = 2 * (state.generated + np.arange(n, dtype=np.int64))
        state.generated += n

        # cumulative volume: whole lots per trade (none for the index)
        u_lots = rng.random(n)
        lots = 1 + np.floor(-np.log1p(-u_lots) * (mean_lots[sym] - 1.0)).astype(np.int64)
        qty = np.where(sym == 0, 0, lots * self.spec.lot_size)
        ev["volume"] = self._cumulative(sym, t_ms, qty, state, c0, c1)

        # prices
        spot = self.spot_at(t_ms / 1000.0)
        is_index = sym == 0
        option = ~is_index
        ltp = np.empty(n, dtype=np.int64)
        ltp[option] = self.pricer.price_ticks(spot[option], t_ms[option],
                                              self._strike[sym[option]],
                                              self._is_call[sym[option]])
        ltp[is_index] = np.rint(spot[is_index] * self._per_rupee).astype(np.int64)
        half = np.maximum(1, np.rint(ltp * s.half_spread_pct / 100.0)).astype(np.int64)
        ev["bid"] = np.where(is_index, 0, np.maximum(1, ltp - half))
        ev["ask"] = np.where(is_index, 0, ltp + half)

        # dirt and latency
        u_zero, u_dup, u_late, u_lat, u_dup_delay = rng.random((5, n))
        zero = u_zero < s.zero_price_rate
        ev["ltp"] = np.where(zero, 0, ltp)
        late = u_late < s.late_rate
        ordinary_us = np.minimum(
            1000.0 * (s.latency_min_ms - np.log1p(-u_lat) * s.latency_mean_ms),
            1000.0 * max(s.latency_min_ms, s.latency_max_ms))
        late_us = 1e6 * (s.late_min_s + u_lat * (s.late_max_s - s.late_min_s))
        ev["recv_us"] = t_ms * 1000 + np.floor(np.where(late, late_us, ordinary_us)
                                               ).astype(np.int64)
        dup = u_dup < s.duplicate_rate
        copies = ev[dup].copy()
        copies["recv_us"] += np.floor(u_dup_delay[dup] * _DUP_DELAY_MAX_US).astype(np.int64)
        copies["gen"] += 1
        out = np.concatenate((ev, copies))
        out = out[self._audible(out)]
        c = state.counters
        c.zero_prices += int(np.count_nonzero(out["ltp"] == 0))
        c.duplicates += int(np.count_nonzero(out["gen"] % 2 == 1))
        c.late += int(np.count_nonzero(out["recv_us"] - out["t_ms"] * 1000 >= s.late_min_s * 1e6))
        return out

    def _cumulative(self, sym: np.ndarray, t_ms: np.ndarray, qty: np.ndarray,
                    state: _StreamState, c0: int, c1: int) -> np.ndarray:
        """Running day volume per symbol (events sorted by symbol, then time)."""
        totals = np.zeros(len(self.symbols), dtype=np.int64)
        np.add.at(totals, sym, qty)
        before_symbol = np.cumsum(totals) - totals
        volume = state.volume[sym] + np.cumsum(qty) - before_symbol[sym]
        state.volume += totals
        if self.volume_reset is not None:
            symbol, at = self.volume_reset
            at_ms = round(at * 1000)
            if c0 <= at_ms < c1:
                idx = next(i for i, info in enumerate(self.symbols) if info.symbol == symbol)
                mine = sym == idx
                carried = state.volume[idx] - int(qty[mine & (t_ms >= at_ms)].sum())
                volume[mine & (t_ms >= at_ms)] -= carried
                state.volume[idx] -= carried
        return volume

    def _audible(self, events: np.ndarray) -> np.ndarray:
        """False for events lost in the silent spell (traded or delivered inside it)."""
        if self.silent_spell_ms is None:
            return np.ones(len(events), dtype=bool)
        lo, hi = self.silent_spell_ms
        traded = (events["t_ms"] >= lo) & (events["t_ms"] < hi)
        delivered = (events["recv_us"] >= lo * 1000) & (events["recv_us"] < hi * 1000)
        return ~(traded | delivered)

    def _rows(self, events: np.ndarray) -> list[tuple[Any, ...]]:
        names = [sym.symbol for sym in self.symbols]
        exchanges = [sym.exchange for sym in self.symbols]
        syms = events["sym"].tolist()
        per = float(self._per_rupee)
        return list(zip([names[i] for i in syms], [exchanges[i] for i in syms],
                        (events["ltp"] / per).tolist(), (events["recv_us"] / 1e6).tolist(),
                        (events["t_ms"] / 1000.0).tolist(),
                        events["volume"].tolist(),
                        (events["bid"] / per).tolist(), (events["ask"] / per).tolist(),
                        [None] * len(syms), strict=True))

    # -- description ---------------------------------------------------------------------------
    def meta(self) -> dict[str, object]:
        spec = self.spec
        return {
            "date": self.date.isoformat(),
            "seed": str(self.seed),
            "generator": "engine.synth",
            "generator_version": GENERATOR_VERSION,
            "numpy_version": np.__version__,
            "settings": asdict(self.settings),
            # the day's facts as a broker would give them (InstrumentFacts.to_meta), plus the
            # generator's own rules
            "instrument": {**InstrumentFacts(spec.lot_size, spec.tick_size,
                                             spec.freeze_quantity, (self.expiry,),
                                             "synth").to_meta(),
                           "strike_step": spec.strike_step,
                           "expiry_weekday": spec.expiry_weekday,
                           "session_open": spec.session_open.isoformat(),
                           "session_close": spec.session_close.isoformat()},
            "index": {"symbol": INDEX_SYMBOL, "exchange": INDEX_EXCHANGE},
            "universe": [sym.symbol for sym in self.symbols[1:]],
            "atm": str(self.atm),
            "expiry": self.expiry.isoformat(),
            "width": str(self.width),
            "window": [self.start_ms / 1000.0, self.end_ms / 1000.0],
            "regimes": [[r.start_s, r.end_s, r.pct_per_hour] for r in self.regimes],
            "silent_spell": (None if self.silent_spell_ms is None else
                             [self.silent_spell_ms[0] / 1000.0, self.silent_spell_ms[1] / 1000.0]),
            "volume_reset": None if self.volume_reset is None else list(self.volume_reset),
        }

    def spot_summary(self) -> tuple[float, float, float, float]:
        """Open, close, high, low of the spot over the generated window."""
        lo_s = (self.start_ms - self.open_ms) // 1000
        hi_s = -(-(self.end_ms - self.open_ms) // 1000)
        window = self._spot[lo_s:hi_s + 1]
        return (float(window[0]), float(window[-1]), float(window.max()), float(window.min()))


def iter_day(*, date: date | str, seed: int, settings: SynthSettings | None = None,
             spec: InstrumentSpec | None = None) -> Iterator[Tick]:
    """The ticks of a synthetic day in arrival order (streamed minute by minute)."""
    return SyntheticDay(date, seed, settings, spec).ticks()


def generate_session(path: str | Path, *, date: date | str, seed: int,
                     settings: SynthSettings | None = None, spec: InstrumentSpec | None = None,
                     width: int | None = None, start: time | str | None = None,
                     minutes: int | None = None, overwrite: bool = False,
                     clock: Clock | None = None) -> SessionSummary:
    """Generate a day (or a window of one) into a new session file."""
    day = SyntheticDay(date, seed, settings, spec, width=width, start=start, minutes=minutes)
    path = Path(path)
    with SessionWriter(path, batch_size=_WRITE_BATCH, meta=day.meta(), symbols=day.symbols,
                       overwrite=overwrite, clock=clock) as writer:
        for rows in day._row_blocks():
            writer.extend(Tick(*row) for row in rows)
    spot_open, spot_close, high, low = day.spot_summary()
    spell = day.silent_spell_ms
    return SessionSummary(
        path=path, date=day.date, seed=seed, expiry=day.expiry, atm=day.atm,
        ticks=writer.written, symbols=len(day.symbols), file_bytes=path.stat().st_size,
        spot_open=spot_open, spot_close=spot_close, spot_high=high, spot_low=low,
        dirt=day.dirt, silent_spell=None if spell is None else (spell[0] / 1000, spell[1] / 1000),
        volume_reset=day.volume_reset)


def small_session(path: str | Path, *, date: date | str, seed: int, symbols: int = 2,
                  minutes: int = 3, start: str = "09:15",
                  settings: SynthSettings | None = None) -> SessionSummary:
    """A small session for tests: ``symbols`` strikes each side of ATM (2·(2·symbols+1) options
    plus the index) for ``minutes`` minutes from ``start`` (IST)."""
    return generate_session(path, date=date, seed=seed, settings=settings, width=symbols,
                            start=start, minutes=minutes)


def settings_fingerprint(settings: SynthSettings, spec: InstrumentSpec) -> str:
    """A short stable hash of everything that shapes a generated day besides date and seed."""
    facts = {"settings": asdict(settings),
             "spec": {"lot_size": spec.lot_size, "tick_size": spec.tick_size,
                      "strike_step": spec.strike_step, "expiry_weekday": spec.expiry_weekday,
                      "session_open": spec.session_open.isoformat(),
                      "session_close": spec.session_close.isoformat(),
                      "holidays": sorted(d.isoformat() for d in spec.holidays)}}
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def bundled_day_path(cache_dir: str | Path | None = None, *,
                     settings: SynthSettings | None = None,
                     spec: InstrumentSpec | None = None) -> Path:
    """The bundled day (``default_date``, ``default_seed``), generated on first use.

    Generated into a temporary file in the cache directory and renamed into place, so a reader
    never sees a partial file and two racing processes both end with a complete one. A cached
    file from another generator version (or unreadable) is regenerated.
    """
    settings = settings or SynthSettings()
    spec = spec or InstrumentSpec()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = (f"synth-{settings.default_date}-seed{settings.default_seed}-"
            f"{settings_fingerprint(settings, spec)}.sqlite")
    path = folder / name
    if _is_current(path):
        return path
    logger.info("generating the bundled synthetic day {} (seed {}) into {}",
                settings.default_date, settings.default_seed, path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        generate_session(tmp, date=settings.default_date, seed=settings.default_seed,
                         settings=settings, spec=spec, overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _is_current(path: Path) -> bool:
    """Whether the cached day is a sound file of this generator version.

    The full check opens the file, which scans every tick (seconds for a day). It runs only
    when the stamp beside the file (``<name>.stamp``: the generator version, the file's
    identity: inode, size and mtime, and what the scan found) does not match the file as it is
    now; a match hands the recorded scan to the session reader instead. A regenerated file is
    a new inode, an edited one a new mtime: either gets the full check and a new stamp.
    """
    if not path.exists():
        return False
    stamp = path.with_name(path.name + ".stamp")
    identity = file_identity(path)
    recorded = _read_stamp(stamp)
    if identity is not None and recorded is not None and recorded[0] == identity:
        trust_scan(identity, recorded[1])
        return True
    checked_at = time_ns()
    try:
        with SessionReader(path) as reader:
            version = reader.meta().get("generator_version")
            identity, scan = reader.identity, reader.scan
    except SessionFileError as exc:
        logger.warning("cached synthetic day is unusable, regenerating: {}", exc)
        return False
    if version != GENERATOR_VERSION:
        logger.info("cached synthetic day {} is from generator version {}, regenerating",
                    path, version)
        return False
    # a file changed within the file system's timestamp granularity of this check could keep
    # its mtime: only a file last written well before the check is stamped
    if identity is not None and checked_at - identity[4] > STABLE_AGE_NS:
        _write_stamp(stamp, identity, scan)
    return True


def _read_stamp(stamp: Path) -> tuple[tuple[Any, ...], TickScan] | None:
    """The identity and scan a stamp recorded, or None (missing, unreadable, other version)."""
    try:
        data = json.loads(stamp.read_text())
        if data["generator_version"] != GENERATOR_VERSION:
            return None
        return tuple(data["identity"]), TickScan(**data["scan"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_stamp(stamp: Path, identity: tuple[Any, ...], scan: TickScan) -> None:
    """Write the stamp atomically (temporary file, rename); a read-only cache goes unstamped."""
    text = json.dumps({"generator_version": GENERATOR_VERSION, "identity": list(identity),
                       "scan": asdict(scan)})
    try:
        write_atomic(stamp, text)
    except OSError as exc:
        logger.debug("cannot stamp the cached synthetic day {}: {}", stamp, exc)
