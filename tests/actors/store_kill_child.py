"""Child process of the kill test: writes order intents through a StoreWriter, forever.

Usage: ``python store_kill_child.py DB_PATH PREFIX``. Each intent is sent with ``ask`` (the
immediate, committed-before-reply path) and its client_id printed and flushed only after the ask
returned, so every printed id must be on disk whenever the parent SIGKILLs this process.
Batched price marks are told in between so a flush can be in flight too. Stops by itself after
a minute in case the parent is gone.
"""

from __future__ import annotations

import sys
import time

from loguru import logger

from actors.store import StoreWriter
from engine.messages import Action, OrderIntent, PositionMark, PriceType
from engine.runtime.clock import WallClock
from engine.store.database import Database, StoreSettings

SYMBOL = "NIFTY30JAN2524000CE"


def main(path: str, prefix: str) -> None:
    logger.remove()
    clock = WallClock()
    db = Database(path, StoreSettings(batch_size=20, flush_interval_s=0.05))
    writer = StoreWriter.start(db, clock=clock)
    give_up = time.monotonic() + 60
    n = 0
    while time.monotonic() < give_up:
        n += 1
        now = clock.time()
        writer.tell(PositionMark("kill", "main", SYMBOL, -65, 100.0, 100.0 + n % 7, 0.0, 0.0,
                                 0.0, now))
        client_id = f"{prefix}-{n}"
        writer.ask(OrderIntent(client_id, "kill", "main", SYMBOL, "NFO", Action.SELL, 65,
                               PriceType.SL, price=99.95, trigger_price=102.95, created_ts=now))
        sys.stdout.write(client_id + "\n")
        sys.stdout.flush()
    writer.stop()
    db.close()
    clock.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
