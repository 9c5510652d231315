"""Which VAE encoder turns the upsampled LR into the latent z_lr (``latent_vae``).

The authors' scripts load two VAEs: the main checkpoint's ``first_stage_model`` (``stablesr_000117.ckpt``)
and the CFW one (``vqgan_cfw_00011.ckpt``).  The tile and DDIM scripts take z_lr from the first
(``model.encode_first_stage``) and the CFW encoder features from the second (``vq_model.encode``); the
128→512 script takes both from the CFW VAE.  ``latent_vae="ckpt"`` does the former, ``"cfw"`` the latter.

The two released encoders have the same key set: both configs (``v2-finetune_text_T_512.yaml``'s
``first_stage_config`` and ``autoencoder_kl_64x64x4_resi.yaml``) build ldm's ``Encoder`` with the same
``ddconfig`` (ch 128, ch_mult 1-2-4-4, 2 ResBlocks per level, no attention resolutions, double_z), i.e.
``encoder.*`` + ``quant_conv.*`` = 108 tensors, 34,163,664 parameters (``first_stage_model.``-prefixed in
the main checkpoint; counted from the configs).  The CFW training initialises from SD 2.1-base and freezes
everything but the fusion layers and the discriminator (``freeze_dec: True``), so the values should be
the same too; that is inferred from the training code, not read from the released files, so
:func:`latent_encoder` compares the tensors at load time and keeps a second encoder only if they differ.
"""

from __future__ import annotations

from typing import Any

import torch

from srbench.interface import SRBenchError

LATENT_VAES = ("cfw", "ckpt")
_ENCODER_PREFIXES = ("encoder.", "quant_conv.")


def encoder_part(vae_state: dict[str, torch.Tensor], *, clone: bool = False) -> dict[str, torch.Tensor]:
    """The encoder half (``encoder.*``, ``quant_conv.*``) of a diffusers ``AutoencoderKL`` state dict."""
    return {
        k: (v.detach().clone() if clone else v)
        for k, v in vae_state.items()
        if k.startswith(_ENCODER_PREFIXES)
    }


def same_encoder(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> bool:
    """True if two encoder halves hold equal tensors; a different key set is an error naming ``what``."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise SRBenchError(
            f"stablesr: the VAE encoders of {what} have different key sets "
            f"({len(only_a)} only in the first, e.g. {only_a[:2]}; "
            f"{len(only_b)} only in the second, e.g. {only_b[:2]})"
        )
    return all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def latent_encoder(
    cfw_vae: Any, first_stage: dict[str, torch.Tensor], cfw_state: dict[str, torch.Tensor], what: str
) -> Any | None:
    """The main checkpoint's encoder as an ``AutoencoderKL`` without decoder, or ``None`` when it equals
    the CFW VAE's (one encoder pass then gives z_lr and the CFW features, as two passes would)."""
    from diffusers import AutoencoderKL

    if same_encoder(first_stage, encoder_part(cfw_state), what):
        return None
    vae = AutoencoderKL.from_config(cfw_vae.config)
    missing, unexpected = vae.load_state_dict(first_stage, strict=False)
    stray = [k for k in missing if k.startswith(_ENCODER_PREFIXES)]
    if stray or unexpected:
        raise SRBenchError(
            f"stablesr: cannot load the first-stage encoder of {what}: {stray[:3]} {unexpected[:3]}"
        )
    del vae.decoder, vae.post_quant_conv  # only encode() is used
    return vae.eval().requires_grad_(False)
