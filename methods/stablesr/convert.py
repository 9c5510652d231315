"""Official StableSR checkpoints → diffusers UNet + SFT + time-aware encoder + CFW VAE.

The official files are PyTorch-Lightning pickles (``{"state_dict", "global_step", "callbacks", ...}``):

* ``stablesr_000117.ckpt``: ``model.diffusion_model.*`` (ldm SD-2 UNet, plus ``….spade.*`` SFT layers in
  its 22 ResBlocks), ``structcond_stage_model.*`` (time-aware encoder), ``first_stage_model.*`` (SD VAE),
  ``cond_stage_model.*`` (OpenCLIP text tower, not used: the frozen SD 2.1 text encoder is loaded through
  diffusers) and schedule buffers (ignored; the schedule is rebuilt).
* ``vqgan_cfw_00011.ckpt``: ``encoder.*``/``decoder.*``/``quant_conv``/``post_quant_conv`` (ldm VAE names)
  plus ``decoder.fusion_layer_{1,2}.*`` (CFW) and ``loss.*`` (training losses, dropped).

They are read without importing pytorch_lightning by the shared restricted unpickler
:func:`srbench.diffusion.checkpoints.load_lightning_checkpoint`, so no code from the file can run.

ldm → diffusers key mapping: the UNet and VAE go through diffusers' own single-file converters
(``diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint``).
The UNet converter also carries the SFT keys along (``input_blocks.1.0.spade.*`` →
``down_blocks.0.resnets.0.spade.*``), which gives their placement without a hand-written table.  The
time-aware encoder has the layout of the ldm UNet's contracting path, so the same converter maps it;
only its legacy attention (one ``qkv`` conv with per-head interleaved q/k/v) and ``fea_tran`` are
mapped here.  The ``*_to_ldm`` functions are the inverse (diffusers → official layout), used to export
checkpoints in the official format (tests write tiny ones with them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from diffusers.loaders.single_file_utils import (
    LDM_UNET_KEY,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)

from methods.stablesr.encoder import EncoderConfig
from methods.stablesr.sft import sft_key
from srbench.diffusion.ldm_keys import (
    RESNET_DIFFUSERS_TO_LDM,
    unet_key_to_ldm,
    up_blocks_with_attention,
    vae_to_ldm_keys,
)

ENCODER_KEY = "structcond_stage_model."
VAE_KEY = "first_stage_model."

# ---------------------------------------------------------------------------------------------------
# ldm → diffusers
# ---------------------------------------------------------------------------------------------------

_RESNET_LDM_TO_DIFFUSERS = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
)


@dataclass
class StableSRStateDicts:
    """The diffusers-side state dicts converted from ``stablesr_*.ckpt``."""

    unet: dict[str, torch.Tensor]  # UNet2DConditionModel
    sft: dict[str, torch.Tensor]  # SFTUNet.sft (ModuleDict keyed by sft_key(resnet path))
    encoder: dict[str, torch.Tensor]  # TimeAwareEncoder
    encoder_config: EncoderConfig
    vae: dict[str, torch.Tensor] | None  # AutoencoderKL from first_stage_model.*, if present


def split_legacy_qkv(weight: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ldm ``QKVAttentionLegacy``: the qkv conv output is [head0: q,k,v | head1: q,k,v | ...].

    Returns q, k, v weights (or biases) with the heads concatenated, as diffusers' ``to_q/k/v`` use.
    """
    three_c = weight.shape[0]
    c = three_c // 3
    d = c // heads
    w = weight.reshape(heads, 3, d, *weight.shape[1:])
    return tuple(w[:, i].reshape(c, *weight.shape[1:]) for i in range(3))  # type: ignore[return-value]


def merge_legacy_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of :func:`split_legacy_qkv`."""
    c = q.shape[0]
    d = c // heads
    parts = [t.reshape(heads, d, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * c, *q.shape[1:])


def _squeeze_conv1d(t: torch.Tensor) -> torch.Tensor:
    return t[..., 0] if t.ndim == 3 else t


def _rename_resnet(key: str, table: tuple[tuple[str, str], ...]) -> str:
    for old, new in table:
        key = key.replace(old, new)
    return key


def infer_encoder_config(sd: dict[str, torch.Tensor], num_heads: int = 4) -> EncoderConfig:
    """Encoder settings from the shapes of an (ldm-named, prefix-stripped) encoder state dict.

    ``num_heads`` is not visible in the weights (legacy qkv layout) and must be given (4 officially).
    """
    conv_in = sd["input_blocks.0.0.weight"]
    mc, in_ch = conv_in.shape[0], conv_in.shape[1]
    n_levels = len({k.split(".")[1] for k in sd if k.startswith("fea_tran.")})
    n_in = len({int(k.split(".")[1]) for k in sd if k.startswith("input_blocks.")})
    nrb = (n_in - n_levels) // n_levels  # 1 + L*nrb + (L-1) input blocks
    mult, attn, ds = [], [], 1
    for level in range(n_levels):
        first = 1 + level * (nrb + 1)
        mult.append(sd[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0] // mc)
        if f"input_blocks.{first}.1.qkv.weight" in sd:
            attn.append(ds)
        ds *= 2
    out_ch = sd["fea_tran.0.out_layers.3.weight"].shape[0]
    return EncoderConfig(
        in_channels=in_ch,
        model_channels=mc,
        out_channels=out_ch,
        num_res_blocks=nrb,
        channel_mult=tuple(mult),
        attention_resolutions=tuple(attn),
        num_heads=num_heads,
    )


_ENC_ATTN = re.compile(
    r"^(down_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.0)\.(norm|qkv|proj_out)\."
)


def convert_encoder_state(sd: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """ldm ``EncoderUNetModelWT`` keys (prefix stripped) → :class:`TimeAwareEncoder` keys."""
    body = {LDM_UNET_KEY + k: v for k, v in sd.items() if not k.startswith("fea_tran.")}
    mapped = convert_ldm_unet_checkpoint(body, {"layers_per_block": config.num_res_blocks})
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in mapped.items():
        m = _ENC_ATTN.match(key)
        if m is None:
            out[key] = value
            continue
        prefix, part, param = m.group(1), m.group(2), key.rsplit(".", 1)[1]
        if part == "norm":
            out[f"{prefix}.group_norm.{param}"] = value
        elif part == "proj_out":
            out[f"{prefix}.to_out.0.{param}"] = _squeeze_conv1d(value)
        else:
            qkv.setdefault(prefix, {})[param] = _squeeze_conv1d(value)
    for prefix, params in qkv.items():
        for param, value in params.items():
            for name, t in zip(
                ("to_q", "to_k", "to_v"), split_legacy_qkv(value, config.num_heads), strict=True
            ):
                out[f"{prefix}.{name}.{param}"] = t.contiguous()
    for key, value in sd.items():
        if key.startswith("fea_tran."):
            out[_rename_resnet(key, _RESNET_LDM_TO_DIFFUSERS)] = value
    n_in, n_out = len(sd), len(out) - sum(len(p) for p in qkv.values()) * 2
    if n_in != n_out:
        raise ValueError(f"encoder conversion mapped {n_out} of {n_in} tensors; unexpected key layout")
    return out


def convert_stablesr_checkpoint(
    state: dict[str, torch.Tensor], *, layers_per_block: int = 2, encoder_heads: int = 4
) -> StableSRStateDicts:
    """Split and convert a ``stablesr_*.ckpt`` state dict (ldm names) into diffusers-side state dicts."""
    unet_ldm = {k: v for k, v in state.items() if k.startswith(LDM_UNET_KEY)}
    if not unet_ldm:
        raise ValueError(f"no '{LDM_UNET_KEY}*' keys: not a StableSR diffusion checkpoint")
    converted = convert_ldm_unet_checkpoint(unet_ldm, {"layers_per_block": layers_per_block})
    unet: dict[str, torch.Tensor] = {}
    sft: dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        if ".spade." in key:
            path, param = key.split(".spade.", 1)
            sft[f"{sft_key(path)}.{param}"] = value
        else:
            unet[key] = value
    n_spade = sum(".spade." in k for k in unet_ldm)
    if len(unet) + len(sft) != len(unet_ldm) or len(sft) != n_spade:
        raise ValueError(
            f"UNet conversion mapped {len(unet)}+{len(sft)} of {len(unet_ldm)} tensors "
            f"({n_spade} SFT); unexpected key layout"
        )
    enc_ldm = {k[len(ENCODER_KEY) :]: v for k, v in state.items() if k.startswith(ENCODER_KEY)}
    if not enc_ldm:
        raise ValueError(f"no '{ENCODER_KEY}*' keys: not a StableSR checkpoint (time-aware encoder missing)")
    enc_cfg = infer_encoder_config(enc_ldm, num_heads=encoder_heads)
    encoder = convert_encoder_state(enc_ldm, enc_cfg)
    vae_ldm = {k: v for k, v in state.items() if k.startswith(VAE_KEY)}
    vae = None
    if vae_ldm:
        n_levels = len({k.split(".")[3] for k in vae_ldm if k.startswith(VAE_KEY + "encoder.down.")})
        cfg = {"down_block_types": [None] * n_levels, "up_block_types": [None] * n_levels}
        vae = convert_ldm_vae_checkpoint(vae_ldm, cfg)
        if len(vae) != len(vae_ldm):
            raise ValueError(f"VAE conversion mapped {len(vae)} of {len(vae_ldm)} tensors; unexpected layout")
    return StableSRStateDicts(unet=unet, sft=sft, encoder=encoder, encoder_config=enc_cfg, vae=vae)


_FUSION = re.compile(r"^decoder\.fusion_layer_(\d+)\.(.*)$")


def convert_cfw_checkpoint(
    state: dict[str, torch.Tensor], num_levels: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``vqgan_cfw_*.ckpt`` → (``AutoencoderKL`` state dict, ``CFWAutoencoder.fusion_layers`` state dict)."""
    fusion: dict[str, torch.Tensor] = {}
    vae_ldm: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("loss."):
            continue
        m = _FUSION.match(key)
        if m:
            rest = re.sub(r"^(encode_enc_[13])\.conv_out\.", r"\1.conv_shortcut.", m.group(2))
            fusion[f"{m.group(1)}.{rest}"] = value
        elif key.split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
            vae_ldm[key] = value
    if not vae_ldm:
        raise ValueError("no 'encoder.*'/'decoder.*' keys: not an ldm VAE checkpoint")
    cfg = {"down_block_types": [None] * num_levels, "up_block_types": [None] * num_levels}
    vae = convert_ldm_vae_checkpoint(vae_ldm, cfg)
    if len(vae) != len(vae_ldm):
        raise ValueError(f"VAE conversion mapped {len(vae)} of {len(vae_ldm)} tensors; unexpected key layout")
    return vae, fusion


# ---------------------------------------------------------------------------------------------------
# diffusers → ldm (the inverse; for exporting official-layout checkpoints)
# ---------------------------------------------------------------------------------------------------


def _unet_blocks_to_ldm(sd: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers UNet-style keys (down/mid/up blocks, fixed layers) → ldm ``input/middle/output_blocks``."""
    up_with_attn = up_blocks_with_attention(sd)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = unet_key_to_ldm(key, layers_per_block, up_with_attn)
        if new is None:
            raise KeyError(f"no ldm name for '{key}'")
        out[new] = value
    return out


def unet_to_ldm(
    unet_sd: dict[str, torch.Tensor], sft_sd: dict[str, torch.Tensor] | None, layers_per_block: int = 2
) -> dict[str, torch.Tensor]:
    """diffusers UNet (+ SFT layers) → ``model.diffusion_model.*`` keys of the official checkpoint."""
    sd = dict(unet_sd)
    for key, value in (sft_sd or {}).items():
        path_key, param = key.split(".", 1)
        # sft_key replaced the dots of e.g. "down_blocks.0.resnets.1"
        path = re.sub(r"^(down_blocks|up_blocks)_(\d+)_resnets_(\d+)$", r"\1.\2.resnets.\3", path_key)
        path = re.sub(r"^mid_block_resnets_(\d+)$", r"mid_block.resnets.\1", path)
        sd[f"{path}.spade.{param}"] = value
    return {LDM_UNET_KEY + k: v for k, v in _unet_blocks_to_ldm(sd, layers_per_block).items()}


def encoder_to_ldm(enc_sd: dict[str, torch.Tensor], config: EncoderConfig) -> dict[str, torch.Tensor]:
    """:class:`TimeAwareEncoder` state dict → ``structcond_stage_model.*`` keys of the official checkpoint."""
    body: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in enc_sd.items():
        if key.startswith("fea_tran."):
            out[_rename_resnet(key, RESNET_DIFFUSERS_TO_LDM)] = value
            continue
        m = re.match(
            r"^(down_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.0)\.(.+)\.(weight|bias)$", key
        )
        if m is None:
            body[key] = value
            continue
        prefix, part, param = m.groups()
        if part == "group_norm":
            body[f"{prefix}.norm.{param}"] = value
        elif part == "to_out.0":
            body[f"{prefix}.proj_out.{param}"] = value[..., None] if param == "weight" else value
        elif part in ("to_q", "to_k", "to_v"):
            qkv.setdefault(prefix, {}).setdefault(param, {})[part] = value
        else:
            raise KeyError(key)
    for prefix, params in qkv.items():
        for param, d in params.items():
            merged = merge_legacy_qkv(d["to_q"], d["to_k"], d["to_v"], config.num_heads)
            body[f"{prefix}.qkv.{param}"] = merged[..., None] if param == "weight" else merged
    out.update(_unet_blocks_to_ldm(body, config.num_res_blocks))
    return {ENCODER_KEY + k: v for k, v in out.items()}


def vae_to_ldm(vae_sd: dict[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKL`` state dict → ldm VAE keys (``encoder.down.0.block.0...``)."""
    return vae_to_ldm_keys(vae_sd, num_levels, KeyError)


def cfw_to_ldm(fusion_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CFWAutoencoder.fusion_layers`` state dict → ``decoder.fusion_layer_{i}.*`` keys."""
    out = {}
    for key, value in fusion_sd.items():
        level, rest = key.split(".", 1)
        rest = re.sub(r"^(encode_enc_[13])\.conv_shortcut\.", r"\1.conv_out.", rest)
        out[f"decoder.fusion_layer_{level}.{rest}"] = value
    return out
