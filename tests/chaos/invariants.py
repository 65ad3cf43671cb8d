"""What must hold after a chaos run, checked from what the run collected (``RunFacts``).

Owns the invariants of issue 8 as pure functions, each returning a ``Check`` (name, passed,
one-line detail) so the harness can print them all and a test can assert them:

- ``no_duplicate_orders``: every broker order is exactly one engine order, no engine order is
  left unresolved (``submitting`` / ``unknown``);
- ``stops_within_1s``: every entry fill (a short) was followed by its protective stop (or an
  exit) within 1 s of real time: engine fill time → the stop's creation, both on the engine's
  market clock, converted to real time. A fill the engine learned of while another process
  held the database locked reaches the strategy only once its record is durable (or the store
  gave up): its stop is due within 1 s of the lock's release. The broker-side figure (the
  trade's timestamp → the stop's order timestamp, whole market seconds) is printed beside it:
  it also contains the injected REST faults. Every short still open at the end has one resting
  stop for its whole quantity;
- ``trades_match``: the engine's fills equal the simulator's tradebook, order by order
  (quantity and average price);
- ``fill_prices_match``: every engine fill's price equals the broker's tradebook price for the
  part of the order it covers (its quantity after the order's earlier fills): never a guess
  (the intent's price, or 0 for a MARKET order whose row had no average price);
- ``positions_match``: the engine's positions (status) equal the broker's positionbook;
- ``realized_pnl_matches``: the engine's realized P&L = the sum of its closed trades = the
  broker's realized P&L (average-cost, from its tradebook);
- ``bars_complete``: after backfill, every minute in which the session had a valid tick for a
  traded symbol has a bar, or a recorded ``BarGap`` explaining it;
- ``crashes_recovered``: every injected exception produced a restart and the engine never
  stopped itself (no safe stop) and exited 0;
- ``broker_surprises_seen``: a broker that lost the engine's working orders (state loss) raised
  one critical alert per loss and the engine waited for the operator; hand closes, hand cancels
  and orphan stops are counted. Orders and trades the broker lost count as the broker's in the
  checks above (the simulator writes them out); orders placed by hand are the broker's own;
- ``memory_flat`` (soak only): engine RSS after warm-up grew by at most ``max_rss_growth``.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.broker import OrderRow, PositionRow, TradeRow
from engine.messages import Alert, Bar, BarGap, Fill, OrderPurpose, OrderStatus, Severity
from engine.runtime.clock import IST
from engine.sim.matching import HAND_TAG, TIMESTAMP_FORMAT
from engine.store.database import StoredOrder, StoredTrade

PRICE_TOLERANCE = 0.01
RESTING = ("open", "trigger pending")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"  {'PASS' if self.passed else 'FAIL'}  {self.name:<24} {self.detail}"


@dataclass
class RunFacts:
    """What a chaos run collected: the engine's view, the broker's, the session's, the faults."""

    speed: float
    market_origin: tuple[float, float]  # (market time, wall time) of one moment: the clock map
    db_locked: Sequence[tuple[float, float]]  # wall-clock spans another process held the DB
    status: Mapping[str, Any]
    broker_positions_live: Sequence[PositionRow]
    broker_orders: Sequence[OrderRow]
    broker_trades: Sequence[TradeRow]
    broker_positions: Sequence[PositionRow]
    orders: Sequence[StoredOrder]
    fills: Sequence[Fill]
    trades: Sequence[StoredTrade]
    bars: Mapping[str, Sequence[Bar]]
    gaps: Mapping[str, Sequence[BarGap]]
    session_minutes: Mapping[str, set[float]]  # per symbol, minute starts with a valid tick
    closed_through: float  # minutes starting before this must be closed
    restarts: Mapping[str, int]  # restart records by actor name
    crashes: Sequence[tuple[str, bool]]  # (actor name, the engine accepted the command)
    crashes_planned: int  # 0: a baseline run, nothing injected on purpose
    engine_exit: int | None
    rss_kb: Sequence[tuple[float, int]] = ()  # (real seconds since start, VmRSS kB)
    threads: Sequence[tuple[float, int]] = ()  # (real seconds since start, thread count)
    warmup_s: float = 0.0
    max_rss_growth: float | None = None  # None: not a soak, memory is reported only
    notes: dict[str, Any] = field(default_factory=dict)
    alerts: Sequence[Alert] = ()  # the engine's stored alerts
    state_losses: int = 0  # lose_state scenes played (their books are in broker_orders/trades)
    lost_trade_ids: frozenset[str] = frozenset()  # order ids of trades the broker lost
    operator_unhalts: int = 0  # the harness's operator decisions
    corrections: int = 0  # positions booked by reconciliation (not strategy trades)
    end_checks_failed: tuple[str, ...] = ()  # the engine's own [CHECKS] lines that FAILED


def check_all(facts: RunFacts) -> list[Check]:
    checks = [no_duplicate_orders(facts), stops_within_1s(facts), trades_match(facts),
              fill_prices_match(facts), positions_match(facts), realized_pnl_matches(facts),
              bars_complete(facts), crashes_recovered(facts), broker_surprises_seen(facts)]
    memory = memory_flat(facts)
    if memory is not None:
        checks.append(memory)
    return checks


def no_duplicate_orders(f: RunFacts) -> Check:
    ids = [o.broker_order_id for o in f.orders if o.broker_order_id]
    shared = sorted({i for i in ids if ids.count(i) > 1})
    known = set(ids)
    foreign = [r.orderid for r in f.broker_orders
               if r.orderid not in known and r.strategy != HAND_TAG]
    missing = sorted(known - {r.orderid for r in f.broker_orders})
    unresolved = [o.client_id for o in f.orders
                  if o.status in (OrderStatus.SUBMITTING, OrderStatus.UNKNOWN)]
    problems = []
    if shared:
        problems.append(f"broker orders shared by two engine orders: {shared}")
    if foreign:
        problems.append(f"broker orders the engine does not know: {foreign}")
    if missing:
        problems.append(f"engine orders the broker does not have: {missing}")
    if unresolved:
        problems.append(f"unresolved engine orders: {unresolved}")
    if not f.broker_orders:
        problems.append("no order was placed: the run proves nothing")
    detail = "; ".join(problems) or (f"{len(f.orders)} engine orders, {len(f.broker_orders)} at "
                                     f"the broker, one to one; none unresolved")
    return Check("no duplicate order", not problems, detail)


def _protections(orders: Iterable[StoredOrder]) -> dict[tuple[str, str], list[StoredOrder]]:
    by_key: dict[tuple[str, str], list[StoredOrder]] = defaultdict(list)
    for o in orders:
        if o.purpose in (OrderPurpose.STOP, OrderPurpose.EXIT):
            by_key[(o.strategy, o.symbol)].append(o)
    for found in by_key.values():
        found.sort(key=lambda o: o.created_ts)
    return by_key


def _broker_seconds(stamp: str) -> float | None:
    try:
        return datetime.strptime(stamp, TIMESTAMP_FORMAT).replace(tzinfo=IST).timestamp()
    except ValueError:
        return None


def _stop_due(fill_wall: float, locked: Sequence[tuple[float, float]]) -> tuple[float, bool]:
    """When the stop for a fill seen at ``fill_wall`` is due (wall time): 1 s later, or 1 s after
    the end of a database lock that held the fill's delivery; and whether one did."""
    due, held = fill_wall + 1.0, False
    for start, end in sorted(locked):
        if start <= due and end >= fill_wall:
            due, held = max(due, end + 1.0), True
    return due, held


def stops_within_1s(f: RunFacts) -> Check:
    market0, wall0 = f.market_origin

    def wall(market_ts: float) -> float:
        return wall0 + (market_ts - market0) / f.speed

    protections = _protections(f.orders)
    traded: dict[str, float] = {}
    for t in f.broker_trades:
        at = _broker_seconds(t.timestamp)
        if at is not None:
            traded[t.orderid] = min(at, traded.get(t.orderid, at))
    placed = {r.orderid: _broker_seconds(r.timestamp) for r in f.broker_orders}
    engine_s: list[float] = []
    broker_s: list[float] = []
    late: list[str] = []
    held = 0
    for fill in f.fills:
        if fill.purpose is not OrderPurpose.ENTRY:
            continue
        after = [o for o in protections.get((fill.strategy, fill.symbol), ())
                 if o.created_ts >= fill.ts - 1e-6]
        if not after:
            late.append(f"{fill.symbol} fill at {fill.ts:.1f} never protected")
            continue
        created = wall(after[0].created_ts)
        due, during_lock = _stop_due(wall(fill.ts), f.db_locked)
        held += during_lock
        engine_s.append(created - wall(fill.ts))
        if created > due:
            late.append(f"{fill.symbol}: stop {created - wall(fill.ts):.2f} s after the fill"
                        + (" (database locked meanwhile)" if during_lock else ""))
        at_broker = [p for p in (placed.get(o.broker_order_id or "") for o in after) if p]
        filled_at = traded.get(fill.broker_order_id)
        if filled_at is not None and at_broker:
            broker_s.append(max(0.0, min(at_broker) - filled_at) / f.speed)
    uncovered = _uncovered_shorts(f)
    problems = late + uncovered
    if not engine_s and not uncovered:
        problems.append("no entry fill: the run proves nothing about stops")
    locked = (f" ({held} seen while the database was locked: stop within 1 s of its release)"
              if held else "")
    broker = (f"; broker side max {max(broker_s):.2f} s, {sum(b > 1.0 for b in broker_s)} over "
              f"1 s (includes injected REST faults)") if broker_s else ""
    detail = "; ".join(problems) if problems else (
        f"{len(engine_s)} entry fills{locked}, stop created max {max(engine_s):.3f} s (median "
        f"{statistics.median(engine_s):.3f} s) after the fill{broker}; every open short has "
        f"one resting stop")
    return Check("stop within 1 s of fill", not problems, detail)


def _uncovered_shorts(f: RunFacts) -> list[str]:
    found = []
    resting = [r for r in f.broker_orders if r.status.lower() in RESTING]
    for p in f.broker_positions:
        if p.quantity >= 0:
            if p.quantity > 0:
                found.append(f"{p.symbol}: a long position {p.quantity} (short-only strategy)")
            continue
        stops = [r for r in resting if r.symbol == p.symbol and r.action.upper() == "BUY"]
        if len(stops) != 1 or stops[0].quantity != -p.quantity:
            found.append(f"{p.symbol}: short {p.quantity} with resting BUY orders "
                         f"{[(r.orderid, r.quantity) for r in stops]}")
    return found


def trades_match(f: RunFacts) -> Check:
    """By hand orders (``HAND_TAG``) are the broker's own: the engine books them through
    reconciliation, not as fills."""
    by_hand = {r.orderid for r in f.broker_orders if r.strategy == HAND_TAG}
    broker: dict[str, list[TradeRow]] = defaultdict(list)
    for t in f.broker_trades:
        if t.orderid not in by_hand:
            broker[t.orderid].append(t)
    engine: dict[str, list[Fill]] = defaultdict(list)
    for fill in f.fills:
        engine[fill.broker_order_id].append(fill)
    problems = []
    for oid in sorted(set(broker) | set(engine)):
        b_qty = sum(t.quantity for t in broker.get(oid, ()))
        e_qty = sum(x.quantity for x in engine.get(oid, ()))
        b_val = sum(t.quantity * t.average_price for t in broker.get(oid, ()))
        e_val = sum(x.quantity * x.price for x in engine.get(oid, ()))
        if b_qty != e_qty:
            problems.append(f"order {oid}: broker traded {b_qty}, engine filled {e_qty}")
        elif b_qty and abs(b_val / b_qty - e_val / e_qty) > PRICE_TOLERANCE:
            problems.append(f"order {oid}: broker average {b_val / b_qty:.2f}, engine "
                            f"{e_val / e_qty:.2f}")
    if not f.broker_trades:
        problems.append("no trade: the run proves nothing")
    detail = "; ".join(problems) or (f"{len(f.fills)} engine fills = {len(f.broker_trades)} "
                                     f"broker trades over {len(broker)} orders")
    return Check("trades match", not problems, detail)


def _slice_price(trades: Sequence[TradeRow], start: int, end: int) -> float | None:
    """The average price of the order's traded quantity from ``start`` to ``end`` (trades in
    the tradebook's order); None when the trades do not reach ``end``."""
    done, value = 0, 0.0
    for t in trades:
        lo, hi = max(start, done), min(end, done + t.quantity)
        if hi > lo:
            value += (hi - lo) * t.average_price
        done += t.quantity
    return value / (end - start) if done >= end > start else None


def fill_prices_match(f: RunFacts) -> Check:
    broker: dict[str, list[TradeRow]] = defaultdict(list)
    for t in f.broker_trades:
        broker[t.orderid].append(t)
    problems = []
    for fill in f.fills:
        start = fill.cumulative_quantity - fill.quantity
        price = _slice_price(broker.get(fill.broker_order_id, []), start,
                             fill.cumulative_quantity)
        if price is None or abs(price - fill.price) > PRICE_TOLERANCE:
            problems.append(f"fill {fill.broker_order_id}@{fill.cumulative_quantity}: engine "
                            f"{fill.price:.2f}, tradebook "
                            f"{'none' if price is None else f'{price:.2f}'}")
    if not f.fills:
        problems.append("no fill: the run proves nothing")
    detail = "; ".join(problems[:5]) or f"{len(f.fills)} fill prices = the tradebook's"
    return Check("fill prices match", not problems, detail)


def positions_match(f: RunFacts) -> Check:
    broker = {p.symbol: p.quantity for p in f.broker_positions_live if p.quantity}
    positions = f.status.get("positions") or []
    engine = {p["symbol"]: p["quantity"] for p in positions if p.get("quantity")}
    ok = engine == broker
    detail = (f"{len(broker)} open: {broker}" if ok
              else f"engine {engine} != broker {broker}")
    return Check("positions match", ok, detail)


def broker_realized(trades: Sequence[TradeRow]) -> float:
    """Realized P&L from a tradebook, average cost per symbol, in the book's order."""
    total = 0.0
    books: dict[str, tuple[int, float]] = {}
    for t in trades:
        qty = t.quantity if t.action.upper() == "BUY" else -t.quantity
        pos, avg = books.get(t.symbol, (0, 0.0))
        if pos == 0 or (pos > 0) == (qty > 0):
            avg = (avg * abs(pos) + t.average_price * abs(qty)) / (abs(pos) + abs(qty))
            pos += qty
        else:
            closing = min(abs(qty), abs(pos))
            total += closing * ((avg - t.average_price) if pos < 0 else (t.average_price - avg))
            pos += qty
            if pos and (pos > 0) == (qty > 0):  # reversed through zero: the rest opens anew
                avg = t.average_price
        books[t.symbol] = (pos, avg if pos else 0.0)
    return total


def realized_pnl_matches(f: RunFacts) -> Check:
    """The engine's realized P&L = its closed trades = the broker's (average cost over its
    tradebook). Positions booked by reconciliation (a hand close: at the broker's trade price)
    are no strategy trade: with such corrections the engine is compared with the broker only.
    After a broker state loss, positions the broker lost were accepted at the last price by the
    operator: the broker cannot price that part, only engine = broker within it is not
    claimed; the figures are printed."""
    risk = f.status.get("risk") or {}
    engine = float(risk.get("realized_pnl") or 0.0)
    trades = sum(t.pnl for t in f.trades)
    tolerance = 0.05 + PRICE_TOLERANCE * max(1, len(f.fills))
    lost = [t for t in f.broker_trades if t.orderid in f.lost_trade_ids]
    kept = [t for t in f.broker_trades if t.orderid not in f.lost_trade_ids]
    broker = broker_realized(lost) + broker_realized(kept)
    figures = (f"engine {engine:+,.2f} | closed trades {trades:+,.2f} ({len(f.trades)}) | "
               f"broker {broker:+,.2f}")
    if f.state_losses:
        return Check("realized P&L matches", True, figures + f" (after {f.state_losses} broker "
                     "state loss(es): positions the broker lost were accepted at the last "
                     "price; not compared)")
    ok = abs(engine - broker) <= tolerance
    if f.corrections:
        return Check("realized P&L matches", ok, figures + f" ({f.corrections} positions "
                     "booked by reconciliation: engine = broker)")
    ok = ok and abs(engine - trades) <= tolerance
    return Check("realized P&L matches", ok, figures)


def broker_surprises_seen(f: RunFacts) -> Check:
    """What happened behind the engine's back was seen: a broker that lost working orders of
    the engine raised a critical ``broker_state_loss`` (once per loss, never more) and waited
    for the operator; hand closes and hand cancels were alerted (counted here)."""
    kinds = defaultdict(int)
    for a in f.alerts:
        kinds[(a.kind, a.severity is Severity.CRITICAL)] += 1
    mine = {o.broker_order_id for o in f.orders if o.broker_order_id}
    lost_working = [o for o in f.orders if o.status is OrderStatus.EXPIRED
                    and "broker state lost" in (o.reason or "")]
    loss_alerts = kinds[("broker_state_loss", True)]
    problems = []
    if lost_working and not loss_alerts:
        problems.append(f"{len(lost_working)} orders lost at the broker, no critical alert")
    if loss_alerts > max(f.state_losses, 0):
        problems.append(f"{loss_alerts} state-loss alerts for {f.state_losses} losses")
    if loss_alerts and not f.operator_unhalts:
        problems.append("entries were held but the operator never decided")
    by_hand = [r for r in f.broker_orders if r.strategy == HAND_TAG]
    detail = "; ".join(problems) or (
        f"{f.state_losses} broker state losses ({len(lost_working)} engine orders lost, "
        f"{loss_alerts} critical alerts, {f.operator_unhalts} operator unhalts); "
        f"{len(by_hand)} hand closes ({kinds[('reconcile_phantom', True)]} phantoms, "
        f"{kinds[('reconcile_mismatch', False)]} mismatches corrected); "
        f"{kinds[('cancelled_at_broker', True)] + kinds[('cancelled_at_broker', False)]} hand "
        f"cancels seen; {kinds[('reconcile_orphan_stop', True)]} orphan stops cancelled; "
        f"{len(mine)} engine orders")
    return Check("broker surprises seen", not problems, detail)


def bars_complete(f: RunFacts) -> Check:
    missing: dict[str, int] = {}
    required = with_bar = explained = 0
    for symbol, minutes in sorted(f.session_minutes.items()):
        have = {b.start for b in f.bars.get(symbol, ())}
        gaps = {g.start for g in f.gaps.get(symbol, ())}
        closed = [m for m in minutes if m < f.closed_through]
        required += len(closed)
        with_bar += sum(1 for m in closed if m in have)
        explained += sum(1 for m in closed if m not in have and m in gaps)
        lost = [m for m in closed if m not in have and m not in gaps]
        if lost:
            missing[symbol] = len(lost)
    if missing:
        return Check("bars complete", False,
                     f"minutes with neither a bar nor a gap, by symbol: {missing}")
    return Check("bars complete", required > 0,
                 f"{required} session minutes over {len(f.session_minutes)} symbols: {with_bar} "
                 f"bars, {explained} explained by a recorded gap, none missing")


def crashes_recovered(f: RunFacts) -> Check:
    sent: dict[str, int] = defaultdict(int)
    refused = [name for name, accepted in f.crashes if not accepted]
    for name, accepted in f.crashes:
        if accepted:
            sent[name] += 1
    short = {n: (f.restarts.get(n, 0), k) for n, k in sent.items() if f.restarts.get(n, 0) < k}
    sup = (f.status.get("supervisor") or {}).get("state")
    problems = []
    if refused:
        problems.append(f"chaos commands refused: {refused}")
    if short:
        problems.append(f"fewer restarts than crashes (restarts, crashes): {short}")
    if sup != "running":
        problems.append(f"supervisor state {sup!r}")
    # exit 1 is the engine's honest end of run: accepted only when every failed end-of-session
    # check is explained by the books the broker lost (its tradebook no longer has those fills)
    explained = f.engine_exit == 1 and f.end_checks_failed and all(
        _lost_fill_check(line, f.lost_trade_ids) for line in f.end_checks_failed)
    if f.engine_exit != 0 and not explained:
        problems.append(f"engine exit code {f.engine_exit}"
                        + (f" ({'; '.join(f.end_checks_failed[:3])})"
                           if f.end_checks_failed else ""))
    if f.crashes_planned and not sent:
        problems.append("no exception was injected")
    detail = "; ".join(problems) or (f"{sum(sent.values())} exceptions into {len(sent)} actors, "
                                     f"each restarted; {sum(f.restarts.values())} restarts in "
                                     f"all; clean exit")
    return Check("crashes recovered", not problems, detail)


def _lost_fill_check(line: str, lost: frozenset[str]) -> bool:
    """``FAILED fills of broker order X: engine N, broker tradebook 0`` for an order whose
    trades the broker lost in a state-loss scene; under the day lifecycle the line carries its
    date (``FAILED 2025-01-30: fills of ...``)."""
    dated = re.match(r"FAILED \d{4}-\d{2}-\d{2}: ", line)
    if dated:
        line = "FAILED " + line[dated.end():]
    words = line.split()
    return (line.startswith("FAILED fills of broker order ") and len(words) > 5
            and words[5].rstrip(":") in lost and line.endswith("broker tradebook 0"))


def rss_growth(samples: Sequence[tuple[float, int]], warmup_s: float) -> tuple[int, int, int]:
    """(RSS at warm-up, at the end, peak after warm-up) in kB: medians of the first and last
    tenth of the samples after warm-up, so one reading does not decide."""
    after = [kb for t, kb in samples if t >= warmup_s]
    if len(after) < 10:
        raise ValueError(f"{len(after)} RSS samples after warm-up: too few to judge growth")
    tenth = max(1, len(after) // 10)
    return (int(statistics.median(after[:tenth])), int(statistics.median(after[-tenth:])),
            max(after))


def memory_flat(f: RunFacts) -> Check | None:
    if not f.rss_kb:
        return None
    try:
        start, end, peak = rss_growth(f.rss_kb, f.warmup_s)
    except ValueError as exc:
        if f.max_rss_growth is None:
            return None
        return Check("memory flat", False, str(exc))
    growth = end / start - 1.0
    detail = (f"RSS {start / 1024:.1f} MiB after {f.warmup_s:.0f} s warm-up -> "
              f"{end / 1024:.1f} MiB at the end ({growth:+.1%}), peak {peak / 1024:.1f} MiB, "
              f"{len(f.rss_kb)} samples")
    counts = [n for t, n in f.threads if t >= f.warmup_s]
    if counts:
        detail += f"; threads {counts[0]} -> {counts[-1]} (max {max(counts)})"
    if f.max_rss_growth is None:
        return Check("memory (not judged)", True, detail)
    return Check("memory flat", growth <= f.max_rss_growth,
                 detail + f"; limit {f.max_rss_growth:+.0%}")
