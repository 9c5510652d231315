"""DM-SR's image encoder E_θ (paper §3.2, App. A.1): the SD VAE encoder made timestep-aware.

E_θ is diffusers' VAE ``Encoder`` (+ ``quant_conv``), initialised from the pretrained SD VAE (§4.1), plus
one linear projection of t̂ per down block whose output (widths = ``block_out_channels``: 128/256/512/512
for SD) is broadcast-added to that block's output feature map ("via single linear layers, following the
ControlNet design", §3.2).  Unspecified details, brief §6.7 defaults:

* t̂ → sinusoidal embedding (diffusers ``Timesteps(256, flip_sin_to_cos=True, shift=0)``) → four
  **zero-initialised** ``Linear(256, C_i)``; zero init makes an untrained E_θ equal the VAE encoder
  (the ControlNet principle the paper cites);
* the sum is taken after ``down_blocks[i]`` (i.e. after its downsampler, where the width is C_i).

The wrapper owns the diffusers modules under the same names ``AutoencoderKL`` uses (``encoder.*``,
``quant_conv.*``), so the VAE's weights load into it unchanged.  Its output is the 2·C_latent moments; the
pipeline takes the **mean** (deterministic) and applies the VAE's ``scaling_factor`` (brief §6.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers.models.autoencoders.vae import Encoder
from diffusers.models.embeddings import Timesteps
from torch import nn
from torch.utils.checkpoint import checkpoint

#: AutoencoderKL config fields that define its encoder (and defaults equal to AutoencoderKL's)
_VAE_ENCODER_FIELDS: dict[str, Any] = {
    "in_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",),
    "block_out_channels": (64,),
    "layers_per_block": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "mid_block_add_attention": True,
    "use_quant_conv": True,
}


class TimestepAwareEncoder(nn.Module):
    """E_θ(I_LR, t̂) → latent moments (B, 2·latent_channels, H/f, W/f); I_LR in [-1, 1]."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        latent_channels: int = 4,
        down_block_types: tuple[str, ...] | list[str] = ("DownEncoderBlock2D",),
        block_out_channels: tuple[int, ...] | list[int] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        mid_block_add_attention: bool = True,
        use_quant_conv: bool = True,
        temb_dim: int = 256,
    ) -> None:
        super().__init__()
        self._config = {
            "in_channels": int(in_channels),
            "latent_channels": int(latent_channels),
            "down_block_types": list(down_block_types),
            "block_out_channels": [int(c) for c in block_out_channels],
            "layers_per_block": int(layers_per_block),
            "act_fn": act_fn,
            "norm_num_groups": int(norm_num_groups),
            "mid_block_add_attention": bool(mid_block_add_attention),
            "use_quant_conv": bool(use_quant_conv),
            "temb_dim": int(temb_dim),
        }
        self.latent_channels = int(latent_channels)
        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=tuple(down_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            double_z=True,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        # t̂ embedding (App. A.1): sinusoid → one zero-initialised Linear per down block
        self.time_proj = Timesteps(temb_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embed = nn.ModuleList(nn.Linear(temb_dim, c) for c in block_out_channels)
        for lin in self.t_embed:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.gradient_checkpointing = False

    # ---- construction ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @staticmethod
    def config_from_vae(vae_config: Mapping[str, Any], temb_dim: int = 256) -> dict[str, Any]:
        """Constructor kwargs matching an ``AutoencoderKL`` config."""
        cfg = {k: vae_config.get(k, default) for k, default in _VAE_ENCODER_FIELDS.items()}
        cfg["down_block_types"] = list(cfg["down_block_types"])
        cfg["block_out_channels"] = list(cfg["block_out_channels"])
        if cfg["use_quant_conv"] is None:
            cfg["use_quant_conv"] = True
        cfg["temb_dim"] = int(temb_dim)
        return cfg

    @classmethod
    def from_vae(cls, vae: nn.Module, temb_dim: int = 256) -> TimestepAwareEncoder:
        """E_θ initialised from a diffusers ``AutoencoderKL`` (its encoder and quant_conv weights)."""
        model = cls(**cls.config_from_vae(vae.config, temb_dim))
        model.encoder.load_state_dict(vae.encoder.state_dict(), strict=True)
        if model.quant_conv is not None:
            model.quant_conv.load_state_dict(vae.quant_conv.state_dict(), strict=True)
        return model  # fp32 on CPU: the caller moves it

    # ---- forward -----------------------------------------------------------------------------
    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Moments (mean ‖ logvar) for I_LR ``x`` in [-1, 1] and timesteps ``t`` (B,) (int or float)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_proj(t.to(x.device).float()).to(x.dtype)
        enc = self.encoder
        h = enc.conv_in(x)
        for block, lin in zip(enc.down_blocks, self.t_embed, strict=True):
            h = self._run(block, h)
            h = h + lin(emb)[:, :, None, None]  # App. A.1: t̂ embedding added to the feature map
        h = self._run(enc.mid_block, h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h

    def encode_mean(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The posterior mean (first ``latent_channels`` moments), unscaled."""
        return self.forward(x, t)[:, : self.latent_channels]
