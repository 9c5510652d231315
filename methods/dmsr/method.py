"""DM-SR ("Bridging the Distribution Gap to Harness Pre-trained Diffusion Priors for Super-Resolution", an
anonymous submission under review) as an srbench method.  No official code or weights exist: the timestep
estimator T and the encoder E_θ come from a checkpoint trained with ``srbench train dmsr``
(methods/dmsr/README.md).

Per LR tile (``methods/dmsr/pipeline.py`` has the formulas):

1. ``estimate``  bicubic ×4 → I_LR; t̂ = T(I_LR) (Eq. 10), t = round(t̂) clamped to [0, 499];
2. ``encode``    X = 0.18215·mean(E_θ(I_LR, t));
3. ``denoise``   ε = UNet(X, t, fixed prompt); Z = (X − √(1−ᾱ_t)ε)/√ᾱ_t (Eq. 2); N steps as §4.4;
4. ``decode``    VAE decoder → [0, 1].

Large or odd-sized inputs (brief §6.10, InvSR-style): the LR is reflect-padded to at least ``tile_size``
and to a multiple of 16 px (latent /8, UNet /8), cut into ``tile_size`` tiles at ``tile_stride``, each tile
runs the whole pipeline with its **own t̂** (T was trained on 512² crops), and the ×4 outputs are blended
with Gaussian weights (``srbench.diffusion.tiling``), then cropped.  Nothing random is drawn (posterior
mean, ε comes from the UNet), so ``generator`` is unused and the method is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from srbench.diffusion.tiling import blend_dtype_of, reflect_pad_to
from srbench.interface import SRBenchError, SRMethod, WeightsInfo, WeightsMissing
from srbench.registry import register_method

NO_WEIGHTS = (
    "dmsr: no DM-SR checkpoint given. No official DM-SR weights exist anywhere; train one with "
    "`srbench train dmsr` (or `python -m methods.dmsr.train`, see methods/dmsr/README.md) and set "
    "method.checkpoint=<its directory>"
)


@register_method("dmsr")
class DMSR(SRMethod):
    """DM-SR: timestep estimator + timestep-aware encoder in front of a frozen SD-Turbo (1 UNet call).

    Options: ``checkpoint`` (directory from ``srbench train dmsr``; required), ``model`` (base SD, HF id
    or diffusers folder; default: the one the checkpoint was trained against), ``prompt`` (default: the
    paper's fixed prompt stored in the checkpoint), ``timestep`` (fixed t instead of T's estimate, the
    Tab. 3 ablation), ``tile_size`` / ``tile_stride`` (LR px; 128 / half the tile), ``tiles_per_batch``,
    ``blend_dtype`` float32|float64 (precision of the tile blending; float64 as InvSR's ImageSpliterTh).
    """

    stages = ("estimate", "encode", "denoise", "decode")
    stochastic = False

    def __init__(
        self,
        checkpoint: str | None = None,
        model: str | None = None,
        prompt: str | None = None,
        timestep: int | None = None,
        tile_size: int = 128,
        tile_stride: int | None = None,
        tiles_per_batch: int = 1,
        blend_dtype: str = "float32",
        **options: Any,
    ) -> None:
        super().__init__(
            checkpoint=checkpoint,
            model=model,
            prompt=prompt,
            timestep=timestep,
            tile_size=tile_size,
            tile_stride=tile_stride,
            tiles_per_batch=tiles_per_batch,
            blend_dtype=blend_dtype,
            **options,
        )
        if int(tile_size) < 16 or int(tile_size) % 16:
            raise SRBenchError(f"dmsr: tile_size must be a positive multiple of 16 LR px, got {tile_size}")
        tile_stride = int(tile_size) // 2 if tile_stride is None else int(tile_stride)
        if not 0 < tile_stride <= int(tile_size):
            raise SRBenchError(f"dmsr: tile_stride must be in 1..tile_size, got {tile_stride}")
        if timestep is not None and not 0 <= int(timestep) <= 1000:
            raise SRBenchError(f"dmsr: timestep must be in [0, 1000], got {timestep}")
        self.checkpoint = checkpoint
        self.model = model
        self.prompt = prompt
        self.timestep = None if timestep is None else int(timestep)
        self.tile_size, self.tile_stride = int(tile_size), int(tile_stride)
        self.tiles_per_batch = int(tiles_per_batch)
        self.blend_dtype = blend_dtype_of(blend_dtype, "dmsr")
        self.pipe: Any = None
        self._t_fixed: int | None = None  # the timestep index a fixed ``timestep`` runs
        self.last_t_hat: list[float] = []  # t̂ of every tile of the last call (for logging)
        self._info: WeightsInfo | None = None

    # ---- weights ----------------------------------------------------------------------------------
    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from methods.dmsr.checkpoint import load_checkpoint
        from methods.dmsr.pipeline import DMSRPipeline
        from srbench.diffusion.prompts import PromptEmbeddingCache
        from srbench.diffusion.schedules import alphas_cumprod_of
        from srbench.diffusion.sd import load_sd_components, pick_dtype
        from srbench.testing import is_random_weights

        if not self.checkpoint:
            raise WeightsMissing(NO_WEIGHTS)
        dtype = pick_dtype(device, dtype)
        ck = load_checkpoint(Path(str(self.checkpoint)).expanduser(), device=device)
        model = self.model or ck.config.base_model
        sd = load_sd_components(
            model,
            dtype=dtype,
            device=device,
            parts=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
            fetch_hint="dmsr",
        )
        _check_compatible(ck.encoder.config(), sd.vae.config, model)
        t_fixed = fixed_timestep(self.timestep, ck.config.t_max)
        prompt = ck.config.prompt if self.prompt is None else self.prompt
        prompts = PromptEmbeddingCache(sd.tokenizer, sd.text_encoder)
        prompt_embeds = prompts.encode(prompt, device=device, dtype=dtype)
        prompts.release_text_encoder()
        encoder = ck.encoder.to(device=device, dtype=dtype).requires_grad_(False)  # with the VAE's dtype
        estimator = ck.estimator.to(device=device, dtype=torch.float32).requires_grad_(False)  # fp32 (§6.8)
        self.pipe = DMSRPipeline(
            estimator=estimator,
            encoder=encoder,
            unet=sd.unet,
            vae=sd.vae,
            alphas_cumprod=alphas_cumprod_of(sd.scheduler),
            prompt_embeds=prompt_embeds,
            t_max=ck.config.t_max,
            scale=self.scale,
        )
        self._multiple = _lr_multiple(sd.vae.config, sd.unet.config, self.scale)
        files = [Path(str(model)).expanduser(), Path(str(self.checkpoint)).expanduser()]
        random = any(p.exists() and is_random_weights(p) for p in files)
        iters = ck.config.training.get("iterations", {})
        self._info = WeightsInfo(
            id=f"{Path(str(self.checkpoint)).name} (srbench-trained DM-SR) + {model}",
            real=bool(ck.config.real) and not random,
            detail=f"checkpoint {self.checkpoint}; trained iterations {iters}; prompt {prompt!r}"
            + (f"; fixed timestep {self.timestep} (index {t_fixed})" if t_fixed is not None else ""),
        )
        self._t_fixed = t_fixed
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        if self._info is None:
            raise SRBenchError("dmsr: call load() before weights_info()")
        return self._info

    # ---- the call ---------------------------------------------------------------------------------
    def _run_tiles(self, lr: torch.Tensor, steps: int) -> torch.Tensor:
        pipe = self.pipe
        with self.stage("estimate"):
            i_lr = pipe.upsample(lr)
            if self._t_fixed is None:
                t_hat, t = pipe.estimate(i_lr)
            else:
                t_hat = torch.full((lr.shape[0],), float(self._t_fixed), device=lr.device)
                t = t_hat.long()
        self.last_t_hat.extend(float(v) for v in t_hat)
        with self.stage("encode"):
            x = pipe.encode(i_lr, t)
        with self.stage("denoise"):
            z0 = pipe.denoise(x, t_hat, steps).z0
        with self.stage("decode"):
            return pipe.decode(z0)

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        from srbench.diffusion.tiling import gaussian_weights_cv2, tiled_map

        self.last_t_hat = []
        h, w = lr.shape[-2:]
        padded, (top, _, left, _) = reflect_pad_to(lr, self.tile_size, self._multiple)
        ph, pw = padded.shape[-2:]
        if ph == self.tile_size and pw == self.tile_size:
            out = self._run_tiles(padded, steps)
        else:
            out = tiled_map(
                padded,
                lambda tiles, _boxes: self._run_tiles(tiles, steps),
                tile=self.tile_size,
                stride=self.tile_stride,
                scale=self.scale,
                weight_fn=gaussian_weights_cv2,
                tiles_per_batch=self.tiles_per_batch,
                accumulate_dtype=self.blend_dtype,
            )
        s = self.scale
        return out[:, :, top * s : (top + h) * s, left * s : (left + w) * s].float()


def fixed_timestep(timestep: int | None, t_max: int) -> int | None:
    """The index a fixed ``timestep`` runs: itself in [0, t_max]; the paper's top value t_max + 1 (its
    "t̂ ∈ [0, 500]", Tab. 3's "t = 500") is the last of the 500 bins 0…t_max of Eq. 10, so it maps to
    t_max; anything larger is an error."""
    if timestep is None:
        return None
    t = int(timestep)
    if not 0 <= t <= t_max + 1:
        raise SRBenchError(
            f"dmsr: timestep {t} is outside [0, {t_max + 1}] (the checkpoint's t_max is {t_max}; "
            f"the paper's t = {t_max + 1} runs index {t_max})"
        )
    return min(t, t_max)


def _lr_multiple(vae_config: Any, unet_config: Any, scale: int) -> int:
    """LR side multiple so that the latent (HR / vae factor) divides by the UNet's downsampling."""
    vae_f = 2 ** (len(vae_config.block_out_channels) - 1)
    unet_f = 2 ** (len(unet_config.block_out_channels) - 1)
    need = vae_f * unet_f  # HR px
    return max(1, need // scale) if need % scale == 0 else need


def _check_compatible(enc_cfg: dict[str, Any], vae_config: Any, model: str) -> None:
    for key in ("latent_channels", "block_out_channels", "layers_per_block"):
        have = vae_config.get(key) if hasattr(vae_config, "get") else getattr(vae_config, key)
        want = enc_cfg[key]
        same = list(have) == list(want) if isinstance(want, list) else have == want
        if not same:
            raise SRBenchError(
                f"dmsr: the checkpoint's encoder ({key}={want}) does not fit "
                f"the VAE of '{model}' ({key}={have})"
            )
