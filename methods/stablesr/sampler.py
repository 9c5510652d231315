"""StableSR sampling: respaced DDPM (default, 200 steps) or DDIM, with progressive aggregation.

* Schedule (config ``v2-finetune_text_T_512.yaml``): SD's scaled-linear betas, 1000 steps, ε-prediction.
* Respacing (official scripts' ``space_timesteps(1000, [N])``): τ_k = round(k·999/(N−1)), k = 0..N−1.
  Both the UNet and the time-aware encoder are fed the *original* τ_k; the posterior uses the respaced
  betas β'_k = 1 − ᾱ(τ_k)/ᾱ(τ_{k−1}).  That is diffusers' ``DDPMScheduler`` with these custom timesteps,
  ``clip_sample=False`` and ``fixed_small`` variance (no noise at the last step).
* DDIM (paper §5.2, optional): the DDIM update with ᾱ taken at the same τ_k the networks see, ᾱ = 1 after
  the last step.  (The official DDIM script takes ᾱ on a different, uniform grid than the τ it feeds the
  networks; that mismatch is not reproduced.)  diffusers' ``DDIMScheduler`` takes no custom timesteps,
  so the update is written out here.
* Classifier-free guidance with a negative prompt (paper §5.1, Eq. 8):
  ε = ε(c_neg) + s·(ε(c) − ε(c_neg)); s = 1 is the plain model.
* Aggregation sampling (paper §3.3, Alg. 1, App. B): at every step the latent is cut into overlapping
  tiles (64×64, stride 32, the last tile aligned to the border), the encoder runs on each LR-latent tile
  and the UNet on each noisy tile, and the ε-predictions are fused with Gaussian weights (Eq. 7); one
  sampler step then runs on the whole latent with one noise draw.  ``tile_batch_size`` tiles go through
  the encoder and UNet per call (the official ``p_mean_variance_canvas`` batches ``--n_samples`` tiles,
  never across a grid row, and the README's commands use 1); the result does not depend on it beyond
  float round-off.  The fusion runs in ``blend_dtype`` (float32 by default, as the official canvas
  ``torch.zeros(x.shape)``; float64 optional) with the Gaussian weights computed once and kept across
  steps (the official loop also computes them once per sampling loop, ``p_sample_loop_canvas``).
* Starting latent: ``"noise"``: x_T ~ N(0, I), as paper Alg. 1 and the 128→512 script
  (``sr_val_ddpm_text_T_vqganfin_old.py``); ``"noised_lr"``: x_T = √ᾱ₉₉₉·z_lr + √(1−ᾱ₉₉₉)·ε with the
  1000-step ᾱ, as the arbitrary-size scripts (``…_oldcanvas(_tile).py``, ``predict.py``).  The ε is drawn
  contiguous, or as the scripts draw it (``noise_layout="authors"``, :mod:`methods.stablesr.noise`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from methods.stablesr.noise import NOISE_LAYOUTS, initial_noise
from srbench.diffusion.tiling import TileBox, WeightCache, blend_dtype_of, gaussian_weights_mixture, tiled_map
from srbench.progress import sampler_steps

if TYPE_CHECKING:  # diffusers is imported when sampling starts, not when the plugin registers
    from diffusers import DDPMScheduler

    from methods.stablesr.encoder import TimeAwareEncoder
    from methods.stablesr.sft import SFTUNet

NUM_TRAIN_TIMESTEPS = 1000
SAMPLERS = ("ddpm", "ddim")
INIT_LATENTS = ("noise", "noised_lr")


def _randn(shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Gaussian noise from ``generator`` (which may live on another device than ``like``), float32."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=like.device, dtype=torch.float32)


def respaced_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The official ``space_timesteps(num_train, [steps])``, ascending: round(k·(T−1)/(steps−1)).

    The index accumulates in floating point and uses Python's round, exactly as the official loop.
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    stride = 1.0 if steps <= 1 else (num_train_timesteps - 1) / (steps - 1)
    out, cur = [], 0.0
    for _ in range(steps):
        out.append(round(cur))
        cur += stride
    return out


def train_scheduler() -> DDPMScheduler:
    """The 1000-step DDPM of SD 2.1 / StableSR (linear_start 0.00085, linear_end 0.012, scaled-linear)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        variance_type="fixed_small",
        clip_sample=False,
    )


@dataclass
class Guidance:
    """Text conditions: ``cond`` (B,77,D) for the prompt ("" by default), optional negative + scale."""

    cond: torch.Tensor
    negative: torch.Tensor | None = None
    scale: float = 1.0

    @property
    def active(self) -> bool:
        return self.negative is not None and self.scale != 1.0


class StableSRSampler:
    """Runs the reverse process of StableSR on an LR latent (any size ≥ one tile)."""

    def __init__(
        self,
        sft_unet: SFTUNet,
        encoder: TimeAwareEncoder,
        tile_batch_size: int = 4,
        blend_dtype: torch.dtype | str = torch.float32,
    ) -> None:
        self.sft_unet = sft_unet
        self.encoder = encoder
        self.tile_batch_size = max(1, int(tile_batch_size))
        self.blend_dtype = blend_dtype_of(blend_dtype, "stablesr")
        self.scheduler = train_scheduler()
        #: Gaussian tile weights by (size, dtype, device), computed once and reused at every step
        self.weight_cache: WeightCache = {}

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod

    # ---- ε-prediction ---------------------------------------------------------------------------
    def _eps_tiles(self, z: torch.Tensor, z_lr: torch.Tensor, tau: int, guidance: Guidance) -> torch.Tensor:
        """ε of the SFT-modulated UNet on a batch of tiles (encoder on the LR-latent tiles, time τ)."""
        dtype = next(self.sft_unet.unet.parameters()).dtype  # unet.dtype walks every submodule
        n = z.shape[0]
        t = torch.full((n,), tau, device=z.device, dtype=torch.long)
        feats = self.encoder(z_lr.to(dtype), t)
        cond = guidance.cond.to(dtype)
        cond = cond.expand(n, -1, -1) if cond.shape[0] == 1 else cond.repeat(n // cond.shape[0], 1, 1)
        if not guidance.active:
            return self.sft_unet(z.to(dtype), t, cond, feats).float()
        neg = guidance.negative.to(dtype)  # type: ignore[union-attr]
        neg = neg.expand(n, -1, -1) if neg.shape[0] == 1 else neg.repeat(n // neg.shape[0], 1, 1)
        feats2 = {k: torch.cat([v, v]) for k, v in feats.items()}
        eps = self.sft_unet(torch.cat([z, z]).to(dtype), torch.cat([t, t]), torch.cat([neg, cond]), feats2)
        eps_neg, eps_pos = eps.float().chunk(2)
        return eps_neg + guidance.scale * (eps_pos - eps_neg)  # paper Eq. 8

    def predict_eps(
        self, z: torch.Tensor, z_lr: torch.Tensor, tau: int, guidance: Guidance, tile: int, stride: int
    ) -> torch.Tensor:
        """ε for the whole latent: Gaussian-weighted fusion of the tile predictions (paper Eq. 7).

        Tiles come from :func:`srbench.diffusion.tiling.tile_grid` (the last tile flush with the
        border, as App. B) and are weighted with StableSR's own Gaussian
        (:func:`~srbench.diffusion.tiling.gaussian_weights_mixture`).  A latent of exactly one tile
        goes through the same code: one tile, its weights cancel.
        """

        def fn(zt: torch.Tensor, boxes: list[TileBox]) -> torch.Tensor:
            lt = torch.cat([z_lr[:, :, b.slices()[0], b.slices()[1]] for b in boxes])
            return self._eps_tiles(zt, lt, tau, guidance)

        eps = tiled_map(
            z,
            fn,
            tile=tile,
            stride=stride,
            weight_fn=gaussian_weights_mixture,
            tiles_per_batch=self.tile_batch_size,
            accumulate_dtype=self.blend_dtype,
            weight_cache=self.weight_cache,
        )
        return eps.to(torch.float32)

    # ---- the loop -------------------------------------------------------------------------------
    def initial_latent(
        self,
        z_lr: torch.Tensor,
        init: str,
        generator: torch.Generator | None,
        noise_layout: str = "contiguous",
    ) -> torch.Tensor:
        if init not in INIT_LATENTS:
            raise ValueError(f"init_latent must be one of {INIT_LATENTS}, got '{init}'")
        if noise_layout not in NOISE_LAYOUTS:
            raise ValueError(f"noise_layout must be one of {NOISE_LAYOUTS}, got '{noise_layout}'")
        noise = initial_noise(z_lr.shape, generator, z_lr.device, noise_layout, pure_noise=init == "noise")
        if init == "noise":
            return noise
        t = torch.tensor([NUM_TRAIN_TIMESTEPS - 1], device=z_lr.device)
        return self.scheduler.add_noise(z_lr.float(), noise, t)

    @torch.no_grad()
    def sample(
        self,
        z_lr: torch.Tensor,
        guidance: Guidance,
        *,
        steps: int,
        tile: int = 64,
        stride: int = 32,
        sampler: str = "ddpm",
        eta: float = 0.0,
        init: str = "noise",
        generator: torch.Generator | None = None,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        noise_layout: str = "contiguous",
    ) -> torch.Tensor:
        """z_0 (float32, scaled latent space) from the scaled LR latent ``z_lr`` (B,4,h,w)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got '{sampler}'")
        taus = respaced_timesteps(steps)[::-1]  # descending: 999, 994, ..., 0
        z = self.initial_latent(z_lr, init, generator, noise_layout)
        if sampler == "ddpm":
            sched = train_scheduler()
            sched.set_timesteps(timesteps=taus, device=z.device)
        abar = self.alphas_cumprod.to(torch.float64)
        for k, tau in sampler_steps(enumerate(taus), len(taus), f"stablesr {sampler}"):
            eps = self.predict_eps(z, z_lr, tau, guidance, tile, stride)
            if sampler == "ddpm":
                z = sched.step(eps, tau, z, generator=generator).prev_sample
            else:
                a_t = abar[tau].item()
                a_prev = abar[taus[k + 1]].item() if k + 1 < len(taus) else 1.0
                x0 = (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5
                sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
                z = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
                if sigma > 0:
                    z = z + sigma * _randn(z.shape, generator, z)
            if callback is not None:
                callback(k, tau, z)
        return z
