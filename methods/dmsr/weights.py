"""The files DM-SR needs (``srbench weights list|where|fetch dmsr``).

No DM-SR checkpoint is published anywhere: the method loads a directory written by ``srbench train dmsr``.
What can be fetched is the frozen base model (SD-Turbo, §4.1) and, for training, InvSR's latent LPIPS
(L_per "following InvSR", §3.4).  Training also uses torchvision's ImageNet VGG19 (estimator init) and
AlexNet (LPIPS target); those live in ``$TORCH_HOME/hub/checkpoints`` (torchvision's own cache), so they
are not in this manifest: download ``vgg19-dcbb9e9d.pth`` and ``alexnet-owt-7be5be79.pth`` from
https://download.pytorch.org/models/ into that folder (or set ``allow_downloads=true`` for VGG19).
"""

from __future__ import annotations

from srbench.weights import WeightFile, WeightsManifest, register_weights

SD_TURBO = "stabilityai/sd-turbo"
LATENT_LPIPS_REPO = "OAOA/InvSR"
LATENT_LPIPS_FILE = "vgg16_sdturbo_lpips.pth"

#: the diffusers folder of SD-Turbo (fp32 safetensors; the paper does not state its precision)
SD_TURBO_FILES: tuple[str, ...] = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)

_FILES = tuple(WeightFile(f, repo_id=SD_TURBO, note="frozen base model") for f in SD_TURBO_FILES)
_TRAIN = WeightFile(LATENT_LPIPS_FILE, repo_id=LATENT_LPIPS_REPO, note="training only: latent LPIPS (L_per)")

MANIFEST = register_weights(
    WeightsManifest(
        "dmsr",
        files=(*_FILES, _TRAIN),
        description="SD-Turbo + InvSR's latent LPIPS (training); DM-SR weights: `srbench train dmsr`",
        groups={"inference": SD_TURBO_FILES, "train": (LATENT_LPIPS_FILE,)},
    )
)
