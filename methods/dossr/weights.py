"""DoSSR's weights: the SD 2.1-base configs/tokenizer (manifest) and the official checkpoint (manual).

The official checkpoints are published only in a Google Drive folder (repo README), which neither
huggingface_hub nor a plain URL download can fetch: they are ``manual`` manifest entries (``srbench weights
where dossr`` gives the link), to be saved at :func:`default_ckpt_path` (``<srbench cache>/weights/dossr/
<file>``), or passed as ``method.ckpt=<path>``.

* ``dossr_default.ckpt``: multi-step model; its pre-restoration RRDBNet carries Real-ESRNet weights.
* ``dossr_onestep.ckpt``: the README's one-step model (use with ``steps=1``); RRDBNet = Real-ESRGAN.

Each is the full ``ControlLDM`` state dict, UNet / VAE / text tower included, so from SD 2.1-base only
the configs, tokenizer and scheduler config are needed (its weight files are read only if a checkpoint
lacks a part).
"""

from __future__ import annotations

from pathlib import Path

from srbench.paths import weights_dir
from srbench.weights import WeightFile, WeightsManifest, register_weights

SD_REPO = "stabilityai/stable-diffusion-2-1-base"
DRIVE_FOLDER = "https://drive.google.com/drive/folders/1BTGRbAqXDSNWjyUnTLgDfmjd2xyu8GvP"
CKPT_FILES = {"default": "dossr_default.ckpt", "onestep": "dossr_onestep.ckpt"}

_SD_FILES = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
)

MANIFEST = register_weights(
    WeightsManifest(
        "dossr",
        files=(
            *(WeightFile(name, repo_id=SD_REPO) for name in _SD_FILES),
            WeightFile(CKPT_FILES["default"], url=DRIVE_FOLDER, subdir="dossr", manual=True),
            WeightFile(
                CKPT_FILES["onestep"],
                url=DRIVE_FOLDER,
                subdir="dossr",
                manual=True,
                required=False,
                note="for method.variant=onestep",
            ),
        ),
        description=(
            "DoSSR: SD 2.1-base configs + tokenizer, and the DoSSR checkpoint (manual download from "
            "Google Drive)"
        ),
        groups={"sd": _SD_FILES},
    )
)


def default_ckpt_path(variant: str = "default") -> Path:
    """Where the official checkpoint of ``variant`` (default | onestep) is looked for."""
    try:
        return weights_dir() / "dossr" / CKPT_FILES[variant]
    except KeyError:
        raise ValueError(f"unknown DoSSR variant '{variant}'; choose from {sorted(CKPT_FILES)}") from None
