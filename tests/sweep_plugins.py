"""Methods for sweep tests, imported in subprocesses through ``plugins=[tests.sweep_plugins]``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from srbench import SRMethod, WeightsInfo, register_method


@register_method("slow_nearest")
class SlowNearest(SRMethod):
    """Nearest x4 with a delay per image; appends a line to ``load_log`` at every load().

    ``started`` is created at the first image; while ``hold`` exists, each image waits (so a test can keep
    a cell running for exactly as long as it needs).
    """

    def __init__(
        self,
        delay: float = 0.0,
        load_log: str | None = None,
        fail_load: bool = False,
        started: str | None = None,
        hold: str | None = None,
        real: bool = False,
        darken_per_step: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.delay, self.load_log, self.fail_load = float(delay), load_log, fail_load
        self.started, self.hold = started, hold
        # real: labelled as real weights (a report test ranks it with real rows); darken_per_step: each step
        # after the first darkens the output, so step counts give different, ordered scores
        self.real, self.darken_per_step = bool(real), float(darken_per_step)

    def supported_steps(self) -> list[int]:
        return [1, 2, 3]

    def load(self, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if self.fail_load:
            raise RuntimeError("weights are corrupt (simulated)")
        if self.load_log:
            with open(self.load_log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        return WeightsInfo("none", real=self.real)

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        if self.started:
            Path(self.started).touch()
        while self.hold and Path(self.hold).exists():
            time.sleep(0.05)
        time.sleep(self.delay)
        out = F.interpolate(lr, scale_factor=4, mode="nearest")
        return (out - self.darken_per_step * (steps - 1)).clamp(0, 1)
