"""StableSR's time-aware encoder (paper §3.1, App. A Table 7), built from diffusers UNet blocks.

The official ``EncoderUNetModelWT`` (key prefix ``structcond_stage_model.``) is the contracting path of an
SD-style UNet: ``conv_in`` → levels of [ResBlock (+ legacy attention)] × ``num_res_blocks`` (+ strided
conv) → middle ResBlock/attention/ResBlock.  The feature just before every downsample and the middle
output each pass through one more time-conditioned ResBlock (``fea_tran``) to ``out_channels``.  The
result is a dict keyed by the feature's *width* as a string (``{"64": ..., "32": ..., "16": ..., "8": ...}``
for a 64×64 latent), which is how the SFT layers look features up.

Blocks used (all diffusers): ``Timesteps``/``TimestepEmbedding`` (cos-first sinusoid, max period 1e4,
Linear–SiLU–Linear), ``AttnDownBlock2D``/``DownBlock2D`` and ``UNetMidBlock2D`` (GroupNorm eps 1e-5 as in
ldm's GroupNorm32; their ``Attention`` is the single-head-group spatial attention the legacy QKV block
computes once its interleaved per-head qkv weights are split, see ``convert.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import AttnDownBlock2D, DownBlock2D, UNetMidBlock2D
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of ``EncoderUNetModelWT``; defaults are the official 512 model (paper Table 7)."""

    in_channels: int = 4
    model_channels: int = 256
    out_channels: int = 256
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 1, 2, 2)
    attention_resolutions: tuple[int, ...] = (4, 2, 1)  # downsampling rates ``ds`` that get attention
    num_heads: int = 4
    norm_groups: int = 32
    eps: float = 1e-5  # ldm GroupNorm32 uses torch's default eps

    def __post_init__(self) -> None:  # order-free: compare configs by content
        object.__setattr__(self, "attention_resolutions", tuple(sorted(self.attention_resolutions)))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class TimeAwareEncoder(nn.Module):
    """Half UNet on the LR latent conditioned on the diffusion timestep; returns features keyed by width."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or EncoderConfig()
        self.config = cfg
        ch = cfg.model_channels
        temb_dim = 4 * ch
        # ldm timestep_embedding: [cos, sin], freqs exp(-ln(1e4) * i / half)  (flip_sin_to_cos, shift 0)
        self.time_proj = Timesteps(ch, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(ch, temb_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down_blocks = nn.ModuleList()
        feature_channels: list[int] = []
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            out_ch = mult * cfg.model_channels
            last = level == len(cfg.channel_mult) - 1
            common = dict(
                in_channels=ch,
                out_channels=out_ch,
                temb_channels=temb_dim,
                num_layers=cfg.num_res_blocks,
                resnet_eps=cfg.eps,
                resnet_act_fn="silu",
                resnet_groups=cfg.norm_groups,
                downsample_padding=1,
            )
            if ds in cfg.attention_resolutions:
                block: nn.Module = AttnDownBlock2D(
                    **common,
                    attention_head_dim=out_ch // cfg.num_heads,
                    downsample_type=None if last else "conv",
                )
            else:
                block = DownBlock2D(**common, add_downsample=not last)
            self.down_blocks.append(block)
            ch = out_ch
            if not last:
                feature_channels.append(ch)  # the feature before each downsample is kept
                ds *= 2
        self.mid_block = UNetMidBlock2D(
            in_channels=ch,
            temb_channels=temb_dim,
            num_layers=1,
            resnet_eps=cfg.eps,
            resnet_act_fn="silu",
            resnet_groups=cfg.norm_groups,
            attention_head_dim=ch // cfg.num_heads,
        )
        feature_channels.append(ch)
        # ``fea_tran``: one time-conditioned ResBlock per kept feature, mapping to ``out_channels``
        self.fea_tran = nn.ModuleList(
            ResnetBlock2D(
                in_channels=c,
                out_channels=cfg.out_channels,
                temb_channels=temb_dim,
                eps=cfg.eps,
                groups=cfg.norm_groups,
                non_linearity="silu",
            )
            for c in feature_channels
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: LR latent (B,4,h,w); ``timesteps``: (B,) original timesteps in [0, 999]."""
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        h = self.conv_in(x.to(self.dtype))
        kept: list[torch.Tensor] = []
        for block in self.down_blocks:
            h, states = block(h, emb)
            if block.downsamplers is not None:
                kept.append(states[-2])  # last (resnet, attn) output, before the strided conv
        h = self.mid_block(h, emb)
        kept.append(h)
        out: dict[str, torch.Tensor] = {}
        for feat, tran in zip(kept, self.fea_tran, strict=True):
            out[str(feat.shape[-1])] = tran(feat, emb)
        return out
