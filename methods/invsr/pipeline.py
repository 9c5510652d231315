"""InvSR inference (Yue, Liao, Loy, CVPR 2025, arXiv 2412.09013), as the authors' code runs it.

Read top to bottom: timestep lists -> one pipeline call on LR tiles (:meth:`InvSRSampler.sample_tiles`)
-> the whole-image driver with padding, chopping and colour fix (:meth:`InvSRSampler.upscale`).
Sources: paper (§3.2, Alg. 1, Eq. 8-9, §4.1) and the authors' repository zsyOAOA/InvSR @609788c:
``inference_invsr.py`` (timestep defaults), ``sampler_invsr.py`` (driver), the vendored
``pipeline_stable_diffusion_inversion_sr.py`` (one call) and ``scheduling_euler_discrete.py`` (step).

Where the code and the paper differ we follow the code (see the module docs of ``methods.invsr``):
the sampler is the model folder's scheduler (SD-Turbo: deterministic Euler, DDIM eta=0) driven by the
authors' ``retrieve_timesteps``; the paper's Alg. 1 ancestral variant is the ``stochastic=True`` option.
The sampler options of ``sampler_invsr.py`` are all here: classifier-free guidance with the code's
negative prompt when ``cfg_scale > 1``, a scheduler class override (the yaml's ``scheduler.target``) and
the tiled VAE (``tiled_vae``, ``latent_tiled_size``, ``sample_tiled_size``; on by default as in
``inference_invsr.py``, active when a tile is larger than them, i.e. ``chopping_size`` > 256).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from srbench.diffusion.color import color_fix as apply_color_fix
from srbench.diffusion.prompts import PromptEmbeddingCache
from srbench.diffusion.schedules import ancestral_step_sigmas, ve_sigmas
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
#: the negative prompt used when cfg_scale > 1 (sampler_invsr.py ``_negative``; the missing space after
#: "noisy," is the code's string concatenation, kept)
NEGATIVE_PROMPT = (
    "Low quality, blurring, jpeg artifacts, deformed, over-smooth, cartoon, noisy,"
    "painting, drawing, sketch, oil painting"
)
#: sampler_invsr.py tiled-VAE settings (configs/sample-sd-turbo.yaml; ``--tiled_vae`` defaults to true)
LATENT_TILED_SIZE = 128
SAMPLE_TILED_SIZE = 1024
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


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _invsr_scheduler(base: Any, override: str | None) -> Any:
    """The scheduler InvSR steps with: the model folder's class, or ``override`` (a diffusers class name,
    sampler_invsr.py's ``scheduler.target``) built from the folder's config.  The authors'
    ``retrieve_timesteps`` indexes ``scheduler.sigmas.flip(0)[1:]`` with tau - 1 and reads
    ``final_sigmas_type``: only schedulers whose initial ``sigmas`` are the 1000-step VE table plus a
    final 0 can run it (EulerDiscreteScheduler, SD-Turbo's); anything else is refused here instead of
    indexing a table of something else."""
    import diffusers

    cls = type(base)
    if override:
        cls = getattr(diffusers, str(override), None)
        if not (isinstance(cls, type) and hasattr(cls, "from_config")):
            raise SRBenchError(f"invsr: scheduler '{override}' is not a diffusers scheduler class")
    sched = cls.from_config(base.config)
    sig = getattr(sched, "sigmas", None)
    ac = getattr(sched, "alphas_cumprod", None)
    ok = (
        isinstance(sig, torch.Tensor)
        and isinstance(ac, torch.Tensor)
        and sig.numel() == ac.numel() + 1
        and "final_sigmas_type" in sched.config
        and float(sig[-1]) == 0.0
        and torch.allclose(sig.flip(0)[1:].double(), ve_sigmas(ac).double(), rtol=1e-5, atol=0)
    )
    if not ok:
        raise SRBenchError(
            f"invsr: scheduler {cls.__name__} cannot run InvSR's timestep rule (the authors' "
            "retrieve_timesteps needs the 1000-step sigma table plus a final 0 and final_sigmas_type); "
            "use EulerDiscreteScheduler (SD-Turbo's) via method.scheduler"
        )
    return sched


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
        negative_prompt: str = NEGATIVE_PROMPT,
        cfg_scale: float = 1.0,
        scheduler: str | None = None,
        tiled_vae: bool = True,
        latent_tiled_size: int = LATENT_TILED_SIZE,
        sample_tiled_size: int = SAMPLE_TILED_SIZE,
        stage: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
        official_rng_order: bool = True,
    ) -> None:
        sd.require("unet", "vae", "scheduler")
        self.sd = sd
        self.unet, self.vae = sd.unet, sd.vae
        self.noise_predictor = noise_predictor
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.cfg_scale = float(cfg_scale)
        self.prompts = (
            PromptEmbeddingCache(sd.tokenizer, sd.text_encoder) if sd.text_encoder is not None else None
        )
        self.stage = stage or (lambda name: contextlib.nullcontext())
        self.official_rng_order = official_rng_order
        self.scheduler = _invsr_scheduler(sd.scheduler, scheduler)
        # sigma_t = sqrt((1-abar_t)/abar_t) over the full 1000-step table, float32: the authors cache
        # scheduler.sigmas.flip(0)[1:] of the untouched scheduler (retrieve_timesteps' sigmas_cache)
        self.sigmas = self.scheduler.sigmas.flip(0)[1:].float().clone()
        self.num_train_timesteps = int(self.sigmas.numel())
        if tiled_vae:  # sampler_invsr.py build_model: enable_tiling + the two tile sizes
            self.vae.enable_tiling()
            self.vae.tile_latent_min_size = int(latent_tiled_size)
            self.vae.tile_sample_min_size = int(sample_tiled_size)
        else:
            self.vae.disable_tiling()
        pred = getattr(self.scheduler.config, "prediction_type", "epsilon")
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
    @property
    def guided(self) -> bool:
        """Classifier-free guidance on: ``cfg_scale > 1`` and a UNet without guidance embedding (the
        pipeline's ``do_classifier_free_guidance``)."""
        return self.cfg_scale > 1 and getattr(self.unet.config, "time_cond_proj_dim", None) is None

    def prompt_embeds(self, batch: int) -> torch.Tensor:
        """``(batch, 77, D)`` text context; with guidance ``(2·batch, 77, D)`` = [negative; positive] as the
        pipeline concatenates them (sampler_invsr.py passes the negative prompt when cfg_scale > 1)."""
        if self.prompts is None:
            raise SRBenchError("InvSR needs the text encoder and tokenizer (or a cached prompt)")
        p = next(self.unet.parameters())  # cheaper than unet.device/.dtype (a walk over all submodules)
        pos = self.prompts.get(self.prompt, batch, device=p.device, dtype=p.dtype)
        if not self.guided:
            return pos
        neg = self.prompts.get(self.negative_prompt, batch, device=p.device, dtype=p.dtype)
        return torch.cat([neg, pos])

    def timestep_scheduler(self, timesteps: Sequence[int], device: torch.device) -> Any:
        """A fresh copy of the scheduler set to ``timesteps`` (paper tau, descending) as the authors'
        ``retrieve_timesteps`` does: timesteps tau - 1 (float32), sigmas = the cached 1000-step table at
        those indices plus the final sigma (0 for ``final_sigmas_type: zero``), step index reset."""
        sched = copy.deepcopy(self.scheduler)
        ts = torch.tensor([float(t) for t in timesteps], dtype=torch.float32, device=device) - 1
        sched.timesteps = ts
        sigmas = self.sigmas.to(device)[ts.long()]
        kind = sched.config.final_sigmas_type
        if kind == "sigma_min":
            ac = sched.alphas_cumprod
            last: Any = ((1 - ac[0]) / ac[0]) ** 0.5
        elif kind == "zero":
            last = 0
        else:
            raise SRBenchError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {kind!r}")
        last = torch.tensor([last], dtype=torch.float32).to(device=sigmas.device)
        sched.sigmas = torch.cat([sigmas, last]).float().to("cpu")
        sched._step_index = None
        sched._begin_index = None
        return sched

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
        sched = self.timestep_scheduler(ts, dev)

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
            # start state, Eq. 8, by the scheduler's add_noise (Euler: x = z + sigma f_w, i.e.
            # x / sqrt(1 + sigma^2) = sqrt(abar) z + sqrt(1 - abar) f_w)
            x = sched.add_noise(z, noise, sched.timesteps[:1].repeat(n)).to(dtype)

        with self.stage("denoise"):
            guided = self.guided
            step_kwargs = {"generator": generator} if _accepts(sched.step, "generator") else {}
            draws_unused = self.official_rng_order and type(sched).__name__ == "EulerDiscreteScheduler"
            for i, t in enumerate(sched.timesteps):
                x_in = torch.cat([x, x]) if guided else x
                if stochastic:  # diffusers' scale_model_input expression, float32 sigma
                    x_in = x_in / ((sched.sigmas[i] ** 2 + 1) ** 0.5)
                else:
                    x_in = sched.scale_model_input(x_in, t)
                eps = self.unet(x_in, t, encoder_hidden_states=emb).sample
                if guided:  # pipeline step 8: uncond + w (text - uncond)
                    e_neg, e_pos = eps.chunk(2)
                    eps = e_neg + self.cfg_scale * (e_pos - e_neg)
                if stochastic:
                    # paper Alg. 1: DDPM-style step with fresh noise (Euler ancestral, eta = 1)
                    s, s_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
                    down, up = ancestral_step_sigmas(s, s_next)
                    xf = x.float() + (down - s) * eps.float()
                    if up > 0:
                        xf = xf + up * _randn(x, generator).float()
                    x = xf.to(dtype)
                else:
                    # the code: the scheduler's step (SD-Turbo: deterministic Euler, s_churn 0, in fp32)
                    x = sched.step(eps, t, x, return_dict=False, **step_kwargs)[0].to(dtype)
                    if draws_unused:
                        # the authors' EulerDiscreteScheduler.step draws its noise unconditionally
                        # (their scheduling_euler_discrete.py step; diffusers >= 0.27 only when s_churn > 0)
                        _randn(eps, generator)

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
    "NEGATIVE_PROMPT",
    "POSITIVE_PROMPT",
    "TRAINED_START_STEPS",
    "InvSRSampler",
    "check_timesteps",
    "linspace_timesteps",
    "resolve_timesteps",
    "supported_step_counts",
]
