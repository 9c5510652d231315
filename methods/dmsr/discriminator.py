"""DM-SR's LR-conditioned discriminator D_φ (paper §3.4, App. A.1), training only.

"Designed based on the ControlNet architecture ... we reduce the intermediate output channels of the UNet
from [320, 640, 1280, 1280] to [64, 128, 256, 256].  The final output ... is passed through pooling and
linear layers to produce a 1-dimensional output."  Built here from diffusers' ``ControlNetModel``
(the down path of an SD UNet with the hint encoder ``controlnet_cond_embedding`` for I_LR):

* input: a scaled latent (Z_SR or X_HR^0), the timestep t̂ and the fixed prompt's embedding (the
  ControlNet blocks need both; the paper does not say what D_φ gets — InvSR passes t and the prompt to its
  discriminator too), and I_LR in [0, 1] at image resolution as the ControlNet hint;
* output: the mid-block feature (before ControlNet's zero convolutions, which are not used) → global
  average pool → ``Linear(C, 1)`` → one logit per sample.

Choices the paper leaves open: the block types and layer counts follow the base UNet (SD-2: three
cross-attention down blocks + one plain, 2 layers each); attention heads keep SD-2's 64-d heads
(1/2/4/4 heads); the hint encoder's stride equals the VAE's downscale factor (8 for SD).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers import ControlNetModel
from torch import nn

PAPER_CHANNELS = (64, 128, 256, 256)  # App. A.1
_HINT_CHANNELS = (16, 32, 96, 256)  # ControlNet's conditioning_embedding_out_channels


class ControlNetDiscriminator(nn.Module):
    """D_φ(latent, t, prompt, I_LR) → logits (B,)."""

    def __init__(
        self,
        *,
        in_channels: int = 4,
        block_out_channels: Sequence[int] = PAPER_CHANNELS,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        layers_per_block: int = 2,
        cross_attention_dim: int = 1024,
        head_dim: int = 64,
        use_linear_projection: bool = True,
        norm_num_groups: int = 32,
        latent_downscale: int = 8,
    ) -> None:
        super().__init__()
        n_hint = round(math.log2(latent_downscale))
        if 2**n_hint != latent_downscale:
            raise ValueError(f"latent_downscale must be a power of 2, got {latent_downscale}")
        hint = list(_HINT_CHANNELS[: n_hint + 1]) if n_hint + 1 <= len(_HINT_CHANNELS) else None
        if hint is None:
            raise ValueError(f"latent_downscale {latent_downscale} too large")
        self._config = {
            "in_channels": in_channels,
            "block_out_channels": list(block_out_channels),
            "down_block_types": list(down_block_types),
            "layers_per_block": layers_per_block,
            "cross_attention_dim": cross_attention_dim,
            "head_dim": head_dim,
            "use_linear_projection": use_linear_projection,
            "norm_num_groups": norm_num_groups,
            "latent_downscale": latent_downscale,
        }
        self.body = ControlNetModel(
            in_channels=in_channels,
            conditioning_channels=3,
            down_block_types=tuple(down_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=tuple(max(1, c // head_dim) for c in block_out_channels),  # = number of heads
            use_linear_projection=use_linear_projection,
            norm_num_groups=norm_num_groups,
            conditioning_embedding_out_channels=tuple(hint),
        )
        self.head = nn.Linear(block_out_channels[-1], 1)
        self._mid: torch.Tensor | None = None
        self.body.mid_block.register_forward_hook(self._keep_mid)

    def _keep_mid(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._mid = output

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def for_base_model(
        cls, unet_config: Mapping[str, Any], vae_downscale: int, channels: Sequence[int] = PAPER_CHANNELS
    ) -> ControlNetDiscriminator:
        """D_φ shaped after the frozen UNet (block types, depth, text width) with reduced channels."""
        types = list(unet_config["down_block_types"])
        channels = [int(channels[min(i, len(channels) - 1)]) for i in range(len(types))]
        return cls(
            in_channels=int(unet_config["in_channels"]),
            block_out_channels=channels,
            down_block_types=types,
            layers_per_block=int(unet_config["layers_per_block"]),
            cross_attention_dim=int(unet_config["cross_attention_dim"]),
            use_linear_projection=bool(unet_config.get("use_linear_projection", False)),
            norm_num_groups=min(32, int(channels[0])),
            latent_downscale=int(vae_downscale),
        )

    def forward(
        self, latent: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor, i_lr: torch.Tensor
    ) -> torch.Tensor:
        cond = prompt_embeds.expand(latent.shape[0], *prompt_embeds.shape[1:]).to(latent.dtype)
        self._mid = None
        self.body(
            latent, t, encoder_hidden_states=cond, controlnet_cond=i_lr.to(latent.dtype), return_dict=False
        )
        mid, self._mid = self._mid, None
        assert mid is not None
        return self.head(mid.mean(dim=(2, 3))).squeeze(1)
