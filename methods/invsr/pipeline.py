"""InvSR inference (Yue, Liao, Loy, CVPR 2025, arXiv 2412.09013), as the authors' code runs it.

Read top to bottom: timestep lists -> one pipeline call on LR tiles (:meth:`InvSRSampler.sample_tiles`)
-> the whole-image driver with padding, chopping and colour fix (:meth:`InvSRSampler.upscale`).
Sources: paper (§3.2, Alg. 1, Eq. 8-9, §4.1) and the authors' repository zsyOAOA/InvSR @609788c:
``inference_invsr.py`` (timestep defaults), ``sampler_invsr.py`` (driver), the vendored
``pipeline_stable_diffusion_inversion_sr.py`` (one call) and ``scheduling_euler_discrete.py`` (step).

Where the code and the paper differ we follow the code (see the module docs of ``methods.invsr``):
the sampler is deterministic Euler (DDIM eta=0); the paper's Alg. 1 ancestral variant is the
``stochastic=True`` option.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from srbench.diffusion.color import color_fix as apply_color_fix
from srbench.diffusion.prompts import PromptEmbeddingCache
from srbench.diffusion.schedules import alphas_cumprod_of, ancestral_step_sigmas, ve_sigmas
from srbench.diffusion.sd import SDComponents
from srbench.diffusion.tiling import TileBox, blend_dtype_of, gaussian_weights_cv2, tiled_map
from srbench.diffusion.vae import from_vae_range, to_vae_range, vae_decode, vae_encode
from srbench.interface import SRBenchError, UnsupportedSteps

log = logging.getLogger(__name__)

#: the fixed positive prompt (sampler_invsr.py ``_positive``; the paper's footnote ends with ".")
POSITIVE_PROMPT = (
    "Cinematic, high-contrast, photo-realistic, 8k, ultra HD, "
    "meticulous detailing, hyper sharpness, perfect without deformations"
)
#: code defaults per step count, in the paper's 1-based tau (inference_invsr.py get_configs)
DEFAULT_TIMESTEPS: dict[int, tuple[int, ...]] = {
    1: (200,),
    2: (200, 100),
    3: (200, 100, 50),
    4: (200, 150, 100, 50),
    5: (250, 200, 150, 100, 50),
}
#: start steps the released predictor was trained for (paper §4.1)
TRAINED_START_STEPS = (250, 200, 150, 100)
#: app.py's rule for more than 5 steps starts at 250 and allows up to 250 steps
LINSPACE_START = 250
SCALE = 4

TimestepOption = Sequence[int] | Mapping[int, Sequence[int]] | None


def linspace_timesteps(start: int, steps: int) -> tuple[int, ...]:
    """``np.linspace(start, 0, steps, endpoint=False, dtype=int64)`` (app.py's rule for > 5 steps)."""
    if not 1 <= steps <= start:
        raise ValueError(f"cannot take {steps} distinct timesteps below {start}")
    return tuple(int(t) for t in np.linspace(start, 0, num=steps, endpoint=False, dtype=np.int64))


def check_timesteps(timesteps: Sequence[int], num_train_timesteps: int = 1000) -> tuple[int, ...]:
    """Sorted descending (as the authors' ``-t`` option), distinct, each in [1, num_train_timesteps]."""
    ts = sorted((int(t) for t in timesteps), reverse=True)
    if not ts:
        raise SRBenchError("InvSR timesteps: empty list")
    if len(set(ts)) != len(ts):
        raise SRBenchError(f"InvSR timesteps must be distinct, got {list(timesteps)}")
    if ts[-1] < 1 or ts[0] > num_train_timesteps:
        raise SRBenchError(
            f"InvSR timesteps are the paper's 1-based tau in [1, {num_train_timesteps}], got {ts}"
        )
    return tuple(ts)


def resolve_timesteps(
    steps: int,
    *,
    timesteps: TimestepOption = None,
    start_timestep: int | None = None,
    more_steps: str = "linspace",
) -> tuple[int, ...]:
    """The paper-tau list for ``steps`` steps.

    Precedence: ``timesteps`` (a list for exactly its length, or ``{steps: list}``), then
    ``start_timestep`` (``linspace(start, 0, steps)``: start 200 gives the code's 2- and 4-step
    defaults, start 250 its 5-step one, start 150 the paper's Tab. 4 set {150,100,50}), then the code
    defaults for 1-5 steps, then for more steps app.py's ``linspace(250, 0, steps)`` when
    ``more_steps == "linspace"`` (up to 250 steps).  Anything else is :class:`UnsupportedSteps`.
    """
    if isinstance(timesteps, Mapping):
        table = {int(k): v for k, v in timesteps.items()}
        if steps not in table:
            raise UnsupportedSteps("invsr", steps, sorted(table))
        ts = check_timesteps(table[steps])
    elif timesteps is not None:
        ts = check_timesteps(timesteps)
        if len(ts) != steps:
            raise UnsupportedSteps("invsr", steps, [len(ts)])
    elif start_timestep is not None:
        if not 1 <= steps <= int(start_timestep):
            raise UnsupportedSteps(
                "invsr", steps, f"1..{start_timestep} with start_timestep={start_timestep}"
            )
        ts = linspace_timesteps(int(start_timestep), steps)
    elif steps in DEFAULT_TIMESTEPS:
        ts = DEFAULT_TIMESTEPS[steps]
    elif more_steps == "linspace" and 1 <= steps <= LINSPACE_START:
        ts = linspace_timesteps(LINSPACE_START, steps)
    else:
        supported = "1..5" if more_steps != "linspace" else f"1..{LINSPACE_START}"
        raise UnsupportedSteps("invsr", steps, supported)
    return check_timesteps(ts)


def supported_step_counts(
    timesteps: TimestepOption = None, start_timestep: int | None = None, more_steps: str = "linspace"
) -> list[int]:
    if isinstance(timesteps, Mapping):
        return sorted(int(k) for k in timesteps)
    if timesteps is not None:
        return [len(list(timesteps))]
    if start_timestep is not None:
        return list(range(1, int(start_timestep) + 1))
    return list(range(1, (LINSPACE_START if more_steps == "linspace" else 5) + 1))


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class InvSRSampler:
    """SD-Turbo + noise predictor f_w; stateless between calls apart from the prompt cache."""

    def __init__(
        self,
        sd: SDComponents,
        noise_predictor: torch.nn.Module,
        *,
        prompt: str = POSITIVE_PROMPT,
        stage: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
        official_rng_order: bool = True,
    ) -> None:
        sd.require("unet", "vae", "scheduler")
        self.sd = sd
        self.unet, self.vae = sd.unet, sd.vae
        self.noise_predictor = noise_predictor
        self.prompt = prompt
        self.prompts = (
            PromptEmbeddingCache(sd.tokenizer, sd.text_encoder) if sd.text_encoder is not None else None
        )
        self.stage = stage or (lambda name: contextlib.nullcontext())
        self.official_rng_order = official_rng_order
        # sigma_t = sqrt((1-abar_t)/abar_t) over the full 1000-step table, float32; the authors cache
        # scheduler.sigmas.flip(0)[1:] of an untouched EulerDiscreteScheduler, which is this table.
        self.sigmas = ve_sigmas(alphas_cumprod_of(sd.scheduler))
        self.num_train_timesteps = int(self.sigmas.numel())
        pred = getattr(sd.scheduler.config, "prediction_type", "epsilon")
        if pred != "epsilon":
            raise SRBenchError(f"InvSR needs an epsilon-prediction base model; scheduler says '{pred}'")
        vae_sf = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_sf = 2 ** (len(self.unet.config.block_out_channels) - 1)
        # LR tiles must be multiples of this (sampler_invsr.py mod_lq: 8 // 4 * 8 = 16 for SD)
        self.mod_lq = max(1, vae_sf // SCALE) * unet_sf
        np_cfg = getattr(noise_predictor, "config", None)
        if np_cfg is not None:
            np_sf = 2 ** (len(np_cfg.block_out_channels) - 1)
            if np_sf * SCALE != vae_sf or np_cfg.latent_channels != self.vae.config.latent_channels:
                raise SRBenchError(
                    f"noise predictor (x{np_sf} down, {np_cfg.latent_channels} ch) does not fit the VAE "
                    f"(x{vae_sf} down, {self.vae.config.latent_channels} ch) at scale {SCALE}"
                )

    # ---- prompt ----------------------------------------------------------------------------
    def prompt_embeds(self, batch: int) -> torch.Tensor:
        if self.prompts is None:
            raise SRBenchError("InvSR needs the text encoder and tokenizer (or a cached prompt)")
        p = next(self.unet.parameters())  # cheaper than unet.device/.dtype (a walk over all submodules)
        return self.prompts.get(self.prompt, batch, device=p.device, dtype=p.dtype)

    def sigma(self, tau: int) -> float:
        """sigma at the paper's tau (index tau - 1 of the 1000-step table: the code's off-by-one)."""
        return float(self.sigmas[tau - 1])

    # ---- one pipeline call --------------------------------------------------------------------
    @torch.inference_mode()
    def sample_tiles(
        self,
        lr: torch.Tensor,
        timesteps: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        stochastic: bool = False,
    ) -> torch.Tensor:
        """SR of LR tiles ``(N,3,h,w)`` in [0,1], h and w multiples of :attr:`mod_lq` -> ``(N,3,4h,4w)``
        in [0,1] (float32).  ``timesteps``: the paper's tau, descending."""
        ts = check_timesteps(timesteps, self.num_train_timesteps)
        n, _, h, w = lr.shape
        if h % self.mod_lq or w % self.mod_lq:
            raise SRBenchError(f"InvSR tiles must be multiples of {self.mod_lq} px, got {h}x{w}")
        p = next(self.unet.parameters())
        dev, dtype = p.device, p.dtype
        y = lr.to(dev, dtype)  # the code feeds the tile in the model dtype (fp16 on GPU)
        emb = self.prompt_embeds(n)

        # f_w on the native-resolution LR at the start step (pipeline step 6): a posterior sample.
        # fp32 weights under autocast on GPU, as the code does.
        t_start = torch.tensor(float(ts[0] - 1), device=dev)
        with self.stage("noise_predict"):
            np_dtype = next(self.noise_predictor.parameters()).dtype
            if dev.type != "cpu" and dtype in (torch.float16, torch.bfloat16) and np_dtype == torch.float32:
                with torch.autocast(dev.type, dtype=dtype):
                    noise = self.noise_predictor(y, t_start, generator=generator)
            else:  # no autocast (CPU): run f_w in its own dtype
                noise = self.noise_predictor(y.to(np_dtype), t_start, generator=generator)
            noise = noise.to(dtype)

        with self.stage("encode"):
            # bicubic x4 (align_corners False, no antialias, no clamp) in the model dtype, then [-1,1]
            y_up = F.interpolate(y, size=(h * SCALE, w * SCALE), mode="bicubic", align_corners=False)
            z = vae_encode(self.vae, to_vae_range(y_up), sample=True, generator=generator)
            if noise.shape != z.shape:
                raise SRBenchError(
                    f"noise predictor gave {tuple(noise.shape)}, VAE latent is {tuple(z.shape)}"
                )
            # start state, Eq. 8 in the Euler "VE" form: x = z + sigma * f_w, which is
            # x / sqrt(1 + sigma^2) = sqrt(abar) z + sqrt(1 - abar) f_w
            x = z + torch.tensor(self.sigma(ts[0]), dtype=z.dtype, device=dev) * noise

        with self.stage("denoise"):
            sig = [self.sigma(t) for t in ts] + [0.0]  # final sigma "zero"
            for i, tau in enumerate(ts):
                s, s_next = sig[i], sig[i + 1]
                t = torch.tensor(float(tau - 1), device=dev)
                x_in = x / ((s**2 + 1) ** 0.5)  # scale_model_input
                eps = self.unet(x_in, t, encoder_hidden_states=emb).sample
                xf = x.float()
                if stochastic:
                    # paper Alg. 1: DDPM-style step with fresh noise (Euler ancestral, eta = 1)
                    down, up = ancestral_step_sigmas(s, s_next)
                    xf = xf + (down - s) * eps.float()
                    if up > 0:
                        xf = xf + up * _randn(x, generator).float()
                else:
                    # the code: deterministic Euler (s_churn 0), computed in fp32 as the scheduler does
                    x0 = xf - s * eps.float()
                    xf = xf + (xf - x0) / s * (s_next - s)
                    if self.official_rng_order:
                        _randn(x, generator)  # the code's scheduler draws one unused randn per step
                x = xf.to(dtype)

        with self.stage("decode"):
            img = from_vae_range(vae_decode(self.vae, x), clamp=True)
        return img.float()

    # ---- the whole image ----------------------------------------------------------------------
    @torch.inference_mode()
    def upscale(
        self,
        lr: torch.Tensor,
        timesteps: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        chopping_size: int | None = 128,
        chopping_stride: int | None = None,
        chopping_batch_size: int = 8,
        color_fix: str | None = None,
        color_fix_reference: str = "padded",
        stochastic: bool = False,
        blend_dtype: torch.dtype | str = torch.float32,
    ) -> torch.Tensor:
        """x4 SR of ``(B,3,H,W)`` in [0,1] -> ``(B,3,4H,4W)`` in [0,1], as sampler_invsr.py sample_func.

        ``chopping_size`` P (LR px, multiple of :attr:`mod_lq`; None/0 = whole image at once): images
        with a side < P are reflect-padded up to P; an exactly PxP image is one call; anything else is
        padded to multiples of :attr:`mod_lq` and cut into PxP tiles at ``chopping_stride`` (default
        P/2), each run through the full pipeline, ``chopping_batch_size`` tiles per call, blended
        with Gaussian weights in HR space.  ``color_fix``: none | wavelet | ycbcr | adain, against the
        antialiased bicubic upsampling of the padded LR (``color_fix_reference="padded"``, the code's
        behaviour) or of the input LR (``"input"``).  ``blend_dtype``: precision of the tile blending;
        the code's ``ImageSpliterTh`` uses float64, float32 (default) differs by <= 3e-7 in [0,1].
        """
        acc_dtype = blend_dtype_of(blend_dtype, "invsr")
        H, W = lr.shape[-2:]
        im = lr.float()
        pad_top = pad_left = 0
        P = int(chopping_size or 0)
        if P:
            if P % self.mod_lq:
                raise SRBenchError(f"chopping_size {P} must be a multiple of {self.mod_lq}")
            im, pad_top, pad_left = _pad_to_min_size(im, P)
        if P and tuple(im.shape[-2:]) == (P, P):
            out = self.sample_tiles(im, timesteps, generator, stochastic=stochastic)
        else:
            ph = -im.shape[-2] % self.mod_lq
            pw = -im.shape[-1] % self.mod_lq
            if ph or pw:
                im = F.pad(
                    im, (0, pw, 0, ph), mode="reflect" if min(im.shape[-2:]) > max(ph, pw) else "replicate"
                )
            if not P:
                out = self.sample_tiles(im, timesteps, generator, stochastic=stochastic)
            else:
                stride = int(chopping_stride or P // 2)

                def run(tiles: torch.Tensor, boxes: list[TileBox]) -> torch.Tensor:
                    return self.sample_tiles(tiles, timesteps, generator, stochastic=stochastic)

                out = tiled_map(
                    im,
                    run,
                    tile=P,
                    stride=stride,
                    scale=SCALE,
                    weight_fn=gaussian_weights_cv2,
                    tiles_per_batch=max(1, int(chopping_batch_size)),
                    accumulate_dtype=acc_dtype,
                ).float()
        out = out[:, :, SCALE * pad_top : SCALE * (pad_top + H), SCALE * pad_left : SCALE * (pad_left + W)]

        if color_fix and color_fix.lower() not in ("none", "nofix"):
            with self.stage("color_fix"):
                if color_fix_reference not in ("padded", "input"):
                    raise SRBenchError(
                        f"color_fix_reference must be 'padded' or 'input', got {color_fix_reference!r}"
                    )
                src = im if color_fix_reference == "padded" else lr.float()
                ref = F.interpolate(
                    src, size=out.shape[-2:], mode="bicubic", align_corners=False, antialias=True
                )
                out = apply_color_fix(out, ref, color_fix)
        return out.clamp(0.0, 1.0)


def _pad_to_min_size(im: torch.Tensor, size: int) -> tuple[torch.Tensor, int, int]:
    """sampler_invsr.py: reflect-pad (roughly centred, each pass <= side-1) until both sides >= size;
    returns the image and the accumulated top/left pads.  A 1-px side cannot be reflected: it is
    replicated instead (the authors' loop would not terminate)."""
    top = left = 0
    while min(im.shape[-2:]) < size:
        h, w = im.shape[-2:]
        pt = max(min((size - h) // 2, h - 1), 0)
        pb = max(min(size - h - pt, h - 1), 0)
        pl = max(min((size - w) // 2, w - 1), 0)
        pr = max(min(size - w - pl, w - 1), 0)
        if pt + pb + pl + pr == 0:  # a 1-px side
            pt, pl = max((size - h) // 2, 0), max((size - w) // 2, 0)
            pb, pr = max(size - h - pt, 0), max(size - w - pl, 0)
            im = F.pad(im, (pl, pr, pt, pb), mode="replicate")
        else:
            im = F.pad(im, (pl, pr, pt, pb), mode="reflect")
        top, left = top + pt, left + pl
    return im, top, left


_WARNED: set[int] = set()


def warn_untrained_start(timesteps: Sequence[int]) -> None:
    """Log once per start step that the predictor was not trained for it."""
    if timesteps and int(timesteps[0]) not in TRAINED_START_STEPS and int(timesteps[0]) not in _WARNED:
        _WARNED.add(int(timesteps[0]))
        log.warning(
            "InvSR start step %d is not one the noise predictor was trained for %s (paper §4.1)",
            int(timesteps[0]),
            TRAINED_START_STEPS,
        )


__all__ = [
    "DEFAULT_TIMESTEPS",
    "POSITIVE_PROMPT",
    "TRAINED_START_STEPS",
    "InvSRSampler",
    "check_timesteps",
    "linspace_timesteps",
    "resolve_timesteps",
    "supported_step_counts",
]
