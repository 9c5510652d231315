"""StableSR's weights manifest (``srbench weights fetch stablesr``).

The official checkpoints (HF ``Iceclear/StableSR``) hold the UNet + SFT + time-aware encoder and the
VAE + CFW; the SD 2.1-base diffusers folder gives the text encoder, tokenizer and model configs (its
UNet/VAE weights are the frozen ones the official checkpoints also carry).  Sizes are approximate.
"""

from __future__ import annotations

from srbench.weights import WeightFile, WeightsManifest, register_weights

HF_REPO = "Iceclear/StableSR"
SD_REPO = "stabilityai/stable-diffusion-2-1-base"
CKPT_FILE = "stablesr_000117.ckpt"
VQGAN_FILE = "vqgan_cfw_00011.ckpt"

_SD_FILES = (
    ("model_index.json", None),
    ("unet/config.json", None),
    ("unet/diffusion_pytorch_model.safetensors", 3_460_000_000),
    ("vae/config.json", None),
    ("vae/diffusion_pytorch_model.safetensors", 335_000_000),
    ("text_encoder/config.json", None),
    ("text_encoder/model.safetensors", 1_360_000_000),
    ("tokenizer/vocab.json", None),
    ("tokenizer/merges.txt", None),
    ("tokenizer/special_tokens_map.json", None),
    ("tokenizer/tokenizer_config.json", None),
    ("scheduler/scheduler_config.json", None),
)

MANIFEST = register_weights(
    WeightsManifest(
        "stablesr",
        files=(
            WeightFile(
                CKPT_FILE,
                repo_id=HF_REPO,
                size=6_480_000_000,
                note="Lightning ckpt: SD2.1-base UNet + 22 SFT layers + time-aware encoder (117 epochs)",
            ),
            WeightFile(VQGAN_FILE, repo_id=HF_REPO, size=960_000_000, note="Lightning ckpt: SD VAE + CFW"),
            *(WeightFile(name, repo_id=SD_REPO, size=size) for name, size in _SD_FILES),
        ),
        description="StableSR 512 (SD 2.1-base): stablesr_000117 + vqgan_cfw_00011",
        groups={"stablesr": (CKPT_FILE, VQGAN_FILE), "sd": tuple(name for name, _ in _SD_FILES)},
    )
)
