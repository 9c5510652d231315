"""Bicubic interpolation: the floor every SR method must clear."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from srbench.interface import SRMethod, WeightsInfo
from srbench.registry import register_method
from srbench.weights import WeightsManifest, register_weights

register_weights(WeightsManifest("bicubic", files=(), description="bicubic interpolation needs no weights"))


@register_method("bicubic")
class Bicubic(SRMethod):
    """Bicubic upsampling (PyTorch, align_corners=False, as MATLAB-free SR code does)."""

    stages = ("upsample",)

    def __init__(self, scale: int = 4, **options: object) -> None:
        super().__init__(**options)
        self.scale = int(scale)

    def supported_steps(self) -> list[int]:
        return [1]

    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        return WeightsInfo(id="none", real=True, detail="no weights")

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        with self.stage("upsample"):
            return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
