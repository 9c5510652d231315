"""DoSSR's LR pre-restoration stage: x4 RRDBNet, then clamp to [0, 1] (paper §4.1; official
``scripts/inference.py``: ``start_imgs = model.preprocess_model(lr).float().clamp_(0, 1)``).

The network is basicsr's ``RRDBNet`` (23 blocks, 64 features, growth 32, x4; the official
``esrgan/RRDBNet_arch.py`` is the same module tree).  Its weights are part of the DoSSR checkpoint
(``preprocess_model.*``): Real-ESRNet x4plus in ``dossr_default.ckpt``, Real-ESRGAN x4plus in
``dossr_onestep.ckpt`` (README).  An external basicsr ``.pth`` (``params_ema`` / ``params``) can
replace them (``preprocess_weights=``).

The result I_pre is used three times: its VAE latent is x̂0 (the start state and the DoSG term), its
cond-encoder latent conditions the ControlNet, and it is the reference of the wavelet colour fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from methods.dossr.network import load_weights
from srbench.archs.rrdbnet import build_rrdbnet, infer_rrdbnet_arch, load_rrdbnet_checkpoint
from srbench.diffusion.tiling import pad_bottom_right_to_multiple

#: LR sides must be multiples of this: HR = 4 LR, latent = HR / 8, and the SD UNet halves it 3 times
LR_MULTIPLE = 16


def rrdbnet_from_state(state: Mapping[str, torch.Tensor], what: str = "preprocess_model") -> nn.Module:
    """An RRDBNet shaped by ``state`` (basicsr keys) with those weights."""
    arch = infer_rrdbnet_arch(dict(state))
    if arch["scale"] != 4:
        raise ValueError(f"dossr: the pre-restoration RRDBNet must be x4, got x{arch['scale']}")
    return load_weights(build_rrdbnet(arch), state, what)


def load_rrdbnet_file(path: str | Path) -> nn.Module:
    """An RRDBNet from an official basicsr ``.pth`` (e.g. RealESRNet_x4plus.pth), loaded weights-only."""
    state, _ = load_rrdbnet_checkpoint(path)
    return rrdbnet_from_state(state, str(path))


def pad_to_multiple(x: torch.Tensor, multiple: int = LR_MULTIPLE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad right/bottom to a multiple of ``multiple`` (reflect, or replicate for sides too small to
    reflect); returns the padded tensor and the original (h, w).  No-op for conforming sizes, where
    the official code runs unpadded (it has no padding: other sizes crash there)."""
    h, w = x.shape[-2:]
    return pad_bottom_right_to_multiple(x, multiple)[0], (h, w)


def pre_restore(net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """I_pre = clamp(RRDBNet(lr), 0, 1) in float32; ``lr`` (B,3,h,w) in [0,1], sides multiples of 16."""
    param = next(net.parameters())
    return net(lr.to(param.device, param.dtype)).float().clamp(0.0, 1.0)
