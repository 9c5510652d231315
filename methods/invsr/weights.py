"""InvSR's weights manifest: SD-Turbo (diffusers folder files) and the released noise predictor.

Sizes are the rounded figures shown on the Hugging Face file pages (seen through a search index,
not downloaded here), so none is marked exact and no sha256 is recorded: this machine reaches no
model hub.  Unverified from here: exact byte sizes, checksums, and whether ``main`` of
stabilityai/sd-turbo still holds these files (pages seen for commits a07e586 / 0096a99).
The noise predictor's 135 MB matches 33,837,576 fp32 parameters (135.35 MB) plus pickle overhead.
"""

from __future__ import annotations

from srbench.weights import WeightFile, WeightsManifest, register_weights

SD_TURBO = "stabilityai/sd-turbo"
INVSR_REPO = "OAOA/InvSR"
NOISE_PREDICTOR_FILE = "noise_predictor_sd_turbo_v5.pth"

_KB, _MB, _GB = 1000, 1000**2, 1000**3

MANIFEST = register_weights(
    WeightsManifest(
        "invsr",
        description="SD-Turbo (stabilityai/sd-turbo, fp32 safetensors) + InvSR noise predictor (OAOA/InvSR)",
        files=(
            WeightFile("model_index.json", repo_id=SD_TURBO, note="size not seen"),
            WeightFile("scheduler/scheduler_config.json", repo_id=SD_TURBO, size=553),
            WeightFile("text_encoder/config.json", repo_id=SD_TURBO, size=618),
            WeightFile("text_encoder/model.safetensors", repo_id=SD_TURBO, size=int(1.36 * _GB)),
            WeightFile("tokenizer/merges.txt", repo_id=SD_TURBO, size=525 * _KB),
            WeightFile("tokenizer/special_tokens_map.json", repo_id=SD_TURBO, size=574),
            WeightFile("tokenizer/tokenizer_config.json", repo_id=SD_TURBO, size=855),
            WeightFile("tokenizer/vocab.json", repo_id=SD_TURBO, size=int(1.06 * _MB)),
            WeightFile("unet/config.json", repo_id=SD_TURBO, size=int(1.87 * _KB)),
            WeightFile("unet/diffusion_pytorch_model.safetensors", repo_id=SD_TURBO, size=int(3.46 * _GB)),
            WeightFile("vae/config.json", repo_id=SD_TURBO, size=655),
            WeightFile("vae/diffusion_pytorch_model.safetensors", repo_id=SD_TURBO, size=335 * _MB),
            WeightFile(
                NOISE_PREDICTOR_FILE,
                repo_id=INVSR_REPO,
                size=135 * _MB,
                note="PyTorch pickle of a plain state dict; loaded with torch.load(weights_only=True)",
            ),
        ),
    )
)
