"""DM-SR inference, top to bottom (paper §3, Eq. 2, §4.4; brief §2.2–2.3).

For an LR image y (B,3,h,w) in [0,1]:

1. ``upsample``   I_LR = bicubic×4(y), clamped to [0,1] (§4.1; brief §6.2: the same function in training);
2. ``estimate``   t̂ = T(I_LR) ∈ [0, 499] (Eq. 10), t = round-half-up(t̂) clamped to [0, t_max];
3. ``encode``     X = scaling_factor · mean(E_θ(2·I_LR − 1, t)) — the noisy latent, nothing random drawn;
4. ``denoise``    ε = UNet(X, t, c) with c the fixed prompt's CLIP embedding (one pass, no CFG), then
                  Z = (X − √(1−ᾱ_t)·ε)/√ᾱ_t  (Eq. 2 prints α; ᾱ is meant, consistent with Eq. 1);
                  N > 1 steps (§4.4): t_k = round(t̂·(N−k)/N), x_k = √ᾱ_{t_k}·Z_{k−1} + √(1−ᾱ_{t_k})·ε_SR
                  re-using the first step's ε_SR (DDIM, no fresh noise), ε_k = UNet(x_k, t_k), Z_k by Eq. 2;
5. ``decode``     I_SR = (VAE.decode(Z / scaling_factor) + 1)/2, clamped to [0, 1].  No colour fix (§5).

ᾱ is the base model's ``alphas_cumprod`` indexed 0-based with the same integer the UNet gets (the
pairing diffusers' ``add_noise`` uses).  The same functions serve training (``methods/dmsr/train.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from methods.dmsr.encoder import TimestepAwareEncoder
from methods.dmsr.estimator import TimestepEstimator, discretize_timestep


def upsample_lr(lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """I_LR: bicubic ×scale (PyTorch, align_corners=False), clamped to [0, 1] (brief §6.2)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def multistep_timesteps(t_hat: torch.Tensor, steps: int, t_max: int) -> list[torch.Tensor]:
    """§4.4: timesteps "linearly scheduled in proportion to t̂": t_k = round(t̂·(N−k)/N), k = 0…N−1.

    t_0 equals the single-step timestep; later ones shrink towards 0 (repeats are possible for small t̂).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [discretize_timestep(t_hat * (steps - k) / steps, t_max) for k in range(steps)]


def _abar(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t shaped to broadcast over ``like``, on ``like``'s device (t may come from elsewhere)."""
    return alphas_cumprod.to(like.device)[t.to(like.device)].float().view(-1, *([1] * (like.ndim - 1)))


def x0_from_eps(
    x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Eq. 2: Z = (X − √(1−ᾱ_t)·ε)/√ᾱ_t, in fp32."""
    a = _abar(alphas_cumprod, t, x_t)
    return (x_t.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()


def add_noise(
    z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Eq. 1 in latent space: √ᾱ_t·z0 + √(1−ᾱ_t)·ε, in fp32."""
    a = _abar(alphas_cumprod, t, z0)
    return a.sqrt() * z0.float() + (1 - a).sqrt() * eps.float()


@dataclass
class DenoiseResult:
    z0: torch.Tensor  # the final clean latent Z (fp32)
    eps: torch.Tensor  # ε_SR of the first step (fp32)
    timesteps: list[torch.Tensor]


class DMSRPipeline:
    """The DM-SR networks around a frozen SD (UNet + VAE); stages are separate methods so they can be timed.

    ``prompt_embeds``: the fixed prompt's embedding (1, L, D) in the UNet's dtype/device.
    """

    def __init__(
        self,
        *,
        estimator: TimestepEstimator,
        encoder: TimestepAwareEncoder,
        unet: Any,
        vae: Any,
        alphas_cumprod: torch.Tensor,
        prompt_embeds: torch.Tensor,
        t_max: int = 499,
        scale: int = 4,
    ) -> None:
        self.estimator, self.encoder, self.unet, self.vae = estimator, encoder, unet, vae
        self.alphas_cumprod = alphas_cumprod.detach().float().cpu()
        self.prompt_embeds = prompt_embeds
        self.t_max, self.scale = int(t_max), int(scale)
        if self.t_max >= len(self.alphas_cumprod):
            raise ValueError(f"t_max={t_max} outside the schedule ({len(self.alphas_cumprod)} steps)")
        cfg = vae.config
        self.latent_scale = float(getattr(cfg, "scaling_factor", None) or 0.18215)
        self.latent_shift = float(getattr(cfg, "shift_factor", None) or 0.0)

    # ---- stages ------------------------------------------------------------------------------
    def upsample(self, lr: torch.Tensor) -> torch.Tensor:
        return upsample_lr(lr, self.scale)

    def estimate(self, i_lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t̂ continuous fp32, t integer) for I_LR in [0, 1]; T runs in its own dtype (fp32)."""
        p = next(self.estimator.parameters())
        t_hat = self.estimator(i_lr.to(p.device, p.dtype))
        return t_hat, discretize_timestep(t_hat, self.t_max)

    def encode(self, i_lr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """X = scaling_factor·(mean(E_θ(2·I_LR−1, t)) − shift), in the encoder's dtype."""
        p = next(self.encoder.parameters())
        mean = self.encoder.encode_mean(i_lr.to(p.device, p.dtype) * 2.0 - 1.0, t.to(p.device))
        return (mean - self.latent_shift) * self.latent_scale

    def predict_eps(
        self, x: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ε = UNet(x, t, c): one conditional pass (no CFG), in the UNet's dtype."""
        p = next(self.unet.parameters())
        cond = self.prompt_embeds if prompt_embeds is None else prompt_embeds
        cond = cond.to(p.device, p.dtype).expand(x.shape[0], *cond.shape[1:])
        return self.unet(x.to(p.device, p.dtype), t.to(p.device), encoder_hidden_states=cond).sample

    def denoise(
        self,
        x: torch.Tensor,
        t_hat: torch.Tensor,
        steps: int = 1,
        prompt_embeds: torch.Tensor | None = None,
    ) -> DenoiseResult:
        """Eq. 2 once (steps=1) or the §4.4 multi-step DDIM re-using ε_SR."""
        ts = multistep_timesteps(t_hat, steps, self.t_max)
        eps_sr = self.predict_eps(x, ts[0], prompt_embeds).float()
        z0 = x0_from_eps(x, eps_sr, ts[0], self.alphas_cumprod)
        for t_k in ts[1:]:
            x_k = add_noise(z0, eps_sr, t_k, self.alphas_cumprod)  # same ε_SR, no fresh noise (§4.4)
            eps_k = self.predict_eps(x_k, t_k, prompt_embeds).float()
            z0 = x0_from_eps(x_k, eps_k, t_k, self.alphas_cumprod)
        return DenoiseResult(z0=z0, eps=eps_sr, timesteps=ts)

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """I_SR in [0, 1] from the scaled clean latent."""
        p = next(self.vae.parameters())
        img = self.vae.decode((z0 / self.latent_scale + self.latent_shift).to(p.device, p.dtype)).sample
        return (img.float() / 2 + 0.5).clamp_(0.0, 1.0)

    # ---- all at once -------------------------------------------------------------------------
    def __call__(
        self,
        lr: torch.Tensor,
        steps: int = 1,
        *,
        timestep: int | Sequence[int] | None = None,
        prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(I_SR, t̂) for LR in [0,1].  ``timestep`` fixes t (the Tab. 3 ablation) instead of T's estimate."""
        i_lr = self.upsample(lr)
        if timestep is None:
            t_hat, t = self.estimate(i_lr)
        else:
            t_hat = (
                torch.as_tensor(timestep, dtype=torch.float32, device=lr.device).expand(lr.shape[0]).clone()
            )
            t = discretize_timestep(t_hat, self.t_max)
        x = self.encode(i_lr, t)
        z0 = self.denoise(x, t_hat, steps, prompt_embeds).z0
        return self.decode(z0), t_hat
