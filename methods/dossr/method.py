"""DoSSR (Cui et al., NeurIPS 2024, arXiv 2409.17778) as an srbench method.

Pipeline, read top to bottom (paper §3-4, App. B; official ``scripts/inference.py`` +
``model/shift_sampler.py``), LR (B,3,h,w) in [0,1]:

1. ``preprocess``: pad to a multiple of 16 (only if needed), I_pre = clamp(RRDBNet(LR), 0, 1), x4.
2. ``encode``: x̂0 = 0.18215 · VAE posterior *sample* of 2 I_pre - 1; c_latent = 0.18215 · *mode* of the
   cond encoder on the same image; text context of the fixed prompt "clean, high-resolution, 8k"
   (encoded once; no classifier-free guidance by default: the official cfg_scale is 1; ``cfg_scale`` != 1
   guides with ``negative_prompt`` as ``SpacedSampler.predict_noise`` does).
3. ``denoise``: start at t1 - 1 = 499 from x = α x̂0 + σ ε (Alg. 1 line 1), then ``steps`` DoS-SDE
   updates of order ``order`` on the grid ``space_timesteps(t1, steps + 1)`` (N = 5: 499, 399, 299, 200,
   100 → 0); x_θ = (x_t - σ_t u)/α_t from u = UNet(x_t, t, text, LAControlNet(cat[x_t, c_latent])).
4. ``decode``: VAE decode of the (still slightly noisy) x at t = 0, [-1,1] → [0,1], wavelet colour fix
   against I_pre, crop the padding.

Randomness (posterior sample, start noise, one noise draw per update) all comes from ``generator``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from methods.dossr.schedule import DEFAULT_T1, ETA_VARIANTS, DoSSchedule, max_steps
from methods.dossr.solvers import ORDERS
from methods.dossr.weights import CKPT_FILES, DRIVE_FOLDER, SD_REPO, default_ckpt_path
from srbench.diffusion.color import COLOR_FIXES
from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps, WeightsInfo, WeightsMissing
from srbench.registry import register_method

DEFAULT_PROMPT = "clean, high-resolution, 8k"  # shift_sampler.py default positive_prompt
DEFAULT_NEGATIVE_PROMPT = ""  # shift_sampler.py default negative_prompt


@register_method("dossr")
class DoSSR(SRMethod):
    """DoSSR: SD 2.1-base + LAControlNet on the pre-restored LR, DoS-SDE solver (default 5 steps, order 3).

    Options (``conf/method/dossr.yaml``): ``model`` SD 2.1-base HF id or diffusers folder (configs,
    tokenizer, scheduler); ``ckpt`` official checkpoint path (default: ``variant``'s file in the
    srbench weights cache); ``variant`` default|onestep; ``order`` 1|2|3; ``t1`` (500); ``eta``
    code|paper (η table, see :mod:`methods.dossr.schedule`); ``x0_form`` code|paper (how u becomes
    x_θ, see :func:`methods.dossr.solvers.predict_x0`); ``prompt``; ``negative_prompt`` and ``cfg_scale``
    (classifier-free guidance when ``cfg_scale`` != 1: u = u_neg + s (u_pos - u_neg), the official
    ``predict_noise``; default 1 = off); ``color_fix`` wavelet|adain|none;
    ``control_scale`` (1.0); ``posterior`` sample|mode (x̂0); ``preprocess_weights`` an RRDBNet
    ``.pth`` replacing the checkpoint's.
    """

    stages = ("preprocess", "encode", "denoise", "decode")
    stochastic = True
    default_steps = 5

    def __init__(
        self,
        model: str = SD_REPO,
        ckpt: str | None = None,
        variant: str = "default",
        order: int = 3,
        t1: int = DEFAULT_T1,
        eta: str = "code",
        x0_form: str = "code",
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        cfg_scale: float = 1.0,
        color_fix: str = "wavelet",
        control_scale: float = 1.0,
        posterior: str = "sample",
        preprocess_weights: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            model=model,
            ckpt=ckpt,
            variant=variant,
            order=order,
            t1=t1,
            eta=eta,
            x0_form=x0_form,
            prompt=prompt,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            color_fix=color_fix,
            control_scale=control_scale,
            posterior=posterior,
            preprocess_weights=preprocess_weights,
            **options,
        )
        checks = {
            "variant": (variant, tuple(CKPT_FILES)),
            "order": (int(order), ORDERS),
            "eta": (eta, ETA_VARIANTS),
            "x0_form": (x0_form, ("code", "paper")),
            "color_fix": (str(color_fix).lower(), COLOR_FIXES),
            "posterior": (posterior, ("sample", "mode")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise SRBenchError(f"dossr: {name} must be one of {list(allowed)}, got '{value}'")
        if x0_form == "paper" and eta == "paper":
            raise SRBenchError(
                "dossr: x0_form='paper' needs η < 1 at the start (x_θ = (x - αηx̂0 - σε)/(α(1-η)) is "
                "undefined at η = 1); use eta='code' or x0_form='code'"
            )
        if not 1 < int(t1) < 1000:
            raise SRBenchError(f"dossr: t1 must be in 2..999, got {t1}")
        self.model, self.ckpt, self.variant = model, ckpt, variant
        self.order, self.t1, self.eta_variant, self.x0_form = int(order), int(t1), eta, x0_form
        self.prompt, self.color_fix = prompt, str(color_fix).lower()
        self.negative_prompt, self.cfg_scale = negative_prompt, float(cfg_scale)
        self.control_scale, self.posterior = float(control_scale), posterior
        self.preprocess_weights = preprocess_weights
        self._info: WeightsInfo | None = None
        self._schedules: dict[tuple[int, float, str], DoSSchedule] = {}  # built once per key after load

    # ---- steps ------------------------------------------------------------------------------------
    def supported_steps(self) -> range:
        """Any step count the respaced grid over [0, t1) can hold: 1..t1-1 (1..499 by default)."""
        return range(1, max_steps(self.t1, self.eta_variant) + 1)  # type: ignore[arg-type]

    def check_steps(self, steps: int) -> None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps not in self.supported_steps():
            bound = self.supported_steps()
            raise UnsupportedSteps(
                self.name, steps, f"{bound.start}..{bound.stop - 1} (grid over [0, t1={self.t1}))"
            )

    # ---- weights ----------------------------------------------------------------------------------
    def _ckpt_path(self) -> Path:
        if self.ckpt is not None:
            path = Path(str(self.ckpt)).expanduser()
            if not path.is_file():
                raise WeightsMissing(f"dossr: method.ckpt={self.ckpt}: no such file")
            return path
        path = default_ckpt_path(self.variant)
        if not path.is_file():
            raise WeightsMissing(
                f"dossr: the official checkpoint {CKPT_FILES[self.variant]} is not at {path}. It is "
                f"published only on Google Drive ({DRIVE_FOLDER}); download it there by hand and copy it "
                "to that path (`srbench weights where dossr`), or pass method.ckpt=<path>."
            )
        return path

    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        from methods.dossr.convert import (
            check_eta_buffer,
            convert_official_checkpoint,
            load_official_checkpoint,
        )
        from methods.dossr.network import (
            CondEncoder,
            DoSSRDenoiser,
            build_lacontrolnet,
            empty_init,
            load_weights,
        )
        from methods.dossr.preprocess import load_rrdbnet_file, rrdbnet_from_state
        from methods.dossr.schedule import alphas_cumprod_from_config, eta_schedule
        from srbench.diffusion.prompts import PromptEmbeddingCache
        from srbench.diffusion.sd import load_sd_components, pick_dtype
        from srbench.testing import is_random_weights

        dtype = pick_dtype(device, dtype)
        ckpt_path = self._ckpt_path()
        sd = load_sd_components(self.model, parts=("tokenizer", "scheduler"), fetch_hint="dossr")
        ucfg, vcfg, tcfg = _load_configs(self.model)
        state = load_official_checkpoint(ckpt_path)

        with empty_init():
            unet = UNet2DConditionModel.from_config(ucfg)
            controlnet = build_lacontrolnet(ucfg)
            vae = AutoencoderKL.from_config(vcfg)
            cond_encoder = CondEncoder.from_vae_config(vcfg)
            text_encoder = CLIPTextModel(tcfg)
        conv = convert_official_checkpoint(
            state, unet_config=ucfg, vae_config=vcfg, text_encoder=text_encoder
        )
        alphas_cumprod = alphas_cumprod_from_config(sd.scheduler.config)
        eta_table = eta_schedule(len(alphas_cumprod), self.t1, self.eta_variant)  # type: ignore[arg-type]
        eta_err = check_eta_buffer(state, eta_table)  # the checkpoint's training η ("lambdas" buffer)
        del state
        name = ckpt_path.name
        load_weights(controlnet, conv.controlnet, f"LAControlNet of {name}")
        load_weights(cond_encoder, conv.cond_encoder, f"cond encoder of {name}")
        preprocess = rrdbnet_from_state(conv.preprocess, f"RRDBNet of {name}")
        if self.preprocess_weights:
            preprocess = load_rrdbnet_file(Path(str(self.preprocess_weights)).expanduser())
        # UNet / VAE / text tower: the checkpoint's (what the official code runs); SD 2.1-base's if absent
        from_sd = [part for part in ("unet", "vae", "text_encoder") if getattr(conv, part) is None]
        base = load_sd_components(self.model, parts=from_sd, fetch_hint="dossr") if from_sd else None
        unet = (
            base.unet if base and base.unet is not None else load_weights(unet, conv.unet, f"UNet of {name}")
        )
        vae = base.vae if base and base.vae is not None else load_weights(vae, conv.vae, f"VAE of {name}")
        if base and base.text_encoder is not None:
            text_encoder = base.text_encoder
        else:
            load_weights(text_encoder, conv.text_encoder, f"text tower of {name}")

        def ready(m: torch.nn.Module) -> torch.nn.Module:
            m = m.to(device=device)
            if any(p.dtype != dtype for p in m.parameters()):  # (diffusers warns on a no-op cast)
                m = m.to(dtype=dtype)
            return m.eval().requires_grad_(False)

        self.denoiser = ready(DoSSRDenoiser(unet, controlnet, self.control_scale))
        self.vae, self.cond_encoder, self.preprocess = ready(vae), ready(cond_encoder), ready(preprocess)
        prompts = PromptEmbeddingCache(sd.tokenizer, ready(text_encoder))
        prompts.encode(self.prompt, device=device, dtype=dtype)
        if self.guided:
            prompts.encode(self.negative_prompt, device=device, dtype=dtype)
        prompts.release_text_encoder()
        self.prompts = prompts
        self.alphas_cumprod = alphas_cumprod
        self._schedules.clear()

        files = [Path(str(self.model)), ckpt_path] + (
            [Path(str(self.preprocess_weights))] if self.preprocess_weights else []
        )
        random = any(p.exists() and is_random_weights(p) for p in files)
        detail = (
            f"SD configs/tokenizer {self.model}; checkpoint {ckpt_path}"
            + (f" (UNet/VAE/text from SD: {from_sd})" if from_sd else "")
            + (f"; RRDBNet {self.preprocess_weights}" if self.preprocess_weights else "")
            + (f"; η table vs checkpoint max |Δ| = {eta_err:.2g}" if eta_err is not None else "")
        )
        self._info = WeightsInfo(
            id=f"dossr-{self.variant} ({ckpt_path.name})", real=not random, detail=detail
        )
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        if self._info is None:
            raise SRBenchError("dossr: call load() before weights_info()")
        return self._info

    # ---- the call ---------------------------------------------------------------------------------
    @property
    def guided(self) -> bool:
        """Classifier-free guidance on (the official ``predict_noise`` runs one pass iff cfg_scale == 1)."""
        return self.cfg_scale != 1.0

    def schedule(self, steps: int) -> DoSSchedule:
        """The grid and α, σ, η the sampler uses for ``steps`` (built once per step count)."""
        key = (steps, float(self.t1), str(self.eta_variant))
        if key not in self._schedules:
            self._schedules[key] = DoSSchedule.build(
                steps,
                alphas_cumprod=self.alphas_cumprod,
                t1=self.t1,
                variant=self.eta_variant,  # type: ignore[arg-type]
            )
        return self._schedules[key]

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        from methods.dossr.preprocess import pad_to_multiple, pre_restore
        from methods.dossr.solvers import DoSSDESolver, predict_x0, randn_like, start_state
        from srbench.diffusion.color import color_fix
        from srbench.diffusion.vae import from_vae_range, to_vae_range, vae_decode, vae_encode

        b = lr.shape[0]
        with self.stage("preprocess"):
            padded, (h, w) = pad_to_multiple(lr)
            pre = pre_restore(self.preprocess, padded)  # I_pre, float32 in [0,1]
        with self.stage("encode"):
            image = to_vae_range(pre).to(self.dtype)
            x_hat0 = vae_encode(
                self.vae, image, sample=self.posterior == "sample", generator=generator
            ).float()
            c_latent = self.cond_encoder(image)
            context = self.prompts.get(self.prompt, b, device=self.device, dtype=self.dtype)
            guided = self.guided
            uncond = (
                self.prompts.get(self.negative_prompt, b, device=self.device, dtype=self.dtype)
                if guided
                else None
            )
        with self.stage("denoise"):
            sched = self.schedule(steps)
            solver = DoSSDESolver(sched, self.order)

            def model_x0(x: torch.Tensor, i: int) -> torch.Tensor:
                t = torch.full((b,), int(sched.timesteps[i]), device=self.device, dtype=torch.long)
                u = self.denoiser(x.to(self.dtype), t, c_latent, context)
                if uncond is not None:  # shift_sampler.py predict_noise: cond pass, uncond pass, mix
                    u_neg = self.denoiser(x.to(self.dtype), t, c_latent, uncond)
                    u = u_neg + self.cfg_scale * (u - u_neg)
                return predict_x0(
                    x,
                    u.float(),
                    alpha=float(sched.alpha[i]),
                    sigma=float(sched.sigma[i]),
                    eta=float(sched.eta[i]),
                    x_hat0=x_hat0,
                    parameterization=self.x0_form,  # type: ignore[arg-type]
                )

            x = start_state(x_hat0, sched, randn_like(x_hat0, generator))
            x = solver.sample(x, x_hat0, model_x0, generator)
        with self.stage("decode"):
            image = from_vae_range(vae_decode(self.vae, x), clamp=False).float()
            image = color_fix(image, pre, self.color_fix)
            return image[..., : h * self.scale, : w * self.scale].clamp(0.0, 1.0)


def _load_configs(model: str | Path) -> tuple[dict, dict, Any]:
    """UNet / VAE configs (every key, defaults filled by diffusers) and the text encoder config of an SD
    folder or HF id (no weights read)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    from srbench.diffusion.sd import config_with_defaults, hub_offline, missing_weights_message

    try:
        kw = {"local_files_only": hub_offline()}
        raw_u = UNet2DConditionModel.load_config(str(model), subfolder="unet", **kw)
        raw_v = AutoencoderKL.load_config(str(model), subfolder="vae", **kw)
        tcfg = CLIPTextConfig.from_pretrained(str(model), subfolder="text_encoder", **kw)
    except OSError as exc:
        raise WeightsMissing(
            missing_weights_message(
                "SD 2.1-base configs", model, reason=str(exc).splitlines()[0], fetch_hint="dossr"
            )
        ) from exc
    # the published SD 2.1-base files (diffusers 0.10) lack newer keys: complete them as diffusers does
    return config_with_defaults(UNet2DConditionModel, raw_u), config_with_defaults(AutoencoderKL, raw_v), tcfg
