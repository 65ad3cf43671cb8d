"""The replay step barrier: knowing when every message a replay step caused has been handled.

Owns the counting half of a termination-detection scheme (in the manner of Dijkstra–Scholten).
The replay driver hands a ``FlushToken`` to every actor it told during a step; each actor, on its
token, forwards the token to every name *it* told since its previous token (``EngineActor``
does this), adds that many to the barrier, then marks itself done. Inboxes are FIFO, so a token
reaches an actor only after the messages sent to it before the token. When the count returns to
zero no message caused by the step is still queued or being handled, and the driver may release
the next step. That is what makes a threaded replay deterministic.
"""

from __future__ import annotations

import threading


class StepBarrier:
    """A counter of tokens in flight; ``wait`` returns when it is back to zero."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._zero = threading.Event()
        self._zero.set()

    def add(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self._count += n
            self._zero.clear()

    def done(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count <= 0:
                self._count = 0
                self._zero.set()

    @property
    def outstanding(self) -> int:
        return self._count

    def wait(self, timeout: float | None = None) -> bool:
        """True once every token is done; False if ``timeout`` passed first."""
        return self._zero.wait(timeout)

    def reset(self) -> None:
        """Forget tokens that will never come back (an actor died holding one)."""
        with self._lock:
            self._count = 0
            self._zero.set()
