"""The Recorder actor: ticks to a session file, partial batches flushed on the clock, restarts
append."""

from __future__ import annotations

from pathlib import Path

from actors.recorder import Recorder, RecorderSettings
from engine.market.session_file import SessionReader
from engine.messages import StatusRequest, Tick, TickBatch
from engine.runtime.clock import VirtualClock, ist_epoch

T0 = ist_epoch(2025, 9, 3, 10, 0)
SYM = "NIFTY09SEP2524000CE"


def ticks(n: int, start: float) -> TickBatch:
    return TickBatch(tuple(Tick(SYM, "NFO", 100.0 + i * 0.05, start + i, start + i - 0.01,
                                1000 + i) for i in range(n)))


def test_partial_batch_reaches_disk_on_the_flush_timer_and_restart_appends(
        tmp_path: Path) -> None:
    path = tmp_path / "rec.db"
    clock = VirtualClock(start=T0)
    settings = RecorderSettings(batch_size=1000, flush_interval_s=1.0)
    ref = Recorder.start(path=path, settings=settings, symbols=[(SYM, "NFO")], name="recorder",
                         clock=clock)
    ref.tell(ticks(5, T0))
    assert ref.ask(StatusRequest(), timeout=5)["pending"] == 5
    clock.advance_to(T0 + 1.0)  # the flush timer commits the partial batch
    assert ref.ask(StatusRequest(), timeout=5) == {"path": str(path), "written": 5, "pending": 0}
    assert SessionReader(path).count() == 5  # on disk while the recorder still runs
    ref.stop()
    again = Recorder.start(path=path, settings=settings, symbols=[(SYM, "NFO")],
                           name="recorder", clock=clock)
    again.tell(ticks(3, T0 + 10))
    again.stop()
    recorded = list(SessionReader(path).ticks())
    assert len(recorded) == 8
    assert recorded[0] == ticks(5, T0).ticks[0]  # every raw field round-trips
    assert [t.recv_ts for t in recorded] == sorted(t.recv_ts for t in recorded)
