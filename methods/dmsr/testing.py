"""Tiny random DM-SR models for tests and the contract factory (never real weights).

:func:`save_tiny_dmsr` writes a checkpoint in srbench's DM-SR format (``dmsr.json`` + ``dmsr.safetensors``)
whose encoder is built from a tiny SD folder's VAE (``srbench.testing.tiny_sd.save_tiny_sd``), with the
t-embedding layers randomised so the timestep path is exercised; the folder gets the random-weights marker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from methods.dmsr.checkpoint import DMSRConfig, save_checkpoint
from methods.dmsr.encoder import TimestepAwareEncoder
from methods.dmsr.estimator import TimestepEstimator

TINY_ESTIMATOR_WIDTH_DIV = 16  # VGG19 widths 4…32


def save_tiny_dmsr(
    path: str | Path, base_model: str | Path, *, seed: int = 0, t_embed_std: float = 0.05
) -> Path:
    """A random DM-SR checkpoint at ``path`` matching the diffusers SD folder ``base_model``."""
    from diffusers import AutoencoderKL

    from srbench.testing import mark_random_weights

    vae = AutoencoderKL.from_pretrained(str(base_model), subfolder="vae", local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        estimator = TimestepEstimator(width_div=TINY_ESTIMATOR_WIDTH_DIV)
        encoder = TimestepAwareEncoder.from_vae(vae)
        for lin in encoder.t_embed:
            torch.nn.init.normal_(lin.weight, std=t_embed_std)
    cfg = DMSRConfig(
        base_model=str(base_model), real=False, training={"builder": "methods.dmsr.testing", "seed": seed}
    )
    out = save_checkpoint(path, estimator=estimator, encoder=encoder, config=cfg)
    mark_random_weights(out, builder="methods.dmsr.testing.save_tiny_dmsr", seed=seed)
    return out


def make_tiny_dmsr(tmp_path: str | Path, **options: Any) -> Any:
    """The ``dmsr`` method on tiny random weights saved in the real formats (not loaded yet)."""
    from srbench.registry import create_method
    from srbench.testing.tiny_sd import save_tiny_sd

    root = Path(tmp_path)
    sd = save_tiny_sd(root / "tiny-sd")
    ckpt = save_tiny_dmsr(root / "tiny-dmsr", sd)
    opts = {"tile_size": 32, "tile_stride": 16, **options}
    return create_method("dmsr", checkpoint=str(ckpt), **opts)
