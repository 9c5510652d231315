"""Tiny random StableSR models for tests and contract factories (never real weights).

Everything here builds the same classes the real model uses, at toy sizes, and writes the official
on-disk formats (Lightning-style ``.ckpt`` pickles in the ldm key layout), so that tests load them
through the same converter a user runs on ``stablesr_000117.ckpt`` / ``vqgan_cfw_00011.ckpt``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from methods.stablesr.cfw import CFWAutoencoder
from methods.stablesr.convert import cfw_to_ldm, encoder_to_ldm, unet_to_ldm, vae_to_ldm
from methods.stablesr.encoder import EncoderConfig, TimeAwareEncoder
from methods.stablesr.sft import SFTUNet
from srbench.testing.lightning import write_lightning_checkpoint

#: a 3-level encoder over a 2-level UNet: widths W, W/2 (used) and W/4; attention on levels 0-1.
#: 64 channels so that GroupNorm(32) keeps the time embedding (with 1 channel per group it removes it)
TINY_ENCODER = EncoderConfig(
    model_channels=64, out_channels=32, channel_mult=(1, 1, 2), attention_resolutions=(1, 2), num_heads=2
)
TINY_SFT_HIDDEN = 32


#: SD-2-shaped UNet at toy width: linear projection, cross-attention in all but the deepest level
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "norm_num_groups": 32,  # the SFT GroupNorm has 32 groups, as the official one
}

#: SD-shaped VAE (4 levels, 8x downsampling, so CFW sits at levels 1 and 2 as in SD)
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (32, 32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}


def tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**TINY_UNET_CONFIG)


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(**TINY_VAE_CONFIG)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Fill every parameter with seeded noise (norm weights around 1) so no branch is trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
            if "norm" in name and name.endswith("weight"):
                noise += 1.0
            p.copy_(noise.to(p.dtype))
    return module.eval()


def tiny_sft_unet(
    unet: UNet2DConditionModel | None = None, encoder_config: EncoderConfig = TINY_ENCODER, seed: int = 0
) -> tuple[SFTUNet, TimeAwareEncoder]:
    sft_unet = SFTUNet(unet or tiny_unet(), cond_channels=encoder_config.out_channels, hidden=TINY_SFT_HIDDEN)
    randomize_(sft_unet.sft, seed + 1)
    if unet is None:
        randomize_(sft_unet.unet, seed)
    return sft_unet, randomize_(TimeAwareEncoder(encoder_config), seed + 2)


def tiny_cfw(vae: AutoencoderKL | None = None, seed: int = 0) -> CFWAutoencoder:
    cfw = CFWAutoencoder(vae or randomize_(tiny_vae(), seed))
    randomize_(cfw.fusion_layers, seed + 3, std=0.02)
    return cfw.eval()


# ---- official on-disk formats ----------------------------------------------------------------------


def stablesr_state_dict(
    sft_unet: SFTUNet, encoder: TimeAwareEncoder, vae: AutoencoderKL | None = None
) -> dict[str, torch.Tensor]:
    """The ``stablesr_*.ckpt`` state dict (official ldm names) of these modules.

    With ``vae``, also what the official file carries besides: ``first_stage_model.*``, a
    ``cond_stage_model.*`` (OpenCLIP) tensor and the schedule buffers, all of which a loader must skip
    or use correctly.
    """
    layers = sft_unet.unet.config.layers_per_block
    sd = unet_to_ldm(sft_unet.unet.state_dict(), sft_unet.sft.state_dict(), layers)
    sd.update(encoder_to_ldm(encoder.state_dict(), encoder.config))
    if vae is not None:
        levels = len(vae.config.block_out_channels)
        sd.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae.state_dict(), levels).items()})
        sd["cond_stage_model.model.ln_final.weight"] = torch.ones(sft_unet.unet.config.cross_attention_dim)
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        sd["betas"], sd["alphas_cumprod"] = betas, torch.cumprod(1 - betas, 0)
    return sd


def cfw_state_dict(cfw: CFWAutoencoder) -> dict[str, torch.Tensor]:
    """The ``vqgan_cfw_*.ckpt`` state dict (official ldm names, plus a ``loss.*`` entry to be dropped)."""
    sd = vae_to_ldm(cfw.vae.state_dict(), len(cfw.vae.config.block_out_channels))
    sd.update(cfw_to_ldm(cfw.fusion_layers.state_dict()))
    sd["loss.logvar"] = torch.zeros(())
    return sd


# ---- a complete tiny StableSR on disk ------------------------------------------------------------


@dataclass(frozen=True)
class TinyStableSR:
    """Paths of a tiny random StableSR: SD folder (``model``), ``ckpt`` and ``vqgan_ckpt``."""

    model: Path
    ckpt: Path
    vqgan_ckpt: Path

    def options(self) -> dict[str, Any]:
        """Method options that load these files, at toy sizes (input_size 128 → 16×16 latent tiles)."""
        return {
            "model": str(self.model),
            "ckpt": str(self.ckpt),
            "vqgan_ckpt": str(self.vqgan_ckpt),
            "input_size": 128,
        }


def save_tiny_stablesr(
    root: str | Path, seed: int = 0, *, distinct_cfw_encoder: bool = False
) -> TinyStableSR:
    """Write a tiny SD-2-style diffusers folder and the two official-format StableSR checkpoints.

    The ``stablesr`` ckpt carries a UNet that differs from the SD folder's (as a fine-tuned or Turbo
    UNet would), so loading it must overwrite the base UNet.  The CFW file's VAE encoder equals the main
    checkpoint's first stage (as the CFW training froze it), unless ``distinct_cfw_encoder``.  All files
    carry the random-weights marker.
    """
    from srbench.testing import mark_random_weights
    from srbench.testing.tiny_sd import save_tiny_sd

    root = Path(root)
    model = save_tiny_sd(root / "sd-2-1-base-tiny", seed=seed, unet=TINY_UNET_CONFIG, vae=TINY_VAE_CONFIG)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae")
    randomize_(unet, seed + 10, std=0.05)
    sft_unet, encoder = tiny_sft_unet(unet, seed=seed)
    ckpt = write_lightning_checkpoint(
        root / "stablesr_000117.ckpt", stablesr_state_dict(sft_unet, encoder, vae), global_step=117
    )
    if distinct_cfw_encoder:
        vae = copy.deepcopy(vae)
        randomize_(vae.encoder, seed + 20)
    cfw = tiny_cfw(vae, seed=seed)
    vq = write_lightning_checkpoint(root / "vqgan_cfw_00011.ckpt", cfw_state_dict(cfw), 11)
    for path in (ckpt, vq):
        mark_random_weights(path, builder="methods.stablesr.testing.save_tiny_stablesr", seed=seed)
    return TinyStableSR(model, ckpt, vq)
