"""DoSSR's networks with diffusers / basicsr building blocks.

Official model (``configs/model/cldm_v21.yaml``, ``model/cldm.py``; paper §4.1, App. C.3): a frozen
SD 2.1-base UNet steered by a DiffBIR-style "LAControlNet", both called with the same timestep and text
context at every step:

* **LAControlNet** = a copy of the UNet's contracting path + middle block whose first conv takes
  ``cat([x_t, c_latent])`` (4 + 4 channels; there is no pixel-space hint encoder), 12 zero 1x1 convs on
  the skips and one on the middle block.  Built here as a diffusers :class:`ControlNetModel` with
  ``in_channels = 8`` and its pixel-hint embedding replaced by :class:`NoHintEmbedding` (adds nothing).
  Its outputs feed :class:`UNet2DConditionModel` as ``down_block_additional_residuals`` (12, forward
  order) and ``mid_block_additional_residual`` -- the same sums the official ``ControlledUnetModel``
  does when it pops them in reverse.
* **cond encoder**: a separate copy of the SD VAE encoder + ``quant_conv`` with its own weights;
  ``c_latent = 0.18215 · mode(cond_encoder(2 I - 1))`` (``ControlLDM.apply_condition_encoder``).
* **pre-restoration**: basicsr ``RRDBNet`` (23 blocks, x4; Real-ESRNet / Real-ESRGAN weights, frozen,
  stored in the DoSSR checkpoint as ``preprocess_model.*``).
* the SD VAE (x̂0 and decoding) and the OpenCLIP ViT-H text tower (penultimate layer + final LN =
  diffusers' 23-layer ``CLIPTextModel``) as in SD 2.1.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from srbench.interface import SRBenchError


@contextlib.contextmanager
def empty_init(enabled: bool = True) -> Iterator[None]:
    """Build modules with parameters on the meta device (no random init, no memory); fill them with
    :func:`load_weights`.  Buffers are still created normally."""
    if not enabled:
        yield
        return
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def load_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """``load_state_dict(strict=True, assign=True)`` with an error naming the part and the first
    missing / unexpected keys; refuses to leave any parameter on the meta device."""
    mine = set(module.state_dict())
    theirs = set(state_dict)
    if mine != theirs:
        missing, unexpected = sorted(mine - theirs), sorted(theirs - mine)
        raise SRBenchError(
            f"dossr: {what}: state dict does not fit the model "
            f"({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    try:
        module.load_state_dict(dict(state_dict), strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise SRBenchError(f"dossr: {what}: {detail} ...") from exc
    left = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta]
    if left:
        raise SRBenchError(f"dossr: {what}: {len(left)} tensors were not loaded, e.g. {left[:3]}")
    return module


class NoHintEmbedding(nn.Module):
    """Stands in for ControlNetModel's pixel-hint encoder: LAControlNet has none (the hint latent is
    concatenated to x_t instead), so it contributes a broadcast zero."""

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.new_zeros(())


def build_lacontrolnet(unet_config: Mapping[str, Any], hint_channels: int = 4) -> nn.Module:
    """A diffusers ControlNetModel shaped like the UNet's encoder, taking ``in_channels + hint_channels``.

    ``unet_config`` may be a raw ``unet/config.json`` dict: diffusers completes it first
    (:func:`srbench.diffusion.sd.config_with_defaults`).  The config is copied from the UNet by diffusers'
    own ``ControlNetModel.from_unet`` (no weights);
    the pixel-hint embedding is replaced by :class:`NoHintEmbedding`, so the model's state dict has
    exactly the keys the official ``control_model.*`` converts to.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel
    from diffusers.configuration_utils import FrozenDict

    from srbench.diffusion.sd import config_with_defaults

    # from_unet reads attributes a raw hub file may lack (SD 2.1-base's has no num_attention_heads)
    full = config_with_defaults(UNet2DConditionModel, unet_config)
    cfg = FrozenDict({**full, "in_channels": int(full["in_channels"]) + hint_channels})
    net = ControlNetModel.from_unet(
        types.SimpleNamespace(config=cfg),  # type: ignore[arg-type]  # from_unet reads only .config here
        load_weights_from_unet=False,
        conditioning_embedding_out_channels=(16,),
    )
    net.controlnet_cond_embedding = NoHintEmbedding()
    return net


class CondEncoder(nn.Module):
    """The ControlNet's hint encoder: an SD VAE encoder + ``quant_conv`` (official ``cond_encoder``)."""

    def __init__(self, encoder: nn.Module, quant_conv: nn.Module | None, scaling_factor: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.quant_conv = quant_conv
        self.scaling_factor = float(scaling_factor)

    @classmethod
    def from_vae_config(cls, vae_config: Mapping[str, Any]) -> CondEncoder:
        """Built as the VAE's encoder half: diffusers' AutoencoderKL constructs it (wrap the call in
        :func:`empty_init` to skip random initialisation when weights are loaded next)."""
        from diffusers import AutoencoderKL

        shell = AutoencoderKL.from_config(dict(vae_config))
        # the scale as diffusers completes it (SD 2.1-base's published vae/config.json has no scaling_factor)
        return cls(shell.encoder, shell.quant_conv, shell.config.scaling_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``scaling_factor · mode`` of the posterior of ``image`` (in [-1, 1])."""
        moments = self.encoder(image)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, _ = torch.chunk(moments, 2, dim=1)
        return mean * self.scaling_factor


class DoSSRDenoiser(nn.Module):
    """u_θ(x_t, t; c_latent, text) = UNet(x_t, t, text, residuals = LAControlNet(cat[x_t, c_latent], t, text))
    (``ControlLDM.apply_model``); ``control_scale`` multiplies all 13 residuals (official 1.0)."""

    def __init__(self, unet: nn.Module, controlnet: nn.Module, control_scale: float = 1.0) -> None:
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        self.control_scale = float(control_scale)

    def forward(
        self, x_t: torch.Tensor, timestep: torch.Tensor, c_latent: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        down, mid = self.controlnet(
            torch.cat([x_t, c_latent], dim=1),
            timestep,
            encoder_hidden_states=context,
            controlnet_cond=x_t,  # ignored by NoHintEmbedding
            conditioning_scale=self.control_scale,
            return_dict=False,
        )
        return self.unet(
            x_t,
            timestep,
            encoder_hidden_states=context,
            down_block_additional_residuals=tuple(down),
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
