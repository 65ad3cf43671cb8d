"""The Recorder actor: writes every tick the feed receives to a session file.

Owns one ``engine.market.session_file.SessionWriter``. The feed taps every ``TickBatch`` to it (raw
fields plus receive time); the writer commits in batches, and a timer flushes a partial batch
every ``flush_interval_s`` so a quiet feed is not held back. Killing the process loses at most
the batch not yet committed and never corrupts the file (the writer's transactions are atomic).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from engine.market.session_file import SessionWriter, SymbolInfo
from engine.messages import StatusRequest, TickBatch, TimerFired
from engine.runtime.actor import EngineActor, Supervision, handles
from engine.settings import setting

FLUSH_TIMER = "recorder.flush"


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    """Section ``[recorder]``: how recorded ticks reach the disk."""

    batch_size: int = setting(500, "ticks per committed batch (at most this many are lost if "
                              "the process is killed)", min=1, max=1_000_000)
    flush_interval_s: float = setting(1.0, "commit a partial batch at least this often, "
                                      "engine seconds", min=0.05, max=600)


class Recorder(EngineActor):
    def __init__(self, supervision: Supervision | None = None, *, path: Path,
                 settings: RecorderSettings, symbols: list[tuple[str, str]],
                 meta: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(supervision, **kw)
        self.path = path
        self.settings = settings
        self.symbols = symbols
        self.meta = meta or {}
        self.writer: SessionWriter | None = None

    def on_start(self) -> None:
        # a restarted recorder appends to the same file and continues its sequence
        self.writer = SessionWriter(
            self.path, batch_size=self.settings.batch_size, meta=self.meta,
            symbols=[SymbolInfo.for_symbol(s, e) for s, e in self.symbols],
            append=self.path.exists(), clock=self.clock)
        self.schedule_every(self.settings.flush_interval_s, FLUSH_TIMER)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as exc:
                logger.error("recorder: closing {} failed: {}", self.path, exc)
            self.writer = None

    @handles(TickBatch)
    def on_batch(self, batch: TickBatch) -> None:
        assert self.writer is not None
        self.writer.extend(batch.ticks)

    @handles(TimerFired)
    def on_timer(self, timer: TimerFired) -> None:
        if timer.name == FLUSH_TIMER and self.writer is not None:
            self.writer.flush()

    @handles(StatusRequest)
    def status(self, _: StatusRequest) -> dict[str, Any]:
        w = self.writer
        return {"path": str(self.path), "written": w.written if w else 0,
                "pending": w.pending if w else 0}
