"""Tiny random DoSSR models for tests and the contract factory (never real weights).

:func:`save_tiny_dossr` writes what a user has for the real model, at toy sizes:

* an SD-2-style diffusers folder with the config files SD 2.1-base publishes (diffusers 0.10 key sets,
  PNDM scheduler; :func:`srbench.testing.tiny_sd.save_tiny_sd` with ``hub="sd21-base"``): configs,
  tokenizer and scheduler come from it;
* an official-layout DoSSR checkpoint (``{"state_dict": ..., "global_step": ...}``, ldm key names,
  see :mod:`methods.dossr.convert`) holding a LAControlNet, cond encoder and RRDBNet, and its own
  UNet / VAE / text tower, deliberately *different* from the SD folder's (the checkpoint is what the
  official code runs), plus the parts the converter must skip: the OpenCLIP tower's last block,
  ``text_projection``, ``logit_scale`` and the DDPM buffers (``lambdas`` = the code's η).

Both get the random-weights marker, so results are labelled ``weights: random``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.dossr.convert import DDPM_BUFFERS, TEXT_KEY, clip_text_to_openclip, to_official_checkpoint
from methods.dossr.network import CondEncoder, build_lacontrolnet
from methods.dossr.schedule import alphas_cumprod_from_config, eta_schedule
from srbench.archs.rrdbnet import build_rrdbnet
from srbench.testing.hub_configs import LAYOUTS

#: SD 2.1-base's scheduler (HF stabilityai/stable-diffusion-2-1-base scheduler/scheduler_config.json)
SD21_SCHEDULER: dict[str, Any] = dict(LAYOUTS["sd21-base"].scheduler)
TINY_RRDB: dict[str, int] = {
    "num_in_ch": 3,
    "num_out_ch": 3,
    "scale": 4,
    "num_feat": 8,
    "num_block": 1,
    "num_grow_ch": 4,
}


def randomize_(module: nn.Module, seed: int, std: float = 0.05) -> nn.Module:
    """Seeded noise in every parameter (norm weights around 1): no branch is zero (diffusers
    zero-initialises the ControlNet's output convs, which would hide wiring errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if ("norm" in name or "ln_" in name) and name.endswith("weight"):
                noise += 1.0
            p.copy_(noise.to(p.dtype))
    return module.eval()


@dataclass
class TinyDoSSR:
    sd_folder: Path
    ckpt: Path
    #: the diffusers-layout state dicts the checkpoint was written from (for comparisons)
    parts: dict[str, dict[str, torch.Tensor]]


def build_tiny_parts(sd_folder: str | Path, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random diffusers/basicsr state dicts shaped by the SD folder's configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(sd_folder)
    ucfg = UNet2DConditionModel.load_config(folder / "unet")
    vcfg = AutoencoderKL.load_config(folder / "vae")
    tcfg = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    nets: dict[str, nn.Module] = {
        "unet": UNet2DConditionModel.from_config(ucfg),
        "controlnet": build_lacontrolnet(ucfg),
        "vae": AutoencoderKL.from_config(vcfg),
        "cond_encoder": CondEncoder.from_vae_config(vcfg),
        "text_encoder": CLIPTextModel(tcfg),
    }
    parts = {name: randomize_(net, seed + i).state_dict() for i, (name, net) in enumerate(nets.items())}
    parts["preprocess"] = tiny_rrdbnet(seed + len(nets)).state_dict()
    return parts


def tiny_rrdbnet(seed: int = 0) -> nn.Module:
    """A tiny RRDBNet (basicsr's init, seeded) whose output lies around 0.5 and follows its input, so
    that I_pre -- the only path from the LR into DoSSR -- is neither clamped flat nor constant."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_rrdbnet(TINY_RRDB)
    with torch.no_grad():
        net.conv_last.weight.mul_(5.0)
        net.conv_last.bias.add_(0.5)
    return net.eval()


def official_extras(parts: dict[str, dict[str, torch.Tensor]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors an official checkpoint has beyond the converted parts: the OpenCLIP tower's last block
    (unused: penultimate layer), ``text_projection``, ``logit_scale`` and ldm's DDPM buffers."""
    g = torch.Generator().manual_seed(seed + 100)
    text = {k.removeprefix("text_model."): v for k, v in parts["text_encoder"].items()}
    n = 1 + max(int(k.split(".")[2]) for k in text if k.startswith("encoder.layers."))
    block0 = {k: v for k, v in parts["text_encoder"].items() if ".layers.0." in k}
    last = {
        k.replace("resblocks.0.", f"resblocks.{n}."): torch.randn(v.shape, generator=g)
        for k, v in clip_text_to_openclip(block0).items()
    }
    width = text["final_layer_norm.weight"].shape[0]
    ac = alphas_cumprod_from_config(None)
    eta = eta_schedule()
    buffers = {name: torch.zeros(len(ac), dtype=torch.float32) for name in DDPM_BUFFERS}
    buffers |= {
        "alphas_cumprod": torch.from_numpy(ac.astype(np.float32)),
        "lambdas": torch.from_numpy(eta.astype(np.float32)),
        "one_minus_lambdas": torch.from_numpy((1 - eta).astype(np.float32)),
    }
    return {
        **last,
        TEXT_KEY + "text_projection": torch.randn(width, width // 2, generator=g),
        TEXT_KEY + "logit_scale": torch.tensor(4.6052),
        **buffers,
    }


def save_tiny_dossr(root: str | Path, *, seed: int = 0, lightning: bool = False) -> TinyDoSSR:
    """Write ``root/sd`` (tiny SD 2.1-style folder) and ``root/dossr_tiny.ckpt`` (official layout).

    ``lightning=True`` writes the checkpoint as PyTorch Lightning 1.x does (class-keyed callbacks), so
    it only loads through the restricted unpickler.
    """
    from srbench.testing import mark_random_weights
    from srbench.testing.tiny_sd import save_tiny_sd

    root = Path(root)
    sd_folder = save_tiny_sd(root / "sd", seed=seed, hub="sd21-base")  # the files SD 2.1-base publishes
    parts = build_tiny_parts(sd_folder, seed=seed + 10)  # UNet/VAE/text differ from the SD folder's
    layers = _layers_per_block(sd_folder)
    state = to_official_checkpoint(**parts, layers_per_block=layers, extra=official_extras(parts, seed))
    ckpt = root / "dossr_tiny.ckpt"
    if lightning:
        from srbench.testing.lightning import write_lightning_checkpoint

        write_lightning_checkpoint(ckpt, state, global_step=50_000)
    else:
        torch.save({"state_dict": state, "global_step": 50_000}, ckpt)
    mark_random_weights(ckpt, builder="methods.dossr.testing.save_tiny_dossr", seed=seed)
    return TinyDoSSR(sd_folder=sd_folder, ckpt=ckpt, parts=parts)


def _layers_per_block(sd_folder: Path) -> int:
    from diffusers import UNet2DConditionModel

    return int(UNet2DConditionModel.load_config(sd_folder / "unet")["layers_per_block"])
