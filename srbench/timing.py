"""Latency per image and per named stage: CUDA events on GPU, perf_counter on CPU (DESIGN.md, Latency)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


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

    def peak_memory_mb(self) -> float | None:
        """Peak allocator memory since :meth:`reset` (CUDA), else the process's peak RSS."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        except ImportError:  # pragma: no cover - non-Unix
            return None
