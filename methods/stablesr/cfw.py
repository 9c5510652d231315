"""Controllable Feature Wrapping (CFW) in the VAE decoder (paper §3.2, Eq. 6).

Official code: ``AutoencoderKLResi`` / ``Decoder_Mix`` / ``Fuse_sft_block_RRDB`` (ldm/models/autoencoder.py,
ldm/modules/diffusionmodules/model.py).  At every decoder level ``i`` with ``0 < i < L-1`` (levels 1 and 2
of SD's 4-level VAE), after that level's ResBlocks and before its upsampler, the decoder feature becomes

    F_d ← F_d + w · C_i([F_e, F_d])

where ``F_e`` is the VAE *encoder* feature of the same level (output of its ResBlocks, before its
downsample) computed from the upsampled LR image, and ``C_i`` = ResBlock(2C→C) → 2×RRDB(C, growth 32) →
ResBlock(C→C).  ``w = 0`` is exactly the plain SD decoder (the fusion is skipped altogether).

The diffusers ``AutoencoderKL`` is not forked: :class:`CFWAutoencoder` captures ``F_e`` with forward
pre-hooks on the encoder's downsamplers and applies the fusion with forward pre-hooks on the decoder's
upsamplers, each only inside a ``with`` block.  ResBlocks are diffusers' ``ResnetBlock2D`` (no time
input, GroupNorm eps 1e-6 as ldm's ``Normalize``); RRDB is basicsr's (same parameter names as the
official checkpoint).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from basicsr.archs.rrdbnet_arch import RRDB
from diffusers import AutoencoderKL
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


class FusionBlock(nn.Module):
    """``Fuse_sft_block_RRDB``: C(F_e, F_d) of Eq. 6, returning ``F_d + w·C``."""

    def __init__(self, channels: int, num_rrdb: int = 2, growth: int = 32, groups: int = 32) -> None:
        super().__init__()
        self.encode_enc_1 = ResnetBlock2D(
            in_channels=2 * channels, out_channels=channels, temb_channels=None, eps=1e-6, groups=groups
        )
        self.encode_enc_2 = nn.Sequential(*(RRDB(channels, growth) for _ in range(num_rrdb)))
        self.encode_enc_3 = ResnetBlock2D(
            in_channels=channels, out_channels=channels, temb_channels=None, eps=1e-6, groups=groups
        )

    def forward(self, enc_feat: torch.Tensor, dec_feat: torch.Tensor, w: float) -> torch.Tensor:
        f = self.encode_enc_1(torch.cat([enc_feat.to(dec_feat.dtype), dec_feat], dim=1), None)
        f = self.encode_enc_2(f)
        f = self.encode_enc_3(f, None)
        return dec_feat + w * f


class CFWAutoencoder(nn.Module):
    """An ``AutoencoderKL`` plus one :class:`FusionBlock` per inner decoder level (ldm level index)."""

    def __init__(self, vae: AutoencoderKL, num_rrdb: int = 2) -> None:
        super().__init__()
        self.vae = vae
        n_levels = len(vae.config.block_out_channels)
        groups = vae.config.norm_num_groups
        #: ldm level indices with a fusion layer (1 and 2 for SD's VAE); keys of ``fusion_layers``
        self.levels = list(range(1, n_levels - 1))
        self.fusion_layers = nn.ModuleDict(
            {
                str(lvl): FusionBlock(vae.config.block_out_channels[lvl], num_rrdb=num_rrdb, groups=groups)
                for lvl in self.levels
            }
        )

    def _decoder_upsampler(self, level: int) -> nn.Module:
        # diffusers' decoder.up_blocks run from the deepest level: up_blocks[L-1-level] is ldm ``up[level]``
        block = self.vae.decoder.up_blocks[len(self.vae.decoder.up_blocks) - 1 - level]
        return block.upsamplers[0]

    @contextlib.contextmanager
    def capture_features(self) -> Iterator[dict[int, torch.Tensor]]:
        """Inside the block, a VAE *encode* fills the yielded dict with ``{level: F_e}``."""
        feats: dict[int, torch.Tensor] = {}
        handles = []
        try:
            for lvl in self.levels:
                down = self.vae.encoder.down_blocks[lvl].downsamplers[0]

                def hook(_m: nn.Module, args: tuple, lvl: int = lvl) -> None:
                    feats[lvl] = args[0]

                handles.append(down.register_forward_pre_hook(hook))
            yield feats
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def fused(self, features: dict[int, torch.Tensor] | None, w: float) -> Iterator[None]:
        """Inside the block, a VAE *decode* applies CFW with weight ``w``; ``w == 0`` changes nothing."""
        if w == 0 or not self.levels:
            yield
            return
        if features is None or any(lvl not in features for lvl in self.levels):
            raise ValueError(f"CFW with w={w} needs encoder features of levels {self.levels}")
        handles = []
        try:
            for lvl in self.levels:
                layer = self.fusion_layers[str(lvl)]

                def hook(_m: nn.Module, args: tuple, lvl: int = lvl, layer: FusionBlock = layer) -> tuple:
                    enc = features[lvl]
                    if enc.shape[-2:] != args[0].shape[-2:]:
                        raise ValueError(
                            f"CFW level {lvl}: encoder feature {tuple(enc.shape)} does not match decoder "
                            f"feature {tuple(args[0].shape)}; decode the latent of the image that was encoded"
                        )
                    return (layer(enc, args[0], w), *args[1:])

                handles.append(self._decoder_upsampler(lvl).register_forward_pre_hook(hook))
            yield
        finally:
            for h in handles:
                h.remove()
