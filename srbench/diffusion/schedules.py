"""Noise-schedule tables shared by the samplers.

SD's "scaled_linear" betas: ``beta_t = linspace(sqrt(0.00085), sqrt(0.012), 1000)[t]^2`` (float32, as
diffusers builds them), ``abar_t = prod_{s<=t} (1 - beta_s)``; the VE noise level of the Euler
samplers is ``sigma_t = sqrt((1 - abar_t) / abar_t)``, indexed by the 0-based training timestep t.
"""

from __future__ import annotations

from typing import Any

import torch


def scaled_linear_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """``abar`` of SD's scaled-linear schedule, float32, shape ``(num_train_timesteps,)``."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def alphas_cumprod_of(scheduler: Any) -> torch.Tensor:
    """``abar`` (float32, CPU) of a diffusers scheduler, as built from its own config."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod table")
    return torch.as_tensor(ac).detach().to("cpu", torch.float32)


def ve_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``sigma_t = sqrt((1 - abar_t) / abar_t)`` for every training timestep, ascending in t."""
    ac = alphas_cumprod.to(torch.float32)
    return ((1.0 - ac) / ac) ** 0.5


def ancestral_step_sigmas(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of an ancestral (DDPM-like) Euler step from ``sigma_from`` to
    ``sigma_to`` (k-diffusion / diffusers EulerAncestral): with eta = 1 this is the DDPM posterior
    between the two noise levels in the VE parametrisation; ``sigma_up`` is 0 when ``sigma_to`` is 0."""
    if sigma_to <= 0.0:
        return 0.0, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    down = (sigma_to**2 - up**2) ** 0.5
    return down, up
