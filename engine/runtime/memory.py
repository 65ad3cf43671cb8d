"""The engine process's memory: how big it is, and keeping glibc's heap from holding on to
memory the engine has freed.

Owns four small things, each a no-op where it cannot apply (not Linux, not glibc):

- ``limit_malloc_arenas`` — called once by the CLI before any thread starts. With one thread per
  actor, glibc would keep up to 8 arenas per core, each fragmenting on its own.
- ``release_free_heap`` — ``malloc_trim(0)``: hands the free pages inside glibc's heaps back to
  the operating system. Bursts are normal in this engine (a restarted consumer's inbox filling
  while it restores, at 60x a few tens of MB for a few seconds); after one, glibc keeps the freed
  memory in its heap and only ever gives back the free top. The health actor calls this at every
  heartbeat (``[health] release_memory``), so the process's size follows what it uses rather than
  the highest burst of the day (the soak, RELIABILITY.md).
- ``rss_mib`` — the resident set size, for the status.
- ``few_collections`` — while a replay runs, the cyclic garbage collector runs its youngest
  generation every 50,000 net allocations instead of every 700. A replay makes millions of
  short-lived messages that reference counting frees; collecting among them found almost
  nothing and cost 6 % of the bundled day (3,652 collections, 2.1 s; 5 and 0.07 s after).
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (before any thread starts); not when ``MALLOC_ARENA_MAX`` is
    already set by the operator."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return
    libc.mallopt(_M_ARENA_MAX, arenas)


def release_free_heap() -> bool:
    """Give glibc's free heap pages back to the OS; True if anything was released."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def rss_mib() -> float | None:
    """This process's resident set size in MiB; None where /proc is not available."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextmanager
def few_collections(threshold: int = 50_000) -> Iterator[None]:
    """Collect the youngest generation every ``threshold`` net allocations inside the block
    (see the module docstring); the thresholds before it are restored after it."""
    before = gc.get_threshold()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
