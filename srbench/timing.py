"""Latency per image and per named stage: CUDA events on GPU, perf_counter on CPU (DESIGN.md, Latency);
memory per call (:class:`MemoryProbe`), the same for runs and ``srbench bench``."""

from __future__ import annotations

import contextlib
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from srbench.allocator import malloc_trim


class StageTimer:
    """Collects wall time of named stages for one image at a time.

    On CUDA each stage is bracketed by CUDA events and read after one synchronisation at
    :meth:`finish`; on CPU ``time.perf_counter`` is used.  Stages of the same name add up.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._cpu: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def reset(self) -> None:
        self._cpu.clear()
        self._events.clear()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._cpu[name] += time.perf_counter() - t0

    def finish(self) -> dict[str, float]:
        """Seconds per stage for the current image (synchronises CUDA once)."""
        out = dict(self._cpu)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            for name, start, end in self._events:
                out[name] = out.get(name, 0.0) + start.elapsed_time(end) / 1000.0
        return out


def _proc_status_mb(field_name: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


class MemoryProbe:
    """Peak memory of one call above the memory held before it (CUDA allocator or process RSS).

    On CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` before.
    On CPU (Linux): glibc's ``malloc_trim`` first returns freed heap pages (``trim``; off when the run keeps
    freed memory on purpose, ``speed.keep_freed_memory``), ``/proc/self/clear_refs`` resets the peak, then
    the peak resident set (VmHWM) minus the resident set before (VmRSS).  The whole-process figure held the
    interpreter, torch and the weights: bicubic showed 1 GB."""

    def __init__(self, device: torch.device | str, *, trim: bool = True) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.trim = trim
        self.kind = "cuda_max_allocated" if self.cuda else "rss_peak"
        self._before = 0.0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            if self.trim:
                malloc_trim()  # give freed heap pages back, so RSS is what is really held
            with contextlib.suppress(OSError):  # Linux: reset VmHWM to the current RSS
                Path("/proc/self/clear_refs").write_text("5")
            self._before = _proc_status_mb("VmRSS") or 0.0

    def stop(self) -> tuple[float | None, float]:
        """(peak above the start, memory held at the start), MiB."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self._before, self._before
        peak = _proc_status_mb("VmHWM")
        return (None if peak is None else max(peak - self._before, 0.0)), self._before


def memory_kind(device: torch.device, keep_freed_memory: bool = False) -> str:
    """What a run's ``peak_mem_mb`` is (recorded in its summary)."""
    if device.type == "cuda":
        return "cuda_allocator_peak_above_held"
    # with freed memory kept by glibc, a call can reuse pages already resident: its increase is a lower bound
    return "process_rss_peak_above_held" + ("_untrimmed" if keep_freed_memory else "")
