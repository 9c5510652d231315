"""The ``invsr`` plugin: options (conf/method/invsr.yaml), weight loading, and the call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from methods.invsr.noise_predictor import load_noise_predictor
from methods.invsr.pipeline import (
    LATENT_TILED_SIZE,
    NEGATIVE_PROMPT,
    POSITIVE_PROMPT,
    SAMPLE_TILED_SIZE,
    InvSRSampler,
    resolve_timesteps,
    supported_step_counts,
    warn_untrained_start,
)
from methods.invsr.weights import NOISE_PREDICTOR_FILE, SD_TURBO
from srbench.diffusion.color import COLOR_FIXES
from srbench.diffusion.sd import load_sd_components, pick_dtype
from srbench.diffusion.tiling import blend_dtype_of
from srbench.interface import SRBenchError, SRMethod, WeightsInfo, WeightsMissing
from srbench.registry import register_method
from srbench.testing import random_weights_info


def _local_model_dir(model: str) -> Path | None:
    """The folder a diffusers model is read from: itself, or its HF-cache snapshot."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


@register_method("invsr")
class InvSR(SRMethod):
    """InvSR (CVPR 2025): diffusion inversion with a noise predictor on SD-Turbo, 1-5 steps (x4)."""

    stages = ("noise_predict", "encode", "denoise", "decode", "color_fix")
    stochastic = True

    def __init__(
        self,
        model: str = SD_TURBO,
        noise_predictor: str | None = None,
        noise_predictor_config: Mapping[str, Any] | None = None,
        timesteps: Sequence[int] | Mapping[int, Sequence[int]] | None = None,
        start_timestep: int | None = None,
        more_steps: str = "linspace",
        chopping_size: int | None = 128,
        chopping_stride: int | None = None,
        chopping_batch_size: int = 8,
        color_fix: str | None = "none",
        color_fix_reference: str = "padded",
        stochastic: bool = False,
        prompt: str = POSITIVE_PROMPT,
        negative_prompt: str = NEGATIVE_PROMPT,
        cfg_scale: float = 1.0,
        scheduler: str | None = None,
        tiled_vae: bool = True,
        latent_tiled_size: int = LATENT_TILED_SIZE,
        sample_tiled_size: int = SAMPLE_TILED_SIZE,
        dtype: str | None = None,
        official_rng_order: bool = True,
        blend_dtype: str = "float32",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if more_steps not in ("linspace", "error"):
            raise SRBenchError(f"invsr: more_steps must be 'linspace' or 'error', got {more_steps!r}")
        if (color_fix or "none").lower() not in COLOR_FIXES:
            raise SRBenchError(f"invsr: color_fix must be one of {COLOR_FIXES}, got {color_fix!r}")
        if color_fix_reference not in ("padded", "input"):
            raise SRBenchError("invsr: color_fix_reference must be 'padded' or 'input'")
        self.blend_dtype = blend_dtype_of(blend_dtype, "invsr")
        self.model = str(model)
        self.noise_predictor_path = noise_predictor
        self.noise_predictor_config = dict(noise_predictor_config) if noise_predictor_config else None
        self.timesteps = dict(timesteps) if isinstance(timesteps, Mapping) else timesteps
        self.start_timestep = start_timestep
        self.more_steps = more_steps
        self.chopping = {
            "chopping_size": chopping_size,
            "chopping_stride": chopping_stride,
            "chopping_batch_size": chopping_batch_size,
        }
        self.color_fix = color_fix
        self.color_fix_reference = color_fix_reference
        self.stochastic_sampling = bool(stochastic)
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.cfg_scale = float(cfg_scale)
        self.scheduler = scheduler
        self.tiled_vae = bool(tiled_vae)
        self.latent_tiled_size, self.sample_tiled_size = int(latent_tiled_size), int(sample_tiled_size)
        if self.tiled_vae and min(self.latent_tiled_size, self.sample_tiled_size) < 1:
            raise SRBenchError("invsr: latent_tiled_size and sample_tiled_size must be positive")
        self.requested_dtype = dtype
        self.official_rng_order = official_rng_order
        self.sampler: InvSRSampler | None = None
        self.model_dtype = torch.float32
        self._np_file: Path | None = None
        # fail early on a bad timestep option
        for n in self.supported_steps()[:5]:
            resolve_timesteps(n, **self._ts_options())

    def _ts_options(self) -> dict[str, Any]:
        return {
            "timesteps": self.timesteps,
            "start_timestep": self.start_timestep,
            "more_steps": self.more_steps,
        }

    def supported_steps(self) -> list[int]:
        return supported_step_counts(self.timesteps, self.start_timestep, self.more_steps)

    def timesteps_for(self, steps: int) -> tuple[int, ...]:
        """The paper-tau list used for ``steps`` (e.g. (200,) for 1 step)."""
        return resolve_timesteps(steps, **self._ts_options())

    # ---- weights ---------------------------------------------------------------------------
    def _resolve_noise_predictor(self) -> Path:
        if self.noise_predictor_path:
            p = Path(self.noise_predictor_path).expanduser()
            if not p.is_file():
                raise WeightsMissing(
                    f"invsr: noise predictor file '{p}' does not exist; the released one is "
                    f"'{NOISE_PREDICTOR_FILE}' from HF OAOA/InvSR (`srbench weights fetch invsr`)"
                )
            return p
        from srbench.weights import resolve

        return resolve("invsr", NOISE_PREDICTOR_FILE)

    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        dev = torch.device(device)
        self.model_dtype = pick_dtype(dev, self.requested_dtype or dtype)
        np_file = self._resolve_noise_predictor()
        sd = load_sd_components(self.model, dtype=self.model_dtype, device=dev, fetch_hint="invsr")
        # f_w keeps fp32 weights and runs under autocast on GPU, as the authors' code
        f_w = load_noise_predictor(np_file, config=self.noise_predictor_config).to(dev)
        self.sampler = InvSRSampler(
            sd,
            f_w,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            cfg_scale=self.cfg_scale,
            scheduler=self.scheduler,
            tiled_vae=self.tiled_vae,
            latent_tiled_size=self.latent_tiled_size,
            sample_tiled_size=self.sample_tiled_size,
            stage=self.stage,
            official_rng_order=self.official_rng_order,
        )
        self.sampler.prompt_embeds(1)  # encode the fixed prompt(s) once ...
        assert self.sampler.prompts is not None
        self.sampler.prompts.release_text_encoder()  # ... and free the text encoder
        sd.text_encoder = None
        self._np_file = np_file
        # the LR reaches _upscale in fp32 (padding and the colour-fix reference are fp32 in the code);
        # the sampler casts tiles to the model dtype itself
        self._mark_loaded(dev, torch.float32)

    def weights_info(self) -> WeightsInfo:
        model_dir = _local_model_dir(self.model)
        marks = [random_weights_info(p) for p in (model_dir, self._np_file) if p is not None]
        random = any(m is not None for m in marks)
        detail = (
            f"noise predictor {self._np_file}; model dtype {str(self.model_dtype).removeprefix('torch.')}; "
            f"timesteps {self.timesteps or self.start_timestep or 'code defaults'}; "
            f"color_fix {self.color_fix}; cfg_scale {self.cfg_scale}; "
            f"scheduler {type(self.sampler.scheduler).__name__ if self.sampler else self.scheduler}; "
            f"tiled_vae {self.tiled_vae}" + ("; RANDOM test weights" if random else "")
        )
        return WeightsInfo(
            id=f"{self.model} + {NOISE_PREDICTOR_FILE if not self.noise_predictor_path else self._np_file}",
            real=not random,
            detail=detail,
        )

    # ---- the call ---------------------------------------------------------------------------
    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        assert self.sampler is not None
        ts = self.timesteps_for(steps)
        warn_untrained_start(ts)
        return self.sampler.upscale(
            lr,
            ts,
            generator,
            color_fix=self.color_fix,
            color_fix_reference=self.color_fix_reference,
            stochastic=self.stochastic_sampling,
            blend_dtype=self.blend_dtype,
            **self.chopping,
        )
