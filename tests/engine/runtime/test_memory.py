"""engine.runtime.memory: the RSS reading, and that releasing the free heap really hands memory back
(in a fresh interpreter, so the measurement is not this test process's history)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime.memory import few_collections, rss_mib

ROOT = Path(__file__).resolve().parents[3]

# 40 MB of 4 KB blocks (glibc's heap, below its mmap threshold), one block allocated after them
# kept alive so that the heap's top is pinned and glibc cannot give the rest back by itself.
_BURST = """
import gc
import json
from engine.runtime.memory import release_free_heap, rss_mib
base = rss_mib()
burst = [bytes(4000) + bytes([i % 256]) for i in range(10_000)]
pin = bytes(4000) + b"pin"
peak = rss_mib()
del burst
freed = rss_mib()
released = release_free_heap()
print(json.dumps({"base": base, "peak": peak, "freed": freed, "after": rss_mib(),
                  "released": released}))
"""


def test_rss_is_read_from_proc() -> None:
    rss = rss_mib()
    if not Path("/proc/self/status").exists():
        assert rss is None
        return
    assert rss is not None and 5.0 < rss < 100_000.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_os_only_when_released() -> None:
    done = subprocess.run([sys.executable, "-c", _BURST], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    m = json.loads(done.stdout)
    assert m["peak"] - m["base"] > 30          # the burst was resident
    assert m["freed"] - m["base"] > 30         # freeing alone kept it (the top is pinned)
    assert m["released"] is True
    assert m["freed"] - m["after"] > 30        # releasing gave it back



def test_few_collections_raises_the_youngest_threshold_and_restores_it() -> None:
    before = gc.get_threshold()
    with few_collections(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), few_collections(23_456):
        raise RuntimeError("a replay that fails")
    assert gc.get_threshold() == before
