"""Official DoSSR checkpoints (``dossr_default.ckpt``, ``dossr_onestep.ckpt``) → diffusers-layout state dicts.

The official file is the ``state_dict`` of the whole ``ControlLDM`` (``scripts/inference.py`` loads it
with ``load_state_dict(strict=True)`` after dropping an optional ``state_dict`` wrapper and ``module.``
prefix; ``utils/common.py``).  Top-level prefixes, from the module tree of ``model/cldm.py`` and
``configs/model/cldm_v21.yaml``:

``model.diffusion_model.``  SD 2.1-base UNet (ldm ``UNetModel``, frozen) → diffusers ``UNet2DConditionModel``
``control_model.``          LAControlNet in ldm layout (8-channel ``input_blocks.0.0``, ``zero_convs.*``,
                            ``middle_block_out``) → diffusers ``ControlNetModel``
``first_stage_model.``      SD VAE (ldm ``AutoencoderKL``) → diffusers ``AutoencoderKL``
``cond_encoder.``           ``encoder.*`` + ``quant_conv.*`` in the VAE's layout → :class:`CondEncoder`
``cond_stage_model.model.`` OpenCLIP ViT-H text tower (24 blocks, ``text_projection``, ``logit_scale``)
                            → ``CLIPTextModel`` with 23 layers
``preprocess_model.``       RRDBNet (basicsr key names) → basicsr ``RRDBNet``
(no prefix)                 ldm's DDPM buffers (``betas``, ``alphas_cumprod``, ..., ``lambdas`` = η,
                            ``one_minus_lambdas``, ``logvar``): not weights; ``lambdas`` is checked

ldm → diffusers goes through diffusers' single-file converters (``convert_ldm_unet_checkpoint``,
``convert_controlnet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_open_clip_checkpoint``).
The OpenCLIP tower's last block is dropped first: DoSSR (like SD 2) reads the penultimate layer, then
``ln_final``.  The ``*_to_ldm`` functions are the inverse, written here (diffusers has no library
function for it); tests use them to write tiny checkpoints in the official layout.

Loading: ``torch.load(weights_only=True)`` (memory-mapped for zip files).  A full Lightning checkpoint
whose pickle names Lightning classes is read by the shared restricted unpickler
(``srbench.diffusion.checkpoints.load_lightning_checkpoint``), which never imports or runs them.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srbench.diffusion.ldm_keys import unet_key_to_ldm, up_blocks_with_attention, vae_to_ldm_keys
from srbench.interface import SRBenchError, WeightsMissing

log = logging.getLogger(__name__)

UNET_KEY = "model.diffusion_model."
CONTROL_KEY = "control_model."
VAE_KEY = "first_stage_model."
COND_ENCODER_KEY = "cond_encoder."
TEXT_KEY = "cond_stage_model.model."
PREPROCESS_KEY = "preprocess_model."
#: non-weight buffers of ldm's DDPM / LatentDiffusion the checkpoint carries at the top level
DDPM_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "lambdas",
    "one_minus_lambdas",
    "logvar",
)


# ---------------------------------------------------------------------------------------------------
# reading the file
# ---------------------------------------------------------------------------------------------------
def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an official DoSSR checkpoint, loaded safely; ``state_dict`` wrapper and
    ``module.`` prefix removed as the official ``load_state_dict`` does."""
    path = Path(path)
    if not path.is_file():
        raise WeightsMissing(f"dossr: checkpoint not found: {path}")
    with open(path, "rb") as f:
        is_zip = torch.serialization._is_zipfile(f)
    try:
        ckpt: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError:  # a raw Lightning file (callbacks keyed by classes, hparams)
        from srbench.diffusion.checkpoints import load_lightning_checkpoint

        state, _ = load_lightning_checkpoint(path)
        ckpt = {"state_dict": state}
    if not isinstance(ckpt, Mapping):
        raise SRBenchError(f"dossr: {path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    state = ckpt.get("state_dict", ckpt)
    out = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith(CONTROL_KEY) for k in out):
        raise SRBenchError(f"dossr: {path} has no '{CONTROL_KEY}*' tensors: not a DoSSR checkpoint")
    return out


def subset(state: Mapping[str, torch.Tensor], prefix: str, *, strip: bool = False) -> dict[str, torch.Tensor]:
    return {(k[len(prefix) :] if strip else k): v for k, v in state.items() if k.startswith(prefix)}


def check_eta_buffer(state: Mapping[str, torch.Tensor], eta_table: np.ndarray) -> float | None:
    """Max |η_ckpt - η| over the checkpoint's ``lambdas`` buffer (ldm's name for η), or None if absent.
    Logs a warning when the sampler's η differs from the one the model was trained with."""
    buf = state.get("lambdas")
    if buf is None:
        return None
    ours = np.asarray(eta_table, dtype=np.float64)
    theirs = buf.detach().double().cpu().numpy()
    if theirs.shape != ours.shape:
        log.warning("dossr: checkpoint η table has %d entries, the sampler's %d", theirs.size, ours.size)
        return float("inf")
    err = float(np.abs(theirs - ours).max())
    if err > 1e-5:
        log.warning("dossr: the sampler's η differs from the checkpoint's training η by up to %.3g", err)
    return err


# ---------------------------------------------------------------------------------------------------
# official → diffusers
# ---------------------------------------------------------------------------------------------------
@dataclass
class DoSSRStateDicts:
    """diffusers-side state dicts from an official checkpoint; None where the checkpoint lacks a part."""

    controlnet: dict[str, torch.Tensor]
    cond_encoder: dict[str, torch.Tensor]
    preprocess: dict[str, torch.Tensor]
    unet: dict[str, torch.Tensor] | None
    vae: dict[str, torch.Tensor] | None
    text_encoder: dict[str, torch.Tensor] | None


def convert_unet(
    state: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return convert_ldm_unet_checkpoint(subset(state, UNET_KEY), dict(unet_config))


def convert_controlnet(
    state: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    out = convert_controlnet_checkpoint(subset(state, CONTROL_KEY), dict(unet_config))
    # LAControlNet has no pixel hint encoder: diffusers' converter leaves its slots empty
    return {k: v for k, v in out.items() if v is not None and not k.startswith("controlnet_cond_embedding.")}


def convert_vae(
    state: Mapping[str, torch.Tensor], vae_config: Mapping[str, Any], prefix: str = VAE_KEY
) -> dict:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    part = {VAE_KEY + k: v for k, v in subset(state, prefix, strip=True).items()}
    return convert_ldm_vae_checkpoint(part, dict(vae_config))


def convert_cond_encoder(state: Mapping[str, torch.Tensor], vae_config: Mapping[str, Any]) -> dict:
    """``cond_encoder.{encoder,quant_conv}.*`` has the VAE's layout: reuse the VAE converter."""
    out = convert_vae(state, vae_config, prefix=COND_ENCODER_KEY)
    return {k: v for k, v in out.items() if k.startswith(("encoder.", "quant_conv."))}


def openclip_num_blocks(state: Mapping[str, torch.Tensor], prefix: str = TEXT_KEY) -> int:
    ids = {
        int(m.group(1))
        for k in state
        if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k))
    }
    return max(ids) + 1 if ids else 0


def convert_text_encoder(state: Mapping[str, torch.Tensor], text_encoder: Any) -> dict[str, torch.Tensor]:
    """OpenCLIP text tower → ``CLIPTextModel`` keys (as the model names them) for the penultimate-layer
    encoder: the last resblock, ``text_projection`` and ``logit_scale`` are dropped."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    n = openclip_num_blocks(state)
    layers = int(text_encoder.config.num_hidden_layers)
    if n != layers + 1:
        raise SRBenchError(
            f"dossr: the checkpoint's text tower has {n} blocks; the text encoder config has {layers} "
            f"layers (expected {n - 1}: DoSSR reads the penultimate layer)"
        )
    last = f"{TEXT_KEY}transformer.resblocks.{n - 1}."
    part = {k: v for k, v in subset(state, TEXT_KEY).items() if not k.startswith(last)}
    out = convert_open_clip_checkpoint(text_encoder, part, prefix=TEXT_KEY)
    out.pop("text_projection.weight", None)
    model_keys = set(text_encoder.state_dict())
    if not any(k.startswith("text_model.") for k in model_keys):  # transformers >= 5 drops the prefix
        out = {k.removeprefix("text_model."): v for k, v in out.items()}
    return out


def convert_official_checkpoint(
    state: Mapping[str, torch.Tensor],
    *,
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    text_encoder: Any = None,
) -> DoSSRStateDicts:
    """Every part of an official checkpoint in diffusers / basicsr key layout.

    ``text_encoder``: a ``CLIPTextModel`` (any weights) whose config and key naming the text state dict
    must fit; without it the text tower is not converted.
    """
    has = {
        p: any(k.startswith(p) for k in state)
        for p in (UNET_KEY, VAE_KEY, TEXT_KEY, COND_ENCODER_KEY, PREPROCESS_KEY)
    }
    for required in (COND_ENCODER_KEY, PREPROCESS_KEY):
        if not has[required]:
            raise SRBenchError(f"dossr: the checkpoint has no '{required}*' tensors")
    return DoSSRStateDicts(
        controlnet=convert_controlnet(state, unet_config),
        cond_encoder=convert_cond_encoder(state, vae_config),
        preprocess=subset(state, PREPROCESS_KEY, strip=True),
        unet=convert_unet(state, unet_config) if has[UNET_KEY] else None,
        vae=convert_vae(state, vae_config) if has[VAE_KEY] else None,
        text_encoder=convert_text_encoder(state, text_encoder)
        if has[TEXT_KEY] and text_encoder is not None
        else None,
    )


# ---------------------------------------------------------------------------------------------------
# diffusers → official (the inverse; used to write official-layout checkpoints)
# ---------------------------------------------------------------------------------------------------
def _unet_key_to_ldm(key: str, layers_per_block: int, up_has_attention: Collection[int]) -> str:
    if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if m := re.match(r"controlnet_mid_block\.(.*)", key):
        return f"middle_block_out.0.{m.group(1)}"
    name = unet_key_to_ldm(key, layers_per_block, up_has_attention)
    if name is None:
        raise SRBenchError(f"dossr: no ldm name for UNet/ControlNet key '{key}'")
    return name


def unet_to_ldm(
    state: Mapping[str, torch.Tensor], layers_per_block: int, prefix: str = UNET_KEY
) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel / ControlNetModel keys → ldm ``UNetModel`` / ``ControlNet`` keys."""
    up_attn = up_blocks_with_attention(state)
    return {prefix + _unet_key_to_ldm(k, layers_per_block, up_attn): v for k, v in state.items()}


def controlnet_to_ldm(state: Mapping[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    return unet_to_ldm(
        {k: v for k, v in state.items() if not k.startswith("controlnet_cond_embedding.")},
        layers_per_block,
        prefix=CONTROL_KEY,
    )


def vae_to_ldm(state: Mapping[str, torch.Tensor], prefix: str = VAE_KEY) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL (or its encoder + quant_conv) keys → ldm ``AutoencoderKL`` keys; the
    mid-block attention's linear q/k/v/proj weights become 1x1 convs as in ldm."""
    ups = {int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))}
    num_up = max(ups) + 1 if ups else 0
    return {prefix + k: v for k, v in vae_to_ldm_keys(state, num_up, SRBenchError, "dossr: ").items()}


_CLIP_TO_OPENCLIP = (
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
)


def clip_text_to_openclip(
    state: Mapping[str, torch.Tensor], prefix: str = TEXT_KEY
) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys (with or without ``text_model.``) → OpenCLIP text tower keys
    (q/k/v merged into ``in_proj_*``)."""
    sd = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    fixed = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
    for k, v in sd.items():
        if k in fixed:
            out[prefix + fixed[k]] = v
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)", k)
        if m is None:
            raise SRBenchError(f"dossr: no OpenCLIP name for text encoder key '{k}'")
        i, rest = m.group(1), m.group(2)
        block = f"{prefix}transformer.resblocks.{i}."
        if qkv := re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
            if qkv.group(1) == "q":
                kind = qkv.group(2)
                parts = [sd[f"encoder.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                out[f"{block}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
            continue
        for new, old in _CLIP_TO_OPENCLIP:
            if rest.startswith(new + "."):
                out[block + old + rest[len(new) :]] = v
                break
        else:
            raise SRBenchError(f"dossr: no OpenCLIP name for text encoder key '{k}'")
    return out


def rrdbnet_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PREPROCESS_KEY + k: v for k, v in state.items()}


def to_official_checkpoint(
    *,
    unet: Mapping[str, torch.Tensor],
    controlnet: Mapping[str, torch.Tensor],
    vae: Mapping[str, torch.Tensor],
    cond_encoder: Mapping[str, torch.Tensor],
    text_encoder: Mapping[str, torch.Tensor],
    preprocess: Mapping[str, torch.Tensor],
    layers_per_block: int,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """One state dict in the official ``ControlLDM`` layout.  ``extra``: tensors added as they are
    (the OpenCLIP tower's unused last block, ``text_projection``, DDPM buffers, ...)."""
    out: dict[str, torch.Tensor] = {}
    out.update(unet_to_ldm(unet, layers_per_block))
    out.update(controlnet_to_ldm(controlnet, layers_per_block))
    out.update(vae_to_ldm(vae))
    out.update(vae_to_ldm(cond_encoder, prefix=COND_ENCODER_KEY))
    out.update(clip_text_to_openclip(text_encoder))
    out.update(rrdbnet_to_official(preprocess))
    out.update(extra or {})
    return out
