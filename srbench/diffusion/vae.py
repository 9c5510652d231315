"""VAE encode / decode for latent diffusion, with the latent scale taken from the VAE's config.

SD 1/2 and SD-Turbo use ``scaling_factor = 0.18215`` and no shift: ``z = 0.18215 * E(x)`` and
``x = D(z / 0.18215)``; a config with ``shift_factor`` (SD3/Flux VAEs) is handled too.
Image ranges: methods hold images in [0,1]; the VAE works in [-1,1].
"""

from __future__ import annotations

from typing import Any

import torch


def to_vae_range(image01: torch.Tensor) -> torch.Tensor:
    """[0,1] -> [-1,1] (no clamping: InvSR feeds the unclamped bicubic upsample)."""
    return image01 * 2.0 - 1.0


def from_vae_range(image: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
    """[-1,1] -> [0,1], clamped by default (as diffusers' image post-processing does)."""
    out = image / 2.0 + 0.5
    return out.clamp(0.0, 1.0) if clamp else out


def latent_scale(vae: Any) -> tuple[float, float]:
    """``(scaling_factor, shift_factor)`` from the VAE config (shift 0 when absent)."""
    cfg = vae.config
    scale = float(getattr(cfg, "scaling_factor", None) or 0.18215)
    shift = float(getattr(cfg, "shift_factor", None) or 0.0)
    return scale, shift


def vae_encode(
    vae: Any,
    image: torch.Tensor,
    *,
    sample: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scaled latent of ``image`` (in [-1,1]): a posterior sample drawn with ``generator``
    (``sample=True``, as InvSR and StableSR do) or the posterior mode."""
    scale, shift = latent_scale(vae)
    p = next(vae.parameters())  # not vae.device/.dtype: diffusers walks every submodule per read
    dist = vae.encode(image.to(device=p.device, dtype=p.dtype)).latent_dist
    z = dist.sample(generator=generator) if sample else dist.mode()
    return (z - shift) * scale


def vae_decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Image in [-1,1] (unclamped) from scaled latents."""
    scale, shift = latent_scale(vae)
    p = next(vae.parameters())
    z = latents.to(device=p.device, dtype=p.dtype) / scale + shift
    return vae.decode(z).sample
