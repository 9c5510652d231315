"""basicsr ``RRDBNet`` (ESRGAN's generator: Wang et al. 2018; Real-ESRGAN, Wang et al. 2021, §4.1) helpers
shared by the ports that run one: Real-ESRGAN itself and DoSSR's pre-restoration stage.

- :func:`build_rrdbnet`: the basicsr module from constructor kwargs;
- :func:`infer_rrdbnet_arch`: those kwargs from a state dict's shapes (basicsr key layout);
- :func:`load_rrdbnet_checkpoint`: a basicsr ``.pth`` (``params_ema`` / ``params`` / bare), weights-only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from srbench.interface import SRBenchError, WeightsMissing
from srbench.safe_load import load_tensors


def build_rrdbnet(arch: Mapping[str, int]) -> nn.Module:
    """basicsr's RRDBNet (the official ESRGAN / Real-ESRGAN / DoSSR ``RRDBNet`` has the same modules and
    key names)."""
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(**dict(arch))


def infer_rrdbnet_arch(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """RRDBNet constructor kwargs from a state_dict's shapes (basicsr key layout)."""
    try:
        first = state_dict["conv_first.weight"]
        num_out_ch = int(state_dict["conv_last.weight"].shape[0])
        num_grow_ch = int(state_dict["body.0.rdb1.conv1.weight"].shape[0])
    except KeyError as exc:
        raise SRBenchError(f"not an RRDBNet state_dict (missing {exc.args[0]})") from None
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"body\.(\d+)\.", k))}
    # RRDBNet pixel-unshuffles the input for scale 2 (x4 channels) and 1 (x16); assumes in_ch == out_ch
    scale = {1: 4, 4: 2, 16: 1}.get(int(first.shape[1]) // num_out_ch)
    if scale is None or int(first.shape[1]) % num_out_ch:
        raise SRBenchError(f"cannot infer RRDBNet scale from conv_first input channels {first.shape[1]}")
    return {
        "num_in_ch": num_out_ch,
        "num_out_ch": num_out_ch,
        "scale": scale,
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": num_grow_ch,
    }


def load_rrdbnet_checkpoint(
    path: str | Path, what: str = "Real-ESRGAN weights"
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(state_dict, arch) from an RRDBNet ``.pth``: official basicsr (``params_ema`` / ``params``),
    srbench's converted Real-ESRGAN cache, or a bare state_dict. Loaded with ``weights_only=True``;
    ``what`` names the file in the not-found error."""
    path = Path(path)
    if not path.is_file():
        raise WeightsMissing(f"{what} file not found: {path}")
    ckpt = load_tensors(path)
    if not isinstance(ckpt, dict):
        raise SRBenchError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    for key in ("params_ema", "params"):
        if key in ckpt and isinstance(ckpt[key], dict):
            sd = ckpt[key]
            break
    else:
        sd = ckpt
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return sd, infer_rrdbnet_arch(sd)
