"""Process-wide CPU allocator setting that speeds up scoring big images on CPU.

By default glibc serves blocks over 128 KiB-32 MiB with fresh ``mmap`` calls and unmaps them on ``free``,
so every 512-px metric call (SSIM's float64 unfold is ~270 MiB) pays for new zeroed pages again.  Raising
``M_MMAP_THRESHOLD``/``M_TRIM_THRESHOLD``/``M_TOP_PAD`` to 1 GiB keeps freed memory in the process for
reuse (measured on the 2-core dev VM: SSIM 2.4 -> 10.6 img/s at 512 px, `benchmarks/metric_throughput.py`).
The cost: the process keeps its peak resident memory until it exits.  Same values as the
``MALLOC_MMAP_THRESHOLD_=1073741824`` environment variables, but settable from a config.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>
KEEP_BYTES = 1 << 30
_applied = False


def keep_freed_memory() -> bool:
    """Apply the glibc settings above once per process; False (and a log line) where there is no glibc."""
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.warning("keep_freed_memory: no glibc mallopt in this process (%s); allocator left as is", name)
        return False
    for param in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD, _M_TOP_PAD):
        if mallopt(param, KEEP_BYTES) != 1:
            log.warning("keep_freed_memory: mallopt(%d) refused; allocator left partly as is", param)
            return False
    _applied = True
    return True
