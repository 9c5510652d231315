"""Run the authors' own inference code beside srbench, on one shared set of weights (for vs_official.py).

The authors' repositories are never vendored: the user clones them and passes the folder.  What this
module adds to a checkout, and nothing more (see benchmarks/README.md, "srbench against the authors'
code"):

* **import isolation**: the checkout's top-level packages (``ldm``, ``utils``, ``model``, its own
  ``basicsr`` and, for InvSR, its vendored ``diffusers`` 0.32) are imported under their own names while
  the runner is built, then srbench's modules of the same names are put back, so both live in one
  process (:func:`checkout_imports`);
* **stubs for training-only or unavailable imports**: ``pytorch_lightning`` (``LightningModule`` =
  ``nn.Module`` with a ``device`` property), ``taming``'s quantizer, ``kornia``, ``loguru``; ``open_clip``
  becomes a stand-in built on the same torch block OpenCLIP uses (``nn.MultiheadAttention`` + GELU
  MLP), holding the SD folder's text encoder weights, with SD 2's tokenizer (pads with id 0, as
  ``open_clip.tokenize``); the removed ``torchvision.transforms.functional_tensor`` and transformers'
  ``FLAX_WEIGHTS_NAME`` are aliased;
* **CPU mapping**: the hard-coded ``.cuda()`` / ``torch.float16`` / ``device="cuda"`` become the
  benchmark device and float32 (half-precision convolutions are slow or missing on CPU);
  training-only config parts (the VQGAN's LPIPS discriminator loss) become ``torch.nn.Identity``;
* **shared weights**: the official networks are built on the meta device and then *assigned* the
  srbench modules' tensors (key names converted by srbench's own diffusers→ldm converters), so the
  large weights exist once in memory; tensors that a layout change forces to copy (a fused qkv) are
  small, and the text tower is the SD folder's (srbench frees its own after encoding its prompt);
* **the script's loop body** where the authors' entry point is a CLI that reads files
  (StableSR's ``sr_val_ddpm_text_T_vqganfin_old.py`` main loop), re-expressed line by line; InvSR's
  ``InvSamplerSR.sample_func`` and DoSSR's ``scripts/inference.py:process`` are called as they are.

Each runner is called as ``runner(lr, seed, steps) -> (B,3,4h,4w) float tensor in [0,1]`` (``lr`` in [0,1]);
it seeds the global torch RNG with ``seed`` (the authors' code draws from it), and srbench is called
with ``torch.Generator().manual_seed(seed)``: on CPU both draw the same numbers in the same order where
the two codes draw in the same order (InvSR, DoSSR; StableSR after the one discarded draw of the script,
see :class:`OfficialStableSR`).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# ---- checkouts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    repo: str  # GitHub owner/name
    tested: str  # the commit this harness was written against
    needs: tuple[str, ...]  # files the harness uses (relative to the checkout)


CHECKOUTS: dict[str, Checkout] = {
    "invsr": Checkout(
        "zsyOAOA/InvSR",
        "609788c",
        (
            "sampler_invsr.py",
            "configs/sample-sd-turbo.yaml",
            "src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion_inversion_sr.py",
        ),
    ),
    "stablesr": Checkout(
        "IceClear/StableSR",
        "398ee93",
        (
            "scripts/sr_val_ddpm_text_T_vqganfin_old.py",
            "configs/stableSRNew/v2-finetune_text_T_512.yaml",
            "configs/autoencoder/autoencoder_kl_64x64x4_resi.yaml",
            "ldm/models/diffusion/ddpm.py",
        ),
    ),
    "dossr": Checkout(
        "AMD-AIG-AIMA/DoSSR",
        "f637805",
        ("scripts/inference.py", "configs/model/cldm_v21.yaml", "model/shift_sampler.py", "model/cldm.py"),
    ),
}


class CheckoutError(SystemExit):
    """A missing or incomplete checkout: the message says what to clone where (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = 2
        self.message = message

    def __str__(self) -> str:
        return self.message


def require_checkout(method: str, path: str | Path | None) -> Path:
    """The checkout folder for ``method``, or :class:`CheckoutError` naming the clone command."""
    if method not in CHECKOUTS:
        raise CheckoutError(f"vs_official: no harness for '{method}'; choose from {sorted(CHECKOUTS)}")
    spec = CHECKOUTS[method]
    clone = f"git clone https://github.com/{spec.repo} <dir> (tested at {spec.tested})"
    if path is None:
        raise CheckoutError(
            f"vs_official: {method} needs a local checkout of the authors' code: {clone}, then pass "
            "--checkout <dir>"
        )
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckoutError(f"vs_official: the {method} checkout '{root}' does not exist; {clone}")
    missing = [f for f in spec.needs if not (root / f).is_file()]
    if missing:
        raise CheckoutError(
            f"vs_official: '{root}' is not a checkout of {spec.repo}: missing {missing}; {clone}"
        )
    return root


# ---- importing a checkout next to srbench ---------------------------------------------------------


def _top_level_names(root: Path) -> set[str]:
    names = {p.stem for p in root.glob("*.py")}
    names |= {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    return names


def _owned(name: str, tops: set[str]) -> bool:
    return name.split(".", 1)[0] in tops


@contextlib.contextmanager
def checkout_imports(
    root: Path, extra_paths: tuple[Path, ...] = (), stubs: Mapping[str, types.ModuleType] | None = None
) -> Iterator[None]:
    """Inside: ``import ldm`` etc. resolve to the checkout (and ``extra_paths``), ``stubs`` stand in
    for absent packages.  On exit srbench's own modules of the same names are back in ``sys.modules``;
    the checkout's stay alive through the objects that were built."""
    paths = [root, *extra_paths]
    tops = set().union(*(_top_level_names(p) for p in paths)) | set(stubs or {})
    tops |= {n.split(".", 1)[0] for n in (stubs or {})}
    saved = {k: v for k, v in sys.modules.items() if _owned(k, tops)}
    for k in saved:
        del sys.modules[k]
    sys.modules.update(stubs or {})
    old_path = list(sys.path)
    sys.path[:0] = [str(p) for p in paths]
    try:
        yield
    finally:
        sys.path[:] = old_path
        for k in [k for k in sys.modules if _owned(k, tops)]:
            del sys.modules[k]
        sys.modules.update(saved)


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


class _LightningModule(nn.Module):
    """``pytorch_lightning.LightningModule`` reduced to what inference touches."""

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def log(self, *args: Any, **kwargs: Any) -> None:  # training only
        pass


def lightning_stubs() -> dict[str, types.ModuleType]:
    """``pytorch_lightning`` (training framework: only its base class and decorators are imported)."""

    def identity(fn: Callable) -> Callable:
        return fn

    class _Callback:
        pass

    pl = _module(
        "pytorch_lightning",
        LightningModule=_LightningModule,
        seed_everything=lambda seed=None, **kw: torch.manual_seed(int(seed or 0)),
        Callback=_Callback,
    )
    utilities = _module("pytorch_lightning.utilities", rank_zero_only=identity)
    mods = {
        "pytorch_lightning": pl,
        "pytorch_lightning.utilities": utilities,
        "pytorch_lightning.utilities.distributed": _module(
            "pytorch_lightning.utilities.distributed", rank_zero_only=identity
        ),
        "pytorch_lightning.utilities.rank_zero": _module(
            "pytorch_lightning.utilities.rank_zero", rank_zero_only=identity
        ),
        "pytorch_lightning.utilities.types": _module("pytorch_lightning.utilities.types", STEP_OUTPUT=Any),
        "pytorch_lightning.callbacks": _module(
            "pytorch_lightning.callbacks", ModelCheckpoint=_Callback, Callback=_Callback
        ),
    }
    pl.utilities = utilities  # type: ignore[attr-defined]
    return mods


def misc_stubs() -> dict[str, types.ModuleType]:
    """taming's quantizer (VQ models, unused), kornia / albumentations (training augmentations),
    sklearn (feature plots), loguru (logging)."""
    import logging

    import torchvision.transforms.functional as tvf

    class _Unused(nn.Module):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("training-only class stubbed by benchmarks/official_harness.py")

    return {
        "taming": _module("taming"),
        "taming.modules": _module("taming.modules"),
        "taming.modules.vqvae": _module("taming.modules.vqvae"),
        "taming.modules.vqvae.quantize": _module("taming.modules.vqvae.quantize", VectorQuantizer2=_Unused),
        "kornia": _module("kornia"),
        "albumentations": _module("albumentations"),
        "sklearn": _module("sklearn"),  # feature visualisation (PCA) in StableSR's ddpm.py
        "sklearn.decomposition": _module("sklearn.decomposition", PCA=_Unused),
        "loguru": _module("loguru", logger=logging.getLogger("official")),
        # removed in torchvision 0.17; the authors' vendored basicsr imports rgb_to_grayscale from it
        "torchvision.transforms.functional_tensor": tvf,
    }


# ---- open_clip stand-in ----------------------------------------------------------------------------


class _OpenCLIPBlock(nn.Module):
    """OpenCLIP's ``ResidualAttentionBlock`` (pre-LN, torch ``nn.MultiheadAttention``, GELU MLP)."""

    def __init__(self, width: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, mlp))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(mlp, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class OpenCLIPText(nn.Module):
    """The text half of an OpenCLIP model, as FrozenOpenCLIPEmbedder reads it (token/positional
    embeddings, ``transformer.resblocks``, ``ln_final``, a causal ``attn_mask``)."""

    def __init__(self, vocab: int, width: int, heads: int, layers: int, mlp: int, ctx: int = 77) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(ctx, width))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(_OpenCLIPBlock(width, heads, mlp) for _ in range(layers))
        self.transformer.grad_checkpointing = False
        self.ln_final = nn.LayerNorm(width)
        self.register_buffer("attn_mask", torch.full((ctx, ctx), float("-inf")).triu_(1), persistent=False)
        self.visual = nn.Identity()


def open_clip_stub(text_config: Any, tokenizer: Any) -> types.ModuleType:
    """``open_clip`` with ``create_model_and_transforms`` (a :class:`OpenCLIPText` with one block more
    than the SD text encoder: SD 2 reads the penultimate layer of OpenCLIP's 24) and ``tokenize``."""

    def create_model_and_transforms(arch: str, device: Any = None, pretrained: Any = None, **kw: Any):
        model = OpenCLIPText(
            text_config.vocab_size,
            text_config.hidden_size,
            text_config.num_attention_heads,
            text_config.num_hidden_layers + 1,
            text_config.intermediate_size,
            text_config.max_position_embeddings,
        )
        return model, None, None

    def tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = tokenizer(texts, padding="max_length", max_length=context_length, truncation=True)
        return torch.tensor(ids["input_ids"], dtype=torch.long)

    return _module("open_clip", create_model_and_transforms=create_model_and_transforms, tokenize=tokenize)


def openclip_text_state(text_encoder: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The SD text encoder's weights in OpenCLIP names (srbench's DoSSR converter), plus the unused
    last block (seeded random: the penultimate-layer encoders never run it)."""
    from methods.dossr.convert import clip_text_to_openclip
    from srbench.testing.full_size import fill_random_

    state = clip_text_to_openclip(text_encoder.state_dict(), prefix=prefix)
    cfg = text_encoder.config
    last = fill_random_(_OpenCLIPBlock(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size), 7)
    n = cfg.num_hidden_layers
    state.update({f"{prefix}transformer.resblocks.{n}.{k}": v for k, v in last.state_dict().items()})
    return state


# ---- shared weights ----------------------------------------------------------------------------------


@contextlib.contextmanager
def meta_params() -> Iterator[None]:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def assign_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor], what: str, *, ignore: tuple[str, ...] = ()
) -> nn.Module:
    """``load_state_dict(assign=True)``: the module's parameters *become* ``state``'s tensors (shared
    storage).  Every parameter must be covered (buffers, e.g. schedules, keep their computed values;
    names starting with ``ignore`` may be left out)."""
    params = {n for n, _ in module.named_parameters()}
    missing, unexpected = module.load_state_dict(dict(state), strict=False, assign=True)
    missing = [k for k in missing if k in params and not k.startswith(ignore)]
    if missing or unexpected:
        raise RuntimeError(
            f"{what}: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected {unexpected[:4]}"
        )
    left = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta]
    if left:
        raise RuntimeError(f"{what}: tensors left on the meta device: {left[:4]}")
    return module.eval().requires_grad_(False)


def shared_fraction(a: nn.Module, b: nn.Module) -> float:
    """Share of ``a``'s parameter bytes whose storage ``b`` also uses (1.0 = no copy)."""
    ptrs = {p.untyped_storage().data_ptr() for p in b.parameters()}
    total = sum(p.numel() * p.element_size() for p in a.parameters())
    shared = sum(
        p.numel() * p.element_size() for p in a.parameters() if p.untyped_storage().data_ptr() in ptrs
    )
    return shared / max(total, 1)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The authors' prints and tqdm bars go to /dev/null (they still run: they are part of the code)."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def _text_encoder_of(model_folder: str) -> tuple[nn.Module, Any]:
    from transformers import CLIPTextModel, CLIPTokenizer

    te = CLIPTextModel.from_pretrained(model_folder, subfolder="text_encoder", local_files_only=True)
    tok = CLIPTokenizer.from_pretrained(model_folder, subfolder="tokenizer", local_files_only=True)
    return te.eval().requires_grad_(False), tok


# ---- InvSR -------------------------------------------------------------------------------------------


class _CPUTorch(types.ModuleType):
    """``torch`` for a module whose code hard-codes fp16 (``x.type(torch.float16)``): float16 reads as
    float32 on CPU; everything else is torch's."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__("torch")
        self._dtype = dtype

    def __getattr__(self, name: str) -> Any:
        if name == "float16":
            return self._dtype
        return getattr(torch, name)


def np_config(sampler: Any) -> dict[str, Any]:
    cfg = sampler.noise_predictor.config.to_dict()
    n = len(cfg["block_out_channels"])
    return {**cfg, "up_block_types": ["AttnUpBlock2D"] * n}  # unused (no decoder), but required


class OfficialInvSR:
    """``sampler_invsr.InvSamplerSR.sample_func`` with the vendored ``StableDiffusionInvEnhancePipeline``
    (diffusers 0.32.0.dev0) and ``NoisePredictor``, on srbench's UNet / VAE / f_w tensors."""

    def __init__(self, root: Path, method: Any, device: torch.device) -> None:
        import transformers.utils
        from omegaconf import OmegaConf

        if not hasattr(transformers.utils, "FLAX_WEIGHTS_NAME"):  # dropped by transformers 5
            transformers.utils.FLAX_WEIGHTS_NAME = "flax_model.msgpack"  # type: ignore[attr-defined]
        sampler = method.sampler
        with checkout_imports(root, (root / "src",), {**misc_stubs()}):
            vd = importlib.import_module("diffusers")
            pipe_mod = importlib.import_module(
                "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inversion_sr"
            )
            np_mod = importlib.import_module("diffusers.models.autoencoders.autoencoder_kl")
            sampler_mod = importlib.import_module("sampler_invsr")
            cfg = OmegaConf.load(root / "configs/sample-sd-turbo.yaml")
            with meta_params():
                unet = vd.UNet2DConditionModel.from_config(dict(sampler.unet.config))
                vae = vd.AutoencoderKL.from_config(dict(sampler.vae.config))
                # the yaml's model_start params, with srbench's values (equal for the released size)
                params = {**OmegaConf.to_container(cfg.model_start.params), **np_config(sampler)}
                f_w = np_mod.NoisePredictor(**params)
            scheduler = vd.EulerDiscreteScheduler.from_config(dict(sampler.sd.scheduler.config))
        assign_weights(unet, sampler.unet.state_dict(), "InvSR UNet")
        assign_weights(vae, sampler.vae.state_dict(), "InvSR VAE")
        assign_weights(f_w, sampler.noise_predictor.state_dict(), "InvSR noise predictor")
        text_encoder, tokenizer = _text_encoder_of(method.model)
        text_encoder.to(dtype=next(sampler.unet.parameters()).dtype)  # build_model: all fp16 on GPU
        pipe = pipe_mod.StableDiffusionInvEnhancePipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        # BaseSampler.build_model: tiled VAE (1024-px threshold, never reached at 512), f_w attached
        if cfg.tiled_vae:
            pipe.vae.enable_tiling()
            pipe.vae.tile_latent_min_size = cfg.latent_tiled_size
            pipe.vae.tile_sample_min_size = cfg.sample_tiled_size
        pipe.start_noise_predictor = f_w
        pipe.to(device)
        # inference_invsr.py get_configs for srbench's settings (steps are set per call)
        cfg.color_fix = "" if method.color_fix in (None, "none") else method.color_fix
        cfg.basesr.chopping.pch_size = int(method.chopping["chopping_size"])
        cfg.basesr.chopping.extra_bs = int(method.chopping["chopping_batch_size"])
        self.configs = cfg
        self.method = method
        self.sampler = sampler_mod.InvSamplerSR.__new__(sampler_mod.InvSamplerSR)  # no build_model()
        self.sampler.configs = cfg
        self.sampler.sd_pipe = pipe
        sampler_mod.torch = _CPUTorch(torch.float32) if device.type == "cpu" else torch
        self.modules = {"unet": unet, "vae": vae, "noise_predictor": f_w, "text_encoder": text_encoder}

    def __call__(self, lr: torch.Tensor, seed: int, steps: int) -> torch.Tensor:
        self.configs.timesteps = list(self.method.timesteps_for(steps))
        _seed(seed)
        out = self.sampler.sample_func(lr)  # numpy (B,H,W,3) in [0,1]
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    def shared_with(self) -> dict[str, tuple[nn.Module, nn.Module]]:
        s = self.method.sampler
        return {
            "unet": (self.modules["unet"], s.unet),
            "vae": (self.modules["vae"], s.vae),
            "noise_predictor": (self.modules["noise_predictor"], s.noise_predictor),
        }


# ---- ldm configs from srbench's -------------------------------------------------------------------


def ldm_unet_params(unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """``openaimodel.UNetModel`` params of a diffusers UNet config (SD 2.1 gives the authors' yaml)."""
    widths = list(unet_config["block_out_channels"])
    heads = unet_config["attention_head_dim"]
    heads = [heads] * len(widths) if isinstance(heads, int) else list(heads)
    head_channels = {w // h for w, h in zip(widths, heads, strict=True)}
    if len(head_channels) != 1:
        raise ValueError(f"ldm needs one num_head_channels; the UNet has {head_channels}")
    attn = [2**i for i, t in enumerate(unet_config["down_block_types"]) if t.startswith("CrossAttn")]
    return {
        "in_channels": unet_config["in_channels"],
        "out_channels": unet_config["out_channels"],
        "model_channels": widths[0],
        "channel_mult": [w // widths[0] for w in widths],
        "num_res_blocks": unet_config["layers_per_block"],
        "attention_resolutions": sorted(attn, reverse=True),
        "num_head_channels": head_channels.pop(),
        "context_dim": unet_config["cross_attention_dim"],
        "use_linear_in_transformer": bool(unet_config["use_linear_projection"]),
        "transformer_depth": 1,
    }


def ldm_ddconfig(vae_config: Mapping[str, Any]) -> dict[str, Any]:
    """ldm VAE ``ddconfig`` of a diffusers ``AutoencoderKL`` config."""
    widths = list(vae_config["block_out_channels"])
    return {
        "ch": widths[0],
        "ch_mult": [w // widths[0] for w in widths],
        "num_res_blocks": vae_config["layers_per_block"],
        "z_channels": vae_config["latent_channels"],
    }


def _set(cfg: Any, values: Mapping[str, Any]) -> None:
    for k, v in values.items():
        cfg[k] = v


# ---- StableSR ------------------------------------------------------------------------------------


class OfficialStableSR:
    """StableSR's ``sr_val_ddpm_text_T_vqganfin_old.py`` (the 128→512 script: bilinear ``Resize`` +
    ``CenterCrop`` to 512, x_T ~ N(0, I), DDPM-N with the respaced schedule, CFW decode, colour fix)
    on ``LatentDiffusionSRTextWT`` + ``AutoencoderKLResi`` built from the authors' yaml configs.

    Differences from the script, all outside the timed networks: the image is a tensor (no file read),
    on CPU ``--precision full`` (fp32; the script's default autocast is CUDA only), and its discarded draws
    (``noise = torch.randn_like(init_latent)`` and its ``q_sample_respace``, then ``x_T = None``) are
    left out so that both codes draw the same noise (they cost microseconds)."""

    def __init__(self, root: Path, method: Any, device: torch.device) -> None:
        from omegaconf import OmegaConf

        from methods.stablesr.convert import cfw_to_ldm, encoder_to_ldm, unet_to_ldm, vae_to_ldm

        if method.upsample_mode != "bilinear" or method.init_latent != "noise":
            raise ValueError("compare with srbench's stablesr upsample=bilinear, init_latent=noise (script)")
        text_encoder, tokenizer = _text_encoder_of(method.model)
        unet = method.sft_unet.unet
        vae = method.cfw.vae
        stubs = {
            **lightning_stubs(),
            **misc_stubs(),
            "open_clip": open_clip_stub(text_encoder.config, tokenizer),
            # SD 1.x's CLIP-L encoder patch (imports a class transformers 5 no longer has); unused by SD 2
            "ldm.modules.encoders.transformer_utils": _module(
                "ldm.modules.encoders.transformer_utils", CLIPTextTransformer_M=None
            ),
        }
        with checkout_imports(root, (), stubs):
            ldm_util = importlib.import_module("ldm.util")
            script = importlib.import_module("scripts.sr_val_ddpm_text_T_vqganfin_old")
            self.colorfix = importlib.import_module("scripts.wavelet_color_fix")
            cfg = OmegaConf.load(root / "configs/stableSRNew/v2-finetune_text_T_512.yaml").model
            p = cfg.params
            p.image_size = method.input_size  # the sampler's latent is image_size // 8
            _set(p.unet_config.params, ldm_unet_params(unet.config))
            p.unet_config.params.semb_channels = method.encoder.config.out_channels
            enc = method.encoder.config
            _set(
                p.structcond_stage_config.params,
                {
                    "in_channels": enc.in_channels,
                    "model_channels": enc.model_channels,
                    "out_channels": enc.out_channels,
                    "num_res_blocks": enc.num_res_blocks,
                    "attention_resolutions": list(enc.attention_resolutions),
                    "channel_mult": list(enc.channel_mult),
                    "num_heads": enc.num_heads,
                },
            )
            _set(p.first_stage_config.params.ddconfig, ldm_ddconfig(vae.config))
            p.cond_stage_config.params.device = str(device)  # CPU mapping (default "cuda")
            vq_cfg = OmegaConf.load(root / "configs/autoencoder/autoencoder_kl_64x64x4_resi.yaml").model
            vq_cfg.params.lossconfig = {"target": "torch.nn.Identity"}  # training-only LPIPS/GAN loss
            _set(vq_cfg.params.ddconfig, ldm_ddconfig(vae.config))
            with meta_params(), quiet():
                model = ldm_util.instantiate_from_config(cfg)
                vq_model = ldm_util.instantiate_from_config(vq_cfg)
        levels = len(vae.config.block_out_channels)
        state = unet_to_ldm(unet.state_dict(), method.sft_unet.sft.state_dict(), unet.config.layers_per_block)
        state.update(encoder_to_ldm(method.encoder.state_dict(), enc))
        state.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae.state_dict(), levels).items()})
        state.update(openclip_text_state(text_encoder, "cond_stage_model.model."))
        del text_encoder
        assign_weights(model, state, "StableSR LatentDiffusionSRTextWT")
        vq_state = vae_to_ldm(vae.state_dict(), levels)
        vq_state.update(cfw_to_ldm(method.cfw.fusion_layers.state_dict()))
        assign_weights(vq_model, vq_state, "StableSR AutoencoderKLResi")
        vq_model.decoder.fusion_w = method.w
        self.model, self.vq_model = model.to(device), vq_model.to(device)
        self.script, self.method, self.device, self.steps = script, method, device, None

    def _schedule(self, steps: int) -> None:
        """The script's schedule set-up (before its loop): respaced DDPM betas, original timesteps."""
        import numpy as np

        model = self.model
        model.register_schedule(
            given_betas=None,
            beta_schedule="linear",
            timesteps=1000,
            linear_start=0.00085,
            linear_end=0.0120,
            cosine_s=8e-3,
        )
        model.num_timesteps = 1000
        use_timesteps = set(self.script.space_timesteps(1000, [steps]))
        last, new_betas = 1.0, []
        for i, alpha_cumprod in enumerate(model.alphas_cumprod):
            if i in use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
        betas = np.array([b.data.cpu().numpy() for b in new_betas])
        model.register_schedule(given_betas=betas, timesteps=len(new_betas))
        model.num_timesteps = 1000
        model.ori_timesteps = sorted(use_timesteps)
        model.to(self.device)
        self.steps = steps

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor, seed: int, steps: int) -> torch.Tensor:
        import torchvision

        if steps != self.steps:
            self._schedule(steps)
        model, vq_model, size = self.model, self.vq_model, self.method.input_size
        transform = torchvision.transforms.Compose(
            [torchvision.transforms.Resize(size), torchvision.transforms.CenterCrop(size)]
        )
        _seed(seed)
        # the script's default --precision autocast (CUDA only; fp32 on CPU)
        amp = torch.autocast("cuda") if self.device.type == "cuda" else contextlib.nullcontext()
        with quiet(), amp:  # quiet: the sampler's tqdm bar
            init_image = transform(2.0 * lr.to(self.device) - 1.0).clamp(-1, 1)
            init_latent_generator, enc_fea_lq = vq_model.encode(init_image)
            init_latent = model.get_first_stage_encoding(init_latent_generator)
            semantic_c = model.cond_stage_model([""] * init_image.size(0))
            samples, _ = model.sample(
                cond=semantic_c,
                struct_cond=init_latent,
                batch_size=init_image.size(0),
                timesteps=steps,
                time_replace=steps,
                x_T=None,
                return_intermediates=True,
            )
            x_samples = vq_model.decode(samples * 1.0 / model.scale_factor, enc_fea_lq)
            fix = self.method.color_fix
            if fix == "adain":
                x_samples = self.colorfix.adaptive_instance_normalization(x_samples, init_image)
            elif fix == "wavelet":
                x_samples = self.colorfix.wavelet_reconstruction(x_samples, init_image)
            return torch.clamp((x_samples + 1.0) / 2.0, min=0.0, max=1.0)

    def shared_with(self) -> dict[str, tuple[nn.Module, nn.Module]]:
        m = self.method
        return {
            "unet": (self.model.model.diffusion_model, m.sft_unet),
            "encoder": (self.model.structcond_stage_model, m.encoder),
            "vae+cfw": (self.vq_model, m.cfw),
        }


# ---- DoSSR ---------------------------------------------------------------------------------------


def dossr_text_state(ckpt: str | Path, text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The OpenCLIP text tower srbench used: the checkpoint's own (official layout) when it has one,
    else the SD folder's text encoder converted (as srbench's DoSSR.load decides)."""
    from methods.dossr.convert import TEXT_KEY, load_official_checkpoint

    state = load_official_checkpoint(ckpt)
    text = {k: v for k, v in state.items() if k.startswith(TEXT_KEY)}
    if not text:
        return openclip_text_state(text_encoder, TEXT_KEY)
    skip = (TEXT_KEY + "text_projection", TEXT_KEY + "logit_scale")  # CLIP's contrastive head: unused
    return {k: v for k, v in text.items() if not k.startswith(skip)}


class OfficialDoSSR:
    """DoSSR's ``scripts/inference.py``: ``main()``'s per-image body (PIL x4 bicubic, ``auto_resize``,
    ``pad``) and its ``process()`` as they are (RRDBNet pre-restoration, ``SpacedSampler.
    shift_sample_3_order``, wavelet colour fix, uint8 output), on ``ControlLDM`` built from
    ``configs/model/cldm_v21.yaml``.  File reading/writing is left out; ``process`` returns 8-bit
    images, so srbench's output is compared after the same ``(x*255).astype(uint8)``."""

    def __init__(self, root: Path, method: Any, device: torch.device) -> None:
        from omegaconf import OmegaConf

        from methods.dossr.convert import (
            COND_ENCODER_KEY,
            controlnet_to_ldm,
            rrdbnet_to_official,
            unet_to_ldm,
            vae_to_ldm,
        )
        from srbench.archs.rrdbnet import infer_rrdbnet_arch

        if method.order != 3:
            raise ValueError("scripts/inference.py runs shift_sample_3_order: compare with srbench order=3")
        text_encoder, tokenizer = _text_encoder_of(method.model)
        unet, controlnet = method.denoiser.unet, method.denoiser.controlnet
        stubs = {
            **lightning_stubs(),
            **misc_stubs(),
            "open_clip": open_clip_stub(text_encoder.config, tokenizer),
        }
        with checkout_imports(root, (), stubs):
            common = importlib.import_module("utils.common")
            self.image = importlib.import_module("utils.image")
            self.script = importlib.import_module("scripts.inference")
            cfg = OmegaConf.load(root / "configs/model/cldm_v21.yaml")
            p = cfg.params
            ldm = ldm_unet_params(unet.config)
            _set(p.unet_config.params, ldm)
            _set(p.control_stage_config.params, {k: v for k, v in ldm.items() if k != "out_channels"})
            _set(p.first_stage_config.params.ddconfig, ldm_ddconfig(method.vae.config))
            _set(p.preprocess_config.params, infer_rrdbnet_arch(method.preprocess.state_dict()))
            with meta_params(), quiet():
                model = common.instantiate_from_config(cfg)
        layers = unet.config.layers_per_block
        state = unet_to_ldm(unet.state_dict(), layers)
        state.update(controlnet_to_ldm(controlnet.state_dict(), layers))
        state.update(vae_to_ldm(method.vae.state_dict()))
        state.update(vae_to_ldm(method.cond_encoder.state_dict(), prefix=COND_ENCODER_KEY))
        state.update(rrdbnet_to_official(method.preprocess.state_dict()))
        state.update(dossr_text_state(method.ckpt, text_encoder))
        del text_encoder
        assign_weights(model, state, "DoSSR ControlLDM")
        self.model = model.to(device)
        self.method = method

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor, seed: int, steps: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        if lr.shape[0] != 1:
            raise ValueError("scripts/inference.py processes one image at a time")
        lq_array = (lr[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        _seed(seed)
        with quiet():
            # main(): --sr_scale 4, not --tiled
            lq = Image.fromarray(lq_array)
            lq = lq.resize(tuple(math.ceil(x * 4) for x in lq.size), Image.BICUBIC)
            lq_resized = self.image.auto_resize(lq, 512)
            x = self.image.pad(np.array(lq_resized), scale=64)
            preds = self.script.process(
                self.model,
                [x],
                [lq_array],
                steps=steps,
                strength=1,
                color_fix_type=self.method.color_fix,
                tiled=False,
                tile_size=512,
                tile_stride=256,
            )
            pred = preds[0][: lq_resized.height, : lq_resized.width, :]
        return torch.from_numpy(pred.copy()).permute(2, 0, 1)[None].float() / 255.0

    @staticmethod
    def quantize(sr: torch.Tensor) -> torch.Tensor:
        """srbench's output as ``process()`` returns images: ``(x*255).clip(0,255).astype(uint8)``."""
        return (sr.clamp(0, 1) * 255).floor() / 255.0

    def shared_with(self) -> dict[str, tuple[nn.Module, nn.Module]]:
        m = self.method
        return {
            "unet": (self.model.model.diffusion_model, m.denoiser.unet),
            "controlnet": (self.model.control_model, m.denoiser.controlnet),
            "vae": (self.model.first_stage_model, m.vae),
            "cond_encoder": (self.model.cond_encoder, m.cond_encoder),
            "preprocess": (self.model.preprocess_model, m.preprocess),
        }


RUNNERS: dict[str, type] = {"invsr": OfficialInvSR, "stablesr": OfficialStableSR, "dossr": OfficialDoSSR}


# ---- small random models that fit the authors' code ----------------------------------------------------


def build_small(name: str, root: Path, **options: Any) -> Any:
    """srbench's method on small random weights (seconds to build and run) whose layer widths the
    authors' code accepts: ldm's GroupNorm has 32 groups and StableSR's SPADE hidden width is fixed at
    128, which srbench's tiny test models do not satisfy.  For checking the harness, not for timing."""
    from srbench.testing.factories import build_tiny

    root.mkdir(parents=True, exist_ok=True)
    if name == "invsr":
        return build_tiny("invsr", root / "invsr", **{"chopping_size": 128, **options})
    if name == "stablesr":
        import methods.stablesr.testing as tiny_stablesr

        hidden = tiny_stablesr.TINY_SFT_HIDDEN
        tiny_stablesr.TINY_SFT_HIDDEN = 128  # ldm/modules/spade.py: nhidden = 128
        try:  # input_size 512: the script's Resize(512), one 64x64 latent tile
            return build_tiny("stablesr", root / "stablesr", **{"input_size": 512, **options})
        finally:
            tiny_stablesr.TINY_SFT_HIDDEN = hidden
    if name == "dossr":
        return _small_dossr(root / "dossr", **options)
    raise KeyError(name)


def _small_dossr(root: Path, **options: Any) -> Any:
    from methods.dossr.convert import to_official_checkpoint
    from methods.dossr.testing import SD21_SCHEDULER, build_tiny_parts, official_extras
    from srbench.registry import create_method
    from srbench.testing import mark_random_weights
    from srbench.testing.tiny_sd import save_tiny_sd

    unet = {
        "block_out_channels": (32, 32, 64, 64),
        "attention_head_dim": (1, 1, 2, 2),  # 32 channels per head on every level, as ldm needs
        "norm_num_groups": 32,
        "layers_per_block": 1,
    }
    vae = {"block_out_channels": (32, 32, 32, 32), "norm_num_groups": 32}
    sd = save_tiny_sd(
        root / "sd", unet=unet, vae=vae, scheduler="PNDMScheduler", scheduler_config=SD21_SCHEDULER
    )
    parts = build_tiny_parts(sd, seed=10)
    state = to_official_checkpoint(**parts, layers_per_block=1, extra=official_extras(parts, 0))
    ckpt = root / "dossr_small.ckpt"
    torch.save({"state_dict": state, "global_step": 0}, ckpt)
    mark_random_weights(ckpt, builder="benchmarks/official_harness.py:build_small")
    return create_method("dossr", model=str(sd), ckpt=str(ckpt), **options)
