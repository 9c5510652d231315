"""A tiny random Stable-Diffusion-2-style model, saved as a real diffusers folder.

:func:`save_tiny_sd` writes ``model_index.json`` plus ``unet/ vae/ text_encoder/ tokenizer/ scheduler/``
in the layout of ``stabilityai/sd-turbo`` (safetensors weights, a CLIP BPE tokenizer as
``vocab.json`` + ``merges.txt`` with ``model_max_length`` 77, an ``EulerDiscreteScheduler`` config with
SD-Turbo's values), and the random-weights marker.  The geometry is the real one: the VAE has 4
latent channels and downsamples 8x, the UNet has 4 levels (latent sides divisible by 8), the text
encoder gives ``(B, 77, D)``; only the widths are tiny.  Load it back with
:func:`srbench.diffusion.sd.load_sd_components` exactly as a user loads the real model.

Sizes (default): UNet 0.11 M params, VAE 0.07 M, text encoder 0.04 M; about 1 MB on disk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from srbench.testing import mark_random_weights

#: the real SD 2.x / SD-Turbo ``text_encoder/config.json`` sizes (OpenCLIP ViT-H/14 text tower, 340 M
#: params), for full-size random stand-ins (shape checks, timings)
SD2_TEXT_ENCODER_SIZES: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1024,
}

#: SD-Turbo's scheduler config (HF stabilityai/sd-turbo scheduler/scheduler_config.json)
SD_TURBO_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "timestep_type": "discrete",
    "use_karras_sigmas": False,
}

TINY_UNET: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (8, 8, 16, 16),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,  # diffusers' legacy name: the number of heads
    "use_linear_projection": True,  # as SD 2.x
    "norm_num_groups": 4,
}

TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (8, 8, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",  # SD 2.x (OpenCLIP-H) uses gelu
    "projection_dim": 32,
}


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest to 256+n
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def tiny_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-level CLIP BPE vocabulary in CLIP's order (bytes, bytes + ``</w>``, merges, specials)
    with a handful of merges; ``!`` is id 0, which SD 2's tokenizer uses as the pad token."""
    chars = list(_bytes_to_unicode().values())
    merges = ["t h", "th e</w>", "i n", "a n", "e r", "o n", "r e"]
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tiny_tokenizer(folder: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "!",
        "unk_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def build_tiny_sd(
    *,
    seed: int = 0,
    unet: Mapping[str, Any] | None = None,
    vae: Mapping[str, Any] | None = None,
    text: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Random ``{"unet", "vae", "text_encoder"}`` modules (fp32, CPU); dicts override the TINY_* configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = tiny_clip_vocab()
    tcfg = {**TINY_TEXT, **(text or {})}
    ucfg = {**TINY_UNET, **(unet or {})}
    ucfg.setdefault("cross_attention_dim", tcfg["hidden_size"])
    # diffusers/transformers initialise from the global RNG: seed it inside a fork, leave it untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u = UNet2DConditionModel(**ucfg)
        v = AutoencoderKL(**{**TINY_VAE, **(vae or {})})
        te = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["!"],
                **tcfg,
            )
        )
    return {"unet": u.eval(), "vae": v.eval(), "text_encoder": te.eval()}


def _legacy_text_encoder_keys(file: Path) -> None:
    # Hub SD repos store CLIPTextModel keys as "text_model.*"; transformers 5 saves them without the
    # prefix. Write them as the real files have them, so tests load through the same key conversion.
    from safetensors.torch import load_file, save_file

    state = load_file(str(file))
    if all(k.startswith("text_model.") for k in state):
        return
    state = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}
    save_file(state, str(file), metadata={"format": "pt"})


def save_tiny_sd(
    path: str | Path,
    *,
    seed: int = 0,
    scheduler: str = "EulerDiscreteScheduler",
    scheduler_config: Mapping[str, Any] | None = None,
    unet: Mapping[str, Any] | None = None,
    vae: Mapping[str, Any] | None = None,
    text: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny random SD-2-style diffusers folder at ``path`` and return ``path``.

    ``scheduler``: a diffusers scheduler class name, configured with SD-Turbo's scheduler values
    updated by ``scheduler_config`` (e.g. ``scheduler="DDPMScheduler", scheduler_config={"clip_sample":
    False}`` for a StableSR-style model).  ``unet`` / ``vae`` / ``text`` override the tiny configs.
    The folder gets the random-weights marker (:mod:`srbench.testing`).
    """
    import diffusers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts = build_tiny_sd(seed=seed, unet=unet, vae=vae, text=text)
    parts["unet"].save_pretrained(path / "unet", safe_serialization=True)
    parts["vae"].save_pretrained(path / "vae", safe_serialization=True)
    parts["text_encoder"].save_pretrained(path / "text_encoder", safe_serialization=True)
    _legacy_text_encoder_keys(path / "text_encoder" / "model.safetensors")
    write_tiny_tokenizer(path / "tokenizer")
    sched_cls = getattr(diffusers, scheduler)
    sched = sched_cls.from_config({**SD_TURBO_SCHEDULER, **(scheduler_config or {})})
    sched.save_pretrained(path / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    mark_random_weights(path, builder="srbench.testing.tiny_sd.save_tiny_sd", seed=seed, scheduler=scheduler)
    return path
