"""glibc allocator controls: a process-wide setting that speeds up scoring big images on CPU, and
:func:`malloc_trim` (used by ``srbench bench`` to measure what memory is really held).

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


def _libc() -> ctypes.CDLL | None:
    """The C library of this process, or None where it cannot be loaded."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


def malloc_trim() -> None:
    """glibc keeps freed memory resident; ``malloc_trim(0)`` returns it to the OS (no-op elsewhere)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def keep_freed_memory() -> bool:
    """Apply the glibc settings above once per process; False (and a log line) where there is no glibc."""
    global _applied
    if _applied:
        return True
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        log.warning("keep_freed_memory: no glibc mallopt in this process; allocator left as is")
        return False
    for param in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD, _M_TOP_PAD):
        if mallopt(param, KEEP_BYTES) != 1:
            log.warning("keep_freed_memory: mallopt(%d) refused; allocator left partly as is", param)
            return False
    _applied = True
    return True
