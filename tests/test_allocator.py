"""srbench.allocator: glibc keeps freed memory once ``keep_freed_memory()`` is applied (fresh processes,
so the test process's own allocator is left alone)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc mallopt only"
)

_SCRIPT = """
import sys
import numpy as np
from srbench import allocator

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True  # idempotent
before = rss_mib()
a = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
del a
print(rss_mib() - before)
"""


def _retained_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def test_freed_memory_is_kept_only_when_asked() -> None:
    assert _retained_mib("default") < 64  # glibc unmapped the block on free
    assert _retained_mib("keep") > 200  # kept in the heap for the next big tensor
