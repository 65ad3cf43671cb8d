"""Measurement probes on the engine's two socket edges, for benchmarks (bench/tick_to_order.py).

Owns two hook slots, both None by default:

- ``tick_received(tick, now)``: the feed client parsed a market-data frame into ``tick``;
  ``now`` is ``time.monotonic()`` taken when the frame came off the WebSocket;
- ``request_sending(endpoint, fields, now)``: the REST client is about to send ``endpoint``
  with ``fields`` (the API key is not among them); ``now`` is ``time.monotonic()`` just before
  the HTTP call.

When a slot is None the instrumented code pays one module-attribute read and an ``is None``
test per event and nothing else. A probe runs on the caller's thread (the feed reader, the
order manager) and must be quick and must not raise. Only a benchmark process sets them, and it
resets them with ``clear()`` when done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.messages import Tick

TickProbe = Callable[[Tick, float], None]
RequestProbe = Callable[[str, Mapping[str, Any], float], None]

tick_received: TickProbe | None = None
request_sending: RequestProbe | None = None


def clear() -> None:
    """Switch every probe off."""
    global tick_received, request_sending
    tick_received = None
    request_sending = None
