"""StableSR (Wang et al., IJCV 2024, arXiv 2305.07015) as an srbench method.

Pipeline, read top to bottom (paper §3-4; official scripts ``sr_val_ddpm_text_T_vqganfin_*.py``):

1. ``encode``: LR in [0,1] → [−1,1]; upsampled and padded by the ``geometry`` (:mod:`.geometry`):
   ``upscale`` = the arbitrary-size scripts' bicubic upsampling by s = max(input_size / min(h, w),
   upscale) (short side ≥ input_size, output ≥ upscale×) and reflect padding right/bottom to a multiple
   of 32 by the ``pad`` rule; ``centre_crop`` = the 128→512 script (an input_size² image); clamp;
   z_lr = 0.18215 · posterior *sample* of the VAE encoder chosen by ``latent_vae`` (:mod:`.vaes`), with
   the CFW encoder features of the same image; the text condition is the embedding of the prompt ("" by
   default; SD 2.1 text encoder, encoded once).
2. ``denoise``: respaced DDPM-200 (or DDIM) with aggregation sampling over 64×64 latent tiles
   (:mod:`methods.stablesr.sampler`); random draws laid out by ``noise_layout`` (:mod:`.noise`).
3. ``decode``: VAE decode with CFW (weight ``w``, default 0.5), colour correction against the
   upsampled LR (AdaIN by default, as the paper's tables; the scripts default to none), [−1,1] → [0,1],
   crop the padding, and, if the input was enlarged beyond ``upscale``× (s > upscale), bicubic-resize to
   exactly upscale× (the scripts resize before cropping and return the padding too: not reproduced).

Large images (``image_tile``): as the tile scripts (``--vqgantile_size``/``--vqgantile_stride``), a padded
upsampled image larger than ``image_tile`` px on a side is cut into overlapping image patches; each goes
through steps 1-3 (encode, sampling, CFW decode, colour fix) with the generator reseeded, and the patches
are blended with StableSR's Gaussian weights before step 3's crop and resize.

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

from methods.stablesr.geometry import (
    GEOMETRIES,
    PAD_RULES,
    Plan,
    image_patches,
    plan_centre_crop,
    plan_upscale,
)
from methods.stablesr.noise import NOISE_LAYOUTS, posterior_noise, reseeded
from methods.stablesr.sampler import INIT_LATENTS, NUM_TRAIN_TIMESTEPS, SAMPLERS, Guidance
from methods.stablesr.vaes import LATENT_VAES
from methods.stablesr.weights import CKPT_FILE, HF_REPO, VQGAN_FILE
from methods.stablesr.weights import SD_REPO as SD_MODEL
from srbench.diffusion.color import COLOR_FIXES
from srbench.diffusion.tiling import blend_dtype_of
from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps, WeightsInfo, WeightsMissing
from srbench.registry import register_method

#: the tile scripts' default image patches (``--vqgantile_size 1280 --vqgantile_stride 1000``): 280 px overlap
IMAGE_TILE_OVERLAP = 280


def _resolve_file(spec: str | Path | None, default_file: str) -> Path:
    """A local file, or (``None``) the manifest's file in the Hugging Face cache (``HF_HOME``)."""
    if spec is None:
        from srbench.weights import resolve

        return resolve("stablesr", default_file)
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise WeightsMissing(f"stablesr: weights file '{spec}' does not exist")
    return path


def _positive_int(name: str, value: Any) -> int:
    """An integer option ≥ 1 (``4.0`` from a config is accepted; ``3.5`` is an error naming the option)."""
    try:
        ok = float(value).is_integer() and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SRBenchError(f"stablesr: {name} must be a positive integer, got {value!r}")
    return int(value)


@register_method("stablesr")
class StableSR(SRMethod):
    """StableSR: SD 2.1-base + time-aware encoder/SFT + CFW, DDPM-200 with aggregation sampling.

    Options: ``sampler`` ddpm|ddim, ``eta`` (DDIM), ``w`` (CFW, 0..1), ``color_fix`` adain|wavelet|none,
    ``prompt`` / ``negative_prompt`` / ``cfg_scale`` (paper §5.1, Eq. 8; s = 1 is the plain model),
    ``input_size`` (short side after upsampling is at least this), ``upsample`` bicubic|bilinear,
    ``init_latent`` noise|noised_lr, ``tile_size`` / ``tile_stride`` (latent px; default
    input_size/8 and half of it), ``tile_batch_size`` (tiles per UNet call), ``posterior`` sample|mode,
    ``blend_dtype`` float32|float64 (precision of the tile fusion of ε; float32 as the official canvas).
    The authors' scripts' pre/post-processing: ``upscale`` (integer output scale, the scripts'
    ``--upscale``; HR must be upscale × LR), ``geometry`` upscale|centre_crop and ``pad`` authors|minimal
    (:mod:`.geometry`), ``latent_vae`` cfw|ckpt (:mod:`.vaes`), ``noise_layout`` contiguous|authors
    (:mod:`.noise`), ``image_tile`` / ``image_tile_stride`` (image-space patches in px, off by default),
    ``preset`` (the run label of a ``conf/method/stablesr_*.yaml`` preset; no effect on the output).
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
        upscale: int = 4,
        geometry: str = "upscale",
        pad: str = "minimal",
        latent_vae: str = "cfw",
        noise_layout: str = "contiguous",
        image_tile: int | None = None,
        image_tile_stride: int | None = None,
        preset: str | None = None,
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
            upscale=upscale,
            geometry=geometry,
            pad=pad,
            latent_vae=latent_vae,
            noise_layout=noise_layout,
            image_tile=image_tile,
            image_tile_stride=image_tile_stride,
            preset=preset,
            **options,
        )
        checks = {
            "sampler": (sampler, SAMPLERS),
            "color_fix": (str(color_fix).lower(), (*COLOR_FIXES, "nofix")),
            "upsample": (upsample, ("bicubic", "bilinear")),
            "init_latent": (init_latent, INIT_LATENTS),
            "posterior": (posterior, ("sample", "mode")),
            "geometry": (geometry, GEOMETRIES),
            "pad": (pad, PAD_RULES),
            "latent_vae": (latent_vae, LATENT_VAES),
            "noise_layout": (noise_layout, NOISE_LAYOUTS),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise SRBenchError(f"stablesr: {name} must be one of {list(allowed)}, got '{value}'")
        if not 0.0 <= float(w) <= 1.0:
            raise SRBenchError(f"stablesr: w must be in [0, 1], got {w}")
        if int(input_size) % 64 or int(input_size) < 64:
            raise SRBenchError(f"stablesr: input_size must be a positive multiple of 64, got {input_size}")
        #: output = scale x LR (the scripts' --upscale; srbench's interface needs an integer)
        self.scale = _positive_int("upscale", upscale)
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
        self.geometry, self.pad, self.latent_vae, self.noise_layout = geometry, pad, latent_vae, noise_layout
        self.preset = preset
        self.image_tile = _positive_int("image_tile", image_tile) if image_tile else None
        self.image_tile_stride: int | None = None
        if self.image_tile is not None:
            if self.image_tile % 8 or self.image_tile < 8 * self.tile_size:
                raise SRBenchError(
                    f"stablesr: image_tile must be a multiple of 8 and at least 8 * tile_size = "
                    f"{8 * self.tile_size} px, got {self.image_tile}"
                )
            stride = image_tile_stride or self.image_tile - IMAGE_TILE_OVERLAP
            if not 0 < int(stride) <= self.image_tile:
                raise SRBenchError(f"stablesr: image_tile_stride must be in 1..image_tile, got {stride}")
            self.image_tile_stride = int(stride)
        #: the main checkpoint's encoder when z_lr comes from it and it differs from the CFW VAE's
        self.latent_encoder: Any | None = None
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
        from methods.stablesr.vaes import encoder_part, latent_encoder
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
        vq_path, lat_enc = None, None
        latent_note = "latent from the first-stage VAE"
        if self.w > 0 or self.vqgan_ckpt is not None:
            latent_note = "latent from the CFW VAE"
            vq_path = _resolve_file(self.vqgan_ckpt, VQGAN_FILE)
            vq_state, _ = load_lightning_checkpoint(vq_path)
            vae_sd, fusion_sd = convert_cfw_checkpoint(vq_state, len(vae.config.block_out_channels))
            del vq_state
            # the main checkpoint's first stage (or, for an SFT-only checkpoint, the SD folder's VAE)
            first_stage = None
            if self.latent_vae == "ckpt":
                first_stage = (
                    encoder_part(conv.vae) if conv.vae else encoder_part(vae.state_dict(), clone=True)
                )
            rrdb = {int(k.split(".")[2]) for k in fusion_sd if ".encode_enc_2." in k}
            cfw = CFWAutoencoder(vae, num_rrdb=len(rrdb) or 2)
            _load_strict(vae, vae_sd, f"VAE of {vq_path.name}")
            _load_strict(cfw.fusion_layers, fusion_sd, f"CFW of {vq_path.name}")
            if first_stage is not None:
                lat_enc = latent_encoder(vae, first_stage, vae_sd, f"{ckpt_path.name} and {vq_path.name}")
                latent_note = f"latent from the first-stage VAE of {ckpt_path.name} " + (
                    "(its own encoder: it differs from the CFW VAE's)"
                    if lat_enc is not None
                    else "(same encoder tensors as the CFW VAE: one pass)"
                )
        elif conv.vae:  # no CFW file (w = 0): the main checkpoint's own first-stage VAE
            _load_strict(vae, conv.vae, f"VAE (first_stage_model) of {ckpt_path.name}")

        for m in (sft_unet, encoder, cfw, *([lat_enc] if lat_enc is not None else [])):
            m.to(device=device, dtype=dtype).eval().requires_grad_(False)
        prompts = PromptEmbeddingCache(sd.tokenizer, sd.text_encoder.to(device))
        texts = [self.prompt] + ([self.negative_prompt] if self.negative_prompt is not None else [])
        for text in texts:
            prompts.encode(text, device=device, dtype=dtype)
        prompts.release_text_encoder()
        self.sft_unet, self.encoder, self.cfw, self.prompts = sft_unet, encoder, cfw, prompts
        self.latent_encoder = lat_enc
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
            + (f"; CFW {vq_path}" if vq_path else "; no CFW (w=0)")
            + f"; {latent_note}",
        )
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        if self._info is None:
            raise SRBenchError("stablesr: call load() before weights_info()")
        return self._info

    # ---- the call ---------------------------------------------------------------------------------
    def plan(self, h: int, w: int) -> Plan:
        """The sizes of a call on an ``h × w`` LR (upsampled, padded, latent, output)."""
        if self.geometry == "centre_crop":
            return plan_centre_crop(h, w, input_size=self.input_size, upscale=self.scale)
        return plan_upscale(h, w, input_size=self.input_size, upscale=self.scale, pad=self.pad)

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        from srbench.diffusion.vae import from_vae_range, to_vae_range

        _, _, h, w = lr.shape
        with self.stage("encode"):
            plan = self.plan(h, w)
            up = F.interpolate(
                to_vae_range(lr.float()), plan.size, mode=self.upsample_mode, align_corners=False
            )
            up = up.clamp(-1.0, 1.0)
            if any(plan.pad):  # reflect-pad right/bottom to a multiple of 32, as the scripts
                up = F.pad(up, (0, plan.pad[1], 0, plan.pad[0]), mode="reflect")
        tile = self.image_tile
        if tile is not None and max(up.shape[-2:]) > tile:
            x = self._restore_patches(up, steps, generator)
        else:
            x = self._restore(up, steps, generator)
        with self.stage("decode"):
            out = from_vae_range(x)[:, :, : plan.size[0], : plan.size[1]]
            if tuple(out.shape[-2:]) != plan.output:  # enlarged beyond upscale x: resize back
                out = F.interpolate(out, size=plan.output, mode="bicubic", align_corners=False).clamp(
                    0.0, 1.0
                )
        return out

    def _restore_patches(
        self, up: torch.Tensor, steps: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The tile scripts' image-space tiling: every patch through the whole pipeline with the seed
        reset (``seed_everything`` per patch), blended with StableSR's Gaussian weights
        (``ImageSpliterTh.update_gaussian``: variance 0.01, x centred at (W-1)/2, y at H/2)."""
        from srbench.diffusion.tiling import TileAccumulator, gaussian_weights_mixture

        assert self.image_tile is not None and self.image_tile_stride is not None
        b, c, height, width = up.shape
        acc = TileAccumulator((b, c, height, width), dtype=self.blend_dtype, device=up.device)
        weights: dict[tuple[int, int], torch.Tensor] = {}
        for top, left, ph, pw in image_patches(height, width, self.image_tile, self.image_tile_stride):
            x = self._restore(up[:, :, top : top + ph, left : left + pw], steps, reseeded(generator))
            if (ph, pw) not in weights:
                weights[ph, pw] = gaussian_weights_mixture(ph, pw, device=up.device)
            acc.add(x, top, left, weights[ph, pw])
        return acc.result().float()

    def _restore(self, up: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        """Encode, sample and decode one (padded, upsampled) image in [−1,1]; colour-fixed, in [−1,1]."""
        from srbench.diffusion.color import color_fix
        from srbench.diffusion.vae import vae_decode

        b = up.shape[0]
        with self.stage("encode"):
            lat_h, lat_w = up.shape[-2] // 8, up.shape[-1] // 8
            if min(lat_h, lat_w) < self.tile_size:
                raise SRBenchError(
                    f"stablesr: latent {lat_h}x{lat_w} is smaller than tile_size {self.tile_size}; "
                    "use input_size >= 8 * tile_size"
                )
            # CFW needs the VAE-encoder features of the same image; w = 0 keeps none (exact plain decoder)
            capture = self.cfw.capture_features() if self.w > 0 else contextlib.nullcontext({})
            x = up.to(self.dtype)
            if self.latent_encoder is None:  # one pass: z_lr and the CFW features from the same encoder
                with capture as feats:
                    z_lr = self._latent(self.cfw.vae, x, generator)
            else:  # the tile/DDIM scripts: z_lr from the main checkpoint's VAE, features from the CFW VAE
                z_lr = self._latent(self.latent_encoder, x, generator)
                with capture as feats:
                    if self.w > 0:
                        self.cfw.vae.encoder(x)
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
                noise_layout=self.noise_layout,
            )
        with self.stage("decode"):
            with self.cfw.fused(enc_feats, self.w):
                out = vae_decode(self.cfw.vae, z0).float()
            return color_fix(out, up.float(), self.color_fix)

    def _latent(self, vae: Any, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Scaled latent z_lr = 0.18215 · (posterior sample, or mode) of ``vae``'s encoder."""
        from srbench.diffusion.vae import latent_scale, vae_encode

        if self.posterior == "mode" or self.noise_layout == "contiguous":
            return vae_encode(vae, x, sample=self.posterior == "sample", generator=generator)
        # the scripts: mean + std · n with n drawn on the CPU generator (ldm DiagonalGaussianDistribution)
        scale, shift = latent_scale(vae)
        dist = vae.encode(x).latent_dist
        n = posterior_noise(dist.mean.shape, generator, dist.mean.device, self.noise_layout)
        return (dist.mean.float() + dist.std.float() * n - shift) * scale


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
