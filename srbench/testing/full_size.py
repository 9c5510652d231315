"""The released architectures at full size with random weights, for latency and memory (never quality).

``srbench bench METHOD --random-full-size`` measures the papers' protocol on the real network sizes
without downloads.  :func:`write_full_size` writes the method's weights **in the released formats**
(an SD 2.1-architecture diffusers folder, InvSR's ``.pth``, StableSR's two Lightning ``.ckpt`` files,
DoSSR's official-layout checkpoint, a DM-SR checkpoint) under a cache folder, so the method's own
``load()`` reads them exactly as it reads the real files; every file carries the random-weights
marker, so every record says ``weights: random``.

Building is quick: each network is constructed with its parameters on the meta device (no default
initialisation, no memory) by :func:`part_builders`, then :func:`fill_random_` gives every parameter a
seeded uniform fill of PyTorch's default scale (±1/√fan_in; norm layers 1/0), one network at a time.

Sizes (released configs; :data:`RELEASED_PARAMETERS`, checked on the meta device by the tests):
SD-Turbo / SD 2.1-base UNet 865.9 M, VAE 83.7 M, OpenCLIP-H text tower 340.4 M (23 layers, the
penultimate-layer encoder SD 2 uses); InvSR noise predictor 33.8 M; StableSR time-aware encoder +
SFT 105.5 M and CFW 44.4 M; DoSSR LAControlNet 363.2 M, condition encoder 34.2 M, RRDBNet 16.7 M;
DM-SR timestep estimator (VGG19 + head) and time-aware encoder (SD VAE encoder + t-embedding).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srbench.testing import mark_random_weights

#: SD 2.1-base and SD-Turbo ``unet/config.json`` (the same architecture; paper-relevant keys)
SD21_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),  # diffusers' legacy name: heads per level (64 channels each)
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
#: SD 2.x ``vae/config.json`` (``sample_size`` only sets diffusers' VAE-tiling threshold: tiling is off)
SD21_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
#: DoSSR's preprocessing RRDBNet (``configs/model/cldm_v21.yaml`` ``preprocess_config``: Real-ESRNet x4)
DOSSR_RRDBNET: dict[str, int] = {
    "num_in_ch": 3,
    "num_out_ch": 3,
    "num_feat": 64,
    "num_block": 23,
    "num_grow_ch": 32,
    "scale": 4,
}
#: parameters per part at the released sizes: ``part`` (SD 2.1 / SD-Turbo) or ``method.part``
RELEASED_PARAMETERS: dict[str, int] = {
    "unet": 865_910_724,  # SD 2.x UNet (StableSR §4.3: 865 M)
    "vae": 83_653_863,
    "text_encoder": 340_387_840,  # OpenCLIP-H text tower up to its penultimate layer (23 of 24 blocks)
    "invsr.noise_predictor": 33_837_576,  # InvSR Tab. 7: 33.84 M
    "stablesr.encoder": 52_494_080,  # time-aware encoder; + SFT = 105.51 M (StableSR §4.1)
    "stablesr.sft": 53_020_160,  # 22 SPADE layers
    "stablesr.cfw": 44_393_728,  # encoder + SFT + CFW = 149.91 M trainable (StableSR Tab. 5)
    "dossr.controlnet": 363_153_280,  # incl. 13 zero convs (DoSSR Tab. 1: 1716.6 M in all)
    "dossr.cond_encoder": 34_163_664,  # an SD VAE encoder + quant_conv
    "dossr.preprocess": 16_697_987,  # RRDBNet, 23 blocks (Real-ESRNet x4)
    # DM-SR has no released weights: srbench's build of the paper's App. A.1 description
    "dmsr.estimator": 20_280_884,  # VGG19 features (20.02 M) + 500-bin linear head
    "dmsr.encoder": 34_525_520,  # SD VAE encoder + quant_conv + one t-embedding Linear per down block
}
METHODS = ("invsr", "dmsr", "stablesr", "dossr")
SD_PARTS = ("unet", "vae", "text_encoder")


# ---- building without initialisation -----------------------------------------------------------------
@contextlib.contextmanager
def empty_init() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no init, no memory); buffers are
    created normally (accelerate's ``init_empty_weights(include_buffers=False)``)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def _norm_like(module: nn.Module) -> bool:
    return isinstance(module, nn.GroupNorm | nn.LayerNorm | nn.modules.batchnorm._NormBase)


def fill_random_(module: nn.Module, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Give every parameter (meta or not) a seeded cheap random value of PyTorch's default init scale:
    weights U(±1/√fan_in), norm layers weight 1 / bias 0, other vectors U(±0.01).  Returns ``module``
    in eval mode without gradients.  ~0.2 s per 100 M parameters on one core."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is None:
                    continue
                t = torch.empty(p.shape, dtype=torch.float32)
                if _norm_like(sub) and name in ("weight", "bias"):
                    t.fill_(1.0 if name == "weight" else 0.0)
                elif p.ndim >= 2:
                    bound = 1.0 / math.sqrt(max(1, p[0].numel()))
                    t.uniform_(-bound, bound, generator=gen)
                else:
                    t.uniform_(-0.01, 0.01, generator=gen)
                sub._parameters[name] = nn.Parameter(t.to(dtype), requires_grad=False)
    return module.eval()


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- the released networks (built on the meta device) ------------------------------------------------
def text_encoder_config() -> Any:
    """SD 2.x's text encoder config (OpenCLIP ViT-H/14 text tower as transformers' CLIPTextModel), with
    the special-token ids of srbench's offline tokenizer (:func:`srbench.testing.tiny_sd.tiny_clip_vocab`)."""
    from transformers import CLIPTextConfig

    from srbench.testing.tiny_sd import SD2_TEXT_ENCODER_SIZES, tiny_clip_vocab

    vocab, _ = tiny_clip_vocab()
    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["!"],
        **SD2_TEXT_ENCODER_SIZES,
    )


def _unet() -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**SD21_UNET)


def _vae() -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**SD21_VAE)


def _text_encoder() -> nn.Module:
    from transformers import CLIPTextModel

    return CLIPTextModel(text_encoder_config())


def _invsr_noise_predictor() -> nn.Module:
    from methods.invsr.noise_predictor import NoisePredictor, NoisePredictorConfig

    return NoisePredictor(NoisePredictorConfig())  # configs/sample-sd-turbo.yaml model_start


def _stablesr_encoder() -> nn.Module:
    from methods.stablesr.encoder import EncoderConfig, TimeAwareEncoder

    return TimeAwareEncoder(EncoderConfig())  # v2-finetune_text_T_512.yaml structcond_stage_config


def _stablesr_sft() -> nn.Module:
    from methods.stablesr.sft import SFTUNet

    return SFTUNet(_unet(), cond_channels=256, hidden=128).sft  # 22 SPADE layers, 256 -> 128 -> C


def _stablesr_cfw() -> nn.Module:
    from methods.stablesr.cfw import CFWAutoencoder

    return CFWAutoencoder(_vae(), num_rrdb=2).fusion_layers  # autoencoder_kl_64x64x4_resi.yaml


def _dossr_controlnet() -> nn.Module:
    from methods.dossr.network import build_lacontrolnet

    return build_lacontrolnet(dict(_unet().config))


def _dossr_cond_encoder() -> nn.Module:
    from methods.dossr.network import CondEncoder

    return CondEncoder.from_vae_config(SD21_VAE)


def _dossr_preprocess() -> nn.Module:
    from srbench.archs.rrdbnet import build_rrdbnet

    return build_rrdbnet(DOSSR_RRDBNET)


def _dmsr_estimator() -> nn.Module:
    from methods.dmsr.estimator import TimestepEstimator

    return TimestepEstimator()  # VGG19 + 500-bin head (DM-SR App. A.1)


def _dmsr_encoder() -> nn.Module:
    from methods.dmsr.encoder import TimestepAwareEncoder

    return TimestepAwareEncoder(**TimestepAwareEncoder.config_from_vae(SD21_VAE))


_EXTRA_PARTS: dict[str, dict[str, Callable[[], nn.Module]]] = {
    "invsr": {"noise_predictor": _invsr_noise_predictor},
    "dmsr": {"estimator": _dmsr_estimator, "encoder": _dmsr_encoder},
    "stablesr": {"encoder": _stablesr_encoder, "sft": _stablesr_sft, "cfw": _stablesr_cfw},
    "dossr": {
        "controlnet": _dossr_controlnet,
        "cond_encoder": _dossr_cond_encoder,
        "preprocess": _dossr_preprocess,
    },
}


_SD_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "unet": _unet,
    "vae": _vae,
    "text_encoder": _text_encoder,
}


def part_builders(method: str) -> dict[str, Callable[[], nn.Module]]:
    """``{part: builder}`` of one method's networks at the released sizes (``"sd"``: the SD 2.1 parts
    only).  Call the builders inside
    :func:`empty_init` for meta-device modules (shapes and counts, no memory)."""
    if method != "sd" and method not in _EXTRA_PARTS:
        raise KeyError(f"no full-size build for method '{method}'; known: {list(METHODS)}")
    return {**_SD_BUILDERS, **_EXTRA_PARTS.get(method, {})}


def build_part(method: str, part: str, *, seed: int = 0, materialize: bool = True) -> nn.Module:
    """One network at full size: on the meta device, or (``materialize``) filled by :func:`fill_random_`."""
    with empty_init():
        module = part_builders(method)[part]()
    if not materialize:
        return module
    owner = "sd" if part in _SD_BUILDERS else method  # the SD parts are one set, whichever method asks
    digest = int(hashlib.sha256(f"{owner}.{part}".encode()).hexdigest()[:8], 16)
    return fill_random_(module, seed=seed * 1_000_003 + digest)


# ---- writing the released formats ---------------------------------------------------------------------
#: bump when what is written changes (a cached build of another version is rebuilt)
FORMAT_VERSION = 1


def default_root() -> Path:
    from srbench.paths import cache_dir

    return cache_dir() / "full_size"


def _done(folder: Path, what: dict[str, Any]) -> bool:
    stamp = folder / "srbench_full_size.json"
    try:
        return json.loads(stamp.read_text()) == what
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _atomic_folder(folder: Path, what: dict[str, Any]) -> Iterator[Path]:
    """Write into ``<folder>.partial`` and rename when complete (a killed build is started again)."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    (tmp / "srbench_full_size.json").write_text(json.dumps(what, sort_keys=True) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _mark(path: Path, seed: int) -> None:
    mark_random_weights(path, builder="srbench.testing.full_size", seed=seed, full_size=True)


def write_sd_weights(root: Path, seed: int = 0) -> Path:
    """``root/sd21-arch/{unet,vae,text_encoder,tokenizer}``: the SD 2.1 / SD-Turbo networks, random."""
    from srbench.testing.tiny_sd import _legacy_text_encoder_keys, write_tiny_tokenizer

    folder = root / "sd21-arch"
    what = {"part": "sd21-arch", "seed": seed, "version": FORMAT_VERSION}
    if _done(folder, what):
        return folder
    with _atomic_folder(folder, what) as tmp:
        for part in SD_PARTS:
            net = build_part("sd", part, seed=seed)
            net.save_pretrained(tmp / part, safe_serialization=True, max_shard_size="1GB")
            del net
        te = tmp / "text_encoder"
        for shard in sorted(te.glob("model*.safetensors")):
            _legacy_text_encoder_keys(shard)  # the hub files' "text_model." key prefix
        index = te / "model.safetensors.index.json"
        if index.is_file():  # keep the shard index in step with the renamed keys
            data = json.loads(index.read_text())
            data["weight_map"] = {
                (k if k.startswith("text_model.") else f"text_model.{k}"): v
                for k, v in data["weight_map"].items()
            }
            index.write_text(json.dumps(data, indent=2))
        write_tiny_tokenizer(tmp / "tokenizer")
    return folder


#: diffusers-folder variants sharing the SD 2.1-architecture weights: name -> scheduler class, config
def _sd_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    from methods.dossr.testing import SD21_SCHEDULER
    from srbench.testing.tiny_sd import SD_TURBO_SCHEDULER

    return {
        "sd-turbo": ("EulerDiscreteScheduler", SD_TURBO_SCHEDULER),
        "sd-2-1-base": ("PNDMScheduler", SD21_SCHEDULER),
    }


def write_sd_folder(root: Path, variant: str, seed: int = 0) -> Path:
    """A diffusers folder ``root/<variant>`` (``sd-turbo`` or ``sd-2-1-base``): links to the shared
    random weights plus the variant's scheduler and ``model_index.json``; random-weights marker."""
    import diffusers

    weights = write_sd_weights(root, seed)
    folder = root / variant
    what = {"part": variant, "seed": seed, "version": FORMAT_VERSION}
    if _done(folder, what):
        return folder
    sched_name, sched_cfg = _sd_variants()[variant]
    with _atomic_folder(folder, what) as tmp:
        for part in (*SD_PARTS, "tokenizer"):
            (tmp / part).symlink_to(weights / part, target_is_directory=True)
        getattr(diffusers, sched_name).from_config(sched_cfg).save_pretrained(tmp / "scheduler")
        index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", sched_name],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    _mark(folder, seed)
    return folder


def _write_invsr(root: Path, seed: int) -> dict[str, Any]:
    from methods.invsr.noise_predictor import save_noise_predictor

    model = write_sd_folder(root, "sd-turbo", seed)
    folder = root / "invsr"
    what = {"part": "invsr", "seed": seed, "version": FORMAT_VERSION}
    if not _done(folder, what):
        with _atomic_folder(folder, what) as tmp:
            save_noise_predictor(build_part("invsr", "noise_predictor", seed=seed), tmp / "np.pth")
        _mark(folder / "np.pth", seed)
    return {"model": str(model), "noise_predictor": str(folder / "np.pth")}


def _write_dmsr(root: Path, seed: int) -> dict[str, Any]:
    from methods.dmsr.checkpoint import DMSRConfig, save_checkpoint

    model = write_sd_folder(root, "sd-turbo", seed)
    folder = root / "dmsr"
    what = {"part": "dmsr", "seed": seed, "version": FORMAT_VERSION}
    if not _done(folder, what):
        with _atomic_folder(folder, what) as tmp:
            cfg = DMSRConfig(
                base_model=str(model), real=False, training={"builder": "srbench.testing.full_size"}
            )
            save_checkpoint(
                tmp / "ckpt",
                estimator=build_part("dmsr", "estimator", seed=seed),
                encoder=build_part("dmsr", "encoder", seed=seed),
                config=cfg,
            )
        _mark(folder / "ckpt", seed)
    return {"checkpoint": str(folder / "ckpt"), "model": str(model)}


def _write_stablesr(root: Path, seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from methods.stablesr.convert import cfw_to_ldm, encoder_to_ldm, unet_to_ldm, vae_to_ldm
    from srbench.testing.lightning import write_lightning_checkpoint

    model = write_sd_folder(root, "sd-2-1-base", seed)
    folder = root / "stablesr"
    what = {"part": "stablesr", "seed": seed, "version": FORMAT_VERSION}
    if not _done(folder, what):
        with _atomic_folder(folder, what) as tmp:
            # stablesr_000117.ckpt: the (frozen) UNet + SFT + time-aware encoder, ldm key names
            unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
            sft = build_part("stablesr", "sft", seed=seed)
            encoder = build_part("stablesr", "encoder", seed=seed)
            state = unet_to_ldm(unet.state_dict(), sft.state_dict(), SD21_UNET["layers_per_block"])
            state.update(encoder_to_ldm(encoder.state_dict(), encoder.config))
            write_lightning_checkpoint(tmp / "stablesr_000117.ckpt", state, global_step=117)
            del unet, sft, encoder, state
            # vqgan_cfw_00011.ckpt: the SD VAE + CFW fusion layers
            vae = AutoencoderKL.from_pretrained(model, subfolder="vae")
            levels = len(SD21_VAE["block_out_channels"])
            state = vae_to_ldm(vae.state_dict(), levels)
            state.update(cfw_to_ldm(build_part("stablesr", "cfw", seed=seed).state_dict()))
            write_lightning_checkpoint(tmp / "vqgan_cfw_00011.ckpt", state, global_step=11)
        for name in ("stablesr_000117.ckpt", "vqgan_cfw_00011.ckpt"):
            _mark(folder / name, seed)
    return {
        "model": str(model),
        "ckpt": str(folder / "stablesr_000117.ckpt"),
        "vqgan_ckpt": str(folder / "vqgan_cfw_00011.ckpt"),
    }


def _write_dossr(root: Path, seed: int) -> dict[str, Any]:
    from methods.dossr.convert import (
        COND_ENCODER_KEY,
        controlnet_to_ldm,
        rrdbnet_to_official,
        vae_to_ldm,
    )

    model = write_sd_folder(root, "sd-2-1-base", seed)
    folder = root / "dossr"
    what = {"part": "dossr", "seed": seed, "version": FORMAT_VERSION}
    if not _done(folder, what):
        with _atomic_folder(folder, what) as tmp:
            # the official ControlLDM layout, holding the trained parts only: the UNet / VAE / text tower
            # then come from the SD folder (same architecture; see DoSSR.load)
            state = controlnet_to_ldm(
                build_part("dossr", "controlnet", seed=seed).state_dict(), SD21_UNET["layers_per_block"]
            )
            state.update(
                vae_to_ldm(build_part("dossr", "cond_encoder", seed=seed).state_dict(), COND_ENCODER_KEY)
            )
            state.update(rrdbnet_to_official(build_part("dossr", "preprocess", seed=seed).state_dict()))
            torch.save({"state_dict": state, "global_step": 0}, tmp / "dossr_default.ckpt")
        _mark(folder / "dossr_default.ckpt", seed)
    return {"model": str(model), "ckpt": str(folder / "dossr_default.ckpt")}


_WRITERS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "invsr": _write_invsr,
    "dmsr": _write_dmsr,
    "stablesr": _write_stablesr,
    "dossr": _write_dossr,
}


def write_full_size(method: str, root: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Write (once; cached under ``root``, default ``<srbench cache>/full_size``) the method's full-size
    random weights in the released formats; returns the method options that load them."""
    if method not in _WRITERS:
        raise KeyError(f"no full-size build for method '{method}'; known: {list(METHODS)}")
    folder = Path(root) if root is not None else default_root()
    folder.mkdir(parents=True, exist_ok=True)
    return _WRITERS[method](folder, seed)


def build_full_size(method: str, root: str | Path | None = None, seed: int = 0, **options: Any) -> Any:
    """The method (not loaded) on full-size random weights written by :func:`write_full_size`."""
    from srbench.registry import create_method

    return create_method(method, **{**write_full_size(method, root, seed), **options})


__all__ = [
    "METHODS",
    "RELEASED_PARAMETERS",
    "SD21_UNET",
    "SD21_VAE",
    "build_full_size",
    "build_part",
    "empty_init",
    "fill_random_",
    "num_parameters",
    "part_builders",
    "write_full_size",
]
