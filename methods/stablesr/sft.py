"""SFT modulation of a frozen diffusers UNet by the time-aware encoder's features (paper §3.1).

Where and how, as the official code does it (``ResBlockDual`` + ``SPADE`` in ``ldm/modules``), which
differs from the paper's Eq. 1 (``(1+α)⊙F + β`` without normalisation): in every UNet ResBlock (22 in
SD 2.1) the residual branch ``h`` *after its last conv* becomes

    h ← GroupNorm32(h)·(1 + γ) + β,   γ, β = Conv3×3(ReLU(Conv3×3(F[str(width of h)])))

with a learnable-affine GroupNorm, before the skip connection is added.  In diffusers' ``ResnetBlock2D``
that is the output of ``conv2``, so the UNet is not forked: :class:`SFTUNet` registers forward hooks on
every ``resnet.conv2`` for the duration of one call and replaces the conv output with the modulated one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


class SFTLayer(nn.Module):
    """The official ``SPADE`` block: affine GroupNorm(32) on h, then ``·(1+γ)+β`` from the condition.

    Parameter names follow the official checkpoint (``param_free_norm`` is affine despite its name).
    """

    def __init__(self, channels: int, cond_channels: int = 256, hidden: int = 128, groups: int = 32) -> None:
        super().__init__()
        self.param_free_norm = nn.GroupNorm(groups, channels, eps=1e-5)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        norm = self.param_free_norm
        # ldm's GroupNorm32 normalises in float32 and casts back
        normalized = F.group_norm(
            h.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps
        ).to(h.dtype)
        actv = self.mlp_shared(cond.to(h.dtype))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def sft_targets(unet: nn.Module) -> list[str]:
    """Module paths of the UNet's ResBlocks that get an SFT layer, in execution order (22 for SD 2.1)."""
    names = [name for name, m in unet.named_modules() if isinstance(m, ResnetBlock2D)]
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}  # diffusers registers up_blocks before mid
    return sorted(names, key=lambda n: order.get(n.split(".")[0], 3))  # stable: keeps order within a part


def sft_key(resnet_path: str) -> str:
    """``down_blocks.0.resnets.1`` → ``down_blocks_0_resnets_1`` (ModuleDict keys cannot hold dots)."""
    return resnet_path.replace(".", "_")


class SFTUNet(nn.Module):
    """A diffusers ``UNet2DConditionModel`` plus one :class:`SFTLayer` per ResBlock, attached by hooks."""

    def __init__(
        self, unet: UNet2DConditionModel, cond_channels: int = 256, hidden: int = 128, groups: int = 32
    ) -> None:
        super().__init__()
        self.unet = unet
        self._targets = sft_targets(unet)
        modules = dict(unet.named_modules())
        self.sft = nn.ModuleDict(
            {
                sft_key(path): SFTLayer(modules[path].conv2.out_channels, cond_channels, hidden, groups)
                for path in self._targets
            }
        )
        # the hooked convs, found once (a named_modules() walk per UNet call cost ~0.4 ms at SD size)
        self._convs = [modules[path].conv2 for path in self._targets]

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def memory_format(self) -> torch.memory_format:
        """The memory format of the SFT convs' weights (channels_last after ``.to(memory_format=...)``)."""
        w = next(iter(self.sft.values())).mlp_shared[0].weight
        cl = w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        return torch.channels_last if cl else torch.contiguous_format

    @contextlib.contextmanager
    def attached(self, features: dict[str, torch.Tensor]) -> Iterator[None]:
        """Within the block, every ResBlock's ``conv2`` output is SFT-modulated by ``features``."""
        # The encoder's features leave diffusers' attention with channels-last strides; fed so to convs with
        # contiguous weights, oneDNN reorders each SFT conv's weight on every call (66 per UNet call at SD
        # size, the profile's copies in this file).  One reorder of the 4 features per call instead.
        fmt = self.memory_format()
        features = {k: v.contiguous(memory_format=fmt) for k, v in features.items()}
        handles = []

        def make_hook(layer: SFTLayer, path: str) -> Callable[..., torch.Tensor]:
            def hook(_mod: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
                cond = features.get(str(out.shape[-1]))
                if cond is None:
                    raise RuntimeError(
                        f"SFT at {path}: no encoder feature of width {out.shape[-1]} "
                        f"(have {sorted(features, key=int)}); the latent tile must match the encoder's levels"
                    )
                return layer(out, cond)

            return hook

        try:
            for path, conv in zip(self._targets, self._convs, strict=True):
                handles.append(conv.register_forward_hook(make_hook(self.sft[sft_key(path)], path)))
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        features: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """ε-prediction of the SFT-modulated UNet; ``features`` from :class:`TimeAwareEncoder`."""
        with self.attached(features):
            return self.unet(
                sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False
            )[0]
