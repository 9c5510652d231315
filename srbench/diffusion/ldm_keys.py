"""diffusers → official ldm (CompVis / Stability ``ldm``) key names, for writing checkpoints in the
official layout of ldm-based methods (StableSR, DoSSR).  diffusers ships only the other direction
(``diffusers.loaders.single_file_utils.convert_ldm_*``); these are its inverses, written by hand.

- :func:`unet_key_to_ldm`: ``UNet2DConditionModel`` (and the shared UNet-shaped parts of
  ``ControlNetModel`` or an encoder-only UNet copy) → ldm ``UNetModel`` ``input_blocks`` /
  ``middle_block`` / ``output_blocks`` / ``time_embed`` / ``out`` names, without a prefix;
- :func:`vae_key_to_ldm` / :func:`vae_to_ldm_keys`: ``AutoencoderKL`` → ldm ``AutoencoderKL`` names
  (the mid-block attention's linear q/k/v/proj weights become 1x1 convs, as in ldm).

Both return None for a key outside that layout, so each caller reports it in its own words.
Method-specific parts (StableSR's SFT layers and legacy-attention encoder, DoSSR's ControlNet
zero convs and OpenCLIP text tower) stay in the methods.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

#: diffusers ``ResnetBlock2D`` submodule → ldm ``ResBlock`` submodule
RESNET_DIFFUSERS_TO_LDM = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_RESNET = dict(RESNET_DIFFUSERS_TO_LDM)
#: UNet layers outside the blocks (time embedding, conv_in, output norm and conv)
UNET_FIXED_TO_LDM: dict[str, str] = dict(DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"])
VAE_FIXED_TO_LDM: dict[str, str] = dict(DIFFUSERS_TO_LDM_MAPPING["vae"])


def resnet_rest_to_ldm(rest: str) -> str:
    """``norm1.weight`` → ``in_layers.0.weight`` etc.; a submodule not in the table (e.g. StableSR's
    ``spade.*`` SFT layer inside a ResBlock) keeps its name."""
    head, _, tail = rest.partition(".")
    return f"{_RESNET[head]}.{tail}" if head in _RESNET else rest


def up_blocks_with_attention(keys: Iterable[str]) -> set[int]:
    """Indices of the up blocks that have attentions (their upsampler sits one slot later in ldm)."""
    return {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}


def unet_key_to_ldm(key: str, layers_per_block: int, up_with_attention: Collection[int]) -> str | None:
    """One diffusers UNet key → its ldm name (no ``model.diffusion_model.`` prefix), or None.

    ldm has ``layers_per_block + 1`` input blocks per level (resnets (+ attention), then a
    downsampler) after ``input_blocks.0`` (conv_in), and as many output blocks per level.
    """
    if key in UNET_FIXED_TO_LDM:
        return UNET_FIXED_TO_LDM[key]
    per = layers_per_block + 1
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i = 1 + int(m.group(1)) * per + int(m.group(3))
        if m.group(2) == "resnets":
            return f"input_blocks.{i}.0.{resnet_rest_to_ldm(m.group(4))}"
        return f"input_blocks.{i}.1.{m.group(4)}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m.group(1)) + 1) * per}.0.op.{m.group(2)}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m.group(1))}.{resnet_rest_to_ldm(m.group(2))}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m.group(1)}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i = int(m.group(1)) * per + int(m.group(3))
        if m.group(2) == "resnets":
            return f"output_blocks.{i}.0.{resnet_rest_to_ldm(m.group(4))}"
        return f"output_blocks.{i}.1.{m.group(4)}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m.group(1))
        slot = 2 if b in up_with_attention else 1
        return f"output_blocks.{b * per + layers_per_block}.{slot}.conv.{m.group(2)}"
    return None


_VAE_ATTN_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


_VAE_MID_ATTN = re.compile(
    r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_[qkv]|to_out\.0)\.(.*)"
)


def _nin(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def vae_key_to_ldm(key: str, num_up: int) -> str | None:
    """One diffusers ``AutoencoderKL`` key → its ldm name, or None.  ``num_up``: the decoder's number of
    up blocks (ldm numbers them in reverse)."""
    if key in VAE_FIXED_TO_LDM:
        return VAE_FIXED_TO_LDM[key]
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_nin(m.group(3))}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m.group(1)}.downsample.{m.group(2)}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"decoder.up.{num_up - 1 - int(m.group(1))}.block.{m.group(2)}.{_nin(m.group(3))}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{num_up - 1 - int(m.group(1))}.upsample.{m.group(2)}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{_nin(m.group(3))}"
    if m := re.match(
        r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_[qkv]|to_out\.0)\.(.*)", key
    ):
        return f"{m.group(1)}.mid.attn_1.{_VAE_ATTN_TO_LDM[m.group(2)]}.{m.group(3)}"
    return None


def vae_to_ldm_keys(
    state: Mapping[str, torch.Tensor], num_up: int, unknown: type[Exception], what: str = ""
) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict (or its encoder + quant_conv) → ldm names; the
    mid-block attention's 2-D linear weights become 1x1 conv weights.  A key with no ldm name raises
    ``unknown(f"{what}no ldm name for VAE key '{key}'")``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = vae_key_to_ldm(key, num_up)
        if name is None:
            raise unknown(f"{what}no ldm name for VAE key '{key}'")
        if ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[name] = value
    return out
