"""A tiny random Stable-Diffusion-2-style model, saved as a real diffusers folder.

:func:`save_tiny_sd` writes ``model_index.json`` plus ``unet/ vae/ text_encoder/ tokenizer/ scheduler/``
as a hub repository publishes them (``hub="sd-turbo"``: ``stabilityai/sd-turbo``; ``hub="sd21-base"``:
``stabilityai/stable-diffusion-2-1-base``): safetensors weights, a CLIP BPE tokenizer as ``vocab.json`` +
``merges.txt`` with ``model_max_length`` 77, the repository's scheduler class and values, and every
``config.json`` / ``tokenizer_config.json`` with exactly the keys the published file has
(:mod:`srbench.testing.hub_configs`), not the ones today's diffusers writes; plus the random-weights
marker.  The geometry is the real one: the VAE has 4 latent channels and downsamples 8x, the UNet has 4
levels (latent sides divisible by 8), the text encoder gives ``(B, 77, D)``; only the widths are tiny.
Load it back with :func:`srbench.diffusion.sd.load_sd_components` exactly as a user loads the real model.

Sizes (default): UNet 0.11 M params, VAE 0.07 M, text encoder 0.04 M; about 1 MB on disk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from srbench.testing import mark_random_weights
from srbench.testing.hub_configs import LAYOUTS, HubLayout, published_layout, tokenizer_files

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

#: SD-Turbo's scheduler config (HF stabilityai/sd-turbo scheduler/scheduler_config.json, every key)
SD_TURBO_SCHEDULER: dict[str, Any] = dict(LAYOUTS["sd-turbo"].scheduler)

#: token ids of the hub's SD 2 text_encoder/config.json files (OpenAI CLIP's defaults)
PUBLISHED_TEXT_IDS: dict[str, int] = {
    k: LAYOUTS["sd-turbo"].text_meta[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
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


def write_tiny_tokenizer(folder: str | Path, *, hub: str = "sd-turbo") -> Path:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``, the
    last two in the layout ``hub`` publishes (:func:`srbench.testing.hub_configs.tokenizer_files`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    for name, content in tokenizer_files(published_layout(hub), vocab).items():
        _write_json(folder / name, content)
    return folder


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


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
        # the token ids the published text_encoder/config.json files carry (0, 2, 1), whatever the
        # tokenizer says: transformers then pools with its legacy argmax rule, as for the real models
        te = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), **PUBLISHED_TEXT_IDS, **tcfg))
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
    scheduler: str | None = None,
    scheduler_config: Mapping[str, Any] | None = None,
    unet: Mapping[str, Any] | None = None,
    vae: Mapping[str, Any] | None = None,
    text: Mapping[str, Any] | None = None,
    hub: str = "sd-turbo",
) -> Path:
    """Write a tiny random SD-2-style diffusers folder at ``path`` and return ``path``.

    ``hub``: whose files to mirror, "sd-turbo" (``stabilityai/sd-turbo``) or "sd21-base"
    (``stabilityai/stable-diffusion-2-1-base``): each config file gets exactly that repository's key set
    (see :mod:`srbench.testing.hub_configs`).  ``scheduler``: a diffusers scheduler class name (default:
    the repository's), configured with the repository's scheduler values updated by
    ``scheduler_config``.  ``unet`` / ``vae`` / ``text`` override the tiny configs; an override the
    published key set cannot express (a key the file lacks, set to a non-default value) is an error.
    The folder gets the random-weights marker (:mod:`srbench.testing`).
    """
    layout = published_layout(hub)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts = build_tiny_sd(seed=seed, unet=unet, vae=vae, text=text)
    parts["unet"].save_pretrained(path / "unet", safe_serialization=True)
    parts["vae"].save_pretrained(path / "vae", safe_serialization=True)
    parts["text_encoder"].save_pretrained(path / "text_encoder", safe_serialization=True)
    _legacy_text_encoder_keys(path / "text_encoder" / "model.safetensors")
    _publish_model_config(path / "unet", layout, layout.unet_keys, "unet")
    _publish_model_config(path / "vae", layout, layout.vae_keys, "vae")
    _publish_text_config(path / "text_encoder", layout)
    write_tiny_tokenizer(path / "tokenizer", hub=hub)
    sched_name = scheduler or layout.scheduler_class
    (path / "scheduler").mkdir(exist_ok=True)
    _write_json(
        path / "scheduler" / "scheduler_config.json",
        {
            "_class_name": sched_name,
            "_diffusers_version": layout.diffusers_version,
            **layout.scheduler,
            **dict(scheduler_config or {}),
        },
    )
    index = {**layout.model_index, "scheduler": ["diffusers", sched_name]}
    _write_json(path / "model_index.json", index)
    mark_random_weights(
        path, builder="srbench.testing.tiny_sd.save_tiny_sd", seed=seed, scheduler=sched_name, hub=hub
    )
    return path


def _published(full: Mapping[str, Any], layout: HubLayout, keys: tuple[str, ...], part: str) -> dict:
    out: dict[str, Any] = {"_class_name": full["_class_name"], "_diffusers_version": layout.diffusers_version}
    if part in layout.name_or_path:
        out["_name_or_path"] = layout.name_or_path[part]
    out.update({k: full[k] for k in keys if k in full})
    return out


def _publish_model_config(folder: Path, layout: HubLayout, keys: tuple[str, ...], part: str) -> None:
    """Rewrite ``folder/config.json`` (as diffusers saved it) with the published key set, after checking
    that diffusers rebuilds the same configuration from the shorter file (defaults fill the rest)."""
    import diffusers
    from accelerate import init_empty_weights

    file = folder / "config.json"
    full = json.loads(file.read_text())
    out = _published(full, layout, keys, part)
    with init_empty_weights():
        rebuilt = getattr(diffusers, full["_class_name"]).from_config(out)
    again = json.loads(json.dumps(dict(rebuilt.config), default=list))
    lost = sorted(k for k in full if not k.startswith("_") and again.get(k) != full[k])
    if lost:
        raise ValueError(
            f"{layout.repo} {part}/config.json has no key for {lost}: the tiny config sets them to "
            f"non-default values the published file cannot express"
        )
    _write_json(file, out)


def _publish_text_config(folder: Path, layout: HubLayout) -> None:
    """Rewrite ``text_encoder/config.json`` with the published keys (transformers 5 writes others)."""
    from transformers import CLIPTextConfig

    file = folder / "config.json"
    full = json.loads(file.read_text())
    have = CLIPTextConfig.from_pretrained(folder)
    fixed = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **layout.text_meta}
    fixed["_name_or_path"] = layout.name_or_path.get("text_encoder", "")
    # transformers 5 keeps some fields out of to_dict(); the published files have CLIP's defaults there
    defaults = {"dropout": 0.0, "attention_dropout": 0.0, "initializer_factor": 1.0}
    out = {k: fixed[k] if k in fixed else getattr(have, k, defaults.get(k)) for k in layout.text_keys}
    rebuilt = CLIPTextConfig(**{k: v for k, v in out.items() if not k.startswith("_")})
    sizes = ("hidden_size", "num_hidden_layers", "vocab_size")
    lost = sorted(k for k in sizes if getattr(rebuilt, k) != full[k])
    if lost:
        raise ValueError(f"{layout.repo} text_encoder/config.json would change {lost}")
    _write_json(file, out)
