"""StableSR (Wang et al., IJCV 2024, arXiv 2305.07015) as an srbench method.

Pipeline, read top to bottom (paper §3-4; official scripts ``sr_val_ddpm_text_T_vqganfin_*.py``):

1. ``encode``: LR in [0,1] → [−1,1]; bicubic upsampling by s = max(input_size / min(h, w), 4) (so the
   short side is ≥ 512 and the output is at least 4×), clamp; reflect-pad right/bottom to a multiple of
   32; z_lr = 0.18215 · posterior *sample* of the VAE; the CFW encoder features are captured in the same
   pass; the text condition is the embedding of the empty prompt (SD 2.1 text encoder, encoded once).
2. ``denoise``: respaced DDPM-200 (or DDIM) with aggregation sampling over 64×64 latent tiles
   (:mod:`methods.stablesr.sampler`).
3. ``decode``: VAE decode with CFW (weight ``w``, default 0.5), colour correction against the
   upsampled LR (AdaIN by default, as the paper's tables; the scripts default to none), [−1,1] → [0,1],
   crop the padding, and, if the input was enlarged beyond 4× (s > 4), bicubic-resize to exactly 4×.

Weights: ``model`` = the SD 2.1-base diffusers folder or HF id (text encoder, tokenizer, configs);
``ckpt`` = ``stablesr_000117.ckpt`` (UNet + SFT + time-aware encoder; a checkpoint holding only the SFT
and encoder keys, like the WebUI extract, keeps the base UNet); ``vqgan_ckpt`` = ``vqgan_cfw_00011.ckpt``
(VAE + CFW; may be omitted when ``w = 0``, then the base VAE is used).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from methods.stablesr.sampler import INIT_LATENTS, NUM_TRAIN_TIMESTEPS, SAMPLERS, Guidance
from methods.stablesr.weights import CKPT_FILE, HF_REPO, VQGAN_FILE
from methods.stablesr.weights import SD_REPO as SD_MODEL
from srbench.diffusion.color import COLOR_FIXES
from srbench.diffusion.tiling import blend_dtype_of
from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps, WeightsInfo, WeightsMissing
from srbench.registry import register_method


def _resolve_file(spec: str | Path | None, default_file: str) -> Path:
    """A local file, or (``None``) the manifest's file in the Hugging Face cache (``HF_HOME``)."""
    if spec is None:
        from srbench.weights import resolve

        return resolve("stablesr", default_file)
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise WeightsMissing(f"stablesr: weights file '{spec}' does not exist")
    return path


@register_method("stablesr")
class StableSR(SRMethod):
    """StableSR: SD 2.1-base + time-aware encoder/SFT + CFW, DDPM-200 with aggregation sampling.

    Options: ``sampler`` ddpm|ddim, ``eta`` (DDIM), ``w`` (CFW, 0..1), ``color_fix`` adain|wavelet|none,
    ``prompt`` / ``negative_prompt`` / ``cfg_scale`` (paper §5.1, Eq. 8; s = 1 is the plain model),
    ``input_size`` (short side after upsampling is at least this), ``upsample`` bicubic|bilinear,
    ``init_latent`` noise|noised_lr, ``tile_size`` / ``tile_stride`` (latent px; default
    input_size/8 and half of it), ``tile_batch_size`` (tiles per UNet call), ``posterior`` sample|mode,
    ``blend_dtype`` float32|float64 (precision of the tile fusion of ε; float32 as the official canvas).
    """

    stages = ("encode", "denoise", "decode")
    stochastic = True
    default_steps = 200

    def __init__(
        self,
        model: str = SD_MODEL,
        ckpt: str | None = None,
        vqgan_ckpt: str | None = None,
        sampler: str = "ddpm",
        eta: float = 0.0,
        w: float = 0.5,
        color_fix: str = "adain",
        prompt: str = "",
        negative_prompt: str | None = None,
        cfg_scale: float = 1.0,
        input_size: int = 512,
        upsample: str = "bicubic",
        init_latent: str = "noise",
        tile_size: int | None = None,
        tile_stride: int | None = None,
        tile_batch_size: int = 4,
        posterior: str = "sample",
        blend_dtype: str = "float32",
        **options: Any,
    ) -> None:
        super().__init__(
            model=model,
            ckpt=ckpt,
            vqgan_ckpt=vqgan_ckpt,
            sampler=sampler,
            eta=eta,
            w=w,
            color_fix=color_fix,
            prompt=prompt,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            input_size=input_size,
            upsample=upsample,
            init_latent=init_latent,
            tile_size=tile_size,
            tile_stride=tile_stride,
            tile_batch_size=tile_batch_size,
            posterior=posterior,
            blend_dtype=blend_dtype,
            **options,
        )
        checks = {
            "sampler": (sampler, SAMPLERS),
            "color_fix": (str(color_fix).lower(), (*COLOR_FIXES, "nofix")),
            "upsample": (upsample, ("bicubic", "bilinear")),
            "init_latent": (init_latent, INIT_LATENTS),
            "posterior": (posterior, ("sample", "mode")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise SRBenchError(f"stablesr: {name} must be one of {list(allowed)}, got '{value}'")
        if not 0.0 <= float(w) <= 1.0:
            raise SRBenchError(f"stablesr: w must be in [0, 1], got {w}")
        if int(input_size) % 64 or int(input_size) < 64:
            raise SRBenchError(f"stablesr: input_size must be a positive multiple of 64, got {input_size}")
        self.model = model
        self.ckpt, self.vqgan_ckpt = ckpt, vqgan_ckpt
        self.sampler_name, self.eta, self.w = sampler, float(eta), float(w)
        self.color_fix = str(color_fix).lower()
        self.prompt, self.negative_prompt, self.cfg_scale = prompt, negative_prompt, float(cfg_scale)
        self.input_size, self.upsample_mode, self.init_latent = int(input_size), upsample, init_latent
        self.tile_size = int(tile_size) if tile_size else self.input_size // 8
        self.tile_stride = int(tile_stride) if tile_stride else self.tile_size // 2
        if not 0 < self.tile_stride <= self.tile_size:
            raise SRBenchError(f"stablesr: tile_stride must be in 1..tile_size, got {self.tile_stride}")
        self.tile_batch_size = int(tile_batch_size)
        self.posterior = posterior
        self.blend_dtype = blend_dtype_of(blend_dtype, "stablesr")
        self._info: WeightsInfo | None = None

    # ---- steps ------------------------------------------------------------------------------------
    def check_steps(self, steps: int) -> None:
        super().check_steps(steps)
        if steps > NUM_TRAIN_TIMESTEPS:
            raise UnsupportedSteps(self.name, steps, f"1..{NUM_TRAIN_TIMESTEPS} (respaced from 1000)")

    # ---- weights ----------------------------------------------------------------------------------
    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from diffusers import AutoencoderKL

        from methods.stablesr.cfw import CFWAutoencoder
        from methods.stablesr.convert import convert_cfw_checkpoint, convert_stablesr_checkpoint
        from methods.stablesr.encoder import TimeAwareEncoder
        from methods.stablesr.sampler import StableSRSampler
        from methods.stablesr.sft import SFTUNet
        from srbench.diffusion.checkpoints import load_lightning_checkpoint
        from srbench.diffusion.prompts import PromptEmbeddingCache
        from srbench.diffusion.sd import load_sd_components, pick_dtype
        from srbench.testing import is_random_weights

        dtype = pick_dtype(device, dtype)
        parts = ("unet", "vae", "text_encoder", "tokenizer")
        sd = load_sd_components(
            self.model, dtype=torch.float32, device="cpu", parts=parts, fetch_hint="stablesr"
        )
        ckpt_path = _resolve_file(self.ckpt, CKPT_FILE)
        state, meta = load_lightning_checkpoint(ckpt_path)
        conv = convert_stablesr_checkpoint(state, layers_per_block=sd.unet.config.layers_per_block)
        del state
        unet = sd.unet
        if conv.unet:  # the full checkpoint carries the (frozen) UNet; the WebUI extract does not
            _load_strict(unet, conv.unet, f"UNet of {ckpt_path.name} into {self.model}")
        shared = next(v for k, v in conv.sft.items() if k.endswith("mlp_shared.0.weight"))
        sft_unet = SFTUNet(unet, cond_channels=shared.shape[1], hidden=shared.shape[0])
        _load_strict(sft_unet.sft, conv.sft, f"SFT layers of {ckpt_path.name}")
        encoder = TimeAwareEncoder(conv.encoder_config)
        _load_strict(encoder, conv.encoder, f"time-aware encoder of {ckpt_path.name}")

        vae: AutoencoderKL = sd.vae
        vae.disable_tiling()  # CFW hooks need one encoder/decoder pass over the whole image
        vae.disable_slicing()
        cfw = CFWAutoencoder(vae)
        vq_path = None
        if self.w > 0 or self.vqgan_ckpt is not None:
            vq_path = _resolve_file(self.vqgan_ckpt, VQGAN_FILE)
            vq_state, _ = load_lightning_checkpoint(vq_path)
            vae_sd, fusion_sd = convert_cfw_checkpoint(vq_state, len(vae.config.block_out_channels))
            del vq_state
            rrdb = {int(k.split(".")[2]) for k in fusion_sd if ".encode_enc_2." in k}
            cfw = CFWAutoencoder(vae, num_rrdb=len(rrdb) or 2)
            _load_strict(vae, vae_sd, f"VAE of {vq_path.name}")
            _load_strict(cfw.fusion_layers, fusion_sd, f"CFW of {vq_path.name}")
        elif conv.vae:  # no CFW file (w = 0): the main checkpoint's own first-stage VAE
            _load_strict(vae, conv.vae, f"VAE (first_stage_model) of {ckpt_path.name}")

        for m in (sft_unet, encoder, cfw):
            m.to(device=device, dtype=dtype).eval().requires_grad_(False)
        prompts = PromptEmbeddingCache(sd.tokenizer, sd.text_encoder.to(device))
        texts = [self.prompt] + ([self.negative_prompt] if self.negative_prompt is not None else [])
        for text in texts:
            prompts.encode(text, device=device, dtype=dtype)
        prompts.release_text_encoder()
        self.sft_unet, self.encoder, self.cfw, self.prompts = sft_unet, encoder, cfw, prompts
        self.sampler = StableSRSampler(
            sft_unet, encoder, tile_batch_size=self.tile_batch_size, blend_dtype=self.blend_dtype
        )

        files = [Path(str(self.model)), ckpt_path] + ([vq_path] if vq_path else [])
        random = any(p.exists() and is_random_weights(p) for p in files)
        step = meta.get("global_step")
        self._info = WeightsInfo(
            id=f"{self.model} + {HF_REPO}:{ckpt_path.name}" + (f" + {vq_path.name}" if vq_path else ""),
            real=not random,
            detail=f"ckpt {ckpt_path}"
            + (f" (global_step {step})" if step is not None else "")
            + (f"; CFW {vq_path}" if vq_path else "; no CFW (w=0)"),
        )
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        if self._info is None:
            raise SRBenchError("stablesr: call load() before weights_info()")
        return self._info

    # ---- the call ---------------------------------------------------------------------------------
    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        from srbench.diffusion.color import color_fix
        from srbench.diffusion.vae import from_vae_range, to_vae_range, vae_decode, vae_encode

        b, _, h, w = lr.shape
        with self.stage("encode"):
            s = max(self.input_size / min(h, w), float(self.scale))
            size = (int(h * s), int(w * s))
            up = F.interpolate(to_vae_range(lr.float()), size, mode=self.upsample_mode, align_corners=False)
            up = up.clamp(-1.0, 1.0)
            pad_h, pad_w = (-size[0]) % 32, (-size[1]) % 32
            if pad_h or pad_w:  # reflect-pad right/bottom to a multiple of 32, as the official tile script
                up = F.pad(up, (0, pad_w, 0, pad_h), mode="reflect")
            lat_h, lat_w = up.shape[-2] // 8, up.shape[-1] // 8
            if min(lat_h, lat_w) < self.tile_size:
                raise SRBenchError(
                    f"stablesr: latent {lat_h}x{lat_w} is smaller than tile_size {self.tile_size}; "
                    "use input_size >= 8 * tile_size"
                )
            # CFW needs the VAE-encoder features of the same image; w = 0 keeps none (exact plain decoder)
            capture = self.cfw.capture_features() if self.w > 0 else contextlib.nullcontext({})
            with capture as feats:
                z_lr = vae_encode(
                    self.cfw.vae, up.to(self.dtype), sample=self.posterior == "sample", generator=generator
                )
            enc_feats = dict(feats) if self.w > 0 else None
            guidance = Guidance(
                cond=self.prompts.get(self.prompt, b, device=self.device, dtype=self.dtype),
                negative=None
                if self.negative_prompt is None
                else self.prompts.get(self.negative_prompt, b, device=self.device, dtype=self.dtype),
                scale=self.cfg_scale,
            )
        with self.stage("denoise"):
            z0 = self.sampler.sample(
                z_lr.float(),
                guidance,
                steps=steps,
                tile=self.tile_size,
                stride=self.tile_stride,
                sampler=self.sampler_name,
                eta=self.eta,
                init=self.init_latent,
                generator=generator,
            )
        with self.stage("decode"):
            with self.cfw.fused(enc_feats, self.w):
                x = vae_decode(self.cfw.vae, z0).float()
            x = color_fix(x, up.float(), self.color_fix)
            out = from_vae_range(x)[:, :, : size[0], : size[1]]
            target = (h * self.scale, w * self.scale)
            if tuple(out.shape[-2:]) != target:  # enlarged beyond 4x to reach input_size: resize back
                out = F.interpolate(out, size=target, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
        return out


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the first offending keys."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise SRBenchError(f"stablesr: cannot load the {what}: {' '.join(lines[1:3])[:400]}") from exc
    if missing or unexpected:
        raise SRBenchError(
            f"stablesr: cannot load the {what}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]} (a checkpoint for another architecture?)"
        )
